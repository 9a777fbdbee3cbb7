//! A native test harness: run a policy's logic on your machine, against a fake host.
//!
//! Natively (any target but `wasm32`) every capability call of the SDK goes to the fake
//! host of the current thread: an in-memory kv store, a clock that only moves when the
//! test moves it, a GCRA rate limiter, and recorders for log lines, analytics events and
//! outbound requests. [`TestHost`] creates and inspects it; [`TestRequest`],
//! [`TestResponse`] and [`TestContext`] stand in for the gateway's request, response
//! and context.
//!
//! ```
//! use serde::Deserialize;
//! use sluice_sdk::testing::{json, TestContext, TestHost, TestRequest};
//! use sluice_sdk::{Context, Policy, Request, RequestDecision};
//!
//! #[derive(Deserialize)]
//! struct Config { header: String }
//! struct RequireHeader(String);
//! impl Policy for RequireHeader {
//!     type Config = Config;
//!     fn new(c: Config) -> Result<Self, String> { Ok(Self(c.header)) }
//!     fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
//!         if req.has_header(&self.0) {
//!             RequestDecision::Continue
//!         } else {
//!             RequestDecision::respond(400)
//!         }
//!     }
//! }
//!
//! let host = TestHost::new();
//! let policy: RequireHeader = host.init(json!({ "header": "x-id" })).unwrap();
//! let req = TestRequest::get("/").header("x-id", "7").client_ip("203.0.113.7");
//! assert!(host.on_request(&policy, &req, &TestContext::new()).is_continue());
//! let d = host.on_request(&policy, &TestRequest::get("/"), &TestContext::new());
//! assert_eq!(d.status(), Some(400));
//! ```
//!
//! Each test thread has its own fake host, so tests run in parallel without sharing
//! state. [`TestHost::new`] installs a fresh one; its methods re-install it before
//! calling the policy.

mod config;
mod heads;
mod host;

pub use config::{readme_configs, toml_config};
pub use heads::{TestContext, TestRequest, TestResponse};
pub use host::{Capability, EventRecord, LogLine, RateLimitCall, TestHost};

/// `serde_json::json!`, re-exported to write test configurations.
pub use serde_json::json;
