//! State behind the policies' `kv` and `rate-limit` capabilities.
//!
//! The rest of the host sees [`Store`] (opened once per process), and per policy a [`Kv`]
//! and a [`RateLimiter`] handle; which backend serves a call — the embedded redb store, the
//! in-process limiter, or a shared Redis — and what happens when Redis fails is decided
//! here, from the policy's `kv_backend`, `rate_limit_backend` and `on_backend_error`.

mod db;
mod expiry;
mod hybrid;
pub mod kv;
mod limiter;
mod local;
mod managed;
pub mod ratelimit;
mod redis;
mod stats;

use std::sync::Arc;

pub use db::{Db, SCHEMA_VERSION, StoreError};
pub use hybrid::Hybrid;
pub use kv::{Kv, KvError, KvLimits};
pub use limiter::{RateLimiter, Shared};
pub use local::LocalKv;
pub use managed::{
    Consumer, Credential, Managed, ManagedPlugin, PluginVersion, Role, TokenChange, TokenRecord,
    backup_file, sha256_hex, signature_verifies, stored_form, unix_now,
};
pub use ratelimit::{Limit, LocalLimiter, Verdict};
pub use redis::{Redis, RedisError, RedisKv};
pub use stats::{FallbackCounts, StateStats};

use crate::config::{RedisSettings, StateSettings};

/// The process's state backends.
pub struct Store {
    /// The embedded store.
    pub db: Db,
    /// Plugin kv entries in the embedded store.
    pub local_kv: Arc<LocalKv>,
    /// The shared Redis, when configured.
    pub redis: Option<Arc<Redis>>,
    /// Redis kv (over `redis`, with the same caps as the local store).
    pub redis_kv: Option<Arc<RedisKv>>,
    /// Fallback counters.
    pub stats: Arc<StateStats>,
    /// The `[redis]` settings the pool was built from.
    pub redis_settings: Option<RedisSettings>,
}

impl Store {
    /// Opens the embedded store and, when configured, starts connecting to Redis (the
    /// gateway starts even while Redis is down). `tls` is the client configuration for
    /// `rediss://` URLs with a custom CA.
    pub fn open(
        state: &StateSettings,
        redis: Option<&RedisSettings>,
        tls: Option<rustls::ClientConfig>,
        limits: KvLimits,
    ) -> Result<Self, String> {
        let db = Db::open(&state.path).map_err(|e| e.to_string())?;
        Self::over(db, redis, tls, limits, true)
    }

    /// A throwaway in-memory store, with the Redis pool built but not connected: for
    /// checking a configuration and for tests.
    pub fn in_memory(
        redis: Option<&RedisSettings>,
        tls: Option<rustls::ClientConfig>,
        limits: KvLimits,
    ) -> Result<Self, String> {
        let db = Db::in_memory().map_err(|e| e.to_string())?;
        Self::over(db, redis, tls, limits, false)
    }

    fn over(
        db: Db,
        redis: Option<&RedisSettings>,
        tls: Option<rustls::ClientConfig>,
        limits: KvLimits,
        connect: bool,
    ) -> Result<Self, String> {
        let local_kv =
            Arc::new(LocalKv::new(db.clone(), limits).map_err(|e| format!("store writer: {e}"))?);
        let redis_pool = redis.map(|r| Redis::connect(r, tls, connect)).transpose()?;
        Ok(Self {
            db,
            local_kv,
            redis_kv: redis_pool
                .clone()
                .map(|r| Arc::new(RedisKv::new(r, limits))),
            redis: redis_pool,
            stats: Arc::default(),
            redis_settings: redis.cloned(),
        })
    }
}
