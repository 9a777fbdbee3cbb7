//! The typed shape of `gateway.toml`.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`) so a typo is an error, never a
//! silently ignored setting. Every field documents its default; defaults are chosen to be safe.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Dur;
use super::policy::{Plugin, PolicyRef, PolicySettings};
use super::state::{RedisSettings, StateSettings};
use super::upstream::Upstream;

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
    /// The embedded store.
    pub state: StateSettings,
    /// A shared Redis for the `redis` and `hybrid` state backends. Default: none.
    pub redis: Option<RedisSettings>,
    /// The admin API.
    pub admin: super::AdminSettings,
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
    /// Merge runs of slashes in request paths before routing (`//a` is `/a`); dot segments
    /// and escaped unreserved characters are always normalised. Default: true.
    pub merge_slashes: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            workers: 0,
            drain_timeout: Dur::secs(30),
            trusted_proxies: Vec::new(),
            log_level: "info".into(),
            merge_slashes: true,
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
    /// The slowest a request body may arrive, in bytes per second averaged from its first
    /// byte (408 and the connection closed below it); 0 disables. Routes may override it.
    /// Default: 240.
    pub min_body_rate: u64,
    /// The slowest a client may read a large response (bytes/s, averaged over the time the
    /// gateway waits on it once 64 KiB have been sent; the response is aborted below it);
    /// 0 disables. Default: 0.
    pub min_response_rate: u64,
    /// Time before `min_body_rate` and `min_response_rate` are first checked. Default: 5s.
    pub rate_grace: Dur,
    /// The most bytes of request bodies held at once by everything that reads a body whole
    /// (the echo responder, policies with a body phase); a request that would go past it
    /// gets 503 `buffers_full`. Default: 256 MiB.
    pub max_buffered_body_bytes: u64,
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
            min_body_rate: 240,
            min_response_rate: 0,
            rate_grace: Dur::secs(5),
            max_buffered_body_bytes: 256 * 1024 * 1024,
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
    /// Whether a client certificate is mandatory; only with `client_ca`. Default: true.
    #[serde(default)]
    pub client_cert_required: Option<bool>,
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
    /// The slowest a request body may arrive (bytes/s); default: `limits.min_body_rate`.
    /// 0 turns the check off, e.g. for long-lived streaming uploads or gRPC client streams.
    #[serde(default)]
    pub min_body_rate: Option<u64>,
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
