//! Capability `outbound-http`: GET requests to hosts the operator allowlisted for the
//! plugin (for example a JWKS endpoint).
//!
//! Requires the grant `outbound-http`. Natively, [`crate::testing::TestHost::http_route`]
//! decides what each URL answers.

use std::fmt;

use crate::decision::Header;
use crate::host::{Active, Host};

/// A response to an outbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<Header>,
    /// The response body (bounded by the host's size limit).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, no headers and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The first value of the header `name` (case-insensitive) as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(Header::value_str)
    }
}

/// Why an outbound request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL's host is not allowlisted for this plugin.
    Denied,
    /// The URL is invalid.
    InvalidUrl,
    /// The request timed out.
    Timeout,
    /// The response was larger than the host allows.
    TooLarge,
    /// Any other failure; the text says why.
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied => f.write_str("outbound request denied: host not allowlisted"),
            Self::InvalidUrl => f.write_str("invalid URL"),
            Self::Timeout => f.write_str("outbound request timed out"),
            Self::TooLarge => f.write_str("outbound response too large"),
            Self::Failed(why) => write!(f, "outbound request failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A GET of `url` with `headers`, bounded by the host's timeout and size limits.
///
/// # Errors
/// [`HttpError::Denied`] for hosts not allowlisted for the plugin, and the other
/// [`HttpError`] variants for failures.
pub fn get(url: &str, headers: &[Header]) -> Result<HttpResponse, HttpError> {
    Active::http_get(url, headers)
}
