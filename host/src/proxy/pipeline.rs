//! Running a route's policy pipeline around the route's target.
//!
//! Request phases run in pipeline order; edits are applied between policies (a later
//! policy sees earlier edits). A `respond` decision short-circuits the target. Response
//! phases run in reverse order over every policy whose request phase ran, including for
//! local responses. A failing policy either fails the request (`closed`) with a JSON body
//! naming it, or is skipped and counted (`open`).

use std::sync::atomic::Ordering;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};

use super::{Held, ProxyError, WholeBody};
use crate::body::{self, BoxBody};
use crate::config::FailureMode;
use crate::policy::wit::{Header, LocalResponse, RequestDecision, RequestEdits, ResponseDecision};
use crate::policy::{CallData, PolicyError, RequestView, ResponseView};
use crate::snapshot::pipeline::Step;

/// Largest header value a policy may set (the SDK's `decision::MAX_HEADER_VALUE_BYTES`).
const MAX_EDIT_HEADER_BYTES: usize = 16 * 1024;
/// Most headers a policy may set in one decision (the SDK's `decision::MAX_HEADER_EDITS`).
const MAX_EDIT_HEADERS: usize = 64;
/// Largest local response body a policy may produce (the SDK's
/// `decision::MAX_LOCAL_BODY_BYTES`).
const MAX_LOCAL_BODY: usize = 1024 * 1024;

/// What the request phase decided.
pub(super) enum Outcome {
    /// Continue to the target with this (possibly edited) request.
    Forward(Request<BoxBody>),
    /// Answer with this response.
    Respond(Response<BoxBody>),
}

fn header_pair(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), PolicyError> {
    if value.len() > MAX_EDIT_HEADER_BYTES {
        return Err(PolicyError::BadDecision(format!(
            "header {name:?} value over {MAX_EDIT_HEADER_BYTES} bytes"
        )));
    }
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PolicyError::BadDecision(format!("invalid header name {name:?}")))?;
    if super::headers::is_gateway_header(&n) {
        return Err(PolicyError::BadDecision(format!(
            "header {name:?} is the gateway's to set (it frames the message or the connection)"
        )));
    }
    let v = HeaderValue::from_bytes(value)
        .map_err(|_| PolicyError::BadDecision(format!("invalid value for header {name:?}")))?;
    Ok((n, v))
}

fn apply_headers(
    headers: &mut HeaderMap,
    remove: &[String],
    set: &[Header],
    append: &[Header],
) -> Result<(), PolicyError> {
    if set.len() + append.len() > MAX_EDIT_HEADERS {
        return Err(PolicyError::BadDecision(format!(
            "more than {MAX_EDIT_HEADERS} header edits"
        )));
    }
    // Every pair is checked before any edit is made: a refused decision changes nothing.
    let pairs = set
        .iter()
        .chain(append)
        .map(|h| header_pair(&h.name, &h.value))
        .collect::<Result<Vec<_>, _>>()?;
    for r in remove {
        if let Ok(n) = HeaderName::from_bytes(r.as_bytes()) {
            headers.remove(n);
        }
    }
    let mut pairs = pairs.into_iter();
    for (n, v) in pairs.by_ref().take(set.len()) {
        headers.insert(n, v);
    }
    for (n, v) in pairs {
        headers.append(n, v);
    }
    Ok(())
}

/// Applies a policy's request edits, all or none.
fn apply_request_edits(view: &mut RequestView, e: &RequestEdits) -> Result<(), PolicyError> {
    if let Some(p) = &e.path
        && (!p.starts_with('/') || p.parse::<PathAndQuery>().is_err() || p.contains('?'))
    {
        return Err(PolicyError::BadDecision(format!("invalid path {p:?}")));
    }
    if let Some(q) = &e.query
        && format!("/?{q}").parse::<PathAndQuery>().is_err()
    {
        return Err(PolicyError::BadDecision(format!("invalid query {q:?}")));
    }
    apply_headers(
        &mut view.headers,
        &e.remove_headers,
        &e.set_headers,
        &e.append_headers,
    )?;
    if let Some(p) = &e.path {
        view.path = p.clone();
    }
    if let Some(q) = &e.query {
        view.query = (!q.is_empty()).then(|| q.clone());
    }
    Ok(())
}

fn local_response(r: LocalResponse) -> Result<Response<BoxBody>, PolicyError> {
    let status = StatusCode::from_u16(r.status)
        .map_err(|_| PolicyError::BadDecision(format!("invalid status {}", r.status)))?;
    if r.body.len() > MAX_LOCAL_BODY {
        return Err(PolicyError::BadDecision(format!(
            "local response body over {MAX_LOCAL_BODY} bytes"
        )));
    }
    let mut resp = Response::new(body::full(r.body));
    *resp.status_mut() = status;
    apply_headers(resp.headers_mut(), &[], &[], &r.headers)?;
    Ok(resp)
}

/// The error response of a policy failing closed.
fn failure(step: &Step, e: &PolicyError) -> ProxyError {
    ProxyError::PolicyFailed {
        policy: step.policy.label.clone(),
        status: step.failure_status,
        cause: e.to_string(),
    }
}

/// Runs request phases. `data` holds the request view and attributes for response phases.
/// Also returns the steps whose request phase ran, which get response phases whatever the
/// outcome (a local answer, the target's response, or an error response).
pub(super) async fn request_phase(
    steps: &[Step],
    req: Request<BoxBody>,
    data: &mut CallData,
    whole: WholeBody<'_>,
) -> (Result<Outcome, ProxyError>, Vec<usize>) {
    let mut ran = Vec::with_capacity(steps.len());
    let outcome = run_request_phases(steps, req, data, whole, &mut ran).await;
    (outcome, ran)
}

async fn run_request_phases(
    steps: &[Step],
    req: Request<BoxBody>,
    data: &mut CallData,
    whole: WholeBody<'_>,
    ran: &mut Vec<usize>,
) -> Result<Outcome, ProxyError> {
    let (mut parts, mut body) = req.into_parts();
    data.req.method = parts.method.clone();
    data.req.path = parts.uri.path().to_string();
    data.req.query = parts.uri.query().map(str::to_string);
    data.req.headers = std::mem::take(&mut parts.headers);
    let mut buffered: Option<Held> = None;
    for (i, step) in steps.iter().enumerate() {
        if let Some(c) = &step.when
            && !c.holds(&data.req.method, &data.req.path, &data.req.headers)
        {
            continue;
        }
        let mut decision = step.policy.on_request(data).await;
        // The request as it was before a body policy's request-phase edits, restored if the
        // policy then fails in any way (it is skipped whole when open).
        let mut before = None;
        if step.policy.wants_body()
            && matches!(
                decision,
                Ok(RequestDecision::Continue | RequestDecision::Edit(_))
            )
        {
            let held = match buffered.take() {
                Some(b) => b,
                None => {
                    let incoming = std::mem::replace(&mut body, body::empty());
                    whole.read(incoming).await?
                }
            };
            // The body phase sees the request phase's edits.
            before = matches!(decision, Ok(RequestDecision::Edit(_))).then(|| data.req.clone());
            if let Ok(RequestDecision::Edit(e)) = &decision
                && let Err(err) = apply_request_edits(&mut data.req, e)
            {
                decision = Err(err);
            } else {
                decision = step.policy.on_request_body(data, held.bytes.to_vec()).await;
            }
            buffered = Some(held);
        }
        let applied = match decision {
            Ok(RequestDecision::Continue) => Ok(None),
            Ok(RequestDecision::Edit(e)) => apply_request_edits(&mut data.req, &e).map(|_| None),
            Ok(RequestDecision::Respond(r)) => local_response(r).map(Some),
            Err(e) => Err(e),
        };
        match applied {
            Ok(None) => ran.push(i),
            Ok(Some(resp)) => {
                ran.push(i);
                return Ok(Outcome::Respond(resp));
            }
            Err(e) => {
                step.policy.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(policy = %step.policy.label, error = %e, "policy failed");
                if let Some(before) = before {
                    data.req = before;
                }
                match step.on_failure {
                    FailureMode::Closed => return Err(failure(step, &e)),
                    FailureMode::Open => {
                        step.policy.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    // Rebuild the request from the (edited) view: the URI only if a policy changed the path
    // or query; the headers are moved unless a response phase will read them.
    if data.req.path != parts.uri.path() || data.req.query.as_deref() != parts.uri.query() {
        let pq = match &data.req.query {
            Some(q) => format!("{}?{q}", data.req.path),
            None => data.req.path.clone(),
        };
        let mut uri = parts.uri.into_parts();
        uri.path_and_query = Some(
            pq.parse()
                .map_err(|_| ProxyError::BadRequest("a policy produced an invalid path"))?,
        );
        parts.uri = Uri::from_parts(uri)
            .map_err(|_| ProxyError::BadRequest("a policy produced an invalid URI"))?;
    }
    parts.headers = if ran.iter().any(|&i| steps[i].policy.has_response_phase()) {
        data.req.headers.clone()
    } else {
        std::mem::take(&mut data.req.headers)
    };
    if let Some(b) = buffered {
        // A buffered body is sent with a length; a request that had no body stays bodiless.
        let had_body = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
            || parts.headers.contains_key(http::header::CONTENT_LENGTH)
            || !b.bytes.is_empty();
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        if had_body {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(b.bytes.len()),
            );
        }
        body = b.body();
    }
    Ok(Outcome::Forward(Request::from_parts(parts, body)))
}

/// Runs response phases in reverse order over `ran`.
pub(super) async fn response_phase(
    steps: &[Step],
    ran: &[usize],
    resp: Response<BoxBody>,
    data: &mut CallData,
) -> Result<Response<BoxBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    data.resp = ResponseView {
        status: parts.status.as_u16(),
        headers: std::mem::take(&mut parts.headers),
    };
    for &i in ran.iter().rev() {
        let step = &steps[i];
        let applied = match step.policy.on_response(data).await {
            Ok(ResponseDecision::Continue) => Ok(()),
            Ok(ResponseDecision::Edit(e)) => apply_headers(
                &mut data.resp.headers,
                &e.remove_headers,
                &e.set_headers,
                &e.append_headers,
            ),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            step.policy.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(policy = %step.policy.label, error = %e, "policy failed in response phase");
            match step.on_failure {
                FailureMode::Closed => return Err(failure(step, &e)),
                FailureMode::Open => {
                    step.policy.stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    parts.headers = std::mem::take(&mut data.resp.headers);
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &[u8]) -> Header {
        Header {
            name: name.into(),
            value: value.to_vec(),
        }
    }

    fn edits() -> RequestEdits {
        RequestEdits {
            remove_headers: vec!["x-gone".into()],
            set_headers: vec![header("x-set", b"1")],
            append_headers: vec![header("x-added", b"2")],
            path: None,
            query: None,
        }
    }

    fn view() -> RequestView {
        let mut v = RequestView {
            path: "/a".into(),
            ..Default::default()
        };
        v.headers.insert("x-gone", HeaderValue::from_static("here"));
        v
    }

    #[test]
    fn request_edits_apply_whole() {
        let mut v = view();
        let e = RequestEdits {
            path: Some("/b".into()),
            query: Some("q=1".into()),
            ..edits()
        };
        apply_request_edits(&mut v, &e).unwrap();
        assert_eq!((v.path.as_str(), v.query.as_deref()), ("/b", Some("q=1")));
        assert!(!v.headers.contains_key("x-gone"));
        assert_eq!(v.headers["x-set"], "1");
        assert_eq!(v.headers["x-added"], "2");
    }

    #[test]
    fn a_refused_decision_changes_nothing() {
        let refused = [
            RequestEdits {
                path: Some("no-slash".into()),
                ..edits()
            },
            RequestEdits {
                query: Some("a b".into()),
                ..edits()
            },
            RequestEdits {
                append_headers: vec![header("x-ok", b"1"), header("bad name", b"2")],
                ..edits()
            },
            RequestEdits {
                set_headers: vec![header("x-ok", b"1"), header("x-bad", b"a\nb")],
                ..edits()
            },
            RequestEdits {
                set_headers: vec![header("x-huge", &[b'a'; MAX_EDIT_HEADER_BYTES + 1])],
                ..edits()
            },
            RequestEdits {
                append_headers: vec![header("x-many", b"1"); MAX_EDIT_HEADERS],
                ..edits()
            },
        ];
        for e in refused {
            let mut v = view();
            assert!(apply_request_edits(&mut v, &e).is_err(), "{e:?}");
            assert_eq!(v.path, "/a");
            assert_eq!(v.headers.len(), 1, "{e:?} left {:?}", v.headers);
            assert_eq!(v.headers["x-gone"], "here");
        }
    }
}
