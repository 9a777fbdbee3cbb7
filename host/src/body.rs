//! Body types shared by the proxy and the upstream client.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used for every request and response the gateway produces or forwards.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body error behind a concrete type (lets generic adapters such as
/// [`http_body_util::Limited`] convert it without higher-ranked bounds).
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// `body` failing with [`http_body_util::LengthLimitError`] beyond `limit` bytes.
pub fn limited(body: BoxBody, limit: u64) -> BoxBody {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body.map_err(BodyError), limit).boxed_unsync()
}
