//! The `kv` capability's interface: errors, caps, and the per-policy handle that routes
//! calls to the chosen backend and applies the policy's `on_backend_error` rule.
//!
//! Keys are `(namespace, key)`; each plugin has its own namespace, so a plugin can never
//! address another's keys.

use std::sync::Arc;
use std::time::Duration;

use super::local::LocalKv;
use super::redis::RedisKv;
use super::stats::StateStats;
use crate::config::OnBackendError;

/// Caps enforced on every call.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Longest key in bytes. Default: 512.
    pub max_key_bytes: usize,
    /// Largest value in bytes. Default: 64 KiB.
    pub max_value_bytes: usize,
    /// Most keys per namespace. Default: 10 000.
    pub max_keys: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 64 * 1024,
            max_keys: 10_000,
        }
    }
}

impl KvLimits {
    /// Checks `key` (and `value`, when given) against the caps.
    pub fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLarge);
        }
        if value.is_some_and(|v| v.len() > self.max_value_bytes) {
            return Err(KvError::ValueTooLarge);
        }
        Ok(())
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Key over `max_key_bytes`.
    #[error("key too large")]
    KeyTooLarge,
    /// Value over `max_value_bytes`.
    #[error("value too large")]
    ValueTooLarge,
    /// Namespace at `max_keys`.
    #[error("namespace holds the maximum number of keys")]
    QuotaExceeded,
    /// `increment` on a value that is not a decimal integer.
    #[error("value is not a number")]
    NotANumber,
    /// The backend failed or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// One policy's view of the kv store: its namespace on its backend.
#[derive(Clone)]
pub struct Kv {
    namespace: String,
    local: Arc<LocalKv>,
    redis: Option<Arc<RedisKv>>,
    on_error: OnBackendError,
    stats: Arc<StateStats>,
}

impl Kv {
    /// Namespace `namespace` on the local store, or on `redis` when given (falling back to
    /// the local store per `on_error`).
    pub fn new(
        namespace: String,
        local: Arc<LocalKv>,
        redis: Option<Arc<RedisKv>>,
        on_error: OnBackendError,
        stats: Arc<StateStats>,
    ) -> Self {
        Self {
            namespace,
            local,
            redis,
            on_error,
            stats,
        }
    }

    /// Applies the `on_backend_error` rule to a Redis result; `local` is the fallback.
    async fn settle<T>(
        &self,
        remote: Result<T, KvError>,
        local: impl AsyncFnOnce(&LocalKv, &str) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        match remote {
            Err(KvError::Unavailable(why)) => {
                self.stats.fallback(self.on_error, &why);
                match self.on_error {
                    OnBackendError::Local => local(&self.local, &self.namespace).await,
                    OnBackendError::Open | OnBackendError::Closed => Err(KvError::Unavailable(why)),
                }
            }
            r => {
                self.stats.backend_ok();
                r
            }
        }
    }

    /// A copy of `v` for the local fallback, when the rule is `local`.
    fn keep<T: Clone>(&self, v: &T) -> Option<T> {
        (self.on_error == OnBackendError::Local).then(|| v.clone())
    }

    /// The caps its values and keys are held to.
    pub fn limits(&self) -> KvLimits {
        self.local.limits()
    }

    /// Whether reads wait on I/O (the namespace lives in Redis); when not,
    /// [`Kv::get_now`] always answers.
    pub fn reads_wait_on_io(&self) -> bool {
        self.redis.is_some()
    }

    /// The live value at `key`, when it can be read without waiting on network I/O (the
    /// embedded store: one redb read transaction, as in [`Kv::get`]); `None` when the
    /// namespace lives in Redis (use [`Kv::get`]).
    pub fn get_now(&self, key: &str) -> Option<Result<Option<Vec<u8>>, KvError>> {
        self.redis
            .is_none()
            .then(|| self.local.get(&self.namespace, key))
    }

    /// The live value at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let ns = self.namespace.as_str();
        let Some(redis) = &self.redis else {
            return self.local.get(ns, key);
        };
        let r = redis.get(ns, key).await;
        self.settle(r, async |l, ns| l.get(ns, key)).await
    }

    /// Stores `value`, expiring after `ttl` when given.
    pub async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let ns = self.namespace.as_str();
        let Some(redis) = &self.redis else {
            return self.local.set(ns, key, value, ttl).await;
        };
        let keep = self.keep(&value);
        let r = redis.set(ns, key, value, ttl).await;
        self.settle(r, async |l, ns| {
            l.set(ns, key, keep.unwrap_or_default(), ttl).await
        })
        .await
    }

    /// Removes `key`; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let ns = self.namespace.as_str();
        let Some(redis) = &self.redis else {
            return self.local.delete(ns, key).await;
        };
        let r = redis.delete(ns, key).await;
        self.settle(r, async |l, ns| l.delete(ns, key).await).await
    }

    /// Adds `delta` to the counter at `key`; `ttl` applies when it is created.
    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let ns = self.namespace.as_str();
        let Some(redis) = &self.redis else {
            return self.local.increment(ns, key, delta, ttl).await;
        };
        let r = redis.increment(ns, key, delta, ttl).await;
        self.settle(r, async |l, ns| l.increment(ns, key, delta, ttl).await)
            .await
    }

    /// Stores `value` only if the current value equals `expected` (`None`: absent).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let ns = self.namespace.as_str();
        let Some(redis) = &self.redis else {
            return self
                .local
                .compare_and_set(ns, key, expected, value, ttl)
                .await;
        };
        let keep =
            (self.on_error == OnBackendError::Local).then(|| (expected.clone(), value.clone()));
        let r = redis.compare_and_set(ns, key, expected, value, ttl).await;
        self.settle(r, async |l, ns| {
            let (e, v) = keep.unwrap_or_default();
            l.compare_and_set(ns, key, e, v, ttl).await
        })
        .await
    }
}
