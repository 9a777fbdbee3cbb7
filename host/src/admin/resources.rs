//! Routes, upstreams, consumers (with credentials), admin tokens, the declarative
//! configuration, and the status: list / get / create / replace / delete, with ETags.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Admin;
use super::auth::new_secret;
use super::problem::Problem;
use crate::state::{Consumer, Credential, Managed, Role, TokenRecord, sha256_hex, unix_now};

/// A handler's outcome.
pub(super) type ApiResult = Result<Response, Problem>;

/// The ETag of a resource document.
pub(super) fn etag_of(v: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    format!("\"{}\"", &sha256_hex(&bytes)[..20])
}

/// 412 unless `If-Match` is absent, `*`, or `current`.
pub(super) fn check_if_match(headers: &HeaderMap, current: Option<&str>) -> Result<(), Problem> {
    let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = match current {
        Some(c) => wanted.split(',').any(|w| w.trim() == "*" || w.trim() == c),
        None => false,
    };
    if ok { Ok(()) } else { Err(Problem::stale()) }
}

/// A JSON body, or a 400 naming the parse error.
pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("body: {e}")))
}

/// `status` with a JSON body and an ETag.
pub(super) fn with_etag(status: StatusCode, body: &Value, etag: &str) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn valid_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            "invalid name",
            vec![super::problem::FieldError {
                path: "name".into(),
                message: "1-128 characters of A-Z a-z 0-9 - _ .".into(),
            }],
        ))
    }
}

/// A list of resources.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Listing {
    /// The resources.
    pub items: Vec<Value>,
}

// ---------------------------------------------------------------- routes

/// Lists routes: those managed through the API (with their spec and ETag) and those of the
/// file (read-only, by name).
#[utoipa::path(get, path = "/v1/routes", tag = "routes",
    responses((status = 200, description = "Routes", body = Listing)))]
pub(super) async fn list_routes(State(a): State<Arc<Admin>>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let (file, _, _) = a.control.file_names();
    let mut items: Vec<Value> = file
        .into_iter()
        .map(|n| json!({ "name": n, "source": "file" }))
        .collect();
    items.extend(
        m.routes
            .iter()
            .map(|r| json!({ "name": name_of(r), "source": "api", "etag": etag_of(r), "spec": r })),
    );
    Ok(Json(Listing { items }).into_response())
}

/// One API-managed route (its `[[routes]]` table as JSON), with its ETag.
#[utoipa::path(get, path = "/v1/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name")),
    responses((status = 200, description = "The route"), (status = 404, body = Problem)))]
pub(super) async fn get_route(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let r = m
        .routes
        .iter()
        .find(|r| name_of(r) == Some(&name))
        .ok_or_else(|| Problem::not_found(format!("no API-managed route {name:?}")))?;
    Ok(with_etag(StatusCode::OK, r, &etag_of(r)))
}

/// Creates a route (a `[[routes]]` table as JSON, with `name`); 409 when the name exists.
#[utoipa::path(post, path = "/v1/routes", tag = "routes", request_body = Object,
    responses((status = 201, description = "Created"), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub(super) async fn create_route(State(a): State<Arc<Admin>>, body: Bytes) -> ApiResult {
    let spec: Value = parse(&body)?;
    let name = name_of(&spec)
        .ok_or_else(|| Problem::bad_request("body: `name` is required"))?
        .to_owned();
    valid_name(&name)?;
    let etag = etag_of(&spec);
    a.control
        .change(
            |m| {
                if m.routes.iter().any(|r| name_of(r) == Some(&name)) {
                    return Err(Problem::conflict(format!("route {name:?} exists")));
                }
                m.routes.push(spec.clone());
                Ok(())
            },
            vec![],
        )
        .await??;
    Ok(with_etag(StatusCode::CREATED, &spec, &etag))
}

/// Creates or replaces the route `name`; with `If-Match`, only if it still has that ETag.
#[utoipa::path(put, path = "/v1/routes/{name}", tag = "routes", request_body = Object,
    params(("name" = String, Path, description = "Route name")),
    responses((status = 200, description = "Replaced"), (status = 201, description = "Created"),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn put_route(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    valid_name(&name)?;
    let mut spec: Value = parse(&body)?;
    if let Some(obj) = spec.as_object_mut() {
        obj.insert("name".into(), name.clone().into());
    }
    let etag = etag_of(&spec);
    let ((created, _), _) = a
        .control
        .change(
            |m| {
                let at = m.routes.iter().position(|r| name_of(r) == Some(&name));
                check_if_match(&headers, at.map(|i| etag_of(&m.routes[i])).as_deref())?;
                match at {
                    Some(i) => m.routes[i] = spec.clone(),
                    None => m.routes.push(spec.clone()),
                }
                Ok::<_, Problem>((at.is_none(), ()))
            },
            vec![],
        )
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &spec, &etag))
}

/// Deletes the route `name` (with `If-Match`, only at that ETag).
#[utoipa::path(delete, path = "/v1/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem),
              (status = 412, body = Problem)))]
pub(super) async fn delete_route(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                let i = m
                    .routes
                    .iter()
                    .position(|r| name_of(r) == Some(&name))
                    .ok_or_else(|| Problem::not_found(format!("no API-managed route {name:?}")))?;
                check_if_match(&headers, Some(&etag_of(&m.routes[i])))?;
                m.routes.remove(i);
                Ok::<_, Problem>(())
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- upstreams

/// Lists upstream groups (API-managed with spec and ETag; file ones by name).
#[utoipa::path(get, path = "/v1/upstreams", tag = "upstreams",
    responses((status = 200, description = "Upstreams", body = Listing)))]
pub(super) async fn list_upstreams(State(a): State<Arc<Admin>>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let (_, file, _) = a.control.file_names();
    let mut items: Vec<Value> = file
        .into_iter()
        .map(|n| json!({ "name": n, "source": "file" }))
        .collect();
    items.extend(
        m.upstreams
            .iter()
            .map(|(n, u)| json!({ "name": n, "source": "api", "etag": etag_of(u), "spec": u })),
    );
    Ok(Json(Listing { items }).into_response())
}

/// One API-managed upstream group (its `[upstreams.NAME]` table as JSON).
#[utoipa::path(get, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 200, description = "The upstream"), (status = 404, body = Problem)))]
pub(super) async fn get_upstream(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let u = m
        .upstreams
        .get(&name)
        .ok_or_else(|| Problem::not_found(format!("no API-managed upstream {name:?}")))?;
    Ok(with_etag(StatusCode::OK, u, &etag_of(u)))
}

/// Creates or replaces the upstream group `name`; with `If-Match`, only at that ETag.
#[utoipa::path(put, path = "/v1/upstreams/{name}", tag = "upstreams", request_body = Object,
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 200, description = "Replaced"), (status = 201, description = "Created"),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn put_upstream(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    valid_name(&name)?;
    let spec: Value = parse(&body)?;
    let etag = etag_of(&spec);
    let (created, _) = a
        .control
        .change(
            |m| {
                check_if_match(&headers, m.upstreams.get(&name).map(etag_of).as_deref())?;
                Ok::<_, Problem>(m.upstreams.insert(name.clone(), spec.clone()).is_none())
            },
            vec![],
        )
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &spec, &etag))
}

/// Deletes the upstream group `name` (refused while a route uses it).
#[utoipa::path(delete, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn delete_upstream(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                let u = m.upstreams.get(&name).ok_or_else(|| {
                    Problem::not_found(format!("no API-managed upstream {name:?}"))
                })?;
                check_if_match(&headers, Some(&etag_of(u)))?;
                m.upstreams.remove(&name);
                Ok::<_, Problem>(())
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- consumers

/// Lists consumers (credentials show their id and kind, never a secret or hash).
#[utoipa::path(get, path = "/v1/consumers", tag = "consumers",
    responses((status = 200, description = "Consumers", body = Listing)))]
pub(super) async fn list_consumers(State(a): State<Arc<Admin>>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let items = m
        .consumers
        .iter()
        .map(|(n, c)| consumer_view(n, c))
        .collect();
    Ok(Json(Listing { items }).into_response())
}

fn consumer_view(name: &str, c: &Consumer) -> Value {
    json!({
        "name": name,
        "tags": c.tags,
        "credentials": c.credentials.iter()
            .map(|k| json!({ "id": k.id, "kind": k.kind, "created_at": k.created_at }))
            .collect::<Vec<_>>(),
    })
}

/// One consumer.
#[utoipa::path(get, path = "/v1/consumers/{name}", tag = "consumers",
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 200, description = "The consumer"), (status = 404, body = Problem)))]
pub(super) async fn get_consumer(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let c = m
        .consumers
        .get(&name)
        .ok_or_else(|| Problem::not_found(format!("no consumer {name:?}")))?;
    Ok(with_etag(
        StatusCode::OK,
        &consumer_view(&name, c),
        &etag_of(c),
    ))
}

/// A consumer's editable fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ConsumerBody {
    /// Free-form labels.
    pub tags: Vec<String>,
}

/// Creates or replaces the consumer `name` (its credentials are kept).
#[utoipa::path(put, path = "/v1/consumers/{name}", tag = "consumers", request_body = ConsumerBody,
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 200, description = "Replaced"), (status = 201, description = "Created"),
              (status = 412, body = Problem)))]
pub(super) async fn put_consumer(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    valid_name(&name)?;
    let b: ConsumerBody = if body.is_empty() {
        ConsumerBody::default()
    } else {
        parse(&body)?
    };
    let ((created, view, etag), _) = a
        .control
        .change(
            |m| {
                check_if_match(&headers, m.consumers.get(&name).map(etag_of).as_deref())?;
                let created = !m.consumers.contains_key(&name);
                let c = m.consumers.entry(name.clone()).or_default();
                c.tags = b.tags;
                Ok::<_, Problem>((created, consumer_view(&name, c), etag_of(&*c)))
            },
            vec![],
        )
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &view, &etag))
}

/// Deletes the consumer `name` and its credentials.
#[utoipa::path(delete, path = "/v1/consumers/{name}", tag = "consumers",
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem),
              (status = 412, body = Problem)))]
pub(super) async fn delete_consumer(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                let c = m
                    .consumers
                    .get(&name)
                    .ok_or_else(|| Problem::not_found(format!("no consumer {name:?}")))?;
                check_if_match(&headers, Some(&etag_of(c)))?;
                m.consumers.remove(&name);
                Ok::<_, Problem>(())
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Creates an API-key credential for consumer `name`; the key is in this response only.
#[utoipa::path(post, path = "/v1/consumers/{name}/credentials", tag = "consumers",
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 201, description = "The credential, with its key (shown once)"),
              (status = 404, body = Problem)))]
pub(super) async fn create_credential(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> ApiResult {
    let key = new_secret();
    let cred = Credential {
        id: key[3..15].to_owned(),
        kind: "key".into(),
        sha256: sha256_hex(key.as_bytes()),
        created_at: unix_now(),
    };
    let id = cred.id.clone();
    a.control
        .change(
            |m| {
                let c = m
                    .consumers
                    .get_mut(&name)
                    .ok_or_else(|| Problem::not_found(format!("no consumer {name:?}")))?;
                c.credentials.push(cred);
                Ok::<_, Problem>(())
            },
            vec![],
        )
        .await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "kind": "key", "key": key })),
    )
        .into_response())
}

/// Deletes a credential.
#[utoipa::path(delete, path = "/v1/consumers/{name}/credentials/{id}", tag = "consumers",
    params(("name" = String, Path, description = "Consumer name"),
           ("id" = String, Path, description = "Credential id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
pub(super) async fn delete_credential(
    State(a): State<Arc<Admin>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    a.control
        .change(
            |m| {
                let c = m
                    .consumers
                    .get_mut(&name)
                    .ok_or_else(|| Problem::not_found(format!("no consumer {name:?}")))?;
                let before = c.credentials.len();
                c.credentials.retain(|k| k.id != id);
                if c.credentials.len() == before {
                    return Err(Problem::not_found(format!("no credential {id:?}")));
                }
                Ok(())
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- tokens

/// Lists admin tokens (names and roles; secrets are never stored).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Tokens", body = Listing)))]
pub(super) async fn list_tokens(State(a): State<Arc<Admin>>) -> ApiResult {
    let tokens = a.db().tokens().map_err(Problem::store)?;
    let items = tokens
        .iter()
        .map(|t| json!({ "name": t.name, "role": t.role, "created_at": t.created_at }))
        .collect();
    Ok(Json(Listing { items }).into_response())
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    /// Unique name.
    pub name: String,
    /// `admin` or `read-only`.
    pub role: Role,
}

/// Creates a token; its secret is in this response only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenBody,
    responses((status = 201, description = "The token, with its secret (shown once)"),
              (status = 409, body = Problem)))]
pub(super) async fn create_token(State(a): State<Arc<Admin>>, body: Bytes) -> ApiResult {
    let b: TokenBody = parse(&body)?;
    valid_name(&b.name)?;
    let secret = new_secret();
    let record = TokenRecord {
        name: b.name.clone(),
        role: b.role,
        created_at: unix_now(),
    };
    let stored = a
        .db()
        .put_token(&sha256_hex(secret.as_bytes()), &record, false)
        .map_err(Problem::store)?;
    if !stored {
        return Err(Problem::conflict(format!("token {:?} exists", b.name)));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": b.name, "role": b.role, "token": secret })),
    )
        .into_response())
}

/// Deletes a token.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
pub(super) async fn delete_token(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> ApiResult {
    if a.db().delete_token(&name).map_err(Problem::store)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found(format!("no token {name:?}")))
    }
}

// ---------------------------------------------------------------- config and status

/// The whole API-managed configuration with its revision (the ETag).
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "The managed configuration")))]
pub(super) async fn get_config(State(a): State<Arc<Admin>>) -> ApiResult {
    let (m, revision) = a.control.managed()?;
    let body = serde_json::to_value(&m).map_err(Problem::store)?;
    Ok(with_etag(StatusCode::OK, &body, &format!("\"{revision}\"")))
}

/// Applies a whole configuration (routes, upstreams, consumers; plugins' settings and
/// active versions) declaratively and answers with what changed. Plugins absent from the
/// body are left as they are (remove them with `DELETE /v1/plugins/{name}`).
#[utoipa::path(put, path = "/v1/config", tag = "config", request_body = Object,
    responses((status = 200, description = "Applied; `changes` lists what changed"),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
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
        .change(
            |m| {
                let rev = a.control.managed().map(|x| x.1).unwrap_or(0);
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
