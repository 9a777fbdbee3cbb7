//! Plugins: upload of versions (checked, compiled and stored before anything changes),
//! settings, rollback, removal.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::Admin;
use super::problem::{FieldError, Problem};
use super::resources::{
    ApiResult, Listing, check_if_match, etag_of, parse, remove_matching, with_etag,
};
use crate::config::{Issue, KeyPath};
use crate::policy::{Grants, check_component};
use crate::state::{ManagedPlugin, PluginVersion, sha256_hex, signature_verifies, unix_now};

/// The header carrying the base64 Ed25519 signature over the component's SHA-256 digest.
pub(super) const SIGNATURE_HEADER: &str = "x-sluice-signature";

fn plugin_view(name: &str, p: &ManagedPlugin) -> Value {
    json!({
        "name": name,
        "source": "api",
        "settings": p.settings,
        "active": p.active,
        "versions": p.versions,
    })
}

/// Lists plugins: uploaded ones with their versions, and those of the file by name.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Plugins", body = Listing)))]
pub(super) async fn list_plugins(State(a): State<Arc<Admin>>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let (_, _, file) = a.control.file_names();
    let mut items: Vec<Value> = file
        .into_iter()
        .map(|n| json!({ "name": n, "source": "file" }))
        .collect();
    items.extend(m.plugins.iter().map(|(n, p)| plugin_view(n, p)));
    Ok(Json(Listing { items }).into_response())
}

/// One uploaded plugin: settings, versions and the active version.
#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, description = "The plugin"), (status = 404, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn get_plugin(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> ApiResult {
    let (m, _) = a.control.managed()?;
    let p = m
        .plugins
        .get(&name)
        .ok_or_else(|| Problem::not_found(format!("no uploaded plugin {name:?}")))?;
    Ok(with_etag(
        StatusCode::OK,
        &plugin_view(&name, p),
        &etag_of(p),
    ))
}

/// Replaces an uploaded plugin's settings (a `[plugins.NAME]` table without `path`:
/// `grants`, `outbound_allowlist`, limits …); every route using it is rebuilt.
#[utoipa::path(put, path = "/v1/plugins/{name}", tag = "plugins", request_body = Object,
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, description = "Replaced"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 412, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn put_plugin(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let settings: serde_json::Map<String, Value> = parse(&body)?;
    if settings.contains_key("path") {
        return Err(Problem::bad_request(
            "`path` is set by uploads (POST /v1/plugins/{name}/versions)",
        ));
    }
    let (view, _) = a
        .control
        .change(
            |m| {
                let p = m.plugins.get_mut(&name).ok_or_else(|| {
                    Problem::not_found(format!(
                        "no uploaded plugin {name:?}: upload a version first"
                    ))
                })?;
                check_if_match(&headers, Some(&etag_of(&*p)))?;
                p.settings = settings;
                Ok::<_, Problem>(plugin_view(&name, p))
            },
            vec![],
        )
        .await??;
    Ok(Json(view).into_response())
}

/// Removes an uploaded plugin and its versions (refused while a route uses it).
#[utoipa::path(delete, path = "/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn delete_plugin(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    a.control
        .change(
            |m| {
                remove_matching(&mut m.plugins, &name, &headers, || {
                    Problem::not_found(format!("no uploaded plugin {name:?}"))
                })
            },
            vec![],
        )
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Upload options.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub(super) struct UploadQuery {
    /// Capabilities to grant (comma-separated) when the plugin is new; an existing
    /// plugin keeps its settings.
    pub grants: Option<String>,
}

/// Uploads a component as the plugin's next version and makes it active. The size cap, the
/// component's world, its imports against the grants, the signature (when trusted keys are
/// configured) and compilation (with a time cap) are checked, then every route using the
/// plugin is rebuilt; any failure is a 4xx naming the reason and changes nothing.
#[utoipa::path(post, path = "/v1/plugins/{name}/versions", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, description = "Stored and live: name, version, digest"),
              (status = 413, description = "Problem details (RFC 9457)", body = Problem), (status = 422, description = "Problem details (RFC 9457)", body = Problem),
              (status = 503, description = "Another upload is still compiling (Problem details)", body = Problem)))]
pub(super) async fn upload(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    super::resources::valid_name(&name)?;
    let settings = a.control.admin_settings();
    let bytes = match Limited::new(body, settings.max_plugin_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!(
                    "the component is over admin.max_plugin_bytes ({} bytes)",
                    settings.max_plugin_bytes
                ),
            ));
        }
        Err(e) => return Err(Problem::bad_request(format!("reading the body: {e}"))),
    };
    let unprocessable = |what: String| Problem::invalid(what, Vec::new());
    let digest = sha256_hex(&bytes);
    let signature = verify_signature(&settings.trusted_keys, &headers, &digest)?;

    let (current, _) = a.control.managed()?;
    let existing = current.plugins.get(&name);
    let grant_names: Vec<String> = match existing {
        Some(p) => p
            .settings
            .get("grants")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        None => q
            .grants
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect(),
    };
    let mut issues: Vec<Issue> = Vec::new();
    let caps = crate::snapshot::pipeline::parse_grants(
        &grant_names,
        &KeyPath::default().key("grants"),
        &mut issues,
    );
    if !issues.is_empty() {
        return Err(Problem::invalid(
            "unknown capability",
            issues
                .into_iter()
                .map(|i| FieldError {
                    path: i.path.to_string(),
                    message: i.message,
                })
                .collect(),
        ));
    }
    let runtime = a
        .control
        .live()
        .policy_env
        .runtime()
        .map_err(|e| Problem::store(e.to_string()))?;
    // One compile at a time: waiting for another upload's is not this one's compile time
    // (a compile that outlived its timeout still runs, holding the permit), and the wait
    // has its own bound.
    let permit = match tokio::time::timeout(
        settings.compile_timeout.get(),
        a.compiling.clone().acquire_owned(),
    )
    .await
    {
        Ok(permit) => permit.map_err(|e| Problem::store(e.to_string()))?,
        Err(_) => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "another upload was still compiling after admin.compile_timeout ({:?}); retry later",
                    settings.compile_timeout.get()
                ),
            ));
        }
    };
    let compile = {
        let (runtime, bytes) = (runtime.clone(), bytes.clone());
        async move {
            // The permit goes with the compile: one that outlives the timeout still holds it.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                runtime.compile(&bytes)
            })
            .await
            .map_err(|e| Problem::store(format!("compile task: {e}")))
        }
    };
    let component = match tokio::time::timeout(settings.compile_timeout.get(), compile).await {
        Err(_) => {
            return Err(unprocessable(format!(
                "compiling took longer than admin.compile_timeout ({:?})",
                settings.compile_timeout.get()
            )));
        }
        Ok(Err(problem)) => return Err(problem),
        Ok(Ok(Err(e))) => return Err(unprocessable(format!("not a usable component: {e}"))),
        Ok(Ok(Ok((component, _)))) => component,
    };
    check_component(&runtime, &component, Grants::of(&caps))
        .map_err(|e| unprocessable(format!("refused: {e}")))?;

    let record = PluginVersion {
        version: 0,
        digest: digest.clone(),
        size: bytes.len() as u64,
        uploaded_at: unix_now(),
        signed: signature.is_some(),
        signature,
    };
    let (version, _) = a
        .control
        .change(
            |m| {
                let p = m
                    .plugins
                    .entry(name.clone())
                    .or_insert_with(|| ManagedPlugin {
                        settings: [("grants".to_owned(), json!(grant_names))]
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    });
                let version = p.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                p.versions.push(PluginVersion { version, ..record });
                p.active = Some(version);
                Ok::<_, Problem>(version)
            },
            vec![(digest.clone(), bytes.to_vec())],
        )
        .await??;
    tracing::info!(plugin = %name, version, %digest, "plugin version uploaded and live");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "version": version, "digest": digest, "size": bytes.len() })),
    )
        .into_response())
}

/// Checks the upload's signature against the trusted keys (none configured: unsigned
/// uploads are accepted). Returns the signature that verified.
fn verify_signature(
    trusted: &[String],
    headers: &HeaderMap,
    digest: &str,
) -> Result<Option<String>, Problem> {
    if trusted.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Problem::invalid(format!("signature: {why}"), Vec::new());
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            bad("trusted keys are configured: the x-sluice-signature header is required")
        })?;
    if base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .is_err()
    {
        return Err(bad("not base64"));
    }
    if signature_verifies(trusted, digest, sig) {
        Ok(Some(sig.trim().to_owned()))
    } else {
        Err(bad("it does not verify against any trusted key"))
    }
}

/// Which version to roll back to.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RollbackBody {
    /// The version; default: the one before the active version.
    pub version: Option<u32>,
}

/// Makes an earlier version active again (one call; every route using it is rebuilt).
#[utoipa::path(post, path = "/v1/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    request_body = RollbackBody,
    responses((status = 200, description = "The active version"), (status = 404, description = "Problem details (RFC 9457)", body = Problem),
              (status = 422, description = "Problem details (RFC 9457)", body = Problem)))]
pub(super) async fn rollback(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        parse(&body)?
    };
    let (version, _) =
        a.control
            .change(
                |m| {
                    let p = m.plugins.get_mut(&name).ok_or_else(|| {
                        Problem::not_found(format!("no uploaded plugin {name:?}"))
                    })?;
                    // With If-Match, a retried or concurrent rollback cannot step back twice.
                    check_if_match(&headers, Some(&etag_of(&*p)))?;
                    let target = match b.version {
                        Some(v) => v,
                        None => p
                            .versions
                            .iter()
                            .map(|v| v.version)
                            .filter(|v| Some(*v) < p.active)
                            .max()
                            .ok_or_else(|| Problem::conflict("there is no earlier version"))?,
                    };
                    if !p.versions.iter().any(|v| v.version == target) {
                        return Err(Problem::not_found(format!("no version {target}")));
                    }
                    p.active = Some(target);
                    Ok(target)
                },
                vec![],
            )
            .await??;
    Ok(Json(json!({ "name": name, "active": version })).into_response())
}
