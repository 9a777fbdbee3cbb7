//! [`TestHost`]: creates, drives and inspects the fake host of the current thread.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;

use super::{TestContext, TestRequest, TestResponse};
use crate::decision::{
    Header, MAX_LOCAL_BODY_BYTES, RequestDecision, ResponseDecision, assert_host_takes,
};
use crate::host::fake::{self, FakeState};
use crate::http::{HttpError, HttpResponse};
use crate::kv::KvError;
use crate::log::Level;
use crate::rate_limit::Limit;
use crate::{BodyPolicy, Policy};

/// A host capability, as named in the gateway's `grants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `log`
    Log,
    /// `clock`
    Clock,
    /// `kv`
    Kv,
    /// `rate-limit`
    RateLimit,
    /// `analytics`
    Analytics,
    /// `outbound-http`
    OutboundHttp,
}

impl Capability {
    /// The capability's name: the WIT interface and the grant.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Clock => "clock",
            Self::Kv => "kv",
            Self::RateLimit => "rate-limit",
            Self::Analytics => "analytics",
            Self::OutboundHttp => "outbound-http",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line the policy logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The severity.
    pub level: Level,
    /// The text.
    pub message: String,
}

/// One analytics event the policy emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The fields, in order.
    pub fields: Vec<(String, String)>,
}

impl EventRecord {
    /// The value of the field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One call of `rate_limit::check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitCall {
    /// The key.
    pub key: String,
    /// The limit.
    pub limit: Limit,
    /// The cost.
    pub cost: u32,
}

/// The fake host of a test: create one per test with [`TestHost::new`].
///
/// The fake wall clock starts at 1,700,000,000,000 ms and the monotonic clock at
/// 1,000,000,000 ns; neither moves unless the test calls
/// [`advance_millis`](Self::advance_millis). The kv store allows keys up to 1,024 bytes,
/// values up to 1 MiB and 100,000 keys (the gateway's limits are set by its operator).
#[derive(Clone)]
pub struct TestHost {
    state: Rc<RefCell<FakeState>>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestHost").finish_non_exhaustive()
    }
}

impl TestHost {
    /// A fresh fake host granting every capability, installed for this thread.
    pub fn new() -> Self {
        let host = Self {
            state: Rc::default(),
        };
        host.activate();
        host
    }

    /// A fresh fake host granting only `grants`: a call to any other capability panics,
    /// as the gateway would refuse a component importing it.
    pub fn with_grants(grants: &[Capability]) -> Self {
        let host = Self::new();
        host.state.borrow_mut().grants = Some(grants.iter().copied().collect());
        host
    }

    /// Makes this the fake host that capability calls on this thread go to. [`new`]
    /// and the methods that call a policy do it for you.
    ///
    /// [`new`]: Self::new
    pub fn activate(&self) {
        fake::install(self.state.clone());
    }

    /// Builds a policy from a JSON configuration, exactly as the component's `init`
    /// does.
    ///
    /// # Errors
    /// The message the gateway would show when refusing the configuration.
    pub fn init<P: Policy>(&self, config: serde_json::Value) -> Result<P, String> {
        self.init_json(&config.to_string())
    }

    /// Builds a policy from configuration JSON text, exactly as the component's `init`
    /// does.
    ///
    /// # Errors
    /// The message the gateway would show when refusing the configuration.
    pub fn init_json<P: Policy>(&self, config: &str) -> Result<P, String> {
        self.activate();
        crate::policy::build(config)
    }

    /// Builds a policy from a configuration written in TOML, as in the gateway's
    /// configuration file (`header = "x-api-key"`).
    ///
    /// # Errors
    /// The TOML parser's message, or the message the gateway would show when refusing
    /// the configuration.
    pub fn init_toml<P: Policy>(&self, config: &str) -> Result<P, String> {
        self.init(super::toml_config(config)?)
    }

    /// Calls the policy's `on_request`.
    pub fn on_request<P: Policy>(
        &self,
        policy: &P,
        req: &TestRequest,
        ctx: &TestContext,
    ) -> RequestDecision {
        self.activate();
        checked(policy.on_request(&req.as_request(), &ctx.as_context()))
    }

    /// Calls the policy's `on_request_body` with `body`, as the gateway does after
    /// `on_request` continued (pass the request with `on_request`'s edits applied, e.g.
    /// `req.apply(&edits)`).
    pub fn on_request_body<P: BodyPolicy>(
        &self,
        policy: &P,
        req: &TestRequest,
        body: &[u8],
        ctx: &TestContext,
    ) -> RequestDecision {
        self.activate();
        checked(policy.on_request_body(&req.as_request(), body, &ctx.as_context()))
    }

    /// Calls the policy's `on_response`.
    pub fn on_response<P: Policy>(
        &self,
        policy: &P,
        req: &TestRequest,
        resp: &TestResponse,
        ctx: &TestContext,
    ) -> ResponseDecision {
        self.activate();
        let d = policy.on_response(&req.as_request(), &resp.as_response(), &ctx.as_context());
        if let ResponseDecision::Edit(e) = &d {
            assert_host_takes(&e.set_headers, &e.append_headers);
        }
        d
    }

    /// The capabilities the policy has called so far.
    pub fn used(&self) -> BTreeSet<Capability> {
        self.state.borrow().used.clone()
    }

    // --- clock ---

    /// The fake wall clock, in milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> u64 {
        self.state.borrow().now_millis
    }

    /// Sets the fake wall clock (the monotonic clock is left alone).
    pub fn set_now_millis(&self, millis: u64) {
        self.state.borrow_mut().now_millis = millis;
    }

    /// Moves both fake clocks forward.
    pub fn advance_millis(&self, millis: u64) {
        let mut s = self.state.borrow_mut();
        s.now_millis += millis;
        s.monotonic_nanos += millis * 1_000_000;
    }

    /// Moves the monotonic clock forward by `nanos` (the wall clock is left alone).
    pub fn advance_nanos(&self, nanos: u64) {
        self.state.borrow_mut().monotonic_nanos += nanos;
    }

    // --- kv ---

    /// Stores a value without expiry, as if the operator had loaded it.
    pub fn kv_insert(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.state.borrow_mut().kv.insert(
            key.to_owned(),
            fake::KvEntry {
                value: value.into(),
                expires_at_millis: None,
            },
        );
    }

    /// The live value under `key`.
    pub fn kv_value(&self, key: &str) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        let entry = s.kv.get(key)?;
        match entry.expires_at_millis {
            Some(at) if at <= s.now_millis => None,
            _ => Some(entry.value.clone()),
        }
    }

    /// Makes every kv operation fail with `error` (`None` restores normal operation).
    pub fn kv_fail(&self, error: Option<KvError>) {
        self.state.borrow_mut().kv_failure = error;
    }

    /// Sets the largest key the fake store accepts.
    pub fn kv_max_key_bytes(&self, bytes: usize) {
        self.state.borrow_mut().kv_limits.max_key_bytes = bytes;
    }

    // --- rate-limit ---

    /// Makes every rate-limit check fail with `error` (`None` restores normal operation).
    pub fn rate_limit_fail(&self, error: Option<&str>) {
        self.state.borrow_mut().rate_limit_failure = error.map(str::to_owned);
    }

    /// Every rate-limit check so far, in order.
    pub fn rate_limit_calls(&self) -> Vec<RateLimitCall> {
        self.state.borrow().rate_limit_calls.clone()
    }

    // --- log and analytics ---

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Every analytics event emitted so far.
    pub fn events(&self) -> Vec<EventRecord> {
        self.state.borrow().events.clone()
    }

    // --- outbound-http ---

    /// Decides what a GET of `url` answers. URLs without a route fail with
    /// [`HttpError::Denied`], as non-allowlisted hosts do in the gateway.
    pub fn http_route(&self, url: &str, answer: Result<HttpResponse, HttpError>) {
        self.state
            .borrow_mut()
            .http_routes
            .insert(url.to_owned(), answer);
    }

    /// Every outbound request so far: URL and headers.
    pub fn http_requests(&self) -> Vec<(String, Vec<Header>)> {
        self.state.borrow().http_requests.clone()
    }
}

/// `d`, after the checks the host makes of a request decision (a decision it would refuse
/// panics here, as the call fails there).
fn checked(d: RequestDecision) -> RequestDecision {
    match &d {
        RequestDecision::Continue => {}
        RequestDecision::Edit(e) => assert_host_takes(&e.set_headers, &e.append_headers),
        RequestDecision::Respond(r) => {
            assert_host_takes(&[], &r.headers);
            assert!(
                r.body.len() <= MAX_LOCAL_BODY_BYTES,
                "local response body over {MAX_LOCAL_BODY_BYTES} bytes: the host fails this call"
            );
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{self, Limit};
    use crate::{analytics, clock, kv, log};

    #[test]
    fn kv_respects_ttl_and_limits() {
        let host = TestHost::new();
        kv::set("a", b"1", Some(100)).unwrap();
        assert_eq!(kv::get("a").unwrap(), Some(b"1".to_vec()));
        host.advance_millis(100);
        assert_eq!(kv::get("a").unwrap(), None);
        assert_eq!(kv::increment("n", 5, None), Ok(5));
        assert_eq!(kv::increment("n", -2, None), Ok(3));
        kv::set("s", b"x", None).unwrap();
        assert_eq!(kv::increment("s", 1, None), Err(KvError::NotANumber));
        assert_eq!(
            kv::get(&"k".repeat(2000)),
            Err(KvError::KeyTooLarge),
            "key cap"
        );
        assert!(kv::compare_and_set("c", None, b"1", None).unwrap());
        assert!(!kv::compare_and_set("c", None, b"2", None).unwrap());
        assert!(kv::compare_and_set("c", Some(b"1"), b"2", None).unwrap());
        assert!(kv::delete("c").unwrap());
        host.kv_fail(Some(KvError::Unavailable("down".into())));
        assert!(kv::get("a").is_err());
    }

    #[test]
    fn gcra_allows_burst_then_refuses() {
        let host = TestHost::new();
        let limit = Limit {
            requests: 2,
            window_ms: 1000,
            burst: 0,
        };
        let a = rate_limit::check("k", limit, 1).unwrap();
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining), (2, 1));
        let b = rate_limit::check("k", limit, 1).unwrap();
        assert_eq!((b.allowed, b.remaining, b.reset_ms), (true, 0, 1000));
        let c = rate_limit::check("k", limit, 1).unwrap();
        assert!(!c.allowed);
        assert_eq!(c.retry_after_ms, 500);
        host.advance_millis(500);
        assert!(rate_limit::check("k", limit, 1).unwrap().allowed);
        assert!(rate_limit::check("other", limit, 1).unwrap().allowed);
        assert_eq!(host.rate_limit_calls().len(), 5);
    }

    #[test]
    fn limits_the_gateway_refuses_are_errors() {
        let _host = TestHost::new();
        let limit = |requests, window_ms| Limit {
            requests,
            window_ms,
            burst: 0,
        };
        for bad in [
            limit(0, 1000),
            limit(1001, 1),
            limit(1, 366 * 24 * 3600 * 1000 + 1),
        ] {
            assert!(rate_limit::check("k", bad, 1).is_err(), "{bad:?}");
        }
        assert!(rate_limit::check("k", limit(1000, 1), 1).is_ok());
    }

    #[test]
    fn records_logs_events_and_clock() {
        let host = TestHost::new();
        log::info!("hello {}", 1);
        analytics::Event::new().field("a", 1).emit();
        assert_eq!(clock::now_millis(), 1_700_000_000_000);
        host.advance_millis(5);
        assert_eq!(clock::monotonic_nanos(), 1_005_000_000);
        assert_eq!(host.logs()[0].message, "hello 1");
        assert_eq!(host.events()[0].get("a"), Some("1"));
        assert_eq!(
            host.used(),
            [Capability::Log, Capability::Clock, Capability::Analytics]
                .into_iter()
                .collect()
        );
    }

    #[test]
    #[should_panic(expected = "capability `kv`, which is not granted")]
    fn ungranted_capability_panics() {
        let _host = TestHost::with_grants(&[Capability::Log]);
        let _ = kv::get("x");
    }

    /// A body policy that logs what it sees and echoes the body's length in a header.
    struct BodyLength;

    impl Policy for BodyLength {
        type Config = serde_json::Value;
        fn new(_config: serde_json::Value) -> Result<Self, String> {
            Ok(Self)
        }
    }

    impl BodyPolicy for BodyLength {
        fn on_request_body(
            &self,
            req: &crate::Request<'_>,
            body: &[u8],
            ctx: &crate::Context<'_>,
        ) -> RequestDecision {
            log::info!("{} {}", req.path(), body.len());
            ctx.set("body.seen", "yes");
            crate::Edits::new()
                .set_header("x-len", body.len().to_string())
                .into()
        }
    }

    #[test]
    fn calls_on_request_body_on_the_fake_host() {
        let host = TestHost::with_grants(&[Capability::Log]);
        let p: BodyLength = host.init(serde_json::json!({})).unwrap();
        let req = TestRequest::post("/upload");
        let ctx = TestContext::new();
        let d = host.on_request_body(&p, &req, b"four", &ctx);
        assert_eq!(req.apply(d.edits().unwrap()).get_header("x-len"), Some("4"));
        assert_eq!(ctx.get("body.seen").as_deref(), Some("yes"));
        assert_eq!(host.logs()[0].message, "/upload 4");
    }

    #[test]
    fn http_routes_and_denies() {
        let host = TestHost::new();
        host.http_route("https://a/", Ok(HttpResponse::new(200, "ok")));
        assert_eq!(crate::http::get("https://a/", &[]).unwrap().body, b"ok");
        assert_eq!(crate::http::get("https://b/", &[]), Err(HttpError::Denied));
        assert_eq!(host.http_requests().len(), 2);
    }
}
