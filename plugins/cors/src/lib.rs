//! `cors`: Cross-Origin Resource Sharing. Answers preflight requests (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) itself with 204 and the
//! `Access-Control-Allow-*` headers, and adds `Access-Control-Allow-Origin` (with
//! `Vary: Origin`), credentials and exposed headers to the responses of allowed origins.
//!
//! The gateway's configuration is authoritative: for origins it does not allow, the
//! upstream's own `Access-Control-Allow-Origin` and `-Credentials` headers are removed.
//!
//! Capabilities: none.

mod config;

pub use config::{Config, OriginPattern, Origins};

use serde_json::json;
use sluice_sdk::{
    Context, Policy, Request, RequestDecision, Response, ResponseDecision, ResponseEdits,
};

/// The policy.
#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    credentials: bool,
    methods: String,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<String>,
}

impl Policy for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let origins = config.validate()?;
        let join = |v: &[String]| (!v.is_empty()).then(|| v.join(", "));
        Ok(Self {
            origins,
            credentials: config.credentials,
            methods: config
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(", "),
            allow_headers: config.allow_headers.as_deref().map(|h| h.join(", ")),
            expose_headers: join(&config.expose_headers),
            max_age: config.max_age.map(|s| s.to_string()),
        })
    }

    fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
        if !req.method().eq_ignore_ascii_case("OPTIONS") {
            return RequestDecision::Continue;
        }
        let (Some(origin), true) = (
            req.header_str("origin"),
            req.has_header("access-control-request-method"),
        ) else {
            return RequestDecision::Continue;
        };
        if !self.origins.allows(&origin) {
            return RequestDecision::respond_json(
                403,
                &json!({ "error": "forbidden", "message": "CORS origin not allowed" }),
            )
            .header("vary", "Origin");
        }
        let mut d = RequestDecision::respond(204)
            .header("access-control-allow-origin", self.allow_origin(&origin))
            .header("access-control-allow-methods", self.methods.as_str());
        let requested = req.header_str("access-control-request-headers");
        let allow_headers = self.allow_headers.clone().or(requested);
        if let Some(h) = allow_headers.filter(|h| !h.trim().is_empty()) {
            d = d.header("access-control-allow-headers", h);
        }
        if self.credentials {
            d = d.header("access-control-allow-credentials", "true");
        }
        if let Some(age) = &self.max_age {
            d = d.header("access-control-max-age", age.as_str());
        }
        d.header(
            "vary",
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        )
    }

    fn on_response(&self, req: &Request, _resp: &Response, _ctx: &Context) -> ResponseDecision {
        let mut edits = ResponseEdits::new();
        if self.origins != Origins::Any {
            // The answer depends on Origin: caches must key on it, even for requests
            // without one.
            edits = edits.append_header("vary", "Origin");
        }
        let origin = req.header_str("origin");
        let Some(origin) = origin.filter(|o| self.origins.allows(o)) else {
            return edits
                .remove_header("access-control-allow-origin")
                .remove_header("access-control-allow-credentials")
                .into();
        };
        edits = edits.set_header("access-control-allow-origin", self.allow_origin(&origin));
        // The configuration decides, not the upstream: an upstream's `true` next to the
        // origin this policy names would let credentialed requests be read cross-origin.
        edits = if self.credentials {
            edits.set_header("access-control-allow-credentials", "true")
        } else {
            edits.remove_header("access-control-allow-credentials")
        };
        if let Some(h) = &self.expose_headers {
            edits = edits.set_header("access-control-expose-headers", h.as_str());
        }
        edits.into()
    }
}

impl Cors {
    fn allow_origin(&self, origin: &str) -> String {
        match self.origins {
            Origins::Any => "*".to_owned(),
            Origins::List(_) => origin.to_owned(),
        }
    }
}

sluice_sdk::export_policy!(Cors);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{TestContext, TestHost, TestRequest, TestResponse, json};

    const APP: &str = "https://app.example.com";

    fn host() -> TestHost {
        TestHost::with_grants(&[])
    }

    fn preflight(origin: &str) -> TestRequest {
        TestRequest::options("/api")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type, x-id")
    }

    #[test]
    fn preflight_from_allowed_origin_is_answered_locally() {
        let host = host();
        let p: Cors = host
            .init(json!({
                "origins": [APP], "methods": ["get", "put"], "credentials": true,
                "max_age": 600
            }))
            .unwrap();
        let d = host.on_request(&p, &preflight(APP), &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.header_str("access-control-allow-origin"), Some(APP));
        assert_eq!(
            r.header_str("access-control-allow-methods"),
            Some("GET, PUT")
        );
        assert_eq!(
            r.header_str("access-control-allow-headers"),
            Some("content-type, x-id")
        );
        assert_eq!(
            r.header_str("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(r.header_str("access-control-max-age"), Some("600"));
        assert!(r.header_str("vary").unwrap().starts_with("Origin"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn configured_allow_headers_replace_reflection() {
        let host = host();
        let p: Cors = host
            .init(json!({ "origins": ["*"], "allow_headers": ["content-type"] }))
            .unwrap();
        let d = host.on_request(&p, &preflight("https://x.test"), &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.header_str("access-control-allow-origin"), Some("*"));
        assert_eq!(
            r.header_str("access-control-allow-headers"),
            Some("content-type")
        );
        assert_eq!(r.header_str("access-control-allow-credentials"), None);
    }

    #[test]
    fn preflight_from_other_origin_is_403() {
        let host = host();
        let p: Cors = host.init(json!({ "origins": [APP] })).unwrap();
        let d = host.on_request(&p, &preflight("https://evil.test"), &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.header_str("access-control-allow-origin"), None);
        assert_eq!(
            r.body_str(),
            r#"{"error":"forbidden","message":"CORS origin not allowed"}"#
        );
    }

    #[test]
    fn plain_options_and_other_methods_continue() {
        let host = host();
        let p: Cors = host.init(json!({ "origins": [APP] })).unwrap();
        let ctx = TestContext::new();
        let plain = TestRequest::options("/").header("origin", APP);
        assert!(host.on_request(&p, &plain, &ctx).is_continue());
        let get = TestRequest::get("/").header("origin", APP);
        assert!(host.on_request(&p, &get, &ctx).is_continue());
    }

    #[test]
    fn actual_request_gets_origin_credentials_and_exposed_headers() {
        let host = host();
        let p: Cors = host
            .init(
                json!({ "origins": ["https://*.example.com"], "credentials": true,
                          "expose_headers": ["x-request-id", "ratelimit-remaining"] }),
            )
            .unwrap();
        let req = TestRequest::get("/").header("origin", APP);
        let upstream = TestResponse::new(200).header("vary", "Accept-Encoding");
        let d = host.on_response(&p, &req, &upstream, &TestContext::new());
        let sent = upstream.apply(d.edits().unwrap());
        assert_eq!(sent.get_header("access-control-allow-origin"), Some(APP));
        assert_eq!(
            sent.get_header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            sent.get_header("access-control-expose-headers"),
            Some("x-request-id, ratelimit-remaining")
        );
        assert_eq!(sent.get_header_all("vary"), ["Accept-Encoding", "Origin"]);
    }

    #[test]
    fn disallowed_origin_loses_upstream_cors_headers() {
        let host = host();
        let p: Cors = host.init(json!({ "origins": [APP] })).unwrap();
        let req = TestRequest::get("/").header("origin", "https://evil.test");
        let upstream = TestResponse::new(200).header("access-control-allow-origin", "*");
        let d = host.on_response(&p, &req, &upstream, &TestContext::new());
        let sent = upstream.apply(d.edits().unwrap());
        assert_eq!(sent.get_header("access-control-allow-origin"), None);
        assert_eq!(sent.get_header("vary"), Some("Origin"));
    }

    #[test]
    fn without_credentials_an_upstreams_allow_credentials_is_removed() {
        let host = host();
        let p: Cors = host.init(json!({ "origins": [APP] })).unwrap();
        let req = TestRequest::get("/").header("origin", APP);
        let upstream = TestResponse::new(200)
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true");
        let d = host.on_response(&p, &req, &upstream, &TestContext::new());
        let sent = upstream.apply(d.edits().unwrap());
        assert_eq!(sent.get_header("access-control-allow-origin"), Some(APP));
        assert_eq!(sent.get_header("access-control-allow-credentials"), None);
    }

    #[test]
    fn any_origin_answers_star_without_vary() {
        let host = host();
        let p: Cors = host.init(json!({ "origins": ["*"] })).unwrap();
        let req = TestRequest::get("/").header("origin", "https://x.test");
        let d = host.on_response(&p, &req, &TestResponse::new(200), &TestContext::new());
        let e = d.edits().unwrap();
        assert_eq!(e.set_str("access-control-allow-origin"), Some("*"));
        assert!(e.appended("vary").is_empty());
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs = sluice_sdk::testing::readme_configs(include_str!("../README.md"), "cors");
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<Cors>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
