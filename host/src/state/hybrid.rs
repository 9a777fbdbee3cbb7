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
//! While reconciliation fails altogether (Redis unreachable) the limiter reports errors, so
//! the policy's `on_backend_error` rule applies; a key whose call alone failed (a timeout
//! among many keys) keeps its pending count for the next round. A key checked against
//! several limits (windows) is counted once per window. At most [`MAX_KEYS`] keys are
//! counted at once: beyond, a new key is answered as the fresh key it is, uncounted. Keys
//! are known by a 128-bit digest (the first half of their SHA-256), here and in Redis, so
//! that a key costs the same memory whatever its length and names the same counter on
//! every node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ratelimit::{Limit, Verdict};
use super::redis::Redis;

/// Keys counted at once, per limiter.
const MAX_KEYS: usize = 1 << 20;
/// Reconciliation calls in flight at once.
const CONCURRENT_CALLS: usize = 64;

/// A key's digest: the first 16 bytes of its SHA-256 (the same on every node).
type Digest = [u8; 16];

fn digest(key: &str) -> Digest {
    use sha2::Digest as _;
    let full = sha2::Sha256::digest(key.as_bytes());
    let mut d = [0; 16];
    d.copy_from_slice(&full[..16]);
    d
}

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
    /// Per key, one slot per window length it is checked against.
    slots: Mutex<HashMap<Digest, Vec<Slot>>>,
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
            synced: AtomicBool::new(redis.healthy()),
            redis,
            prefix,
            slots: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&h);
        tokio::spawn(reconcile_forever(
            weak,
            interval.max(Duration::from_millis(1)),
            h.redis.transitions(),
        ));
        h
    }

    /// Checks and counts `cost` units for `key` against the local view of the global count.
    pub fn check(&self, key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        if !self.synced.load(Ordering::Relaxed) {
            return Err("hybrid rate limiter cannot reconcile with redis".into());
        }
        let key = digest(key);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Ok(count(&mut slots, key, limit, cost, now_ms()))
    }

    /// Adds every key's pending count to Redis and learns the totals.
    async fn reconcile(&self) {
        let now = now_ms();
        let batch: Vec<(Digest, u64, u64, u64)> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.retain(|_, windows| {
                windows.retain(|s| s.window == now / s.window_ms);
                !windows.is_empty()
            });
            slots
                .iter()
                .flat_map(|(k, windows)| {
                    windows
                        .iter()
                        .map(|s| (*k, s.window, s.window_ms, s.pending))
                })
                .collect()
        };
        use futures_util::StreamExt as _;
        // Collected first: a lazy map in the stream makes the spawned task's future not
        // provably `Send`.
        let calls: Vec<_> = batch
            .iter()
            .map(|(key, window, window_ms, pending)| {
                let counter = format!(
                    "{}{:032x}:{window_ms}:{window}",
                    self.prefix,
                    u128::from_be_bytes(*key)
                );
                self.redis.window_add(counter, *pending, window_ms * 2)
            })
            .collect();
        let totals: Vec<_> = futures_util::stream::iter(calls)
            .buffered(CONCURRENT_CALLS)
            .collect()
            .await;
        let (mut succeeded, mut failed) = (0usize, 0usize);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for ((key, window, window_ms, flushed), total) in batch.into_iter().zip(totals) {
            match total {
                Ok(total) => {
                    succeeded += 1;
                    let slot = slots.get_mut(&key).and_then(|windows| {
                        windows
                            .iter_mut()
                            .find(|s| s.window_ms == window_ms && s.window == window)
                    });
                    if let Some(s) = slot {
                        s.pending = s.pending.saturating_sub(flushed);
                        s.global = total;
                    }
                }
                Err(e) => {
                    failed += 1;
                    tracing::debug!(error = %e, "hybrid reconciliation failed");
                }
            }
        }
        // In sync when Redis answered a call, or when there was nothing to send and it is
        // connected (a limiter whose checks are all refused while Redis is down has no key
        // to send, and must not count as in sync for that).
        let synced = succeeded > 0 || (failed == 0 && self.redis.healthy());
        self.synced.store(synced, Ordering::Relaxed);
    }
}

/// Counts `cost` units for `key` against `limit` at `now` (ms since the epoch) in the local
/// view `slots`.
fn count(
    slots: &mut HashMap<Digest, Vec<Slot>>,
    key: Digest,
    limit: Limit,
    cost: u32,
    now: u64,
) -> Verdict {
    let window_ms = limit.window_ms.max(1);
    let window = now / window_ms;
    let reset_ms = (window + 1) * window_ms - now;
    let requests = u64::from(limit.requests);
    let cost = u64::from(cost.max(1));
    let full = slots.len() >= MAX_KEYS;
    let windows = match slots.get_mut(&key) {
        Some(windows) => windows,
        None if full => {
            let allowed = cost <= requests;
            return Verdict {
                allowed,
                limit: limit.requests,
                remaining: requests.saturating_sub(if allowed { cost } else { 0 }) as u32,
                reset_ms,
                retry_after_ms: if allowed { 0 } else { reset_ms },
            };
        }
        None => slots.entry(key).or_default(),
    };
    let i = match windows.iter().position(|s| s.window_ms == window_ms) {
        Some(i) => i,
        None => {
            windows.push(Slot {
                window,
                window_ms,
                global: 0,
                pending: 0,
            });
            windows.len() - 1
        }
    };
    let slot = &mut windows[i];
    if slot.window != window {
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
    Verdict {
        allowed,
        limit: limit.requests,
        remaining: requests.saturating_sub(used) as u32,
        reset_ms,
        retry_after_ms: if allowed { 0 } else { reset_ms },
    }
}

/// Reconciles every `interval`, and at once when Redis comes up or goes down (so that a
/// limiter started before its first connection is in sync as soon as there is one).
async fn reconcile_forever(
    limiter: Weak<Hybrid>,
    interval: Duration,
    mut transitions: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // An error means the Redis handle is gone, and the limiter with it.
            _ = transitions.changed() => {}
        }
        let Some(l) = limiter.upgrade() else { return };
        l.reconcile().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_checked_against_two_windows_is_counted_in_each() {
        let mut slots = HashMap::new();
        let per_second = Limit {
            requests: 10,
            window_ms: 1000,
            burst: 0,
        };
        let per_hour = Limit {
            requests: 3,
            window_ms: 3_600_000,
            burst: 0,
        };
        let now = 7_200_000_500;
        let k = digest("k");
        let hourly: Vec<bool> = (0..5)
            .map(|_| {
                count(&mut slots, k, per_second, 1, now);
                count(&mut slots, k, per_hour, 1, now).allowed
            })
            .collect();
        assert_eq!(hourly, [true, true, true, false, false]);
        assert_eq!(count(&mut slots, k, per_second, 1, now).remaining, 4);
        assert_eq!(slots[&k].len(), 2);
        // Another key, however long, is another digest.
        let long = "k".repeat(1024);
        assert!(count(&mut slots, digest(&long), per_hour, 1, now).allowed);
        assert_eq!(slots.len(), 2);
    }

    #[tokio::test]
    async fn a_limiter_with_nothing_to_send_stays_out_of_sync_while_redis_is_down() {
        let settings: crate::config::RedisSettings =
            toml::from_str("url = \"redis://127.0.0.1:1\"").unwrap();
        // Never connected.
        let redis = Redis::connect(&settings, None, false).unwrap();
        let h = Hybrid::start(redis, "t:".into(), Duration::from_secs(3600));
        let limit = Limit {
            requests: 10,
            window_ms: 1000,
            burst: 0,
        };
        assert!(h.check("k", limit, 1).is_err());
        // A refused check counts nothing, so a reconciliation has no key to send: that is
        // not Redis answering.
        h.reconcile().await;
        assert!(h.check("k", limit, 1).is_err());
    }
}
