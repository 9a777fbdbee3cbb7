//! What policy instances share across configuration reloads: the engine (created on first
//! use, so a gateway without plugins pays nothing), the state store, the analytics sink and
//! the rate-limiter state of each policy (so a reload does not reset limits).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::{PolicyError, PolicyRuntime};
use crate::config::{OnBackendError, PolicyRef, PolicySettings, RateLimitBackend};
use crate::state::{Hybrid, Kv, LocalLimiter, RateLimiter, Shared, Store};
use crate::telemetry::AnalyticsSink;

/// Shared policy environment.
pub struct PolicyEnv {
    runtime: OnceLock<Arc<PolicyRuntime>>,
    cache_dir: Option<PathBuf>,
    max_instances: u32,
    /// The state backends.
    pub store: Arc<Store>,
    /// The analytics sink.
    pub analytics: Arc<AnalyticsSink>,
    limiters: Mutex<HashMap<String, Arc<LocalLimiter>>>,
    hybrids: Mutex<HashMap<String, Arc<Hybrid>>>,
}

impl PolicyEnv {
    /// An environment for `settings` over `store`; `cache_dir: None` disables the on-disk
    /// compile cache.
    pub fn new(
        settings: &PolicySettings,
        store: Arc<Store>,
        cache_dir: Option<PathBuf>,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            runtime: OnceLock::new(),
            cache_dir,
            max_instances: settings.max_instances,
            store,
            analytics: Arc::new(AnalyticsSink::new(settings.analytics_path.as_deref())?),
            limiters: Mutex::new(HashMap::new()),
            hybrids: Mutex::new(HashMap::new()),
        }))
    }

    /// The engine, if it has been created.
    pub fn runtime_if_started(&self) -> Option<&Arc<PolicyRuntime>> {
        self.runtime.get()
    }

    /// The engine, created on first use.
    pub fn runtime(&self) -> Result<Arc<PolicyRuntime>, PolicyError> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let r = PolicyRuntime::new(self.cache_dir.clone(), self.max_instances)?;
        Ok(self.runtime.get_or_init(|| r).clone())
    }

    /// The kv handle of a policy of `plugin` configured by `p`; `None` when it asks for
    /// Redis and none is configured.
    pub fn kv(&self, plugin: &str, p: &PolicyRef) -> Option<Kv> {
        let redis = match p.kv_backend {
            crate::config::KvBackend::Local => None,
            crate::config::KvBackend::Redis => Some(self.store.redis_kv.clone()?),
        };
        Some(Kv::new(
            plugin.to_owned(),
            self.store.local_kv.clone(),
            redis,
            p.on_backend_error,
            self.store.stats.clone(),
        ))
    }

    /// Forgets, in every policy's local limiter, the keys whose allowance is fully restored;
    /// returns how many keys they still remember.
    pub fn sweep_limiters(&self) -> usize {
        let limiters: Vec<Arc<LocalLimiter>> = self
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        limiters
            .iter()
            .map(|l| {
                l.sweep();
                l.len()
            })
            .sum()
    }

    /// Forgets the rate-limiter state of every policy whose label is not in `live` (the
    /// policies of the snapshot being activated): a reload or API change that removes or
    /// renames a policy frees its keys and stops its hybrid limiter's reconciliation.
    pub fn retain_limiters<'a>(&self, live: impl IntoIterator<Item = &'a str>) {
        let live: std::collections::HashSet<&str> = live.into_iter().collect();
        self.limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|label, _| live.contains(label.as_str()));
        self.hybrids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|label, _| live.contains(label.as_str()));
    }

    /// The rate limiter of the policy labelled `label` (its state kept across reloads);
    /// `None` when it asks for Redis and none is configured.
    pub fn limiter(&self, label: &str, p: &PolicyRef) -> Option<RateLimiter> {
        let local = self
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label.to_string())
            .or_default()
            .clone();
        let prefix = format!("sluice:rl:{label}:");
        let shared = match p.rate_limit_backend {
            RateLimitBackend::Local => Shared::None,
            RateLimitBackend::Redis => Shared::Redis {
                redis: self.store.redis.clone()?,
                prefix,
            },
            RateLimitBackend::Hybrid => {
                let redis = self.store.redis.clone()?;
                let interval = self
                    .store
                    .redis_settings
                    .as_ref()
                    .map(|r| r.hybrid_sync_interval.get())?;
                let h = self
                    .hybrids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(label.to_string())
                    .or_insert_with(|| Hybrid::start(redis, prefix, interval))
                    .clone();
                Shared::Hybrid(h)
            }
        };
        let on_error = match p.rate_limit_backend {
            RateLimitBackend::Local => OnBackendError::Local,
            _ => p.on_backend_error,
        };
        Some(RateLimiter::new(
            local,
            shared,
            on_error,
            self.store.stats.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Limit;

    #[test]
    fn a_limiter_keeps_its_state_while_its_policy_is_live_and_is_forgotten_after() {
        let store = Store::in_memory(None, None, Default::default()).unwrap();
        let env = PolicyEnv::new(&PolicySettings::default(), Arc::new(store), None).unwrap();
        let p: PolicyRef = toml::from_str("plugin = \"p\"").unwrap();
        let limit = Limit {
            requests: 1,
            window_ms: 3_600_000,
            burst: 0,
        };
        let allowed = |label: &str| {
            let l = env.limiter(label, &p).unwrap();
            l.check_now("k", limit, 1).unwrap().unwrap().allowed
        };
        assert!(allowed("r/p#0"));
        assert!(!allowed("r/p#0"), "one request an hour");
        env.retain_limiters(["r/p#0", "other/p#0"]);
        assert!(
            !allowed("r/p#0"),
            "kept across a reload that keeps the policy"
        );
        env.retain_limiters(["other/p#0"]);
        assert!(allowed("r/p#0"), "a removed policy's state is gone");
    }
}
