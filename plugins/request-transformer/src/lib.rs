//! `request-transformer`: edits the request before it is forwarded — removes, renames,
//! sets and adds headers and query parameters, in that order, and replaces the path.
//!
//! Capabilities: none.

mod config;

pub use config::{Changes, Config};

use std::collections::BTreeSet;

use sluice_sdk::decision::MAX_HEADER_VALUE_BYTES;
use sluice_sdk::{Context, Edits, Policy, Request, RequestDecision};

/// The policy.
#[derive(Debug)]
pub struct RequestTransformer {
    config: Config,
}

impl Policy for RequestTransformer {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self {
            config: config.validate()?,
        })
    }

    fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
        let mut edits = Edits::new();
        if !self.config.headers.is_empty() {
            edits = match self.edit_headers(req, edits) {
                Ok(e) => e,
                Err(too_large) => return too_large,
            };
        }
        if !self.config.query.is_empty() {
            edits = self.edit_query(req, edits);
        }
        if let Some(p) = &self.config.path {
            edits = edits.path(p.as_str());
        }
        RequestDecision::edit(edits)
    }
}

impl RequestTransformer {
    /// Header changes as edits. The gateway applies removals before sets and appends, so
    /// the steps are computed here against the names the request will have. A renamed
    /// header whose values make a line longer than the gateway takes is answered with 431.
    fn edit_headers(&self, req: &Request, mut edits: Edits) -> Result<Edits, RequestDecision> {
        let h = &self.config.headers;
        let mut present: BTreeSet<String> = req.header_names().into_iter().collect();
        for name in &h.remove {
            if present.remove(name) {
                edits = edits.remove_header(name.as_str());
            }
        }
        for (from, to) in &h.rename {
            if from == to || !present.contains(from) {
                continue;
            }
            present.remove(from);
            edits = edits
                .remove_header(from.as_str())
                .remove_header(to.as_str());
            // A `set` of the new name replaces the renamed values. Several values go on as
            // one line (RFC 9110 §5.3; `Cookie` pairs joined with `; `): one edit however
            // many lines a client sends, within the host's cap on edits per decision.
            if !h.set.contains_key(to) {
                let separator: &[u8] = if to == "cookie" { b"; " } else { b", " };
                let joined = req.header_all(from).join(separator);
                if joined.len() > MAX_HEADER_VALUE_BYTES {
                    return Err(RequestDecision::respond_json(
                        431,
                        &serde_json::json!({
                            "error": "header_too_large",
                            "message": format!("the {from} header's values are too long together"),
                        }),
                    ));
                }
                edits = edits.set_header(to.as_str(), joined);
            }
            present.insert(to.clone());
        }
        for (name, value) in &h.set {
            edits = edits.set_header(name.as_str(), value.as_str());
            present.insert(name.clone());
        }
        for (name, value) in &h.add {
            if !present.contains(name) {
                edits = edits.set_header(name.as_str(), value.as_str());
            }
        }
        Ok(edits)
    }

    fn edit_query(&self, req: &Request, edits: Edits) -> Edits {
        let q = &self.config.query;
        let original = req.query_params();
        let mut query = original.clone();
        for name in &q.remove {
            query.remove(name);
        }
        for (from, to) in &q.rename {
            query.rename(from, to);
        }
        for (name, value) in &q.set {
            query.set(name, value);
        }
        for (name, value) in &q.add {
            if !query.contains(name) {
                query.append(name, value);
            }
        }
        if query == original {
            edits
        } else {
            edits.query(query.to_string())
        }
    }
}

// No response phase: the `request-policy` world (the gateway skips it on the way back).
sluice_sdk::export_request_policy!(RequestTransformer);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{TestContext, TestHost, TestRequest, json};

    fn forwarded(config: serde_json::Value, req: &TestRequest) -> TestRequest {
        let host = TestHost::with_grants(&[]);
        let p: RequestTransformer = host.init(config).unwrap();
        match host.on_request(&p, req, &TestContext::new()) {
            RequestDecision::Continue => req.clone(),
            RequestDecision::Edit(e) => req.apply(&e),
            RequestDecision::Respond(r) => panic!("unexpected response {r:?}"),
        }
    }

    #[test]
    fn header_remove_rename_set_add() {
        let req = TestRequest::get("/")
            .header("x-internal", "1")
            .header("X-Old", "a")
            .header("x-old", "b")
            .header("x-new", "stale")
            .header("x-keep", "mine");
        let out = forwarded(
            json!({ "headers": {
                "remove": ["X-Internal", "x-absent"],
                "rename": { "x-old": "x-new", "x-missing": "x-other" },
                "set": { "x-env": "prod" },
                "add": { "x-keep": "default", "x-added": "yes" }
            }}),
            &req,
        );
        assert_eq!(out.get_header("x-internal"), None);
        assert_eq!(out.get_header("x-old"), None);
        assert_eq!(out.get_header_all("x-new"), ["a, b"]);
        assert_eq!(out.get_header("x-other"), None);
        assert_eq!(out.get_header("x-env"), Some("prod"));
        assert_eq!(out.get_header_all("x-keep"), ["mine"]);
        assert_eq!(out.get_header("x-added"), Some("yes"));
    }

    #[test]
    fn path_replaces_the_path_and_keeps_the_query() {
        let req = TestRequest::get("/v1/users/7?expand=1");
        let out = forwarded(json!({ "path": "/internal/users" }), &req);
        assert_eq!(
            (out.path.as_str(), out.query.as_deref()),
            ("/internal/users", Some("expand=1"))
        );
    }

    #[test]
    fn set_of_a_renamed_header_replaces_its_values() {
        let req = TestRequest::get("/")
            .header("x-old", "a")
            .header("x-old", "b");
        let out = forwarded(
            json!({ "headers": { "rename": { "x-old": "x-new" }, "set": { "x-new": "v" } } }),
            &req,
        );
        assert_eq!(out.get_header("x-old"), None);
        assert_eq!(out.get_header_all("x-new"), ["v"]);
    }

    #[test]
    fn a_renamed_header_sent_many_times_is_one_edit() {
        // More lines than a decision may hold edits: one joined value, not one edit each.
        let mut req = TestRequest::get("/");
        for i in 0..100 {
            req = req.header("x-old", format!("v{i}"));
        }
        req = req.header("cookie", "a=1").header("cookie", "b=2");
        let out = forwarded(
            json!({ "headers": { "rename": { "x-old": "x-new", "cookie": "cookie-copy" } } }),
            &req,
        );
        let want: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        assert_eq!(out.get_header_all("x-new"), [want.join(", ")]);
        let out = forwarded(
            json!({ "headers": { "rename": { "cookie-copy": "cookie" } } }),
            &TestRequest::get("/")
                .header("cookie-copy", "a=1")
                .header("cookie-copy", "b=2"),
        );
        assert_eq!(out.get_header_all("cookie"), ["a=1; b=2"]);
    }

    #[test]
    fn renamed_values_too_long_together_are_answered_431() {
        let big = "x".repeat(MAX_HEADER_VALUE_BYTES / 2);
        let req = TestRequest::get("/")
            .header("x-old", big.clone())
            .header("x-old", big.clone());
        let host = TestHost::with_grants(&[]);
        let p: RequestTransformer = host
            .init(json!({ "headers": { "rename": { "x-old": "x-new" } } }))
            .unwrap();
        let d = host.on_request(&p, &req, &TestContext::new());
        assert_eq!(d.status(), Some(431), "{d:?}");
    }

    #[test]
    fn set_replaces_every_value() {
        let req = TestRequest::get("/").header("x-a", "1").header("x-a", "2");
        let out = forwarded(json!({ "headers": { "set": { "x-a": "3" } } }), &req);
        assert_eq!(out.get_header_all("x-a"), ["3"]);
    }

    #[test]
    fn add_after_remove_adds() {
        let req = TestRequest::get("/").header("x-a", "old");
        let out = forwarded(
            json!({ "headers": { "remove": ["x-a"], "add": { "x-a": "new" } } }),
            &req,
        );
        assert_eq!(out.get_header_all("x-a"), ["new"]);
    }

    #[test]
    fn query_remove_rename_set_add() {
        let req = TestRequest::get("/s?debug=1&q=rust%20wasm&v=1&v=2&lang=fr");
        let out = forwarded(
            json!({ "query": {
                "remove": ["debug"],
                "rename": { "q": "search" },
                "set": { "v": "3" },
                "add": { "lang": "en", "page": "1 of 2" }
            }}),
            &req,
        );
        assert_eq!(
            out.query.as_deref(),
            Some("search=rust%20wasm&v=3&lang=fr&page=1+of+2")
        );
    }

    #[test]
    fn removing_the_last_parameter_removes_the_query() {
        let out = forwarded(
            json!({ "query": { "remove": ["a"] } }),
            &TestRequest::get("/?a=1"),
        );
        assert_eq!(out.query, None);
    }

    #[test]
    fn nothing_to_change_continues() {
        let host = TestHost::with_grants(&[]);
        let p: RequestTransformer = host
            .init(json!({ "headers": { "remove": ["x-a"] }, "query": { "remove": ["b"] } }))
            .unwrap();
        let req = TestRequest::get("/?c=1");
        assert!(host.on_request(&p, &req, &TestContext::new()).is_continue());
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs = sluice_sdk::testing::readme_configs(
            include_str!("../README.md"),
            "request-transformer",
        );
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<RequestTransformer>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
