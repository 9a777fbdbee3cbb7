//! The proxy layer's error type and its one mapping to an HTTP status and a JSON body.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, BoxBody};

/// Every way the proxy itself answers a request with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched. 404.
    #[error("no route matches {method} {path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The request body exceeds the route's limit. 413.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request body arrived slower than the route's minimum rate. 408.
    #[error("{0}")]
    BodyTooSlow(crate::body::TooSlow),
    /// The route's timeout passed while the client was still sending the request body. 408.
    #[error("the request body was not received within the route's timeout of {ms} ms")]
    BodyTimeout {
        /// The timeout.
        ms: u128,
    },
    /// A policy failed (trap, deadline, unusable decision) and fails closed.
    #[error("policy {policy} failed: {cause}")]
    PolicyFailed {
        /// The policy's label (`route/plugin#index`).
        policy: String,
        /// The configured status.
        status: StatusCode,
        /// Why.
        cause: String,
    },
    /// Reading the body whole would take the gateway's buffers for bodies read whole
    /// (`limits.max_buffered_body_bytes`) past their total. 503.
    #[error("the gateway's buffers for request bodies are full; retry later")]
    BuffersFull,
    /// The request is malformed in a way hyper accepted but the gateway does not. 400.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request uses a feature the gateway does not implement, such as a transfer coding
    /// other than `chunked`. 501.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// No target of the upstream is healthy. 503.
    #[error("no healthy target in upstream {0}")]
    NoHealthyTarget(String),
    /// Too many requests in flight to the upstream. 503.
    #[error("circuit breaker open for upstream {0}")]
    CircuitOpen(String),
    /// The TCP/TLS connection to the upstream failed. 502.
    #[error("connection to upstream {upstream} target {target} failed: {cause}")]
    ConnectFailed {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// Why.
        cause: String,
    },
    /// The upstream did not accept the connection in time. 504.
    #[error("connection to upstream {upstream} target {target} timed out")]
    ConnectTimeout {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
    },
    /// The upstream did not answer in time. 504.
    #[error("upstream {upstream} target {target} did not answer within {ms} ms")]
    Timeout {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// The timeout.
        ms: u128,
    },
    /// The upstream broke the exchange (reset, protocol error). 502.
    #[error("upstream {upstream} target {target} failed: {cause}")]
    UpstreamFailed {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// Why.
        cause: String,
    },
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTooSlow(_) | Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::PolicyFailed { status, .. } => *status,
            Self::NoHealthyTarget(_) | Self::CircuitOpen(_) | Self::BuffersFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ConnectFailed { .. } | Self::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTooSlow(_) => "body_too_slow",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::BuffersFull => "buffers_full",
            Self::BadRequest(_) => "bad_request",
            Self::NotImplemented(_) => "not_implemented",
            Self::PolicyFailed { .. } => "policy_failed",
            Self::NoHealthyTarget(_) => "no_healthy_upstream",
            Self::CircuitOpen(_) => "circuit_open",
            Self::ConnectFailed { .. } => "upstream_connect_failed",
            Self::ConnectTimeout { .. } => "upstream_connect_timeout",
            Self::Timeout { .. } => "upstream_timeout",
            Self::UpstreamFailed { .. } => "upstream_failed",
        }
    }

    /// The response: the status and `{"error": code, "message": text, "route": name}`.
    pub fn to_response(&self, route: Option<&str>) -> Response<BoxBody> {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "route": route,
        });
        if let Self::PolicyFailed { policy, .. } = self {
            body["policy"] = serde_json::Value::String(policy.clone());
        }
        let mut resp = Response::new(body::full(body.to_string()));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_error_to_its_status_and_code() {
        let e = ProxyError::ConnectTimeout {
            upstream: "u".into(),
            target: "t:1".into(),
        };
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.code(), "upstream_connect_timeout");
        let e = ProxyError::CircuitOpen("u".into());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e = ProxyError::NotImplemented("x");
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::NOT_IMPLEMENTED, "not_implemented")
        );
        let r = ProxyError::BodyTooLarge { limit: 5 }.to_response(Some("r"));
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
