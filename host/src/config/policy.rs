//! The `[policy]`, `[plugins.NAME]` and `[[routes.policies]]` parts of `gateway.toml`.

use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;
use super::model::ValueMatch;

/// Default of [`PolicySettings::max_instances`].
pub const DEFAULT_MAX_INSTANCES: u32 = 2000;
/// Largest accepted [`PolicySettings::max_instances`].
pub const MAX_INSTANCES_LIMIT: u32 = 100_000;

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
    /// Policy instances that can exist at once across all plugins (the pooling allocator's
    /// slots; each reserves `MAX_PLUGIN_MEMORY` of address space, not memory). Read at start
    /// only. Default: 2000.
    pub max_instances: u32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("data/cache"),
            analytics_path: None,
            kv_max_key_bytes: 512,
            kv_max_value_bytes: 64 * 1024,
            kv_max_keys: 10_000,
            max_instances: DEFAULT_MAX_INSTANCES,
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
    /// Where this policy's `kv` entries live: `local` or `redis`. Default: local.
    #[serde(default)]
    pub kv_backend: super::KvBackend,
    /// Where its rate-limit counters live: `local`, `redis` or `hybrid`. Default: local.
    #[serde(default)]
    pub rate_limit_backend: super::RateLimitBackend,
    /// When Redis fails or is slow: `open`, `closed` or `local`. Default: local.
    #[serde(default)]
    pub on_backend_error: super::OnBackendError,
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
