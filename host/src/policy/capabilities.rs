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

    fn allowed(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let with_port = format!("{host}:{port}");
        self.allow
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&with_port))
    }

    /// Performs a GET.
    pub async fn get(
        &self,
        url: &str,
        headers: Vec<types::Header>,
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
        for h in headers.iter().take(32) {
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
        tokio::time::timeout(self.timeout, fut)
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
