//! Forwarding to an upstream group: path rewriting, header hygiene, target choice, the
//! circuit breaker, safe retries, timeouts and the mapping of failures to 502/503/504.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use super::headers::{set_forwarded, strip_hop_by_hop};
use super::tracked::{Guards, InFlight};
use super::{ConnInfo, Outcome, ProxyError, upgrade};
use crate::body::{self, BoxBody};
use crate::config::HashOn;
use crate::routing::Params;
use crate::snapshot::{RouteRuntime, Snapshot};
use crate::upstream::{ConnectError, Refused, UpstreamGroup};

/// Everything `forward` needs besides the request.
pub(super) struct Ctx<'a> {
    pub(super) snap: &'a Snapshot,
    pub(super) conn: &'a Arc<ConnInfo>,
    pub(super) route: &'a Arc<RouteRuntime>,
    pub(super) group: Arc<UpstreamGroup>,
    pub(super) params: Params,
    pub(super) host: Option<String>,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn rewrite(ctx: &Ctx<'_>, uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    let path = uri.path();
    let new_path = if let Some(prefix) = &ctx.route.strip_prefix {
        strip_segments(path, prefix)
    } else if let Some(template) = &ctx.route.rewrite_path {
        let mut p = template.clone();
        for (name, value) in &ctx.params {
            p = p.replace(&format!("{{{name}}}"), value);
        }
        p
    } else {
        return Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")));
    };
    let pq = match uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    pq.parse()
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI path"))
}

/// `path` without `prefix` when the prefix ends at a segment boundary (`/svc` is stripped
/// from `/svc` and `/svc/x`, not from `/svcadmin/x`, which would become `/admin/x`: another
/// route's path, reached without that route's policies); `path` itself otherwise.
fn strip_segments(path: &str, prefix: &str) -> String {
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        Some(rest) if rest.is_empty() || prefix.ends_with('/') => format!("/{rest}"),
        _ => path.to_string(),
    }
}

fn hash_key(on: &HashOn, headers: &HeaderMap, client: std::net::IpAddr) -> Option<Vec<u8>> {
    match on {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashOn::ClientIp(_) => Some(client.to_string().into_bytes()),
    }
}

/// Ends a request's [`LaterWait`](crate::server::LaterWait) when dropped.
struct EndsWait(Arc<crate::server::LaterWait>);

impl Drop for EndsWait {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The first failure of a request body being forwarded.
#[derive(Default)]
struct BodyFailed(std::sync::Mutex<Option<ProxyError>>);

impl BodyFailed {
    fn record(&self, e: ProxyError) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn take(this: &Option<Arc<Self>>) -> Option<ProxyError> {
        this.as_ref()?
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

fn classify(
    group: &UpstreamGroup,
    target: &str,
    e: &hyper_util::client::legacy::Error,
) -> ProxyError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut last = None;
    while let Some(s) = src {
        if let Some(ce) = s.downcast_ref::<ConnectError>() {
            return match ce {
                ConnectError::Timeout(_) => ProxyError::ConnectTimeout {
                    upstream: group.name.clone(),
                    target: target.to_string(),
                },
                other => ProxyError::ConnectFailed {
                    upstream: group.name.clone(),
                    target: target.to_string(),
                    cause: other.to_string(),
                },
            };
        }
        last = Some(s);
        src = s.source();
    }
    let cause = last.map_or_else(|| e.to_string(), |s| s.to_string());
    if e.is_connect() {
        ProxyError::ConnectFailed {
            upstream: group.name.clone(),
            target: target.to_string(),
            cause,
        }
    } else {
        ProxyError::UpstreamFailed {
            upstream: group.name.clone(),
            target: target.to_string(),
            cause,
        }
    }
}

/// Sends the request upstream and returns the response with its guards.
pub(super) async fn forward(
    ctx: Ctx<'_>,
    mut req: Request<BoxBody>,
    outcome: &mut Outcome,
) -> Result<(Response<BoxBody>, Guards), ProxyError> {
    let group = ctx.group.clone();
    let timeout: Duration = ctx.route.head_timeout();
    let deadline = Instant::now() + timeout;
    let is_upgrade = ctx.route.websocket && upgrade::is_websocket(&req);
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let pq = rewrite(&ctx, &parts.uri)?;
    let method = parts.method;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, is_upgrade);
    let client = set_forwarded(
        &mut headers,
        ctx.conn.peer.ip(),
        ctx.conn.scheme,
        ctx.host.as_deref(),
        &ctx.snap.trusted_proxies,
    );
    outcome.client = client;
    if group.http2 {
        // HTTP/2 carries the authority in `:authority`, which hyper takes from the target
        // URI; a differing `Host` is forbidden (RFC 9113 §8.3.1). The client's host stays
        // available in X-Forwarded-Host.
        headers.remove(header::HOST);
    } else {
        // One `Cookie` field for an HTTP/1.1 message (an HTTP/2 client sends several).
        super::headers::join_cookies(&mut headers);
        if let Some(routed) = ctx.host.as_deref() {
            // The host the request was routed by: an absolute-form target's (or HTTP/2's
            // `:authority`) wins over a differing `Host`, which is replaced (RFC 9112
            // §3.2.2), so that the upstream never sees a host other than the one the route
            // matched. With an origin-form target the routed host is the `Host` itself, and
            // a policy's edit of it stands.
            let replace = match headers.get(header::HOST) {
                None => true,
                Some(h) => parts.uri.authority().is_some() && h.as_bytes() != routed.as_bytes(),
            };
            if replace && let Ok(h) = routed.parse() {
                headers.insert(header::HOST, h);
            }
        }
    }
    ctx.route.request_headers.apply(&mut headers);
    let key = group
        .hash_on
        .as_ref()
        .and_then(|on| hash_key(on, &headers, client));

    let permit = match group.breaker.try_admit() {
        Some(p) => p,
        None => {
            // Queued behind the breaker, the request waits on the gateway, not on its
            // client: the idle timeout stands down (the wait has its own bound).
            let _waiting = ctx.conn.activity.waiting();
            group.breaker.admit(timeout).await.map_err(|r| match r {
                Refused::Open | Refused::Timeout => ProxyError::CircuitOpen(group.name.clone()),
            })?
        }
    };

    let replayable = incoming.is_end_stream();
    // Where the body's upload stands (bodiless requests, most of them, skip the watch), and
    // its wait on the upstream from the body's end to the response head (ended on every way
    // out of here, cancellation included).
    let (incoming, upload, later_wait) = if replayable {
        (incoming, None, None)
    } else {
        let later = ctx.conn.activity.wait_later();
        let begins = later.clone();
        let (b, upload) = body::watch_upload(incoming, move || begins.begin());
        (b, Some(upload), Some(EndsWait(later)))
    };
    // A body that fails on its way (over the limit, too slow, malformed, the client gone)
    // is the client's failure, not the target's: the failure is recorded here as the body
    // ends with it, because the exchange's own error does not always carry it (hyper's
    // HTTP/2 client only resets the stream).
    let body_failed: Option<Arc<BodyFailed>> = upload.is_some().then(Arc::default);
    let mut body = Some({
        let limit = ctx.route.max_body_bytes;
        let record = body_failed.clone();
        body::limited(incoming, limit)
            .map_err(move |e| {
                if let Some(slot) = &record {
                    slot.record(super::client_body_error(&*e, limit));
                }
                e
            })
            .boxed_unsync()
    });
    let version = if group.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    group.retry_budget.deposit();
    let can_retry = replayable && group.retry_attempts > 0;
    let mut tried = None;
    let mut attempt = 0;
    loop {
        let idx = group
            .pick(key.as_deref(), tried)
            .ok_or_else(|| ProxyError::NoHealthyTarget(group.name.clone()))?;
        let target = &group.targets[idx];
        let uri = Uri::builder()
            .scheme(group.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(pq.clone())
            .build()
            .map_err(|_| ProxyError::BadRequest("cannot build the upstream URI"))?;
        let mut up = Request::new(body.take().unwrap_or_else(body::empty));
        *up.method_mut() = method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = version;
        *up.headers_mut() = if can_retry {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        let in_flight = InFlight::enter(group.clone(), idx);
        // A bodiless request waits on the upstream alone: until the head arrives the route's
        // deadline governs, not the connection's idle timeout. (A request with a body may
        // be waiting on its client, which the idle timeout is for.)
        let waiting = replayable.then(|| ctx.conn.activity.waiting());
        let result = tokio::time::timeout_at(deadline, group.client.request(up)).await;
        drop(waiting);
        if let Some(EndsWait(later)) = &later_wait {
            later.end();
        }
        if let Some(failed) = BodyFailed::take(&body_failed) {
            return Err(failed);
        }
        match result {
            Err(_) => {
                // Waiting for the client to send more of its body, the client is late, not
                // the target (a slow upload must not get healthy targets ejected).
                if upload.as_ref().is_some_and(|u| u.waiting_on_client()) {
                    return Err(ProxyError::BodyTimeout {
                        ms: timeout.as_millis(),
                    });
                }
                group.report(idx, false);
                return Err(ProxyError::Timeout {
                    upstream: group.name.clone(),
                    target: target.address.clone(),
                    ms: timeout.as_millis(),
                });
            }
            Ok(Ok(mut resp)) => {
                let status = resp.status();
                group.report(idx, !matches!(status.as_u16(), 502..=504));
                outcome.upstream = Some(target.address.clone());
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let upstream_side = hyper::upgrade::on(&mut resp);
                        // The tunnel keeps the target's in-flight count (least-request balancing
                        // sees it) but not a breaker slot: the breaker bounds requests, and
                        // long-lived sockets would starve the upstream's other requests.
                        drop(permit);
                        let guards = Guards {
                            permit: None,
                            in_flight: Some(in_flight),
                        };
                        upgrade::tunnel(client_side, upstream_side, ctx.conn.clone(), guards);
                        let (parts, _) = resp.into_parts();
                        return Ok((
                            Response::from_parts(parts, body::empty()),
                            Guards::default(),
                        ));
                    }
                    return Err(ProxyError::UpstreamFailed {
                        upstream: group.name.clone(),
                        target: target.address.clone(),
                        cause: "101 Switching Protocols to a request that did not upgrade".into(),
                    });
                }
                let (mut parts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, false);
                let guards = Guards {
                    permit: Some(permit),
                    in_flight: Some(in_flight),
                };
                return Ok((
                    Response::from_parts(parts, rbody.map_err(Into::into).boxed_unsync()),
                    guards,
                ));
            }
            Ok(Err(e)) => {
                group.report(idx, false);
                let err = classify(&group, &target.address, &e);
                let safe = e.is_connect() || is_idempotent(&method);
                let retry = can_retry
                    && attempt < group.retry_attempts
                    && safe
                    && group.retry_budget.withdraw();
                if !retry {
                    return Err(err);
                }
                tracing::debug!(error = %err, attempt, "retrying upstream request");
                attempt += 1;
                tried = Some(idx);
            }
        }
    }
}
