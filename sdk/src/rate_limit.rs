//! Capability `rate-limit`: rate limiting with the algorithm implemented by the host.
//!
//! Requires the grant `rate-limit`. Natively, [`crate::testing::TestHost`] answers with
//! a GCRA limiter driven by its fake clock.

use crate::host::{Active, Host};

/// A limit: `requests` per `window_ms`, allowing bursts up to `burst` (0 = `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// The largest burst allowed (0 = `requests`).
    pub burst: u32,
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this request is within the limit.
    pub allowed: bool,
    /// The limit, as advertised in `RateLimit-Limit`.
    pub limit: u32,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Milliseconds until the limit is fully available again.
    pub reset_ms: u64,
    /// When refused: milliseconds until a retry may succeed.
    pub retry_after_ms: u64,
}

impl Verdict {
    /// [`reset_ms`](Self::reset_ms) in whole seconds, rounded up (for `RateLimit-Reset`).
    pub fn reset_secs(&self) -> u64 {
        self.reset_ms.div_ceil(1000)
    }

    /// [`retry_after_ms`](Self::retry_after_ms) in whole seconds, rounded up and at
    /// least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// Checks (and counts, when allowed) `cost` units against `key` under `limit`. The host
/// namespaces keys per plugin instance.
///
/// # Errors
/// The host's description of a backend failure (e.g. an unreachable shared store).
pub fn check(key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
    Active::rate_limit_check(key, limit, cost)
}
