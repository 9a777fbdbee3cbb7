//! The in-process rate limiter: GCRA (the generic cell rate algorithm) over sharded maps.
//!
//! GCRA keeps one number per key (the theoretical arrival time), needs no timer or
//! background work, gives exact `remaining`/`reset` values for the `RateLimit-*` headers, and
//! spreads a window's allowance smoothly instead of admitting a whole window at its start
//! (a fixed window admits up to 2× the limit across a boundary). A check on an existing key
//! hashes the key once (the hash picks the shard and finds the entry), takes one shard
//! lock and allocates nothing.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use hashbrown::HashTable;

/// A limit: `requests` per `window_ms`, with bursts up to `burst` (0 means `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per window.
    pub requests: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Largest burst; 0 means `requests`.
    pub burst: u32,
}

/// The longest window a limit may have: 366 days.
pub const MAX_WINDOW_MS: u64 = 366 * 24 * 3600 * 1000;

impl Limit {
    /// Why this limit cannot be enforced, if it cannot: a zero count or window, a window over
    /// [`MAX_WINDOW_MS`], or more requests than microseconds in the window.
    pub fn check_valid(&self) -> Result<(), String> {
        if self.requests == 0 || self.window_ms == 0 {
            return Err("limit.requests and limit.window-ms must be positive".into());
        }
        if self.window_ms > MAX_WINDOW_MS {
            return Err(format!("limit.window-ms over {MAX_WINDOW_MS} (366 days)"));
        }
        // The Redis backend counts in microseconds (Lua's numbers hold no finer clock), so
        // every backend takes the limits it can enforce alike.
        if u64::from(self.requests) > self.window_ms * 1_000 {
            return Err("limit.requests over one per microsecond of the window".into());
        }
        Ok(())
    }

    /// Requests per window, at least 1.
    pub fn requests_units(&self) -> u64 {
        u64::from(self.requests.max(1))
    }

    /// The burst (`requests` when 0), at least 1.
    pub fn burst_units(&self) -> u64 {
        u64::from(
            if self.burst == 0 {
                self.requests
            } else {
                self.burst
            }
            .max(1),
        )
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// The advertised limit.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Milliseconds until the full burst is available again.
    pub reset_ms: u64,
    /// When refused, milliseconds until a retry can succeed.
    pub retry_after_ms: u64,
}

const SHARDS: usize = 64;
/// Keys one limiter remembers at most (per shard: this over [`SHARDS`]): 1 Mi. Beyond, a
/// new key is checked as the fresh key it is but not remembered until a sweep frees room, so
/// that a flood of made-up keys (random header values, rotating addresses) cannot grow the
/// gateway's memory without bound; keys already known stay limited.
const MAX_KEYS: usize = 1 << 20;

/// One key's state: `(hash, fingerprint, theoretical arrival time)`. Keys are known by two
/// independently seeded 64-bit hashes rather than kept: an entry is 24 bytes whatever the
/// key's length (a million 1 KiB keys would otherwise hold a gigabyte), and two keys share
/// a state only if both hashes collide (about 2^-64 per pair, with seeds an attacker does
/// not know).
type Entry = (u64, u64, u64);

/// One shard: entries found by their hash.
type Shard = HashTable<Entry>;

/// Sharded GCRA state for one namespace (one policy instance).
pub struct LocalLimiter {
    epoch: Instant,
    hasher: foldhash::fast::RandomState,
    fingerprint: foldhash::fast::RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            hasher: foldhash::fast::RandomState::default(),
            fingerprint: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }

    /// Checks `cost` units for `key` at the current time.
    pub fn check(&self, key: &str, limit: Limit, cost: u32) -> Verdict {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.check_at(key, limit, cost, now)
    }

    /// Checks at an explicit time in nanoseconds since the limiter's epoch (for tests and
    /// benchmarks).
    pub fn check_at(&self, key: &str, limit: Limit, cost: u32, now: u64) -> Verdict {
        let (requests, burst) = (limit.requests_units(), limit.burst_units());
        // Saturating and at least 1 ns: a limit that `check_valid` refuses cannot panic here.
        let window_ns = limit.window_ms.clamp(1, MAX_WINDOW_MS) * 1_000_000;
        let interval = (window_ns / requests).max(1);
        let tolerance = interval.saturating_mul(burst);
        let cost = u64::from(cost.max(1));
        let (hash, fingerprint) = (self.hasher.hash_one(key), self.fingerprint.hash_one(key));
        // The fingerprint (an independent hash) picks the shard: the table's control bytes
        // come from `hash`'s top bits, which would take few values within a shard picked by
        // them too.
        let mut shard = self.shards[(fingerprint >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let found = shard.find_mut(hash, |e| e.0 == hash && e.1 == fingerprint);
        let tat = found.as_ref().map_or(now, |e| e.2).max(now);
        let new_tat = tat.saturating_add(interval.saturating_mul(cost));
        let allow_at = new_tat.saturating_sub(tolerance);
        let ms = |ns: u64| ns.div_ceil(1_000_000);
        if now < allow_at {
            let remaining = now.saturating_add(tolerance).saturating_sub(tat) / interval;
            return Verdict {
                allowed: false,
                limit: limit.requests,
                remaining: remaining as u32,
                reset_ms: ms(tat - now),
                retry_after_ms: ms(allow_at - now),
            };
        }
        match found {
            Some(e) => e.2 = new_tat,
            None => {
                // Full until the periodic sweep frees room (no scan here: a flood would pay
                // one per request).
                if shard.len() < MAX_KEYS / SHARDS {
                    shard.insert_unique(hash, (hash, fingerprint, new_tat), |e| e.0);
                }
            }
        }
        let remaining = now.saturating_add(tolerance).saturating_sub(new_tat) / interval;
        Verdict {
            allowed: true,
            limit: limit.requests,
            remaining: remaining as u32,
            reset_ms: ms(new_tat - now),
            retry_after_ms: 0,
        }
    }

    /// How many keys the limiter remembers.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether the limiter remembers no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets keys whose allowance is fully restored (their state equals a fresh key's).
    pub fn sweep(&self) {
        self.sweep_at(self.epoch.elapsed().as_nanos() as u64);
    }

    /// [`Self::sweep`] at an explicit time (nanoseconds since the limiter's epoch).
    pub fn sweep_at(&self, now: u64) {
        for s in &self.shards {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|e| e.2 > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn limits_that_cannot_be_enforced_are_refused_and_never_panic() {
        let l = LocalLimiter::new();
        let cases = [
            (u32::MAX, 1, u32::MAX),          // more requests than nanoseconds
            (1001, 1, 1),                     // more requests than microseconds
            (1, u64::MAX, u32::MAX),          // a window of 584 million years
            (0, 0, 0),                        // nothing
            (1, MAX_WINDOW_MS + 1, u32::MAX), // just over the longest window
        ];
        for (requests, window_ms, burst) in cases {
            let lim = Limit {
                requests,
                window_ms,
                burst,
            };
            assert!(lim.check_valid().is_err(), "{lim:?} accepted");
            // Still no panic or overflow if one reaches the limiter.
            for now in [0, SEC, u64::MAX / 2] {
                let _ = l.check_at("k", lim, u32::MAX, now);
            }
        }
        let ok = Limit {
            requests: 1_000,
            window_ms: 1,
            burst: 0,
        };
        assert_eq!(ok.check_valid(), Ok(()));
        assert!(l.check_at("k2", ok, 1, SEC).allowed);
    }

    #[test]
    fn keys_are_forgotten_once_restored_and_never_exceed_the_cap() {
        let l = LocalLimiter::new();
        let lim = Limit {
            requests: 1,
            window_ms: 1000,
            burst: 0,
        };
        for i in 0..1000 {
            l.check_at(&format!("k{i}"), lim, 1, SEC);
        }
        assert_eq!(l.len(), 1000);
        // One window later every allowance is restored: a sweep forgets them all.
        l.sweep_at(2 * SEC + 1);
        assert!(l.is_empty());
        // A flood of distinct keys within one window stops at the cap...
        for i in 0..MAX_KEYS + 5000 {
            l.check_at(&format!("f{i}"), lim, 1, 3 * SEC);
        }
        assert!(l.len() <= MAX_KEYS, "{}", l.len());
        // ...and known keys stay limited.
        assert!(!l.check_at("f0", lim, 1, 3 * SEC).allowed);
    }

    #[test]
    fn admits_exactly_the_limit_per_window_then_refuses() {
        let l = LocalLimiter::new();
        let lim = Limit {
            requests: 10,
            window_ms: 1000,
            burst: 0,
        };
        let admitted = (0..15)
            .filter(|_| l.check_at("k", lim, 1, SEC).allowed)
            .count();
        assert_eq!(admitted, 10);
        let v = l.check_at("k", lim, 1, SEC);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 0);
        assert_eq!(v.retry_after_ms, 100);
    }

    #[test]
    fn allowance_refills_smoothly() {
        let l = LocalLimiter::new();
        let lim = Limit {
            requests: 10,
            window_ms: 1000,
            burst: 0,
        };
        for _ in 0..10 {
            assert!(l.check_at("k", lim, 1, SEC).allowed);
        }
        assert!(!l.check_at("k", lim, 1, SEC + 50_000_000).allowed);
        assert!(l.check_at("k", lim, 1, SEC + 100_000_000).allowed);
    }

    #[test]
    fn over_a_long_run_admits_n_per_window_within_one() {
        let l = LocalLimiter::new();
        let lim = Limit {
            requests: 100,
            window_ms: 1000,
            burst: 0,
        };
        let mut admitted = 0;
        // 10 windows, one attempt every millisecond.
        for ms in 0..10_000u64 {
            if l.check_at("k", lim, 1, SEC + ms * 1_000_000).allowed {
                admitted += 1;
            }
        }
        // The first window may also use the initial burst.
        assert!((1000..=1101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn keys_are_independent_and_remaining_counts_down() {
        let l = LocalLimiter::new();
        let lim = Limit {
            requests: 3,
            window_ms: 1000,
            burst: 0,
        };
        assert_eq!(l.check_at("a", lim, 1, SEC).remaining, 2);
        assert_eq!(l.check_at("a", lim, 1, SEC).remaining, 1);
        assert_eq!(l.check_at("b", lim, 1, SEC).remaining, 2);
    }
}
