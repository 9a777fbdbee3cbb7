//! `analytics`: emits one event per request through the host's analytics capability,
//! with the route, consumer, method, path, status, latency and (when the
//! `content-length` headers say) request and response sizes.
//!
//! The latency is measured from this policy's `on_request` to its `on_response`, with
//! the monotonic clock: place the policy first in the pipeline to cover the whole
//! exchange.
//!
//! Capabilities: `analytics`, `clock`.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::analytics::Event;
use sluice_sdk::{Context, Policy, Request, RequestDecision, Response, ResponseDecision, clock};

/// The context attribute holding the monotonic time `on_request` ran at, in nanoseconds.
pub const ATTR_START: &str = "analytics.start_ns";

/// Field names this policy sets; `static_fields` may not reuse them.
const RESERVED: &[&str] = &[
    "ts_ms",
    "route",
    "method",
    "path",
    "status",
    "consumer",
    "latency_us",
    "request_bytes",
    "response_bytes",
    "client_ip",
];

/// `analytics`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Add the field `client_ip`. By default false (client addresses are personal data
    /// in many jurisdictions).
    pub include_client_ip: bool,
    /// Request headers to add as fields named `header.<name>`. By default none.
    pub headers: Vec<String>,
    /// Fixed fields added to every event, e.g. `{ env = "prod" }`. By default none.
    pub static_fields: BTreeMap<String, String>,
}

/// The policy.
#[derive(Debug)]
pub struct Analytics {
    config: Config,
}

impl Policy for Analytics {
    type Config = Config;

    fn new(mut config: Config) -> Result<Self, String> {
        if let Some(name) = config
            .static_fields
            .keys()
            .find(|k| RESERVED.contains(&k.as_str()) || k.starts_with("header."))
        {
            return Err(format!(
                "`static_fields`: {name:?} is a field set by the policy"
            ));
        }
        for h in &mut config.headers {
            if h.is_empty() {
                return Err("`headers`: empty header name".into());
            }
            h.make_ascii_lowercase();
        }
        Ok(Self { config })
    }

    fn on_request(&self, _req: &Request, ctx: &Context) -> RequestDecision {
        ctx.set(ATTR_START, &clock::monotonic_nanos().to_string());
        RequestDecision::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response, ctx: &Context) -> ResponseDecision {
        let latency_us = ctx
            .get(ATTR_START)
            .and_then(|s| s.parse::<u64>().ok())
            .map(|start| clock::monotonic_nanos().saturating_sub(start) / 1_000);
        let mut event = Event::new()
            .field("ts_ms", clock::now_millis())
            .field("route", req.route())
            .field("method", req.method())
            .field("path", req.path())
            .field("status", resp.status())
            .field_opt("consumer", ctx.consumer())
            .field_opt("latency_us", latency_us)
            .field_opt("request_bytes", req.content_length())
            .field_opt("response_bytes", resp.content_length());
        if self.config.include_client_ip {
            event = event.field("client_ip", req.client_ip());
        }
        for name in &self.config.headers {
            event = event.field_opt(format!("header.{name}"), req.header_str(name));
        }
        for (k, v) in &self.config.static_fields {
            event = event.field(k.as_str(), v);
        }
        event.emit();
        ResponseDecision::Continue
    }
}

sluice_sdk::export_policy!(Analytics);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{Capability, TestContext, TestHost, TestRequest, TestResponse, json};

    fn host() -> TestHost {
        TestHost::with_grants(&[Capability::Analytics, Capability::Clock])
    }

    #[test]
    fn emits_one_event_with_latency_and_sizes() {
        let host = host();
        let p: Analytics = host.init(json!({})).unwrap();
        let req = TestRequest::post("/orders?page=2")
            .route("orders")
            .header("content-length", "42");
        let ctx = TestContext::new().with("consumer", "alice");
        assert!(host.on_request(&p, &req, &ctx).is_continue());
        host.advance_nanos(1_234_567);
        let resp = TestResponse::new(201).header("Content-Length", "7");
        assert!(host.on_response(&p, &req, &resp, &ctx).is_continue());

        let events = host.events();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.get("route"), Some("orders"));
        assert_eq!(e.get("consumer"), Some("alice"));
        assert_eq!(e.get("method"), Some("POST"));
        assert_eq!(e.get("path"), Some("/orders"));
        assert_eq!(e.get("status"), Some("201"));
        assert_eq!(e.get("latency_us"), Some("1234"));
        assert_eq!(e.get("request_bytes"), Some("42"));
        assert_eq!(e.get("response_bytes"), Some("7"));
        assert_eq!(e.get("ts_ms"), Some("1700000000000"));
        assert_eq!(e.get("client_ip"), None);
    }

    #[test]
    fn omits_unknown_values() {
        let host = host();
        let p: Analytics = host.init(json!({})).unwrap();
        let req = TestRequest::get("/");
        host.on_response(&p, &req, &TestResponse::new(401), &TestContext::new());
        let e = &host.events()[0];
        for absent in ["consumer", "latency_us", "request_bytes", "response_bytes"] {
            assert_eq!(e.get(absent), None, "{absent}");
        }
        assert_eq!(e.get("status"), Some("401"));
    }

    #[test]
    fn optional_fields() {
        let host = host();
        let p: Analytics = host
            .init(json!({
                "include_client_ip": true,
                "headers": ["User-Agent", "x-missing"],
                "static_fields": { "env": "prod" }
            }))
            .unwrap();
        let req = TestRequest::get("/")
            .client_ip("198.51.100.4")
            .header("user-agent", "curl/8");
        host.on_response(&p, &req, &TestResponse::new(200), &TestContext::new());
        let e = &host.events()[0];
        assert_eq!(e.get("client_ip"), Some("198.51.100.4"));
        assert_eq!(e.get("header.user-agent"), Some("curl/8"));
        assert_eq!(e.get("header.x-missing"), None);
        assert_eq!(e.get("env"), Some("prod"));
    }

    #[test]
    fn rejects_reserved_static_fields_and_typos() {
        let host = host();
        let err = host
            .init::<Analytics>(json!({ "static_fields": { "status": "x" } }))
            .unwrap_err();
        assert!(
            err.contains("\"status\" is a field set by the policy"),
            "{err}"
        );
        let err = host
            .init::<Analytics>(json!({ "include_clientip": true }))
            .unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs =
            sluice_sdk::testing::readme_configs(include_str!("../README.md"), "analytics");
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<Analytics>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
