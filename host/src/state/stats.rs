//! Counters of the state backends' degradations, shared by every policy of the process.
//!
//! Each fallback (a Redis call that failed or exceeded its deadline, handled by the policy's
//! `on_backend_error` rule) is counted by rule; the first one after a healthy period logs a
//! warning and the first success after a degraded period logs the recovery, so an outage
//! shows in the logs as two lines, not one per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::OnBackendError;

/// Fallback counters.
#[derive(Debug, Default)]
pub struct StateStats {
    open: AtomicU64,
    closed: AtomicU64,
    local: AtomicU64,
    degraded: AtomicBool,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FallbackCounts {
    /// Calls answered by the `open` rule.
    pub open: u64,
    /// Calls answered by the `closed` rule.
    pub closed: u64,
    /// Calls answered from local state.
    pub local: u64,
}

impl StateStats {
    /// Records one fallback under `rule` because of `why`.
    pub fn fallback(&self, rule: OnBackendError, why: &str) {
        let counter = match rule {
            OnBackendError::Open => &self.open,
            OnBackendError::Closed => &self.closed,
            OnBackendError::Local => &self.local,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.load(Ordering::Relaxed) && !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(rule = ?rule, reason = why, "state backend unavailable; applying on_backend_error");
        }
    }

    /// Records a successful backend call (logs the recovery after a degraded period).
    pub fn backend_ok(&self) {
        if self.degraded.load(Ordering::Relaxed) && self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(fallbacks = ?self.counts(), "state backend recovered");
        }
    }

    /// The counters now.
    pub fn counts(&self) -> FallbackCounts {
        FallbackCounts {
            open: self.open.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            local: self.local.load(Ordering::Relaxed),
        }
    }
}
