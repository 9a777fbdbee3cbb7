//! `rate-limit`: limits requests per consumer, client IP, route or header value with the
//! host's rate limiter. Refused requests get 429 with the IETF draft `RateLimit-*`
//! headers and `Retry-After`; allowed responses get the `RateLimit-*` headers too.
//!
//! Capabilities: `rate-limit`.

mod config;

pub use config::{Config, KeySource, OnError, OnMissingKey};

use config::Settings;
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_sdk::rate_limit::{self, Verdict};
use sluice_sdk::{
    Context, Policy, Request, RequestDecision, Response, ResponseDecision, ResponseEdits, context,
};

/// The context attribute carrying the most restrictive verdict of the request, shared by
/// every `rate-limit` instance of the pipeline and read back in `on_response`:
/// `<limit> <remaining> <reset seconds> <policy>` (one attribute, so one host call each way).
const ATTR_VERDICT: &str = "rate-limit.verdict";

/// Key values longer than this are hashed, to keep the host's keys short.
const MAX_RAW_KEY_BYTES: usize = 128;

/// The policy.
#[derive(Debug)]
pub struct RateLimit {
    settings: Settings,
    /// `RateLimit-Policy` value: `<requests>;w=<window seconds>`.
    policy_header: String,
}

impl Policy for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = config.validate()?;
        let policy_header = format!(
            "{};w={}",
            settings.limit.requests,
            settings.limit.window_ms.div_ceil(1000)
        );
        Ok(Self {
            settings,
            policy_header,
        })
    }

    fn on_request(&self, req: &Request, ctx: &Context) -> RequestDecision {
        let Some(key) = self.key(req, ctx) else {
            return RequestDecision::Continue;
        };
        match rate_limit::check(&key, self.settings.limit, 1) {
            Ok(verdict) => {
                remember(ctx, &verdict, &self.policy_header);
                if verdict.allowed {
                    RequestDecision::Continue
                } else {
                    self.too_many_requests(&verdict)
                }
            }
            Err(_) if self.settings.on_error == OnError::Allow => RequestDecision::Continue,
            Err(_) => RequestDecision::respond_json(
                503,
                &json!({ "error": "unavailable", "message": "rate limiter unavailable" }),
            ),
        }
    }

    fn on_response(&self, _req: &Request, _resp: &Response, ctx: &Context) -> ResponseDecision {
        if !self.settings.headers {
            return ResponseDecision::Continue;
        }
        let Some(verdict) = ctx.get(ATTR_VERDICT) else {
            return ResponseDecision::Continue;
        };
        let Some([limit, remaining, reset, policy]) = verdict_fields(&verdict) else {
            return ResponseDecision::Continue;
        };
        // All four from the tightest verdict, which may be another instance's.
        ResponseEdits::new()
            .set_header("ratelimit-limit", limit)
            .set_header("ratelimit-remaining", remaining)
            .set_header("ratelimit-reset", reset)
            .set_header("ratelimit-policy", policy)
            .into()
    }
}

impl RateLimit {
    /// The host key for this request, or `None` to let it through uncounted.
    fn key(&self, req: &Request, ctx: &Context) -> Option<String> {
        let (kind, value) = match &self.settings.key {
            KeySource::Consumer => ("consumer", ctx.get(context::CONSUMER)),
            KeySource::ClientIp => ("ip", Some(req.client_ip())),
            KeySource::Route => ("route", Some(req.route())),
            KeySource::Header(name) => ("header", req.header_str(name)),
        };
        let (kind, value) = match value.filter(|v| !v.is_empty()) {
            Some(v) => (kind, v),
            None => match self.settings.on_missing_key {
                OnMissingKey::ClientIp => ("ip", req.client_ip()),
                OnMissingKey::Allow => return None,
            },
        };
        Some(if value.len() > MAX_RAW_KEY_BYTES {
            let digest = Sha256::digest(value.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("{kind}#{hex}")
        } else {
            format!("{kind}:{value}")
        })
    }

    fn too_many_requests(&self, v: &Verdict) -> RequestDecision {
        let retry_after = v.retry_after_secs();
        RequestDecision::respond_json(
            429,
            &json!({
                "error": "too_many_requests",
                "message": "rate limit exceeded",
                "retry_after": retry_after,
            }),
        )
        .header("ratelimit-limit", v.limit.to_string())
        .header("ratelimit-remaining", v.remaining.to_string())
        .header("ratelimit-reset", v.reset_secs().to_string())
        .header("ratelimit-policy", self.policy_header.as_str())
        .header("retry-after", retry_after.to_string())
    }
}

/// The `<limit> <remaining> <reset seconds> <policy>` of an [`ATTR_VERDICT`] value.
fn verdict_fields(verdict: &str) -> Option<[&str; 4]> {
    let mut fields = verdict.split(' ');
    let four = [
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    ];
    fields.next().is_none().then_some(four)
}

/// Keeps the verdict in the context unless an earlier instance left a more restrictive
/// one (fewer requests remaining), so that the response advertises the tightest limit.
fn remember(ctx: &Context, v: &Verdict, policy: &str) {
    let tighter_known = ctx
        .get(ATTR_VERDICT)
        .and_then(|known| verdict_fields(&known)?[1].parse::<u32>().ok())
        .is_some_and(|r| r < v.remaining);
    if !tighter_known {
        let verdict = format!("{} {} {} {policy}", v.limit, v.remaining, v.reset_secs());
        ctx.set(ATTR_VERDICT, &verdict);
    }
}

sluice_sdk::export_policy!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{Capability, TestContext, TestHost, TestRequest, TestResponse, json};

    fn host() -> TestHost {
        TestHost::with_grants(&[Capability::RateLimit])
    }

    #[test]
    fn allows_then_refuses_with_headers() {
        let host = host();
        let p: RateLimit = host
            .init(json!({ "requests": 2, "window": "1m", "key": "client_ip" }))
            .unwrap();
        let req = TestRequest::get("/").client_ip("203.0.113.7");
        for remaining in ["1", "0"] {
            let ctx = TestContext::new();
            assert!(host.on_request(&p, &req, &ctx).is_continue());
            let d = host.on_response(&p, &req, &TestResponse::new(200), &ctx);
            let e = d.edits().unwrap();
            assert_eq!(e.set_str("RateLimit-Limit"), Some("2"));
            assert_eq!(e.set_str("RateLimit-Remaining"), Some(remaining));
            assert_eq!(e.set_str("RateLimit-Policy"), Some("2;w=60"));
        }
        let d = host.on_request(&p, &req, &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header_str("ratelimit-remaining"), Some("0"));
        assert_eq!(r.header_str("ratelimit-reset"), Some("60"));
        assert_eq!(r.header_str("retry-after"), Some("30"));
        assert_eq!(r.header_str("content-type"), Some("application/json"));
        assert_eq!(
            r.body_str(),
            r#"{"error":"too_many_requests","message":"rate limit exceeded","retry_after":30}"#
        );
        assert_eq!(host.rate_limit_calls()[0].key, "ip:203.0.113.7");

        host.advance_millis(30_000);
        assert!(host.on_request(&p, &req, &TestContext::new()).is_continue());
    }

    #[test]
    fn counts_consumers_separately_and_falls_back_to_ip() {
        let host = host();
        let p: RateLimit = host
            .init(json!({ "requests": 1, "window_ms": 1000 }))
            .unwrap();
        let req = TestRequest::get("/").client_ip("192.0.2.1");
        let alice = TestContext::new().with("consumer", "alice");
        let bob = TestContext::new().with("consumer", "bob");
        assert!(host.on_request(&p, &req, &alice).is_continue());
        assert!(host.on_request(&p, &req, &bob).is_continue());
        assert_eq!(host.on_request(&p, &req, &alice).status(), Some(429));
        assert!(host.on_request(&p, &req, &TestContext::new()).is_continue());
        let keys: Vec<String> = host.rate_limit_calls().into_iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            [
                "consumer:alice",
                "consumer:bob",
                "consumer:alice",
                "ip:192.0.2.1"
            ]
        );
    }

    #[test]
    fn missing_key_can_be_allowed_uncounted() {
        let host = host();
        let p: RateLimit = host
            .init(
                json!({ "requests": 1, "window": "1s", "key": "header:x-tenant",
                          "on_missing_key": "allow" }),
            )
            .unwrap();
        for _ in 0..3 {
            assert!(
                host.on_request(&p, &TestRequest::get("/"), &TestContext::new())
                    .is_continue()
            );
        }
        assert!(host.rate_limit_calls().is_empty());
        let req = TestRequest::get("/").header("X-Tenant", "t1");
        host.on_request(&p, &req, &TestContext::new());
        assert_eq!(host.rate_limit_calls()[0].key, "header:t1");
    }

    #[test]
    fn long_key_values_are_hashed() {
        let host = host();
        let p: RateLimit = host
            .init(json!({ "requests": 5, "window": "1s", "key": "header:x-t" }))
            .unwrap();
        let req = TestRequest::get("/").header("x-t", "v".repeat(500));
        host.on_request(&p, &req, &TestContext::new());
        let key = &host.rate_limit_calls()[0].key;
        assert!(key.starts_with("header#") && key.len() == 7 + 64, "{key}");
    }

    #[test]
    fn host_errors_follow_on_error() {
        let host = host();
        host.rate_limit_fail(Some("redis down"));
        let open: RateLimit = host
            .init(json!({ "requests": 1, "window": "1s", "on_error": "allow" }))
            .unwrap();
        let closed: RateLimit = host.init(json!({ "requests": 1, "window": "1s" })).unwrap();
        let req = TestRequest::get("/");
        let ctx = TestContext::new();
        assert!(host.on_request(&open, &req, &ctx).is_continue());
        assert!(
            host.on_response(&open, &req, &TestResponse::new(200), &ctx)
                .is_continue()
        );
        assert_eq!(host.on_request(&closed, &req, &ctx).status(), Some(503));
    }

    #[test]
    fn tightest_of_two_instances_is_advertised() {
        let host = host();
        let wide: RateLimit = host
            .init(json!({ "requests": 100, "window": "1m", "key": "route" }))
            .unwrap();
        let narrow: RateLimit = host
            .init(json!({ "requests": 3, "window": "1s", "key": "client_ip" }))
            .unwrap();
        let req = TestRequest::get("/");
        let ctx = TestContext::new();
        host.on_request(&narrow, &req, &ctx);
        host.on_request(&wide, &req, &ctx);
        let d = host.on_response(&wide, &req, &TestResponse::new(200), &ctx);
        assert_eq!(d.edits().unwrap().set_str("ratelimit-remaining"), Some("2"));
        assert_eq!(d.edits().unwrap().set_str("ratelimit-limit"), Some("3"));
        assert_eq!(
            d.edits().unwrap().set_str("ratelimit-policy"),
            Some("3;w=1")
        );
    }

    #[test]
    fn headers_can_be_turned_off() {
        let host = host();
        let p: RateLimit = host
            .init(json!({ "requests": 5, "window": "1s", "headers": false }))
            .unwrap();
        let req = TestRequest::get("/");
        let ctx = TestContext::new();
        host.on_request(&p, &req, &ctx);
        assert!(
            host.on_response(&p, &req, &TestResponse::new(200), &ctx)
                .is_continue()
        );
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs =
            sluice_sdk::testing::readme_configs(include_str!("../README.md"), "rate-limit");
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<RateLimit>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
