//! The `hybrid` rate limiter: counts locally on every check (no network on the request
//! path) and reconciles with Redis on an interval, for a global limit at local speed.
//!
//! Each key is counted in fixed windows (`window_ms`, aligned to the Unix epoch on every
//! node, so nodes need synchronised clocks). A node admits while `global + pending < limit`,
//! where `global` is the window's total over every node at the last reconciliation and
//! `pending` what this node admitted since. Every `sync_interval` the node adds its pending
//! count to the window's Redis counter (INCRBY, one round trip per active key) and learns
//! the new total.
//!
//! Overshoot bound: between two reconciliations every node may admit up to what it believes
//! is left, so with `N` nodes a window admits at most the limit plus
//! `(N − 1) × min(limit, r × sync_interval)` where `r` is one node's request rate for the key.
//! As with any fixed window, a client can also use two windows' allowance around a boundary.
//! While reconciliation fails the limiter reports errors, so the policy's
//! `on_backend_error` rule applies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ratelimit::{Limit, Verdict};
use super::redis::Redis;

struct Slot {
    window: u64,
    window_ms: u64,
    global: u64,
    pending: u64,
}

/// One policy's hybrid limiter.
pub struct Hybrid {
    redis: Arc<Redis>,
    prefix: String,
    slots: Mutex<HashMap<String, Slot>>,
    synced: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hybrid {
    /// A limiter whose Redis keys start with `prefix`, reconciling every `interval` (on a
    /// task that ends when the limiter is dropped).
    pub fn start(redis: Arc<Redis>, prefix: String, interval: Duration) -> Arc<Self> {
        let h = Arc::new(Self {
            redis,
            prefix,
            slots: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(true),
        });
        let weak = Arc::downgrade(&h);
        tokio::spawn(reconcile_forever(
            weak,
            interval.max(Duration::from_millis(1)),
        ));
        h
    }

    /// Checks and counts `cost` units for `key` against the local view of the global count.
    pub fn check(&self, key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        if !self.synced.load(Ordering::Relaxed) {
            return Err("hybrid rate limiter cannot reconcile with redis".into());
        }
        let window_ms = limit.window_ms.max(1);
        let now = now_ms();
        let window = now / window_ms;
        let reset_ms = (window + 1) * window_ms - now;
        let requests = u64::from(limit.requests);
        let cost = u64::from(cost.max(1));
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match slots.get_mut(key) {
            Some(s) => s,
            None => slots.entry(key.to_owned()).or_insert(Slot {
                window,
                window_ms,
                global: 0,
                pending: 0,
            }),
        };
        if slot.window != window || slot.window_ms != window_ms {
            *slot = Slot {
                window,
                window_ms,
                global: 0,
                pending: 0,
            };
        }
        let used = slot.global + slot.pending;
        let allowed = used + cost <= requests;
        if allowed {
            slot.pending += cost;
        }
        let used = slot.global + slot.pending;
        Ok(Verdict {
            allowed,
            limit: limit.requests,
            remaining: requests.saturating_sub(used) as u32,
            reset_ms,
            retry_after_ms: if allowed { 0 } else { reset_ms },
        })
    }

    /// Adds every key's pending count to Redis and learns the totals.
    async fn reconcile(&self) {
        let now = now_ms();
        let batch: Vec<(String, u64, u64, u64)> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.retain(|_, s| s.window == now / s.window_ms);
            slots
                .iter()
                .map(|(k, s)| (k.clone(), s.window, s.window_ms, s.pending))
                .collect()
        };
        let calls = batch.iter().map(|(key, window, window_ms, pending)| {
            let counter = format!("{}{key}:{window}", self.prefix);
            self.redis.window_add(counter, *pending, window_ms * 2)
        });
        let totals = futures_util::future::join_all(calls).await;
        let mut ok = true;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for ((key, window, _, flushed), total) in batch.into_iter().zip(totals) {
            match total {
                Ok(total) => {
                    if let Some(s) = slots.get_mut(&key).filter(|s| s.window == window) {
                        s.pending = s.pending.saturating_sub(flushed);
                        s.global = total;
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::debug!(error = %e, "hybrid reconciliation failed");
                }
            }
        }
        self.synced.store(ok, Ordering::Relaxed);
    }
}

async fn reconcile_forever(limiter: Weak<Hybrid>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(l) = limiter.upgrade() else { return };
        l.reconcile().await;
    }
}
