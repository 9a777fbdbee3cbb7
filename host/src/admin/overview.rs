//! The declarative configuration (`/v1/config`) and the status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::Admin;
use super::problem::Problem;
use super::resources::{ApiResult, check_if_match, name_of, parse, valid_name, with_etag};
use crate::state::{Managed, Role};

// ---------------------------------------------------------------- config and status

/// The whole API-managed configuration with its revision (the ETag). Consumers' credential
/// hashes, which a declarative `PUT` of the document needs back, are shown to admin tokens
/// only: a read-only token sees the credentials without them.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "The managed configuration")))]
pub(super) async fn get_config(
    State(a): State<Arc<Admin>>,
    Extension(role): Extension<Role>,
) -> ApiResult {
    let (m, revision) = a.control.managed()?;
    let mut body = serde_json::to_value(&m).map_err(Problem::store)?;
    if role != Role::Admin {
        let consumers = body.get_mut("consumers").and_then(Value::as_object_mut);
        for c in consumers.into_iter().flat_map(|c| c.values_mut()) {
            let credentials = c.get_mut("credentials").and_then(Value::as_array_mut);
            for k in credentials.into_iter().flatten() {
                if let Some(k) = k.as_object_mut() {
                    k.remove("sha256");
                }
            }
        }
    }
    Ok(with_etag(StatusCode::OK, &body, &format!("\"{revision}\"")))
}

/// Applies a whole configuration (routes, upstreams, consumers; plugins' settings and
/// active versions) declaratively and answers with what changed. Plugins absent from the
/// body are left as they are (remove them with `DELETE /v1/plugins/{name}`).
#[utoipa::path(put, path = "/v1/config", tag = "config", request_body = Object,
    responses((status = 200, description = "Applied; `changes` lists what changed"),
              (status = 412, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn put_config(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let wanted: Managed = parse(&body)?;
    for r in &wanted.routes {
        let name = name_of(r).ok_or_else(|| Problem::bad_request("every route needs a `name`"))?;
        valid_name(name)?;
    }
    let (changes, revision) = a
        .control
        .change_at(
            |m, rev| {
                check_if_match(&headers, Some(&format!("\"{rev}\"")))?;
                let mut next = wanted;
                for (name, p) in &mut next.plugins {
                    match m.plugins.get(name) {
                        Some(old) => {
                            let active = p.active.or(old.active);
                            if active.is_some_and(|v| !old.versions.iter().any(|x| x.version == v))
                            {
                                return Err(Problem::bad_request(format!(
                                    "plugin {name:?} has no version {active:?}"
                                )));
                            }
                            p.versions = old.versions.clone();
                            p.active = active;
                        }
                        None => {
                            return Err(Problem::bad_request(format!(
                                "plugin {name:?} does not exist: upload it first"
                            )));
                        }
                    }
                }
                for (name, p) in &m.plugins {
                    next.plugins
                        .entry(name.clone())
                        .or_insert_with(|| p.clone());
                }
                let changes = diff(m, &next);
                *m = next;
                Ok::<_, Problem>(changes)
            },
            vec![],
        )
        .await??;
    Ok(Json(json!({ "revision": revision, "changes": changes })).into_response())
}

/// What differs between two configurations, by kind and name.
fn diff(old: &Managed, new: &Managed) -> Vec<Value> {
    let mut out = Vec::new();
    let routes = |m: &Managed| -> std::collections::BTreeMap<String, Value> {
        m.routes
            .iter()
            .filter_map(|r| Some((name_of(r)?.to_owned(), r.clone())))
            .collect()
    };
    let as_values = |m: &std::collections::BTreeMap<String, Value>| m.clone();
    let to_values = |m: &Managed| -> [(&str, std::collections::BTreeMap<String, Value>); 4] {
        [
            ("route", routes(m)),
            ("upstream", as_values(&m.upstreams)),
            (
                "plugin",
                m.plugins
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                    .collect(),
            ),
            (
                "consumer",
                m.consumers
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                    .collect(),
            ),
        ]
    };
    for ((kind, a), (_, b)) in to_values(old).into_iter().zip(to_values(new)) {
        for (name, v) in &b {
            match a.get(name) {
                None => out.push(json!({ "kind": kind, "name": name, "action": "added" })),
                Some(old) if old != v => {
                    out.push(json!({ "kind": kind, "name": name, "action": "modified" }))
                }
                Some(_) => {}
            }
        }
        for name in a.keys().filter(|n| !b.contains_key(*n)) {
            out.push(json!({ "kind": kind, "name": name, "action": "removed" }));
        }
    }
    out
}

/// Health of the state backends and what is live.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses((status = 200, description = "Version, configuration revision, live plugins, Redis health")))]
pub(super) async fn status(State(a): State<Arc<Admin>>) -> ApiResult {
    let live = a.control.live();
    let (m, revision) = a.control.managed()?;
    let store = &live.policy_env.store;
    let plugins: Vec<Value> = live
        .plugin_digests
        .iter()
        .map(|(name, digest)| {
            let managed = m.plugins.get(name);
            json!({
                "name": name,
                "source": if managed.is_some() { "api" } else { "file" },
                "version": managed.and_then(|p| p.active),
                "digest": digest,
            })
        })
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_revision": revision,
        "routes": live.config.routes.len(),
        "plugins": plugins,
        "redis": {
            "configured": store.redis.is_some(),
            "connected": store.redis.as_ref().map(|r| r.healthy()),
            "fallbacks": store.stats.counts(),
        },
        "store": { "path": store.db.path().display().to_string() },
        "policies": live.policies.iter().map(|p| json!({
            "policy": p.label,
            "plugin": p.plugin,
            "failures": p.stats.failures.load(std::sync::atomic::Ordering::Relaxed),
            "skipped": p.stats.skipped.load(std::sync::atomic::Ordering::Relaxed),
            "instantiations": p.stats.instantiations.load(std::sync::atomic::Ordering::Relaxed),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}
