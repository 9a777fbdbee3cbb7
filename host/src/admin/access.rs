//! Consumers with their credentials, and admin tokens: secrets are returned once and stored
//! only as SHA-256 hashes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Admin;
use super::auth::new_secret;
use super::problem::Problem;
use super::resources::{
    ApiResult, Listing, check_if_match, created_or_ok, etag_of, parse, remove_matching, valid_name,
    with_etag,
};
use crate::state::{Consumer, Credential, Role, TokenChange, TokenRecord, sha256_hex, unix_now};

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
    responses((status = 200, description = "The consumer"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
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
              (status = 412, description = "Problem details (RFC 9457)", body = Problem)))]
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
    Ok(with_etag(created_or_ok(created), &view, &etag))
}

/// Deletes the consumer `name` and its credentials.
#[utoipa::path(delete, path = "/v1/consumers/{name}", tag = "consumers",
    params(("name" = String, Path, description = "Consumer name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 412, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn delete_consumer(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                remove_matching(&mut m.consumers, &name, &headers, || {
                    Problem::not_found(format!("no consumer {name:?}"))
                })
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
              (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
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
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn delete_credential(
    State(a): State<Arc<Admin>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                let c = m
                    .consumers
                    .get_mut(&name)
                    .ok_or_else(|| Problem::not_found(format!("no consumer {name:?}")))?;
                // The consumer's ETag covers its credentials.
                check_if_match(&headers, Some(&etag_of(&*c)))?;
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

/// A token as the API shows it: name, role and creation time (never the secret).
fn token_view(t: &crate::state::TokenRecord) -> Value {
    json!({ "name": t.name, "role": t.role, "created_at": t.created_at })
}

/// Lists admin tokens (names and roles; secrets are never stored).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Tokens", body = Listing)))]
pub(super) async fn list_tokens(State(a): State<Arc<Admin>>) -> ApiResult {
    let tokens = a.db().tokens().map_err(Problem::store)?;
    let items = tokens.iter().map(token_view).collect();
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
              (status = 409, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn create_token(State(a): State<Arc<Admin>>, body: Bytes) -> ApiResult {
    let b: TokenBody = parse(&body)?;
    valid_name(&b.name)?;
    let secret = new_secret();
    let record = TokenRecord {
        name: b.name.clone(),
        role: b.role,
        created_at: unix_now(),
    };
    let sha = sha256_hex(secret.as_bytes());
    let stored = a
        .db()
        .off_workers(move |db| db.put_token(&sha, &record, false))
        .await
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
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn delete_token(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> ApiResult {
    let deleted = name.clone();
    match a
        .db()
        .off_workers(move |db| db.delete_token(&deleted))
        .await
        .map_err(Problem::store)?
    {
        TokenChange::Done(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        TokenChange::NotFound => Err(Problem::not_found(format!("no token {name:?}"))),
        TokenChange::LastAdmin => Err(last_admin()),
    }
}

/// One token (name, role, creation time).
#[utoipa::path(get, path = "/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 200, description = "The token"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn get_token(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> ApiResult {
    let tokens = a.db().tokens().map_err(Problem::store)?;
    let t = tokens
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Problem::not_found(format!("no token {name:?}")))?;
    Ok(Json(token_view(t)).into_response())
}

/// A token's new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleBody {
    /// `admin` or `read-only`.
    pub role: Role,
}

/// Replaces a token's role (its secret is unchanged).
#[utoipa::path(put, path = "/v1/tokens/{name}", tag = "tokens", request_body = RoleBody,
    params(("name" = String, Path, description = "Token name")),
    responses((status = 200, description = "The token"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn put_token(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: RoleBody = parse(&body)?;
    let changed = name.clone();
    match a
        .db()
        .off_workers(move |db| db.set_token_role(&changed, b.role))
        .await
        .map_err(Problem::store)?
    {
        TokenChange::Done(t) => Ok(Json(token_view(&t)).into_response()),
        TokenChange::NotFound => Err(Problem::not_found(format!("no token {name:?}"))),
        TokenChange::LastAdmin => Err(last_admin()),
    }
}

/// 409 for a change that would leave no admin token.
fn last_admin() -> Problem {
    Problem::conflict(
        "it is the last admin token: create another admin token first (nobody could change \
         the admin API without one)",
    )
}

/// A consumer to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewConsumer {
    /// Unique name.
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Creates a consumer; 409 when the name exists.
#[utoipa::path(post, path = "/v1/consumers", tag = "consumers", request_body = NewConsumer,
    responses((status = 201, description = "Created"), (status = 409, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn create_consumer(State(a): State<Arc<Admin>>, body: Bytes) -> ApiResult {
    let b: NewConsumer = parse(&body)?;
    valid_name(&b.name)?;
    let ((view, etag), _) = a
        .control
        .change(
            |m| {
                if m.consumers.contains_key(&b.name) {
                    return Err(Problem::conflict(format!("consumer {:?} exists", b.name)));
                }
                let c = m.consumers.entry(b.name.clone()).or_default();
                c.tags = b.tags;
                Ok((consumer_view(&b.name, c), etag_of(&*c)))
            },
            vec![],
        )
        .await??;
    Ok(with_etag(StatusCode::CREATED, &view, &etag))
}
