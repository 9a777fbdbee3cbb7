//! What the verification core needs from its surroundings: time, an HTTP GET for the JWKS,
//! a store shared by every instance of the plugin, and a log. The policy implements it
//! over the host capabilities (`clock`, `outbound-http`, `kv`, `log`); tests implement it
//! with a fake.

/// Severity of a log line written by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Per-request detail (why a token was refused).
    Debug,
    /// Normal operation (keys loaded).
    Info,
    /// Something the operator should look at (a JWKS fetch failed).
    Warn,
}

/// The environment of one verification.
pub trait Env {
    /// Wall-clock time, milliseconds since the Unix epoch (for `exp`/`nbf`).
    fn now_millis(&self) -> u64;
    /// Monotonic time in nanoseconds (for cache ages and the refetch rate limit).
    fn monotonic_nanos(&self) -> u64;
    /// GETs `url` and returns the body of a 200 response.
    ///
    /// # Errors
    /// Why there is no 200 body (denied, timeout, status, …).
    fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String>;
    /// The value under `key` in the store shared by the plugin's instances; `None` when
    /// absent or when the store fails.
    fn shared_get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key` (without expiry); failures are ignored.
    fn shared_set(&mut self, key: &str, value: &[u8]);
    /// Claims `key` for `ttl_ms`: true when it was free (and is now taken), false when
    /// another caller holds it. When the store fails, true (callers then rely on their own
    /// local limits).
    fn shared_claim(&mut self, key: &str, ttl_ms: u64) -> bool;
    /// Writes a log line.
    fn log(&mut self, level: LogLevel, message: &str);
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::collections::{HashMap, VecDeque};

    /// A scripted environment: a settable clock, queued or fixed JWKS answers, a shared
    /// store (with expiry, and a switch to make it fail), a record of every fetch and log
    /// line. Several verifiers using one `FakeEnv` behave like instances of one plugin.
    #[derive(Default)]
    pub(crate) struct FakeEnv {
        /// key → (value, expiry in wall-clock ms).
        pub(crate) kv: HashMap<String, (Vec<u8>, Option<u64>)>,
        pub(crate) kv_down: bool,
        pub(crate) now_millis: u64,
        pub(crate) mono_nanos: u64,
        /// Answers given in order; when empty, `default_answer`.
        pub(crate) answers: VecDeque<Result<Vec<u8>, String>>,
        pub(crate) default_answer: Option<Result<Vec<u8>, String>>,
        pub(crate) fetched: Vec<String>,
        pub(crate) logs: Vec<(LogLevel, String)>,
    }

    impl FakeEnv {
        pub(crate) fn at(now_secs: u64) -> Self {
            FakeEnv {
                now_millis: now_secs * 1000,
                mono_nanos: 1_000_000_000,
                ..Default::default()
            }
        }

        pub(crate) fn advance_secs(&mut self, secs: u64) {
            self.now_millis += secs * 1000;
            self.mono_nanos += secs * 1_000_000_000;
        }
    }

    impl Env for FakeEnv {
        fn now_millis(&self) -> u64 {
            self.now_millis
        }
        fn monotonic_nanos(&self) -> u64 {
            self.mono_nanos
        }
        fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
            self.fetched.push(url.to_string());
            self.answers
                .pop_front()
                .or_else(|| self.default_answer.clone())
                .unwrap_or_else(|| Err("no answer scripted".into()))
        }
        fn shared_get(&mut self, key: &str) -> Option<Vec<u8>> {
            if self.kv_down {
                return None;
            }
            match self.kv.get(key) {
                Some((_, Some(expiry))) if *expiry <= self.now_millis => None,
                Some((value, _)) => Some(value.clone()),
                None => None,
            }
        }
        fn shared_set(&mut self, key: &str, value: &[u8]) {
            if !self.kv_down {
                self.kv.insert(key.to_string(), (value.to_vec(), None));
            }
        }
        fn shared_claim(&mut self, key: &str, ttl_ms: u64) -> bool {
            if self.kv_down {
                return true;
            }
            if self.shared_get(key).is_some() {
                return false;
            }
            let expiry = self.now_millis + ttl_ms;
            self.kv
                .insert(key.to_string(), (b"1".to_vec(), Some(expiry)));
            true
        }
        fn log(&mut self, level: LogLevel, message: &str) {
            self.logs.push((level, message.to_string()));
        }
    }
}
