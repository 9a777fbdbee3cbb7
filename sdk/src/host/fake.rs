//! The native backend: an in-memory stand-in for the gateway, one per thread, driven by
//! [`crate::testing::TestHost`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::Host;
use crate::decision::Header;
use crate::http::{HttpError, HttpResponse};
use crate::kv::KvError;
use crate::log::Level;
use crate::rate_limit::{Limit, Verdict};
use crate::testing::{Capability, EventRecord, LogLine, RateLimitCall};

pub(crate) use crate::testing::{
    TestContext as RawContext, TestRequest as RawRequest, TestResponse as RawResponse,
};

/// The wall clock a fresh fake host starts at (2023-11-14T22:13:20Z).
pub(crate) const START_MILLIS: u64 = 1_700_000_000_000;
/// The monotonic clock a fresh fake host starts at.
pub(crate) const START_NANOS: u64 = 1_000_000_000;

/// Everything the fake host remembers.
#[derive(Debug)]
pub(crate) struct FakeState {
    /// `None`: every capability is granted.
    pub(crate) grants: Option<BTreeSet<Capability>>,
    pub(crate) used: BTreeSet<Capability>,
    pub(crate) now_millis: u64,
    pub(crate) monotonic_nanos: u64,
    pub(crate) kv: BTreeMap<String, KvEntry>,
    pub(crate) kv_limits: KvLimits,
    pub(crate) kv_failure: Option<KvError>,
    /// GCRA theoretical arrival times, in nanoseconds of the wall clock.
    pub(crate) limiter: BTreeMap<String, u128>,
    pub(crate) rate_limit_failure: Option<String>,
    pub(crate) rate_limit_calls: Vec<RateLimitCall>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) http_routes: BTreeMap<String, Result<HttpResponse, HttpError>>,
    pub(crate) http_requests: Vec<(String, Vec<Header>)>,
}

/// One stored value.
#[derive(Debug, Clone)]
pub(crate) struct KvEntry {
    pub(crate) value: Vec<u8>,
    pub(crate) expires_at_millis: Option<u64>,
}

/// The fake store's limits (the gateway's own limits are set by its operator).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvLimits {
    pub(crate) max_key_bytes: usize,
    pub(crate) max_value_bytes: usize,
    pub(crate) max_keys: usize,
}

impl Default for FakeState {
    fn default() -> Self {
        Self {
            grants: None,
            used: BTreeSet::new(),
            now_millis: START_MILLIS,
            monotonic_nanos: START_NANOS,
            kv: BTreeMap::new(),
            kv_limits: KvLimits {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                max_keys: 100_000,
            },
            kv_failure: None,
            limiter: BTreeMap::new(),
            rate_limit_failure: None,
            rate_limit_calls: Vec::new(),
            logs: Vec::new(),
            events: Vec::new(),
            http_routes: BTreeMap::new(),
            http_requests: Vec::new(),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Rc<RefCell<FakeState>>> = RefCell::new(Rc::default());
}

/// Makes `state` the fake host of this thread.
pub(crate) fn install(state: Rc<RefCell<FakeState>>) {
    CURRENT.with(|c| *c.borrow_mut() = state);
}

/// Runs `f` on the current fake host after checking (and recording) the use of `cap`.
fn with<T>(cap: Capability, f: impl FnOnce(&mut FakeState) -> T) -> T {
    let state = CURRENT.with(|c| c.borrow().clone());
    let mut state = state.borrow_mut();
    if let Some(grants) = &state.grants {
        assert!(
            grants.contains(&cap),
            "the policy called capability `{}`, which is not granted (see TestHost::with_grants)",
            cap.name()
        );
    }
    state.used.insert(cap);
    f(&mut state)
}

impl FakeState {
    fn live_kv(&mut self, key: &str) -> Option<&mut KvEntry> {
        let now = self.now_millis;
        if self
            .kv
            .get(key)
            .and_then(|e| e.expires_at_millis)
            .is_some_and(|at| at <= now)
        {
            self.kv.remove(key);
        }
        self.kv.get_mut(key)
    }

    fn kv_check(&self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        if let Some(e) = &self.kv_failure {
            return Err(e.clone());
        }
        if key.len() > self.kv_limits.max_key_bytes {
            return Err(KvError::KeyTooLarge);
        }
        if value.is_some_and(|v| v.len() > self.kv_limits.max_value_bytes) {
            return Err(KvError::ValueTooLarge);
        }
        Ok(())
    }

    fn kv_store(&mut self, key: &str, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
        let exists = self.live_kv(key).is_some();
        if !exists && self.kv.len() >= self.kv_limits.max_keys {
            return Err(KvError::QuotaExceeded);
        }
        let expires_at_millis = ttl_ms.map(|t| self.now_millis.saturating_add(t));
        self.kv.insert(
            key.to_owned(),
            KvEntry {
                value,
                expires_at_millis,
            },
        );
        Ok(())
    }

    /// A GCRA limiter: one request every `window / requests`, with a tolerance of
    /// `burst` (or `requests`) requests.
    fn gcra(&mut self, key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        // The host's bounds on a limit (it answers the same errors).
        if limit.requests == 0 || limit.window_ms == 0 {
            return Err("limit.requests and limit.window-ms must be positive".into());
        }
        if limit.window_ms > 366 * 24 * 3600 * 1000 {
            return Err("limit.window-ms over 31622400000 (366 days)".into());
        }
        if u64::from(limit.requests) > limit.window_ms.saturating_mul(1000) {
            return Err("limit.requests over one per microsecond of the window".into());
        }
        let capacity = if limit.burst == 0 {
            limit.requests
        } else {
            limit.burst
        };
        let interval = u128::from(limit.window_ms) * 1_000_000 / u128::from(limit.requests);
        let interval = interval.max(1);
        let tolerance = interval * u128::from(capacity);
        let now = u128::from(self.now_millis) * 1_000_000;
        let tat = self.limiter.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval * u128::from(cost);
        let ms = |ns: u128| u64::try_from(ns.div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let remaining = |used: u128| {
            u32::try_from(tolerance.saturating_sub(used) / interval).unwrap_or(u32::MAX)
        };
        if new_tat - now > tolerance {
            Ok(Verdict {
                allowed: false,
                limit: capacity,
                remaining: remaining(tat - now),
                reset_ms: ms(tat - now),
                retry_after_ms: ms(new_tat - tolerance - now),
            })
        } else {
            self.limiter.insert(key.to_owned(), new_tat);
            Ok(Verdict {
                allowed: true,
                limit: capacity,
                remaining: remaining(new_tat - now),
                reset_ms: ms(new_tat - now),
                retry_after_ms: 0,
            })
        }
    }
}

/// The fake host of this thread.
pub(crate) struct FakeHost;

impl Host for FakeHost {
    fn log(level: Level, message: &str) {
        with(Capability::Log, |s| {
            s.logs.push(LogLine {
                level,
                message: message.to_owned(),
            })
        });
    }

    fn now_millis() -> u64 {
        with(Capability::Clock, |s| s.now_millis)
    }

    fn monotonic_nanos() -> u64 {
        with(Capability::Clock, |s| s.monotonic_nanos)
    }

    fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        with(Capability::Kv, |s| {
            s.kv_check(key, None)?;
            Ok(s.live_kv(key).map(|e| e.value.clone()))
        })
    }

    fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        with(Capability::Kv, |s| {
            s.kv_check(key, Some(value))?;
            s.kv_store(key, value.to_vec(), ttl_ms)
        })
    }

    fn kv_delete(key: &str) -> Result<bool, KvError> {
        with(Capability::Kv, |s| {
            s.kv_check(key, None)?;
            let existed = s.live_kv(key).is_some();
            s.kv.remove(key);
            Ok(existed)
        })
    }

    fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        with(Capability::Kv, |s| {
            s.kv_check(key, None)?;
            match s.live_kv(key) {
                Some(entry) => {
                    let current: i64 = std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or(KvError::NotANumber)?;
                    let next = current.checked_add(delta).ok_or(KvError::NotANumber)?;
                    entry.value = next.to_string().into_bytes();
                    Ok(next)
                }
                None => {
                    s.kv_store(key, delta.to_string().into_bytes(), ttl_ms)?;
                    Ok(delta)
                }
            }
        })
    }

    fn kv_compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        with(Capability::Kv, |s| {
            s.kv_check(key, Some(value))?;
            let current = s.live_kv(key).map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            s.kv_store(key, value.to_vec(), ttl_ms)?;
            Ok(true)
        })
    }

    fn rate_limit_check(key: &str, limit: Limit, cost: u32) -> Result<Verdict, String> {
        with(Capability::RateLimit, |s| {
            s.rate_limit_calls.push(RateLimitCall {
                key: key.to_owned(),
                limit,
                cost,
            });
            if let Some(why) = &s.rate_limit_failure {
                return Err(why.clone());
            }
            s.gcra(key, limit, cost)
        })
    }

    fn analytics_emit(fields: &[(String, String)]) {
        with(Capability::Analytics, |s| {
            s.events.push(EventRecord {
                fields: fields.to_vec(),
            })
        });
    }

    fn http_get(url: &str, headers: &[Header]) -> Result<HttpResponse, HttpError> {
        with(Capability::OutboundHttp, |s| {
            s.http_requests.push((url.to_owned(), headers.to_vec()));
            s.http_routes
                .get(url)
                .cloned()
                .unwrap_or(Err(HttpError::Denied))
        })
    }
}
