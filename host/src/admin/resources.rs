//! Routes and upstreams (list / get / create / replace / delete, with ETags), and the
//! helpers every resource handler shares.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Admin;
use super::problem::Problem;
use crate::state::sha256_hex;

/// A handler's outcome.
pub(super) type ApiResult = Result<Response, Problem>;

/// The ETag of a resource document.
pub(super) fn etag_of(v: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    format!("\"{}\"", &sha256_hex(&bytes)[..20])
}

/// Removes `name` from `map` (a managed resource kind) if `If-Match` matches it; `missing`
/// is the 404 when there is no such entry.
pub(super) fn remove_matching<T: Serialize>(
    map: &mut std::collections::BTreeMap<String, T>,
    name: &str,
    headers: &HeaderMap,
    missing: impl FnOnce() -> Problem,
) -> Result<(), Problem> {
    let current = map.get(name).ok_or_else(missing)?;
    check_if_match(headers, Some(&etag_of(current)))?;
    map.remove(name);
    Ok(())
}

/// 412 unless `If-Match` is absent, `*`, or `current` (an `If-Match` that cannot be read
/// matches nothing).
pub(super) fn check_if_match(headers: &HeaderMap, current: Option<&str>) -> Result<(), Problem> {
    let Some(wanted) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let Ok(wanted) = wanted.to_str() else {
        return Err(Problem::stale());
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

/// 201 for a resource `created` by a `PUT`, 200 for a replaced one.
pub(super) fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// `status` with a JSON body and an ETag.
pub(super) fn with_etag(status: StatusCode, body: &Value, etag: &str) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

pub(super) fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

pub(super) fn valid_name(name: &str) -> Result<(), Problem> {
    if crate::control::is_valid_name(name) {
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

/// The listing of a kind: the file's resources by name, then the API's with spec and ETag.
fn listing<'a>(file: Vec<String>, api: impl Iterator<Item = (&'a str, &'a Value)>) -> Response {
    let mut items: Vec<Value> = file
        .into_iter()
        .map(|n| json!({ "name": n, "source": "file" }))
        .collect();
    items.extend(api.map(
        |(n, spec)| json!({ "name": n, "source": "api", "etag": etag_of(spec), "spec": spec }),
    ));
    Json(Listing { items }).into_response()
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
    let api = m.routes.iter().map(|r| (name_of(r).unwrap_or_default(), r));
    Ok(listing(file, api))
}

/// One API-managed route (its `[[routes]]` table as JSON), with its ETag.
#[utoipa::path(get, path = "/v1/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name")),
    responses((status = 200, description = "The route"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
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
    responses((status = 201, description = "Created"), (status = 409, description = "Problem details (RFC 9457)", body = Problem),
              (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
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
              (status = 412, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
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
    Ok(with_etag(created_or_ok(created), &spec, &etag))
}

/// Deletes the route `name` (with `If-Match`, only at that ETag).
#[utoipa::path(delete, path = "/v1/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 412, description = "Problem details (RFC 9457)", body = Problem)))]
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
    Ok(listing(
        file,
        m.upstreams.iter().map(|(n, u)| (n.as_str(), u)),
    ))
}

/// One API-managed upstream group (its `[upstreams.NAME]` table as JSON).
#[utoipa::path(get, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 200, description = "The upstream"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
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
              (status = 412, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
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
    Ok(with_etag(created_or_ok(created), &spec, &etag))
}

/// Deletes the upstream group `name` (refused while a route uses it).
#[utoipa::path(delete, path = "/v1/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 412, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn delete_upstream(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                remove_matching(&mut m.upstreams, &name, &headers, || {
                    Problem::not_found(format!("no API-managed upstream {name:?}"))
                })
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Creates an upstream group (an `[upstreams.NAME]` table as JSON, with `name`); 409 when
/// the name exists.
#[utoipa::path(post, path = "/v1/upstreams", tag = "upstreams", request_body = Object,
    responses((status = 201, description = "Created"), (status = 409, description = "Problem details (RFC 9457)", body = Problem),
              (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn create_upstream(State(a): State<Arc<Admin>>, body: Bytes) -> ApiResult {
    let mut spec: Value = parse(&body)?;
    let name = spec
        .as_object_mut()
        .and_then(|o| o.remove("name"))
        .and_then(|n| n.as_str().map(String::from))
        .ok_or_else(|| Problem::bad_request("body: `name` is required"))?;
    valid_name(&name)?;
    let etag = etag_of(&spec);
    a.control
        .change(
            |m| {
                if m.upstreams.contains_key(&name) {
                    return Err(Problem::conflict(format!("upstream {name:?} exists")));
                }
                m.upstreams.insert(name.clone(), spec.clone());
                Ok(())
            },
            vec![],
        )
        .await??;
    Ok(with_etag(StatusCode::CREATED, &spec, &etag))
}
