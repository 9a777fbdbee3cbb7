//! Bearer-token authentication and roles. Tokens are stored as the SHA-256 of their secret;
//! the bootstrap token comes from `SLUICE_ADMIN_TOKEN` or is generated on first start into
//! an owner-only file and printed once.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::Admin;
use super::problem::Problem;
use crate::config::AdminSettings;
use crate::state::{Db, Role, TokenRecord, sha256_hex, unix_now};

/// The environment variable holding the bootstrap token.
pub(super) const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// Shortest token accepted from the environment.
const MIN_TOKEN_LEN: usize = 16;

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
    );
    r
}

/// Middleware: a valid bearer token, and the `admin` role for anything but reads.
pub(super) async fn require_token(
    State(admin): State<Arc<Admin>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(secret) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return unauthorized("an `Authorization: Bearer TOKEN` header is required");
    };
    let record = match admin.db().token(&sha256_hex(secret.as_bytes())) {
        Ok(Some(r)) => r,
        Ok(None) => return unauthorized("unknown token"),
        Err(e) => return Problem::store(e).into_response(),
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if record.role == Role::ReadOnly && !read {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {:?} is read-only", record.name),
        )
        .into_response();
    }
    // Handlers that show less to read-only tokens take the caller's role from here.
    let mut req = req;
    req.extensions_mut().insert(record.role);
    next.run(req).await
}

/// A new random token secret (256 bits, hex).
pub(super) fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("sk_{}", hex::encode(b))
}

/// Installs the bootstrap token: from `SLUICE_ADMIN_TOKEN` when set, otherwise generated
/// into `token_file` (owner-only) and printed once when the store has no token.
pub(super) fn bootstrap(db: &Db, settings: &AdminSettings) -> Result<(), String> {
    let record = TokenRecord {
        name: "bootstrap".into(),
        role: Role::Admin,
        created_at: unix_now(),
    };
    if let Ok(secret) = std::env::var(TOKEN_ENV) {
        if secret.trim().len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{TOKEN_ENV} must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        let sha = sha256_hex(secret.trim().as_bytes());
        // A secret that already belongs to another token (a read-only one exported for the
        // CLI, say) must not be turned into the admin bootstrap token.
        if let Some(other) = db.token(&sha).map_err(|e| e.to_string())?
            && other.name != record.name
        {
            return Err(format!(
                "{TOKEN_ENV} is the secret of token {:?}; use another secret for the bootstrap token",
                other.name
            ));
        }
        db.put_token(&sha, &record, true)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    if !db.tokens().map_err(|e| e.to_string())?.is_empty() {
        return Ok(());
    }
    let secret = new_secret();
    write_private(&settings.token_file, &secret)?;
    db.put_token(&sha256_hex(secret.as_bytes()), &record, true)
        .map_err(|e| e.to_string())?;
    eprintln!(
        "sluice: admin token (shown once; also written to {}): {secret}",
        settings.token_file.display()
    );
    Ok(())
}

fn write_private(path: &std::path::Path, secret: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("admin.token_file {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::create_private_dir(dir).map_err(fail)?;
        if let Some(why) = crate::private::check_private_dir(dir) {
            tracing::warn!(%why, "the admin token file's directory is not private");
        }
    }
    crate::private::write_private_file(path, format!("{secret}\n").as_bytes()).map_err(fail)
}
