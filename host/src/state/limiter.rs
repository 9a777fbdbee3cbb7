//! The `rate-limit` capability's per-policy handle: the chosen backend (`local`, `redis`,
//! `hybrid`) and the policy's `on_backend_error` rule.

use std::sync::Arc;

use super::hybrid::Hybrid;
use super::ratelimit::{Limit, LocalLimiter, Verdict};
use super::redis::Redis;
use super::stats::StateStats;
use crate::config::OnBackendError;

/// Where the counters live.
pub enum Shared {
    /// Only in this process.
    None,
    /// In Redis, under keys prefixed with the policy's label.
    Redis {
        /// The connection pool.
        redis: Arc<Redis>,
        /// `sluice:rl:<label>:`.
        prefix: String,
    },
    /// Counted here, reconciled with Redis.
    Hybrid(Arc<Hybrid>),
}

/// One policy's rate limiter.
pub struct RateLimiter {
    local: Arc<LocalLimiter>,
    shared: Shared,
    on_error: OnBackendError,
    stats: Arc<StateStats>,
}

impl RateLimiter {
    /// A limiter on `shared` (when not `None`), falling back per `on_error` to `local`.
    pub fn new(
        local: Arc<LocalLimiter>,
        shared: Shared,
        on_error: OnBackendError,
        stats: Arc<StateStats>,
    ) -> Self {
        Self {
            local,
            shared,
            on_error,
            stats,
        }
    }

    /// Checks (and counts, when allowed) `cost` units against `key` under `limit`.
    pub async fn check(&self, key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        if let Some(v) = self.check_now(key, limit, cost) {
            return v;
        }
        let outcome = match &self.shared {
            Shared::Redis { redis, prefix } => redis
                .check(&format!("{prefix}{key}"), limit, cost)
                .await
                .map_err(|e| e.to_string()),
            Shared::None | Shared::Hybrid(_) => unreachable!("answered by check_now"),
        };
        self.settle(key, limit, cost, outcome)
    }

    /// Whether checks wait on I/O (the `redis` backend); when not,
    /// [`RateLimiter::check_now`] always answers.
    pub fn waits_on_io(&self) -> bool {
        matches!(self.shared, Shared::Redis { .. })
    }

    /// [`RateLimiter::check`] when it needs no I/O (the `local` and `hybrid` backends count
    /// in memory); `None` for the `redis` backend, whose every check is a round trip.
    pub fn check_now(&self, key: &str, limit: Limit, cost: u32) -> Option<Result<Verdict, String>> {
        match &self.shared {
            Shared::None => Some(Ok(self.local.check(key, limit, cost))),
            Shared::Hybrid(h) => Some(self.settle(key, limit, cost, h.check(key, limit, cost))),
            Shared::Redis { .. } => None,
        }
    }

    /// Applies the `on_backend_error` rule to a shared backend's answer.
    fn settle(
        &self,
        key: &str,
        limit: Limit,
        cost: u32,
        outcome: Result<Verdict, String>,
    ) -> Result<Verdict, String> {
        match outcome {
            Ok(v) => {
                self.stats.backend_ok();
                Ok(v)
            }
            Err(why) => {
                self.stats.fallback(self.on_error, &why);
                match self.on_error {
                    OnBackendError::Local => Ok(self.local.check(key, limit, cost)),
                    OnBackendError::Open => Ok(Verdict {
                        allowed: true,
                        limit: limit.requests,
                        remaining: limit.requests.saturating_sub(cost),
                        reset_ms: 0,
                        retry_after_ms: 0,
                    }),
                    OnBackendError::Closed => Err(format!("rate-limit backend unavailable: {why}")),
                }
            }
        }
    }
}
