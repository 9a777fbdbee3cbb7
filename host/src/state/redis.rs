//! The shared backend: Redis (standalone, Sentinel or Cluster) through fred.
//!
//! Every command is bounded by `command_timeout` (fred has none by default, so a naive client
//! makes each request wait for a reconnecting server). When no pooled connection is up, a
//! call fails at once instead of queueing; the caller then applies its `on_backend_error`
//! rule. fred reconnects in the background with exponential backoff, and the health
//! transitions are logged.
//!
//! Writes that need more than one command (kv caps, compare-and-set, the GCRA check) are Lua
//! scripts sent with EVALSHA: one round trip each, atomic on the server.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use super::kv::{KvError, KvLimits};
use super::ratelimit::{Limit, Verdict};
use crate::config::RedisSettings;

const GCRA: &str = include_str!("lua/gcra.lua");
const KV_WRITE: &str = include_str!("lua/kv_write.lua");
const WINDOW_ADD: &str = include_str!("lua/window_add.lua");

/// Why a Redis call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// No connection is up.
    #[error("redis is disconnected")]
    Disconnected,
    /// The command did not complete within `command_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The server or the client reported an error.
    #[error("redis: {0}")]
    Failed(String),
}

/// A Redis connection pool with its scripts.
pub struct Redis {
    pool: Pool,
    timeout: Duration,
    gcra: Script,
    kv_write: Script,
    window_add: Script,
    /// Whether a connection is up, as last reported by the connection events.
    up: tokio::sync::watch::Sender<bool>,
}

impl Redis {
    /// Builds the pool for `settings` and, when `start`, starts connecting in the background
    /// (the gateway starts even while Redis is down).
    pub fn connect(
        settings: &RedisSettings,
        tls: Option<rustls::ClientConfig>,
        start: bool,
    ) -> Result<Arc<Self>, String> {
        let mut config = Config::from_url(&settings.url).map_err(|e| format!("redis.url: {e}"))?;
        config.fail_fast = false;
        if let Some(tls) = tls {
            config.tls = Some(fred::types::config::TlsConnector::from(tls).into());
        }
        let timeout = settings.command_timeout.get();
        let max_delay = settings.reconnect_max_delay.get().as_millis().max(1) as u32;
        let pool = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = settings.connect_timeout.get();
                c.internal_command_timeout = settings.connect_timeout.get();
                // A command is sent once: retrying after a broken connection could apply a
                // write twice, and the caller's deadline is short anyway.
                c.max_command_attempts = 1;
                c.tcp = fred::types::config::TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, max_delay, 2))
            .build_pool(settings.pool_size.max(1))
            .map_err(|e| e.to_string())?;
        let up = tokio::sync::watch::Sender::new(false);
        let redis = Arc::new(Self {
            pool,
            timeout,
            gcra: Script::from_lua(GCRA),
            kv_write: Script::from_lua(KV_WRITE),
            window_add: Script::from_lua(WINDOW_ADD),
            up,
        });
        if start {
            redis.watch(settings.url_for_logs());
        }
        Ok(redis)
    }

    /// Starts the connections and logs each health transition.
    fn watch(&self, target: String) {
        for client in self.pool.clients() {
            let up = self.up.clone();
            let name = target.clone();
            client.on_reconnect(move |server| {
                // Receivers are woken on transitions only, not on every client's reconnect.
                if up.send_if_modified(|v| !std::mem::replace(v, true)) {
                    tracing::info!(redis = %name, %server, "redis connected");
                }
                async { Ok(()) }
            });
            let up = self.up.clone();
            let pool = self.pool.clone();
            let name = target.clone();
            client.on_error(move |(error, server)| {
                let any_up = pool.clients().iter().any(|c| c.is_connected());
                if !any_up && up.send_if_modified(|v| std::mem::replace(v, false)) {
                    tracing::warn!(redis = %name, server = ?server, %error, "redis unavailable; reconnecting");
                }
                async { Ok(()) }
            });
        }
        // The handle drives the connections; dropping it detaches the task, which runs
        // for the life of the process.
        drop(self.pool.connect());
    }

    /// Waits up to `limit` for a first connection; false when none came up (the gateway
    /// then starts degraded and keeps reconnecting).
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.up.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Notified on each health transition (true: a connection came up).
    pub fn transitions(&self) -> tokio::sync::watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Whether at least one pooled connection is up.
    pub fn healthy(&self) -> bool {
        self.pool.clients().iter().any(|c| c.is_connected())
    }

    /// The per-command deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connected client, or `Disconnected` at once.
    fn client(&self) -> Result<&Client, RedisError> {
        let c = self.pool.next_connected();
        if c.is_connected() {
            Ok(c)
        } else {
            Err(RedisError::Disconnected)
        }
    }

    pub(crate) async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if *e.kind() == fred::error::ErrorKind::Timeout => {
                Err(RedisError::Timeout(self.timeout))
            }
            Ok(Err(e)) => Err(RedisError::Failed(e.to_string())),
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        }
    }

    /// One GCRA check of `cost` units against `key` (one EVALSHA).
    pub async fn check(&self, key: &str, limit: Limit, cost: u32) -> Result<Verdict, RedisError> {
        let client = self.client()?;
        let (requests, burst) = (limit.requests_units(), limit.burst_units());
        let window_us = limit.window_ms.clamp(1, super::ratelimit::MAX_WINDOW_MS) * 1000;
        let interval_us = window_us.div_ceil(requests).max(1);
        let tolerance_us = interval_us.saturating_mul(burst).min(i64::MAX as u64);
        let args: Vec<Value> = vec![
            (interval_us as i64).into(),
            (tolerance_us as i64).into(),
            i64::from(cost.max(1)).into(),
        ];
        let r: Vec<i64> = self
            .bounded(self.gcra.evalsha_with_reload(client, vec![key], args))
            .await?;
        let [allowed, remaining, reset_ms, retry_after_ms] = r[..] else {
            return Err(RedisError::Failed(format!("unexpected GCRA reply {r:?}")));
        };
        Ok(Verdict {
            allowed: allowed == 1,
            limit: limit.requests,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_ms: reset_ms.max(0) as u64,
            retry_after_ms: retry_after_ms.max(0) as u64,
        })
    }
}

impl Redis {
    /// Adds `delta` to the fixed-window counter `key` (kept `ttl_ms`); returns its total.
    pub(crate) async fn window_add(
        &self,
        key: String,
        delta: u64,
        ttl_ms: u64,
    ) -> Result<u64, RedisError> {
        let client = self.client()?;
        let args: Vec<Value> = vec![(delta as i64).into(), (ttl_ms as i64).into()];
        let n: i64 = self
            .bounded(self.window_add.evalsha_with_reload(client, vec![key], args))
            .await?;
        Ok(n.max(0) as u64)
    }
}

/// A plugin's kv namespace in Redis.
pub struct RedisKv {
    redis: Arc<Redis>,
    limits: KvLimits,
}

fn value_key(ns: &str, key: &str) -> String {
    format!("sluice:kv:{{{ns}}}:{key}")
}

fn index_key(ns: &str) -> String {
    format!("sluice:kvidx:{{{ns}}}")
}

/// The TTL in milliseconds for `PX`: at least 1, and at most a span Redis can add to its
/// clock without overflowing (larger TTLs are "forever" for every practical purpose).
fn ttl_arg(ttl: Option<Duration>) -> i64 {
    const LONGEST_MS: u128 = (i64::MAX / 2) as u128;
    ttl.map_or(0, |t| t.as_millis().clamp(1, LONGEST_MS) as i64)
}

fn unavailable(e: RedisError) -> KvError {
    match e {
        RedisError::Failed(m) if m.contains("QUOTA") => KvError::QuotaExceeded,
        RedisError::Failed(m) if m.contains("NOTANUMBER") || m.contains("not an integer") => {
            KvError::NotANumber
        }
        e => KvError::Unavailable(e.to_string()),
    }
}

impl RedisKv {
    /// The kv store on `redis` with `limits`.
    pub fn new(redis: Arc<Redis>, limits: KvLimits) -> Self {
        Self { redis, limits }
    }

    fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        self.limits.check(key, value)
    }

    async fn write(&self, ns: &str, key: &str, args: Vec<Value>) -> Result<Value, KvError> {
        let client = self.redis.client().map_err(unavailable)?;
        let keys = vec![value_key(ns, key), index_key(ns)];
        self.redis
            .bounded(self.redis.kv_write.evalsha_with_reload(client, keys, args))
            .await
            .map_err(unavailable)
    }

    fn args(&self, op: &str, ttl: Option<Duration>, value: Value) -> Vec<Value> {
        vec![
            op.into(),
            ttl_arg(ttl).into(),
            (self.limits.max_keys as i64).into(),
            value,
        ]
    }

    /// The live value at `key` in namespace `ns` (one GET).
    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check(key, None)?;
        let client = self.redis.client().map_err(unavailable)?;
        let v: Option<Vec<u8>> = self
            .redis
            .bounded(client.get(value_key(ns, key)))
            .await
            .map_err(unavailable)?;
        Ok(v)
    }

    /// Stores `value`, expiring after `ttl` when given.
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.check(key, Some(&value))?;
        let args = self.args("set", ttl, Value::Bytes(value.into()));
        self.write(ns, key, args).await.map(|_| ())
    }

    /// Removes `key`; true when it existed.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.check(key, None)?;
        let args = self.args("del", None, "".into());
        let n = self.write(ns, key, args).await?;
        Ok(n.as_i64().unwrap_or(0) > 0)
    }

    /// Adds `delta` to the counter at `key`; `ttl` applies when it is created.
    pub async fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.check(key, None)?;
        let args = self.args("incr", ttl, delta.into());
        // A decimal string (exact, where a Lua number would round past 2^53).
        let n = self.write(ns, key, args).await?;
        n.as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| KvError::Unavailable(format!("unexpected reply {n:?}")))
    }

    /// Stores `value` only if the current value equals `expected` (`None`: absent).
    pub async fn compare_and_set(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.check(key, Some(&value))?;
        let mut args = self.args("cas", ttl, Value::Bytes(value.into()));
        match expected {
            Some(e) => {
                args.push("1".into());
                args.push(Value::Bytes(e.into()));
            }
            None => args.push("0".into()),
        }
        let n = self.write(ns, key, args).await?;
        Ok(n.as_i64().unwrap_or(0) == 1)
    }
}
