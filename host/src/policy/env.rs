//! What policy instances share across configuration reloads: the engine (created on first
//! use, so a gateway without plugins pays nothing), the kv store, the analytics sink and the
//! rate-limiter state of each policy (so a reload does not reset limits).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::{PolicyError, PolicyRuntime};
use crate::config::PolicySettings;
use crate::state::{KvLimits, LocalLimiter, MemoryKv};
use crate::telemetry::AnalyticsSink;

/// Shared policy environment.
pub struct PolicyEnv {
    runtime: OnceLock<Arc<PolicyRuntime>>,
    cache_dir: Option<PathBuf>,
    /// The kv store.
    pub kv: Arc<MemoryKv>,
    /// The analytics sink.
    pub analytics: Arc<AnalyticsSink>,
    limiters: Mutex<HashMap<String, Arc<LocalLimiter>>>,
}

impl PolicyEnv {
    /// An environment for `settings`; `cache_dir: None` disables the on-disk cache.
    pub fn new(
        settings: &PolicySettings,
        cache_dir: Option<PathBuf>,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            runtime: OnceLock::new(),
            cache_dir,
            kv: Arc::new(MemoryKv::new(KvLimits {
                max_key_bytes: settings.kv_max_key_bytes,
                max_value_bytes: settings.kv_max_value_bytes,
                max_keys: settings.kv_max_keys,
            })),
            analytics: Arc::new(AnalyticsSink::new(settings.analytics_path.as_deref())?),
            limiters: Mutex::new(HashMap::new()),
        }))
    }

    /// The engine, created on first use.
    pub fn runtime(&self) -> Result<Arc<PolicyRuntime>, PolicyError> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let r = PolicyRuntime::new(self.cache_dir.clone())?;
        Ok(self.runtime.get_or_init(|| r).clone())
    }

    /// The rate limiter of the policy labelled `label` (kept across reloads).
    pub fn limiter(&self, label: &str) -> Arc<LocalLimiter> {
        self.limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.to_string())
            .or_default()
            .clone()
    }
}
