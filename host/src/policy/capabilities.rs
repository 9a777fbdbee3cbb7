//! Capabilities: which host interfaces exist, how a grant list is parsed, and the objects a
//! policy instance's host functions use (its kv namespace, its rate limiter, the analytics
//! sink, its outbound-HTTP allowlist).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::bindings::sluice::policy::{outbound_http, types};
use crate::state::{Kv, RateLimiter};
use crate::telemetry::AnalyticsSink;
use crate::upstream::Connector;

/// A host interface a plugin can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `sluice:policy/log`.
    Log,
    /// `sluice:policy/clock`.
    Clock,
    /// `sluice:policy/kv`.
    Kv,
    /// `sluice:policy/rate-limit`.
    RateLimit,
    /// `sluice:policy/analytics`.
    Analytics,
    /// `sluice:policy/outbound-http`.
    OutboundHttp,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 6] = [
        Self::Log,
        Self::Clock,
        Self::Kv,
        Self::RateLimit,
        Self::Analytics,
        Self::OutboundHttp,
    ];

    /// The WIT interface name (without version).
    pub fn interface(self) -> &'static str {
        match self {
            Self::Log => "sluice:policy/log",
            Self::Clock => "sluice:policy/clock",
            Self::Kv => "sluice:policy/kv",
            Self::RateLimit => "sluice:policy/rate-limit",
            Self::Analytics => "sluice:policy/analytics",
            Self::OutboundHttp => "sluice:policy/outbound-http",
        }
    }

    /// The capability an import name (`sluice:policy/kv@0.1.0`) refers to.
    pub fn from_import(name: &str) -> Option<Self> {
        let base = name.split('@').next().unwrap_or(name);
        Self::ALL.into_iter().find(|c| c.interface() == base)
    }

    /// Bit of this capability in a [`Grants`] set.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of granted capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Grants(u8);

impl Grants {
    /// The set of `caps`.
    pub fn of(caps: &[Capability]) -> Self {
        Self(caps.iter().fold(0, |m, c| m | c.bit()))
    }

    /// Whether `c` is granted.
    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }
}

/// Outbound HTTP for one plugin: only allowlisted `host` or `host:port` authorities, bounded
/// in time and size.
pub struct Outbound {
    allow: Vec<String>,
    plain: Client<Connector, Empty<Bytes>>,
    tls: Option<Client<Connector, Empty<Bytes>>>,
    timeout: Duration,
    max_bytes: usize,
}

/// Headers a policy may not set on an outbound request: the hop-by-hop ones the proxy
/// never forwards (RFC 9110 §7.6.1), and those that frame, route or authenticate the
/// request (`Host`: the URL's authority is sent).
fn is_reserved_outbound_header(name: &str) -> bool {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => {
            crate::proxy::headers::is_gateway_header(&n)
                || n == http::header::HOST
                || n == http::header::PROXY_AUTHORIZATION
        }
        // Not a header name at all: building the request refuses it.
        Err(_) => false,
    }
}

/// Longest an outbound request may take.
const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest outbound response body.
const OUTBOUND_MAX_BYTES: usize = 1024 * 1024;

impl Outbound {
    /// An outbound client allowing `allow`; https uses `tls` when given.
    pub fn new(allow: Vec<String>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let build = |c: Connector| Client::builder(TokioExecutor::new()).build(c);
        let connect = Duration::from_secs(2);
        Self {
            allow,
            plain: build(Connector::new(connect, None)),
            tls: tls.map(|cfg| build(Connector::new(connect, Some((cfg, None))))),
            timeout: OUTBOUND_TIMEOUT,
            max_bytes: OUTBOUND_MAX_BYTES,
        }
    }

    /// Whether `uri` is on the allowlist: `host:port` entries match that port, bare `host`
    /// entries only the scheme's default port (80, 443), not every service on the host.
    fn allowed(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let default = crate::upstream::default_port(uri);
        let Some(port) = uri.port_u16().or(default) else {
            return false;
        };
        let with_port = format!("{host}:{port}");
        self.allow.iter().any(|a| {
            (Some(port) == default && a.eq_ignore_ascii_case(host))
                || a.eq_ignore_ascii_case(&with_port)
        })
    }

    /// Performs a GET.
    pub async fn get(
        &self,
        url: &str,
        headers: Vec<types::Header>,
        budget: Option<Duration>,
    ) -> Result<outbound_http::Response, outbound_http::HttpError> {
        use outbound_http::HttpError;
        let uri: http::Uri = url.parse().map_err(|_| HttpError::InvalidUrl)?;
        if !self.allowed(&uri) {
            return Err(HttpError::Denied);
        }
        let client = match uri.scheme_str() {
            Some("http") => &self.plain,
            Some("https") => self.tls.as_ref().ok_or_else(|| {
                HttpError::Failed("https needs outbound_ca in the plugin's configuration".into())
            })?,
            _ => return Err(HttpError::InvalidUrl),
        };
        let mut req = http::Request::get(uri);
        // The request goes to the allowlisted authority under its own name: a policy may
        // not name another virtual host there, nor frame the request itself.
        for h in headers
            .iter()
            .take(32)
            .filter(|h| !is_reserved_outbound_header(&h.name))
        {
            req = req.header(h.name.as_str(), h.value.as_slice());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| HttpError::Failed(e.to_string()))?;
        let fut = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| HttpError::Failed(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge
                    } else {
                        HttpError::Failed(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(outbound_http::Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| types::Header {
                        name: k.as_str().to_string(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                body: body.to_vec(),
            })
        };
        let timeout = budget.map_or(self.timeout, |b| b.min(self.timeout));
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }
}

/// What the host functions of one policy instance reach.
pub struct Capabilities {
    /// Label for logs: `plugin` or `plugin@route`.
    pub plugin: String,
    /// Monotonic clock origin.
    pub epoch: Instant,
    /// The kv store (this plugin's namespace).
    pub kv: Kv,
    /// This instance's rate limiter.
    pub limiter: RateLimiter,
    /// The analytics sink.
    pub analytics: Arc<AnalyticsSink>,
    /// Outbound HTTP.
    pub outbound: Outbound,
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn a_bare_allowlisted_host_means_its_default_port_only() {
        let o = Outbound::new(vec!["idp.test".into(), "jwks.test:8443".into()], None);
        let allowed = |url: &str| o.allowed(&url.parse().unwrap());
        assert!(allowed("https://idp.test/jwks.json"));
        assert!(allowed("https://IDP.test:443/jwks.json"));
        assert!(allowed("http://idp.test/x"));
        assert!(
            !allowed("http://idp.test:6379/"),
            "another service on the host"
        );
        assert!(allowed("https://jwks.test:8443/k"));
        assert!(!allowed("https://jwks.test/k"));
        assert!(!allowed("https://other.test/k"));
    }

    /// A policy's `Host` (and framing headers) are not sent: the request names the
    /// allowlisted authority. A URL without a port reaches the scheme's default one.
    #[tokio::test]
    async fn outbound_requests_name_the_allowlisted_authority_whatever_host_a_policy_sets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(head).unwrap().to_ascii_lowercase()
        });
        let o = Outbound::new(vec![format!("127.0.0.1:{port}")], None);
        let header = |name: &str, value: &str| types::Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        };
        let headers = vec![
            header("Host", "internal-admin.test"),
            header("transfer-encoding", "chunked"),
            header("x-trace", "1"),
        ];
        let r = o
            .get(&format!("http://127.0.0.1:{port}/jwks"), headers, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let head = server.await.unwrap();
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(
            !head.contains("internal-admin") && !head.contains("chunked"),
            "{head}"
        );
        assert!(head.contains("x-trace: 1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_outbound_url_without_a_port_connects_to_the_schemes_default_port() {
        use tower_service::Service as _;
        let mut c = Connector::new(Duration::from_secs(2), None);
        // Whatever answers (or refuses) on port 80, the address itself is accepted.
        let r = c.call("http://127.0.0.1/x".parse().unwrap()).await;
        if let Err(e) = r {
            assert!(
                !matches!(e, crate::upstream::ConnectError::Address(_)),
                "{e}"
            );
        }
    }
}
