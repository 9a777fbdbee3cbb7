//! The `[upstreams.NAME]` part of `gateway.toml`.

use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;

/// A named group of upstream targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The targets.
    pub targets: Vec<Target>,
    /// Load-balancing algorithm. Default: round_robin.
    #[serde(default)]
    pub balance: Balance,
    /// Key for `balance = "hash"`.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Protocol spoken to the targets. Default: http1.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the targets; absent means cleartext.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// TCP connect timeout (504 when exceeded). Default: 5s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time until the upstream's response head arrives (504 when exceeded); a route's
    /// `timeout` overrides it. Default: 30s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Pooled keep-alive connections idle longer than this are closed. Default: 90s.
    #[serde(default = "default_pool_idle")]
    pub idle_timeout: Dur,
    /// With `protocol = "h2"`: how often an HTTP/2 connection to a target is pinged, idle
    /// or not, so that one that died silently (a NAT or load balancer dropped it) is found
    /// and replaced rather than reused by every request. Default: 10s.
    #[serde(default = "default_h2_ping_interval")]
    pub h2_ping_interval: Dur,
    /// With `protocol = "h2"`: how long a ping may go unanswered before the connection is
    /// closed. Default: 5s.
    #[serde(default = "default_h2_ping_timeout")]
    pub h2_ping_timeout: Dur,
    /// Idle pooled connections kept per target. Default: 512 (Kong's
    /// `upstream_keepalive_pool_size`): below that many concurrent requests per target, no
    /// request opens a connection once the pool is warm.
    #[serde(default = "default_pool_max_idle")]
    pub max_idle_per_target: usize,
    /// Active health checking; absent means none.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection after consecutive failures.
    #[serde(default)]
    pub passive: PassiveHealth,
    /// Concurrency limits (503 when open).
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Retries of safe requests.
    #[serde(default)]
    pub retry: Retry,
}

fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}
/// An upstream's default time until the response head.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;

fn default_request_timeout() -> Dur {
    Dur::secs(DEFAULT_REQUEST_TIMEOUT_SECS)
}
fn default_h2_ping_interval() -> Dur {
    Dur::secs(10)
}
fn default_h2_ping_timeout() -> Dur {
    Dur::secs(5)
}
fn default_pool_idle() -> Dur {
    Dur::secs(90)
}
fn default_pool_max_idle() -> usize {
    512
}

/// One upstream target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// Relative weight (1..=1000). Default: 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Load-balancing algorithms.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin (plain round robin when all weights are equal).
    #[default]
    RoundRobin,
    /// Weighted random choice.
    Weighted,
    /// Power of two random choices, fewest in-flight requests wins.
    LeastRequest,
    /// Consistent hashing (ring) on `hash_on`.
    Hash,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashOn {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address (after trusted-proxy resolution).
    ClientIp(bool),
}

/// Protocol spoken to upstream targets.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (ALPN over TLS, prior knowledge over cleartext).
    H2,
}

/// TLS towards upstream targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA bundle trusted for the targets' certificates. Required: Sluice ships no
    /// implicit trust store.
    pub ca: PathBuf,
    /// Server name sent in SNI and verified; default: the target's host.
    #[serde(default)]
    pub sni: Option<String>,
}

/// Active HTTP health checking of each target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed with GET. Default: "/healthz".
    #[serde(default = "default_hc_path")]
    pub path: String,
    /// Time between probes. Default: 5s.
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    /// Probe timeout. Default: 2s.
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that mark a target healthy. Default: 2.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Consecutive failures that mark a target unhealthy. Default: 3.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

fn default_hc_path() -> String {
    "/healthz".into()
}
fn default_hc_interval() -> Dur {
    Dur::secs(5)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(2)
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

/// Passive health: eject a target after consecutive failures, readmit it after a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive connection failures or 5xx answers that eject a target; 0 disables.
    /// Default: 5.
    pub consecutive_failures: u32,
    /// How long an ejected target stays out before it is tried again. Default: 30s.
    pub ejection_time: Dur,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Dur::secs(30),
        }
    }
}

/// Per-upstream concurrency limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Requests in flight to this upstream at once. Default: 1024.
    pub max_concurrent: usize,
    /// Requests allowed to wait for a free slot; beyond, 503 at once. Default: 1024.
    pub max_pending: usize,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            max_pending: 1024,
        }
    }
}

/// Retry policy: only idempotent requests, or requests that never reached the upstream, and
/// only when the request body is empty (bodies are streamed, never replayed).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retry {
    /// Extra attempts after the first. Default: 1.
    pub attempts: u32,
    /// Retries allowed as a fraction of recent requests. Default: 0.2.
    pub budget_ratio: f64,
    /// Retries always allowed per second regardless of the ratio. Default: 10.
    pub min_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 1,
            budget_ratio: 0.2,
            min_per_second: 10,
        }
    }
}
