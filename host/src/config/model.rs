//! The typed shape of `gateway.toml`.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`) so a typo is an error, never a
//! silently ignored setting. Every field documents its default; defaults are chosen to be safe.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Dur;

/// Default bound on simultaneously open client connections per gateway.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default bound on the bytes of a request head (request line and headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default bound on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default bound on a request body (per route unless overridden).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default bound on concurrent HTTP/2 streams per connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    pub gateway: GatewaySettings,
    /// Protocol limits applied on every listener.
    pub limits: Limits,
    /// The per-request access log.
    pub access_log: AccessLog,
    /// Listening sockets. Default: none (a config must name at least one).
    pub listeners: Vec<Listener>,
    /// Named upstream groups. Default: none.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes, matched by specificity (see `docs/configuration.md`). Default: none.
    pub routes: Vec<Route>,
    /// Policy-plane settings.
    pub policy: PolicySettings,
    /// Policy plugins (WebAssembly components) by name. Default: none.
    pub plugins: BTreeMap<String, Plugin>,
}

/// Policy-plane settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Directory of compiled-artifact cache (created owner-only). Default: "data/cache".
    pub cache_dir: PathBuf,
    /// JSON-lines file for analytics events; absent: aggregate in memory only.
    pub analytics_path: Option<String>,
    /// Longest kv key in bytes. Default: 512.
    pub kv_max_key_bytes: usize,
    /// Largest kv value in bytes. Default: 65536.
    pub kv_max_value_bytes: usize,
    /// Most kv keys per plugin. Default: 10000.
    pub kv_max_keys: usize,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("data/cache"),
            analytics_path: None,
            kv_max_key_bytes: 512,
            kv_max_value_bytes: 64 * 1024,
            kv_max_keys: 10_000,
        }
    }
}

/// A policy plugin: a WebAssembly component of the `sluice:policy` world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// Path of the `.wasm` component.
    pub path: PathBuf,
    /// Free-form version label (shown in logs). Default: none.
    #[serde(default)]
    pub version: Option<String>,
    /// Capabilities granted to every use of the plugin (a route's policy may narrow them):
    /// `log`, `clock`, `kv`, `rate-limit`, `analytics`, `outbound-http`. Default: none.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Hosts (`host` or `host:port`) the `outbound-http` capability may reach. Default: none.
    #[serde(default)]
    pub outbound_allowlist: Vec<String>,
    /// PEM CA bundle trusted for https outbound requests. Default: none (http only).
    #[serde(default)]
    pub outbound_ca: Option<PathBuf>,
    /// Linear-memory cap per instance in bytes. Default: 16 MiB.
    #[serde(default = "default_plugin_memory")]
    pub max_memory_bytes: u64,
    /// CPU time allowed per call. Default: 50ms.
    #[serde(default = "default_plugin_cpu")]
    pub cpu_timeout: Dur,
    /// Wall time allowed per call, including host I/O waits. Default: 2s.
    #[serde(default = "default_plugin_wall")]
    pub timeout: Dur,
    /// Pooled instances are replaced after this many calls. Default: 10000.
    #[serde(default = "default_recycle")]
    pub recycle_after: u32,
}

fn default_plugin_memory() -> u64 {
    16 * 1024 * 1024
}
fn default_plugin_cpu() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}
fn default_plugin_wall() -> Dur {
    Dur::secs(2)
}
fn default_recycle() -> u32 {
    10_000
}

/// One policy in a route's pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// Plugin name (a key of `[plugins]`).
    pub plugin: String,
    /// Configuration passed to the policy's `init` (as JSON). Default: empty table.
    #[serde(default)]
    pub config: toml::Table,
    /// Capabilities for this use; must be a subset of the plugin's grants. Default: the
    /// plugin's grants.
    #[serde(default)]
    pub grants: Option<Vec<String>>,
    /// `pooled` (reuse instances) or `isolated` (fresh instance per request). Default: pooled.
    #[serde(default)]
    pub mode: PolicyMode,
    /// `closed`: a failing policy fails the request; `open`: it is skipped. Default: closed.
    #[serde(default)]
    pub on_failure: FailureMode,
    /// Status answered when the policy fails closed. Default: 500.
    #[serde(default = "default_failure_status")]
    pub failure_status: u16,
    /// Run the policy only for requests matching this condition. Default: always.
    #[serde(default)]
    pub when: Option<PolicyCondition>,
}

fn default_failure_status() -> u16 {
    500
}

/// Instance management of a policy.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Reuse warm instances.
    #[default]
    Pooled,
    /// A fresh instance per request.
    Isolated,
}

/// What happens when a policy traps, times out or returns an unusable decision.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// The request fails with `failure_status` and a JSON body naming the policy.
    #[default]
    Closed,
    /// The policy is skipped (and counted).
    Open,
}

/// A condition on the request for running a policy.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyCondition {
    /// Methods (empty: any).
    pub methods: Vec<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<ValueMatch>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Runtime worker threads; 0 means one per CPU core. Default: 0.
    pub workers: usize,
    /// How long SIGTERM/SIGINT waits for in-flight requests. Default: 30s.
    pub drain_timeout: Dur,
    /// Peers whose X-Forwarded-* headers are trusted (CIDRs). Default: none.
    pub trusted_proxies: Vec<String>,
    /// Operational log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins. Default: "info".
    pub log_level: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            workers: 0,
            drain_timeout: Dur::secs(30),
            trusted_proxies: Vec::new(),
            log_level: "info".into(),
        }
    }
}

/// Protocol limits applied on every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum open client connections; further connections wait in the kernel backlog.
    /// Default: 10000.
    pub max_connections: usize,
    /// Maximum bytes of a request head (request line + headers). Default: 16384.
    pub max_header_bytes: usize,
    /// Maximum number of request headers. Default: 100.
    pub max_headers: usize,
    /// Time allowed to receive a complete request head. Default: 10s.
    pub header_read_timeout: Dur,
    /// A connection with no bytes moving in either direction for this long is closed.
    /// Default: 60s.
    pub idle_timeout: Dur,
    /// Default request body limit for routes that set none (413 beyond). Default: 10 MiB.
    pub max_body_bytes: u64,
    /// HTTP/2 concurrent streams per connection. Default: 100.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// The per-request access log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLog {
    /// Whether one JSON line is written per request. Default: true.
    pub enabled: bool,
    /// `"stdout"` or a file path (appended). Default: "stdout".
    pub path: String,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".into(),
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, referenced by routes' `listeners`.
    pub name: String,
    /// Address to bind, e.g. `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// Accept prior-knowledge HTTP/2 over cleartext. `Upgrade: h2c` is never honoured.
    /// Default: false.
    #[serde(default)]
    pub h2c: bool,
    /// TLS settings; absent means cleartext.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// TLS on a listener (rustls; TLS 1.2 and 1.3 only; ALPN h2 and http/1.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates; chosen by SNI against each certificate's names, the first is the default.
    pub certificates: Vec<CertificatePair>,
    /// CA bundle (PEM) that client certificates must chain to; enables mTLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is mandatory when `client_ca` is set. Default: true.
    #[serde(default = "yes")]
    pub client_cert_required: bool,
}

fn yes() -> bool {
    true
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

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
    /// Idle pooled connections kept per target. Default: 128.
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
fn default_request_timeout() -> Dur {
    Dur::secs(30)
}
fn default_pool_idle() -> Dur {
    Dur::secs(90)
}
fn default_pool_max_idle() -> usize {
    128
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

/// One route: match conditions, then a target and per-route edits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name (shown in the access log).
    pub name: String,
    /// Listeners this route serves; default: all.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Hosts (exact or `*.example.com`); default: any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Exact path, or a template with `{param}` segments.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix (segment-agnostic string prefix).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Regular expression matched against the whole path.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Methods; default: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    /// Query-parameter conditions, all of which must hold.
    #[serde(default)]
    pub query: Vec<ValueMatch>,
    /// Upstream group to proxy to.
    #[serde(default)]
    pub upstream: Option<String>,
    /// A built-in responder instead of an upstream.
    #[serde(default)]
    pub respond: Option<Responder>,
    /// Remove this prefix from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Replace the path before forwarding; `{param}` is substituted from a template match.
    #[serde(default)]
    pub rewrite_path: Option<String>,
    /// Edits of the request headers sent upstream.
    #[serde(default)]
    pub request_headers: HeaderEdits,
    /// Edits of the response headers sent to the client.
    #[serde(default)]
    pub response_headers: HeaderEdits,
    /// Request body limit (413 beyond); default: `limits.max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Time until the response head; default: the upstream's `request_timeout`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Pass WebSocket upgrades through. Default: false.
    #[serde(default)]
    pub websocket: bool,
    /// The policy pipeline, in request order. Default: none.
    #[serde(default)]
    pub policies: Vec<PolicyRef>,
}

/// A condition on a header or query parameter. With neither `value` nor `regex`, the name
/// only has to be present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header or parameter name (headers case-insensitively).
    pub name: String,
    /// Exact value.
    #[serde(default)]
    pub value: Option<String>,
    /// Regular expression over the whole value.
    #[serde(default)]
    pub regex: Option<String>,
}

/// Header edits: `remove` first, then `set` (replace), then `add` (append).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers appended.
    pub add: BTreeMap<String, String>,
    /// Headers replaced.
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    pub remove: Vec<String>,
}

/// Built-in responders that make a route useful without an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Responder {
    /// Answer with the request itself as JSON.
    Echo,
    /// Answer with the analytics aggregate as JSON.
    Analytics,
    /// Answer with a fixed status, headers and body.
    Static {
        /// Status code. Default: 200.
        #[serde(default = "ok_status")]
        status: u16,
        /// Response headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Response body. Default: empty.
        #[serde(default)]
        body: String,
    },
}

fn ok_status() -> u16 {
    200
}
