//! The `[state]` and `[redis]` parts of `gateway.toml`, and the per-policy backend choice.

use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// The redb database file (its directory is created owner-only). Default:
    /// "data/sluice.redb".
    pub path: PathBuf,
    /// How often expired kv entries are removed (they are also invisible once expired).
    /// Default: 60s.
    pub sweep_interval: Dur,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/sluice.redb"),
            sweep_interval: Dur::secs(60),
        }
    }
}

/// A shared Redis, for the `redis` and `hybrid` backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; `rediss://` for TLS;
    /// `redis-sentinel://…?sentinelServiceName=NAME&node=host:port…` for Sentinel;
    /// `redis-cluster://host:port?node=host:port…` for Cluster. Use `${VAR}` for secrets.
    pub url: String,
    /// Connections in the pool. Default: 2.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Longest a command may take before the policy's `on_backend_error` rule applies.
    /// Default: 50ms.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Dur,
    /// Longest a connection attempt (TCP, TLS, AUTH) may take. Default: 2s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Reconnection backs off exponentially from 50ms up to this. Default: 2s.
    #[serde(default = "default_reconnect")]
    pub reconnect_max_delay: Dur,
    /// PEM CA bundle for `rediss://` (default: the system's roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// How often the `hybrid` rate limiter reconciles its local counts with Redis.
    /// Default: 100ms.
    #[serde(default = "default_sync")]
    pub hybrid_sync_interval: Dur,
}

impl RedisSettings {
    /// The URL with any password replaced by `***`, for logs.
    pub fn url_for_logs(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                format!("{}***{}", &self.url[..s + 3], &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }
}

fn default_pool() -> usize {
    2
}
fn default_command_timeout() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}
fn default_connect_timeout() -> Dur {
    Dur::secs(2)
}
fn default_reconnect() -> Dur {
    Dur::secs(2)
}
fn default_sync() -> Dur {
    Dur(std::time::Duration::from_millis(100))
}

/// Where a policy's `kv` entries live.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KvBackend {
    /// The embedded store of this node (durable, not shared).
    #[default]
    Local,
    /// The shared Redis.
    Redis,
}

/// Where a policy's rate-limit counters live.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    /// In this process (per node).
    #[default]
    Local,
    /// In Redis, one atomic round trip per check (a global limit).
    Redis,
    /// Counted locally and reconciled with Redis on an interval (a global limit with a
    /// bounded overshoot; see docs/configuration.md).
    Hybrid,
}

/// What a policy's state calls do when Redis fails or exceeds its `command_timeout`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    /// Rate-limit checks allow the request; kv calls fail with `unavailable`.
    Open,
    /// Rate-limit checks and kv calls fail with an error the policy handles (the
    /// `rate-limit` policy answers 503 by default).
    Closed,
    /// Fall back to this node's local state: per-node limits, the local kv store.
    #[default]
    Local,
}
