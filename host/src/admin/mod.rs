//! The admin API (axum) on its own listener (default `127.0.0.1:9901`).
//!
//! Secure by default: it refuses to bind a non-loopback address without TLS unless
//! `allow_plaintext_non_loopback` says so; every endpoint but `/healthz` and `/readyz` needs
//! a bearer token (`admin` for writes, `read-only` for reads); optional mTLS. Errors are
//! RFC 9457 problem documents. The OpenAPI 3.1 document (`/v1/openapi.json`) is generated
//! from the same handler annotations that register the routes, so the two cannot drift.

mod access;
mod auth;
mod overview;
mod plugins;
mod problem;
mod resources;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::{FieldError, Problem};

use crate::config;
use crate::control::Control;
use crate::state::Db;

/// What the handlers share.
pub struct Admin {
    control: Arc<Control>,
    /// One upload compiles at a time: compiling takes a core, and a compile that outlives
    /// `compile_timeout` keeps it until done, so uploads must not pile up on the CPU the
    /// data plane serves from.
    compiling: Arc<tokio::sync::Semaphore>,
}

impl Admin {
    fn db(&self) -> Db {
        self.control.db()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice admin API", description = "Routes, upstreams, plugins, consumers and tokens of a running Sluice gateway."),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "Alive")))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: a configuration is live.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Serving")))]
async fn readyz(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    let routes = a.control.live().config.routes.len();
    Json(serde_json::json!({ "status": "ready", "routes": routes }))
}

/// The API's routes and their OpenAPI document.
fn api(admin: Arc<Admin>) -> axum::Router {
    use access::*;
    use overview::*;
    use plugins::*;
    use resources::*;
    let (protected, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(status))
        .routes(routes!(get_config, put_config))
        .routes(routes!(list_routes, create_route))
        .routes(routes!(get_route, put_route, delete_route))
        .routes(routes!(list_upstreams, create_upstream))
        .routes(routes!(get_upstream, put_upstream, delete_upstream))
        .routes(routes!(list_consumers, create_consumer))
        .routes(routes!(get_consumer, put_consumer, delete_consumer))
        .routes(routes!(create_credential))
        .routes(routes!(delete_credential))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(get_token, put_token, delete_token))
        .routes(routes!(list_plugins))
        .routes(routes!(get_plugin, put_plugin, delete_plugin))
        .routes(routes!(upload))
        .routes(routes!(rollback))
        .split_for_parts();
    let (open, open_doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .split_for_parts();
    doc.merge(open_doc);
    doc.paths.paths.insert(
        "/v1/openapi.json".into(),
        utoipa::openapi::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This document"))
                .tag("health")
                .response(
                    "200",
                    utoipa::openapi::Response::new("OpenAPI 3.1 document"),
                )
                .build(),
        ),
    );
    let doc = Arc::new(doc);
    let protected = protected
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            auth::require_token,
        ));
    protected
        .merge(open)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .with_state(admin)
}

/// Checks `[admin]`: the bind/TLS policy (plaintext only on loopback unless allowed) and
/// the TLS files. Returns the TLS acceptor, if any; errors are `(key under admin, message)`.
/// Run by `sluice validate` and at start (so both report them at their line), and on each
/// reload to re-read renewed certificates.
pub fn check_settings(
    settings: &config::AdminSettings,
) -> Result<Option<tokio_rustls::TlsAcceptor>, Vec<(String, String)>> {
    if !settings.enabled {
        return Ok(None);
    }
    let bind = settings.bind;
    if !bind.ip().is_loopback() && settings.tls.is_none() && !settings.allow_plaintext_non_loopback
    {
        return Err(vec![(
            "bind".into(),
            format!(
                "{bind} is not a loopback address: configure admin.tls, or set \
                 admin.allow_plaintext_non_loopback = true to accept plaintext tokens on the network"
            ),
        )]);
    }
    let Some(t) = &settings.tls else {
        return Ok(None);
    };
    let mut c = crate::tls::server_config(t).map_err(|es| {
        es.into_iter()
            .map(|(k, m)| (format!("tls.{k}"), m))
            .collect::<Vec<_>>()
    })?;
    Arc::make_mut(&mut c).alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(c)))
}

/// [`check_settings`]'s problems as configuration issues, located under `admin`.
pub fn settings_issues(problems: Vec<(String, String)>) -> Vec<config::Issue> {
    let at = config::KeyPath::default().key("admin");
    problems
        .into_iter()
        .map(|(field, message)| {
            config::Issue::new(crate::snapshot::field_path(&at, &field), message)
        })
        .collect()
}

/// Starts the admin API for `control` (when enabled): checks the bind/TLS policy, installs
/// the bootstrap token, binds, and serves on a background task.
pub async fn start(control: Arc<Control>) -> Result<(), String> {
    let settings = control.admin_settings();
    if !settings.enabled {
        return Ok(());
    }
    let bind = settings.bind;
    let tls = check_settings(settings)
        .map_err(|es| control.loaded().error(settings_issues(es)).to_string())?;
    auth::bootstrap(&control.db(), settings)?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("admin.bind {bind}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listener = "admin", addr = %local, tls = tls.is_some(), "listening");
    control.set_admin_tls(tls);
    let app = api(Arc::new(Admin {
        control: control.clone(),
        compiling: Arc::new(tokio::sync::Semaphore::new(1)),
    }));
    tokio::spawn(serve(listener, control, app));
    Ok(())
}

/// Most admin connections served at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

async fn serve(listener: TcpListener, control: Arc<Control>, app: axum::Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning on it.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // The acceptor of the moment: reloads pick up certificates renewed in place.
        let (app, tls) = (app.clone(), control.admin_tls());
        tokio::spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(app);
            // HTTP/1.1 only: its request-head deadline runs from the connection's start, so
            // a connection that never sends a request gives its slot back after 10 s
            // (hyper-util's auto builder waits for the first bytes with no deadline). One
            // request per connection: a client (authenticated or not) polling an open
            // endpoint every few seconds cannot keep one of the few slots for ever.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .keep_alive(false)
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new());
            let result = match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    match handshake.await {
                        Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), service).await,
                        _ => return,
                    }
                }
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}
