//! RFC 9457 problem details: every admin API error is `application/problem+json` with a
//! type, a title, the status, a detail and, for invalid input, the field paths at fault.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// Where: a dotted path into the configuration (`routes[2].policies[0].config`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for this request.
    pub detail: String,
    /// Field errors, for invalid input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem with `status`, a type `slug` and `detail`.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://sluice.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404 naming what is missing.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", what)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 412: the `If-Match` ETag is stale.
    pub fn stale() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "stale-etag",
            "If-Match does not match the current ETag: re-read the resource and retry",
        )
    }

    /// 422 with field errors.
    pub fn invalid(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail);
        p.errors = errors;
        p
    }

    /// 500 for a store failure (nothing was changed).
    pub fn store(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store",
            format!("the store failed; nothing was changed: {detail}"),
        )
    }
}

impl From<crate::control::ApplyError> for Problem {
    fn from(e: crate::control::ApplyError) -> Self {
        match e {
            crate::control::ApplyError::Invalid(errors) => Self::invalid(
                "the resulting configuration is invalid; nothing was changed",
                errors
                    .into_iter()
                    .map(|(path, message)| FieldError { path, message })
                    .collect(),
            ),
            crate::control::ApplyError::Store(m) => Self::store(m),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}
