//! Compiling one route of the configuration: its match (host, path, method, conditions),
//! its header edits and its action.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::{Action, RouteRuntime, value_cond};
use crate::config::{self, Issue, KeyPath, Responder};
use crate::proxy::headers::HeaderEdits;
use crate::routing::{Conditions, PathMatch, RouteMatch, anchored};
use crate::upstream::UpstreamGroup;

/// The route's match (host, path, method, conditions), or `None` with the problems in
/// `issues`.
pub(super) fn compile_match(
    r: &config::Route,
    at: &KeyPath,
    issues: &mut Vec<Issue>,
) -> Option<RouteMatch> {
    let given = [
        r.path.is_some(),
        r.path_prefix.is_some(),
        r.path_regex.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        issues.push(Issue::new(
            at.clone(),
            "set only one of path, path_prefix, path_regex",
        ));
        return None;
    }
    let path = if let Some(p) = &r.path {
        PathMatch::from_path(p)
            .map_err(|e| issues.push(Issue::new(at.key("path"), e)))
            .ok()?
    } else if let Some(p) = &r.path_prefix {
        if !p.starts_with('/') {
            issues.push(Issue::new(at.key("path_prefix"), "must start with '/'"));
        }
        PathMatch::Prefix(p.clone())
    } else if let Some(re) = &r.path_regex {
        PathMatch::Regex(
            anchored(re)
                .map_err(|e| issues.push(Issue::new(at.key("path_regex"), e)))
                .ok()?,
        )
    } else {
        PathMatch::Prefix(String::new())
    };
    let mut hosts = Vec::new();
    for (i, h) in r.hosts.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        let bare = h.strip_prefix("*.").unwrap_or(&h);
        if bare.is_empty() || bare.contains(['*', '/', ':', ' ']) {
            issues.push(Issue::new(
                at.key("hosts").index(i),
                format!("invalid host pattern {h:?}"),
            ));
        }
        hosts.push(h);
    }
    let mut conditions = Conditions::default();
    for (i, m) in r.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => conditions.methods.push(m),
            Err(_) => issues.push(Issue::new(
                at.key("methods").index(i),
                format!("invalid method {m:?}"),
            )),
        }
    }
    for (i, h) in r.headers.iter().enumerate() {
        let hat = at.key("headers").index(i);
        match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => conditions.headers.push((n, value_cond(h, &hat, issues))),
            Err(_) => issues.push(Issue::new(
                hat.key("name"),
                format!("invalid header name {:?}", h.name),
            )),
        }
    }
    for (i, q) in r.query.iter().enumerate() {
        let qat = at.key("query").index(i);
        conditions
            .query
            .push((q.name.clone(), value_cond(q, &qat, issues)));
    }
    Some(RouteMatch {
        hosts,
        path,
        conditions,
    })
}

/// Header edits, each checked (names, values, and none of the headers the gateway frames
/// with).
fn compile_edits(e: &config::HeaderEdits, at: &KeyPath, issues: &mut Vec<Issue>) -> HeaderEdits {
    let mut out = HeaderEdits::default();
    let pair = |k: &str, v: &str, at: KeyPath, issues: &mut Vec<Issue>| match (
        HeaderName::from_bytes(k.as_bytes()),
        HeaderValue::from_str(v),
    ) {
        // Framing and connection headers are the gateway's (a `content-length` set here
        // would make hyper announce one length and send another).
        (Ok(n), Ok(_)) if crate::proxy::headers::is_gateway_header(&n) => {
            issues.push(Issue::new(
                at,
                format!("{k:?} is the gateway's to set (it frames the message or the connection)"),
            ));
            None
        }
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            issues.push(Issue::new(at, format!("invalid header {k:?}: {v:?}")));
            None
        }
    };
    for (k, v) in &e.set {
        out.set
            .extend(pair(k, v, at.key("set").key(k.as_str()), issues));
    }
    for (k, v) in &e.add {
        out.add
            .extend(pair(k, v, at.key("add").key(k.as_str()), issues));
    }
    for (i, k) in e.remove.iter().enumerate() {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => out.remove.push(n),
            Err(_) => issues.push(Issue::new(
                at.key("remove").index(i),
                format!("invalid header name {k:?}"),
            )),
        }
    }
    out
}

/// The route's action, rewrites, edits and limits, or `None` with the problems in `issues`.
pub(super) fn compile_route(
    r: &config::Route,
    at: &KeyPath,
    upstreams: &BTreeMap<String, Arc<UpstreamGroup>>,
    limits: &config::Limits,
    issues: &mut Vec<Issue>,
) -> Option<RouteRuntime> {
    let action = match (&r.upstream, &r.respond) {
        (Some(_), Some(_)) => {
            issues.push(Issue::new(
                at.clone(),
                "set either upstream or respond, not both",
            ));
            return None;
        }
        (None, None) => {
            issues.push(Issue::new(
                at.clone(),
                "a route needs an upstream or a respond target",
            ));
            return None;
        }
        (Some(u), None) => match upstreams.get(u) {
            Some(g) => Action::Proxy(g.clone()),
            None => {
                issues.push(Issue::new(
                    at.key("upstream"),
                    format!("unknown upstream {u:?}"),
                ));
                return None;
            }
        },
        (None, Some(Responder::Echo)) => Action::Echo,
        (None, Some(Responder::Analytics)) => Action::Analytics,
        (
            None,
            Some(Responder::Static {
                status,
                headers,
                body,
            }),
        ) => {
            let sat = at.key("respond").key("static");
            let status = match StatusCode::from_u16(*status) {
                Ok(s) => s,
                Err(_) => {
                    issues.push(Issue::new(
                        sat.key("status"),
                        format!("invalid status {status}"),
                    ));
                    return None;
                }
            };
            let edits = config::HeaderEdits {
                set: headers.clone(),
                ..Default::default()
            };
            let mut map = HeaderMap::new();
            compile_edits(&edits, &sat.key("headers"), issues).apply(&mut map);
            Action::Static {
                status,
                headers: map,
                body: Bytes::from(body.clone()),
            }
        }
    };
    if let Some(p) = &r.strip_prefix
        && !p.starts_with('/')
    {
        issues.push(Issue::new(at.key("strip_prefix"), "must start with '/'"));
    }
    if let Some(p) = &r.rewrite_path
        && !p.starts_with('/')
    {
        issues.push(Issue::new(at.key("rewrite_path"), "must start with '/'"));
    }
    if r.strip_prefix.is_some() && r.rewrite_path.is_some() {
        issues.push(Issue::new(
            at.clone(),
            "set either strip_prefix or rewrite_path, not both",
        ));
    }
    Some(RouteRuntime {
        name: r.name.as_str().into(),
        action,
        strip_prefix: r.strip_prefix.clone(),
        rewrite_path: r.rewrite_path.clone(),
        request_headers: compile_edits(&r.request_headers, &at.key("request_headers"), issues),
        response_headers: compile_edits(&r.response_headers, &at.key("response_headers"), issues),
        max_body_bytes: r.max_body_bytes.unwrap_or(limits.max_body_bytes),
        min_body_rate: crate::body::MinRate::new(
            r.min_body_rate.unwrap_or(limits.min_body_rate),
            limits.rate_grace.get(),
        ),
        timeout: r.timeout.map(|d| d.get()),
        websocket: r.websocket,
        pipeline: Vec::new(),
    })
}
