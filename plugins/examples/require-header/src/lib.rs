//! `require-header`: refuses requests that lack a header.

use serde::Deserialize;
use sluice_sdk::{Context, Policy, Request, RequestDecision, log};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header that must be present.
    pub header: String,
    /// The status of the refusal. By default 400.
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    400
}

/// The policy.
#[derive(Debug)]
pub struct RequireHeader {
    config: Config,
}

impl Policy for RequireHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if !(400..=599).contains(&config.status) {
            return Err(format!("`status` {} is not an error status", config.status));
        }
        Ok(Self { config })
    }

    fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
        if req.has_header(&self.config.header) {
            return RequestDecision::Continue;
        }
        log::debug!("refused {}: no {}", req.path(), self.config.header);
        RequestDecision::respond(self.config.status)
            .header("content-type", "text/plain")
            .body(format!("missing header {}\n", self.config.header))
    }
}

sluice_sdk::export_policy!(RequireHeader);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{Capability, TestContext, TestHost, TestRequest, json};

    #[test]
    fn refuses_without_the_header() {
        // Only `log` granted: calling any other capability panics, as the gateway
        // would refuse the component.
        let host = TestHost::with_grants(&[Capability::Log]);
        let policy: RequireHeader = host.init(json!({ "header": "x-tenant" })).unwrap();

        let req = TestRequest::get("/orders").client_ip("203.0.113.7");
        let d = host.on_request(&policy, &req, &TestContext::new());
        assert_eq!(d.status(), Some(400));
        assert_eq!(
            d.response().unwrap().body_str(),
            "missing header x-tenant\n"
        );

        let req = TestRequest::get("/orders").header("X-Tenant", "t1");
        assert!(
            host.on_request(&policy, &req, &TestContext::new())
                .is_continue()
        );
    }

    #[test]
    fn rejects_typos() {
        let err = TestHost::new()
            .init::<RequireHeader>(json!({ "headr": "x" }))
            .unwrap_err();
        assert!(err.contains("unknown field"));
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs = sluice_sdk::testing::readme_configs(
            include_str!("../../../../sdk/README.md"),
            "require-header",
        );
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<RequireHeader>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
