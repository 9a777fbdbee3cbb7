//! The request path: route, apply per-route edits, answer locally or forward upstream, and
//! log. One function, [`handle`], is the whole service given to hyper for every listener.

pub mod error;
mod forward;
pub mod headers;
mod pipeline;
mod responders;
pub mod tracked;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub use error::ProxyError;
use tracked::{Guards, LogCtx, Tracked};

use crate::body::BoxBody;
use crate::policy::{Attributes, CallData, RequestView, ResponseView};
use crate::routing::normalize_host;
use crate::snapshot::{Action, RouteRuntime, Snapshot};
use crate::telemetry::{AccessLog, Record, access_log::now_rfc3339};

/// State shared by every connection: the live snapshot and the access log.
pub struct Shared {
    /// The configuration snapshot; replaced atomically on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// The access log.
    pub access_log: AccessLog,
}

/// Facts about the client connection a request arrived on.
pub struct ConnInfo {
    /// Index of the listener in the snapshot.
    pub listener: usize,
    /// The peer's address.
    pub peer: SocketAddr,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// The connection's last-activity stamp (bytes moved either way).
    pub activity: crate::server::Activity,
    /// The listener's idle timeout.
    pub idle_timeout: std::time::Duration,
    /// Keeps the connection counted (its `max_connections` slot, the drain's wait) for as
    /// long as anything holds this: the connection, or a WebSocket tunnel that outlives it.
    pub held: crate::server::Held,
}

/// What the handler learned that the access log reports.
struct Outcome {
    route: Option<Arc<str>>,
    upstream: Option<String>,
    client: std::net::IpAddr,
}

/// Handles one request. Never fails: every error becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    let start = Instant::now();
    let snap = shared.snapshot.load_full();
    let log = (shared.access_log.enabled() && snap.config.access_log.enabled).then(|| {
        let l = &snap.listeners[conn.listener];
        Box::new(LogCtx {
            log: shared.access_log.clone(),
            record: Record {
                time: now_rfc3339(),
                listener: l.name.clone(),
                route: None,
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                version: version_str(req.version()),
                status: 0,
                bytes: 0,
                duration_us: 0,
                upstream: None,
                client: conn.peer.ip().to_string(),
            },
            start,
        })
    });
    let mut outcome = Outcome {
        route: None,
        upstream: None,
        client: conn.peer.ip(),
    };
    let (resp, guards) = match route_and_serve(&snap, &conn, req, &mut outcome).await {
        Ok(r) => r,
        Err(e) => (
            error_response(&e, outcome.route.as_deref()),
            Guards::default(),
        ),
    };
    let (parts, body) = resp.into_parts();
    let log = log.map(|mut l| {
        l.record.status = parts.status.as_u16();
        l.record.route = outcome.route;
        l.record.upstream = outcome.upstream;
        l.record.client = outcome.client.to_string();
        l
    });
    let limits = &snap.config.limits;
    let min_read_rate =
        crate::body::MinRate::new(limits.min_response_rate, limits.rate_grace.get());
    Ok(Response::from_parts(
        parts,
        Tracked::new(body, guards, log, min_read_rate),
    ))
}

/// Replaces `uri`'s path (keeping its query).
fn set_path(uri: &mut http::Uri, path: String) -> Result<(), ProxyError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| ProxyError::BadRequest("the request path cannot be normalised"))?,
    );
    *uri = http::Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("the request path cannot be normalised"))?;
    Ok(())
}

/// The gateway's own answer to `e`; the connection is closed after a request it could not
/// read, or would not read to its end (413, 503 `buffers_full`: what follows on the
/// connection is the rest of a body nobody will read).
fn error_response(e: &ProxyError, route: Option<&str>) -> Response<BoxBody> {
    if e.status().is_server_error() {
        tracing::debug!(error = %e, route = ?route, "request failed");
    }
    let mut r = e.to_response(route);
    if matches!(
        e,
        ProxyError::BadRequest(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BuffersFull
            | ProxyError::NotImplemented(_)
            | ProxyError::BodyTooSlow(_)
            | ProxyError::BodyTimeout { .. }
    ) {
        close_after(&mut r);
    }
    r
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/3",
    }
}

async fn route_and_serve(
    snap: &Snapshot,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    outcome: &mut Outcome,
) -> Result<(Response<BoxBody>, Guards), ProxyError> {
    check_framing(&req)?;
    check_host(&req)?;
    let mut req = req;
    if !headers::is_trusted(conn.peer.ip(), &snap.trusted_proxies) {
        headers::strip_spoofable(req.headers_mut());
    }
    if let Some(path) =
        crate::routing::path::normalize(req.uri().path(), snap.config.gateway.merge_slashes)
    {
        set_path(req.uri_mut(), path)?;
    }
    let host_raw = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let host = normalize_host(host_raw.as_deref().unwrap_or(""));
    let listener = &snap.listeners[conn.listener];
    let found = listener.router.find(
        &host,
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    );
    let Some((route, params)) = found else {
        return Err(ProxyError::NoRoute {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        });
    };
    let route: Arc<RouteRuntime> = route.clone();
    outcome.route = Some(route.name.clone());
    if let Some(len) = content_length(&req)
        && len > route.max_body_bytes
    {
        return Err(ProxyError::BodyTooLarge {
            limit: route.max_body_bytes,
        });
    }
    let req = req.map(|b| {
        let empty = b.is_end_stream();
        let b = b
            .map_err(|e| -> crate::body::BoxError { Box::new(e) })
            .boxed_unsync();
        match route.min_body_rate {
            Some(min) if !empty => crate::body::min_rate(b, min),
            _ => b,
        }
    });
    if route.pipeline.is_empty() {
        let (mut resp, guards) =
            serve_target(snap, conn, &route, params, host_raw, req, outcome).await?;
        route.response_headers.apply(resp.headers_mut());
        return Ok((resp, guards));
    }
    let client = headers::client_ip(conn.peer.ip(), req.headers(), &snap.trusted_proxies);
    // Method, path, query and headers are moved in by the request phase.
    let mut data = CallData {
        req: RequestView {
            method: Method::GET,
            scheme: conn.scheme,
            authority: host_raw.clone().unwrap_or_default(),
            path: String::new(),
            query: None,
            headers: HeaderMap::new(),
            client_ip: client,
            route: route.name.clone(),
        },
        resp: ResponseView::default(),
        attrs: Attributes::default(),
    };
    let steps = &route.pipeline;
    let whole = WholeBody::of(snap, &route);
    let (decided, ran) = pipeline::request_phase(steps, req, &mut data, whole).await;
    let served = match decided {
        Ok(pipeline::Outcome::Respond(resp)) => Ok((resp, Guards::default())),
        Ok(pipeline::Outcome::Forward(req)) => {
            serve_target(snap, conn, &route, params, host_raw, req, outcome).await
        }
        Err(e) => Err(e),
    };
    // Errors get the response phases too (analytics counts them, CORS and rate-limit
    // headers stay on them).
    let (resp, guards) =
        served.unwrap_or_else(|e| (error_response(&e, Some(&route.name)), Guards::default()));
    let mut resp = pipeline::response_phase(steps, &ran, resp, &mut data).await?;
    route.response_headers.apply(resp.headers_mut());
    Ok((resp, guards))
}

/// Serves a request with the route's target (responder or upstream).
async fn serve_target(
    snap: &Snapshot,
    conn: &Arc<ConnInfo>,
    route: &Arc<RouteRuntime>,
    params: crate::routing::Params,
    host_raw: Option<String>,
    req: Request<BoxBody>,
    outcome: &mut Outcome,
) -> Result<(Response<BoxBody>, Guards), ProxyError> {
    Ok(match &route.action {
        Action::Echo => (
            responders::echo(req, conn, route, outcome.client, WholeBody::of(snap, route)).await?,
            Guards::default(),
        ),
        Action::Analytics => (responders::analytics(&snap.policy_env), Guards::default()),
        Action::Static {
            status,
            headers,
            body,
        } => (
            responders::fixed(*status, headers, body.clone()),
            Guards::default(),
        ),
        Action::Proxy(group) => {
            let ctx = forward::Ctx {
                snap,
                conn,
                route,
                group: group.clone(),
                params,
                host: host_raw,
            };
            forward::forward(ctx, req, outcome).await?
        }
    })
}

/// Rejects framing that hyper tolerates but a proxy must not forward.
///
/// Transfer-Encoding in an HTTP/1.0 request is refused with 400. Any Transfer-Encoding other
/// than a single field whose value is exactly `chunked` is refused with 501 (RFC 9112 §6.1):
/// hyper reads `gzip, chunked`, `chunked, chunked` or `,chunked` as plain `chunked`, while
/// other parsers on the path may not, and a disagreement about framing is request smuggling.
fn check_framing(req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.version() == Version::HTTP_10 && req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        ));
    }
    let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next()
        && (te.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked"))
    {
        return Err(ProxyError::NotImplemented(
            "Transfer-Encoding other than `chunked` is not supported",
        ));
    }
    Ok(())
}

/// Refuses a request whose host is ambiguous, so that the host it is routed by is the host
/// it is forwarded with: more than one `Host`, an invalid one, or none in HTTP/1.1 (RFC
/// 9112 §3.2), or a target with userinfo (RFC 9110 §4.2.4; `x@admin.example.com` would be
/// routed by `*.example.com`).
fn check_host(req: &Request<Incoming>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (None, _) if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("the Host header is missing"));
        }
        (Some(h), _) if !is_valid_host(h.as_bytes()) => {
            return Err(ProxyError::BadRequest(
                "the Host header is not a valid host",
            ));
        }
        _ => {}
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| !is_valid_host(a.as_str().as_bytes()))
    {
        return Err(ProxyError::BadRequest(
            "the request target's authority is not a valid host",
        ));
    }
    Ok(())
}

/// Whether `v` is `uri-host [ ":" port ]` (RFC 9110 §7.2; RFC 3986 §3.2.2), or empty (a
/// target without an authority): a registered name or IPv4 address, or an IPv6 literal in
/// brackets, then digits after a colon. No userinfo, no second colon, nothing else.
fn is_valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return false;
            }
            match &rest[end + 1..] {
                [] => return true,
                [b':', port @ ..] => (&b""[..], port),
                _ => return false,
            }
        }
        None => match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &b""[..]),
        },
    };
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A whole request body and its share of the gateway's body buffers (given back when
/// dropped; see [`Held::body`]).
pub(crate) struct Held {
    /// The body.
    pub(crate) bytes: bytes::Bytes,
    share: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Held {
    /// The body to send on, holding the share until it is sent or dropped.
    pub(crate) fn body(self) -> BoxBody {
        let share = self.share;
        crate::body::full(self.bytes)
            .map_frame(move |f| {
                let _ = &share;
                f
            })
            .boxed_unsync()
    }
}

/// How a route reads a request body whole: at most `limit` bytes, within `within` of the
/// first read (408 after), each byte taken from the gateway's `buffers` as it arrives (503
/// when they cannot hold it).
#[derive(Clone, Copy)]
pub(crate) struct WholeBody<'a> {
    limit: u64,
    within: Duration,
    buffers: &'a Arc<tokio::sync::Semaphore>,
}

impl<'a> WholeBody<'a> {
    /// The way `route` reads bodies whole in `snap`: within its head timeout.
    fn of(snap: &'a Snapshot, route: &RouteRuntime) -> Self {
        Self {
            limit: route.max_body_bytes,
            within: route.head_timeout(),
            buffers: &snap.body_buffers,
        }
    }

    /// Reads `body` whole.
    pub(crate) async fn read(self, body: BoxBody) -> Result<Held, ProxyError> {
        let ms = self.within.as_millis();
        tokio::time::timeout(self.within, self.collect(body))
            .await
            .unwrap_or(Err(ProxyError::BodyTimeout { ms }))
    }

    async fn collect(self, body: BoxBody) -> Result<Held, ProxyError> {
        let limit = self.limit;
        let mut body = crate::body::limited(body, limit);
        let mut chunks: Vec<bytes::Bytes> = Vec::new();
        let mut total = 0usize;
        let mut share: Option<tokio::sync::OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| client_body_error(&*e, limit))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let more = u32::try_from(data.len())
                .ok()
                .and_then(|n| self.buffers.clone().try_acquire_many_owned(n).ok())
                .ok_or(ProxyError::BuffersFull)?;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
            total += data.len();
            chunks.push(data);
        }
        // One piece is the body as it came; several are joined once, at their exact size.
        let bytes = match chunks.len() {
            0 => bytes::Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => {
                let mut joined = bytes::BytesMut::with_capacity(total);
                for c in &chunks {
                    joined.extend_from_slice(c);
                }
                joined.freeze()
            }
        };
        Ok(Held { bytes, share })
    }
}

/// The answer to a request body that failed: 413 beyond `limit`, 408 when it arrived too
/// slowly, 400 otherwise.
pub(crate) fn client_body_error(e: &(dyn std::error::Error + 'static), limit: u64) -> ProxyError {
    if e.is::<http_body_util::LengthLimitError>() {
        return ProxyError::BodyTooLarge { limit };
    }
    match crate::body::too_slow(e) {
        Some(t) => ProxyError::BodyTooSlow(*t),
        None => ProxyError::BadRequest("the request body could not be read"),
    }
}

/// Marks a response so that hyper closes the HTTP/1 connection after it.
pub fn close_after(resp: &mut Response<BoxBody>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

#[cfg(test)]
mod tests {
    use super::is_valid_host;

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        for ok in [
            "",
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "a-b_c~d",
            "host:",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "x@admin.example.com",
            "user:pw@example.com",
            "example.com:80:80",
            "example.com:http",
            "example.com:123456",
            "ex ample.com",
            "example.com/path",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8o",
            "[v1.fe@x]",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }
}
