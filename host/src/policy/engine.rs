//! The process-wide wasmtime engine: pooling allocator with copy-on-write memory images,
//! epoch interruption driven by a ticker thread, and compilation with an on-disk artifact
//! cache keyed by content digest and engine compatibility hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PolicyError;

/// One epoch tick; per-call CPU deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Hard ceiling of any plugin's linear memory.
pub const MAX_PLUGIN_MEMORY: usize = 256 * 1024 * 1024;
/// Largest component accepted for compilation.
pub const MAX_COMPONENT_BYTES: usize = 50 * 1024 * 1024;

/// Idle ticks after which the ticker parks (100 ms at 1 ms per tick).
const IDLE_TICKS_BEFORE_PARK: u32 = 100;

/// Drives the engine's epoch while guest code may be running. Under load it ticks steadily;
/// after [`IDLE_TICKS_BEFORE_PARK`] ticks with no active call it parks, so an idle gateway
/// (or one whose routes call no policy) pays no wake-ups. Entering a call costs one atomic
/// increment and one load; only the first call after a park wakes the thread (waking it on
/// every call cost a futex syscall and a context switch per call).
pub struct Ticker {
    active: AtomicUsize,
    parked: AtomicBool,
    thread: std::thread::Thread,
}

/// Keeps the ticker running for as long as it lives; hold one around every guest call.
pub struct Ticking<'a>(&'a Ticker);

impl Ticker {
    /// Marks a guest call as active (waking the ticker if it was parked).
    pub fn enter(&self) -> Ticking<'_> {
        // SeqCst pairs with the ticker's `parked` store and `active` load: either this call
        // sees `parked` or the ticker sees the call, so no call runs with a parked ticker.
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
        }
        Ticking(self)
    }

    /// The ticker thread's loop: runs until the engine is dropped.
    fn run(&self, weak: wasmtime::EngineWeak) {
        let mut idle = 0u32;
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            if self.active.load(Ordering::SeqCst) == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            if idle >= IDLE_TICKS_BEFORE_PARK {
                idle = 0;
                self.parked.store(true, Ordering::SeqCst);
                if self.active.load(Ordering::SeqCst) == 0 {
                    // An unpark that comes before this park makes it return at once.
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
        }
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The environment variable that turns on a profiling agent for the policies' compiled
/// code: `perfmap` writes `/tmp/perf-<pid>.map`, which lets `perf report` name the
/// guest functions a profile lands in. Off by default; a diagnostic, not a setting.
pub const PROFILER_ENV: &str = "SLUICE_WASM_PROFILER";

/// The profiling agent [`PROFILER_ENV`] asks for (`None` when unset or empty).
fn profiler_from_env() -> Result<Option<wasmtime::ProfilingStrategy>, PolicyError> {
    parse_profiler(std::env::var(PROFILER_ENV).ok().as_deref())
}

/// The profiling agent named by a value of [`PROFILER_ENV`].
fn parse_profiler(value: Option<&str>) -> Result<Option<wasmtime::ProfilingStrategy>, PolicyError> {
    match value {
        None | Some("") | Some("none") => Ok(None),
        Some("perfmap") => Ok(Some(wasmtime::ProfilingStrategy::PerfMap)),
        Some(other) => Err(PolicyError::Engine(format!(
            "{PROFILER_ENV}={other:?}: expected `perfmap` or `none`"
        ))),
    }
}

/// The engine and the compiled components, shared by every snapshot.
pub struct PolicyRuntime {
    engine: Engine,
    ticker: Arc<Ticker>,
    idle: Arc<IdleInstances>,
    cache_dir: Option<PathBuf>,
    compiled: Mutex<HashMap<String, Component>>,
}

/// Warm instances a policy can give up.
pub trait Reclaim: Send + Sync {
    /// How many idle instances the policy holds.
    fn idle(&self) -> usize;

    /// Drops up to `n` of the policy's idle instances, least recently used first (returning
    /// their slots to the pool); returns how many.
    fn reclaim(&self, n: usize) -> usize;
}

/// Every policy's idle instances. The instance pool is shared by all policies, and each
/// keeps the warm instances its busiest moment left behind: without taking them back, the
/// idle instances of cold policies would hold the pool's slots for ever and a busy one
/// would find none. A policy that finds the pool full reclaims some of them (see
/// [`reclaim_some`](Self::reclaim_some)) and tries again, then all of them.
#[derive(Default)]
pub struct IdleInstances(Mutex<Vec<std::sync::Weak<dyn Reclaim>>>);

impl IdleInstances {
    /// Registers a policy's idle instances (forgetting those of dropped policies).
    pub fn register(&self, idle: std::sync::Weak<dyn Reclaim>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(idle);
    }

    fn live(&self) -> Vec<Arc<dyn Reclaim>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    /// Drops half (at least one) of the idle instances of the policy holding the most, so
    /// that one policy's need does not make every other policy start cold; returns how many.
    pub fn reclaim_some(&self) -> usize {
        let Some((most, idle)) = self
            .live()
            .into_iter()
            .map(|r| {
                let n = r.idle();
                (r, n)
            })
            .max_by_key(|(_, n)| *n)
        else {
            return 0;
        };
        most.reclaim(idle.div_ceil(2))
    }

    /// Drops every policy's idle instances; returns how many.
    pub fn reclaim_all(&self) -> usize {
        self.live().iter().map(|r| r.reclaim(usize::MAX)).sum()
    }
}

impl PolicyRuntime {
    /// Creates the engine and starts its epoch ticker. `cache_dir` keeps compiled artifacts
    /// between runs (created owner-only when missing; not used when others could write to
    /// it, see [`crate::private::check_private_dir`]); the pool holds `instances`
    /// instances at once (across all plugins).
    pub fn new(cache_dir: Option<PathBuf>, instances: u32) -> Result<Arc<Self>, PolicyError> {
        let instances = instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(2))
            .total_memories(instances)
            .total_tables(instances.saturating_mul(2))
            .total_stacks(instances)
            .max_memory_size(MAX_PLUGIN_MEMORY)
            // Reset a used memory by restoring only its dirty pages in place (found with
            // PAGEMAP_SCAN on Linux ≥ 6.7; the low 64 KiB otherwise) rather than `madvise`
            // and page faults on the next instantiation: a fresh instance stays cheap.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(if PoolingAllocationConfig::is_pagemap_scan_available() {
                2 << 20
            } else {
                64 << 10
            })
            .table_keep_resident(16 * 1024);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(512 * 1024)
            // What is left above the wasm stack is the host functions' (TLS handshakes,
            // Redis, WASI): wasmtime's default margin, 1.5 MiB, since a host-side overflow
            // on a fiber aborts the process. Reserved address space, not memory.
            .async_stack_size(2 * 1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(p) = profiler_from_env()? {
            cfg.profiler(p);
        }
        let engine = Engine::new(&cfg).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let weak = engine.weak();
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Ticker>>();
        let handle = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                if let Ok(ticker) = rx.recv() {
                    ticker.run(weak);
                }
            })
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let ticker = Arc::new(Ticker {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        let _ = tx.send(ticker.clone());
        if let Some(dir) = &cache_dir {
            crate::private::create_private_dir(dir)
                .map_err(|e| PolicyError::Engine(format!("cache dir {}: {e}", dir.display())))?;
        }
        // Artifacts are loaded as native code: from a directory someone else could write to,
        // none is (components are compiled at every start instead).
        let cache_dir = cache_dir.filter(|dir| match crate::private::check_private_dir(dir) {
            None => true,
            Some(why) => {
                tracing::warn!(%why, "compiled-artifact cache not used");
                false
            }
        });
        Ok(Arc::new(Self {
            engine,
            ticker,
            idle: Arc::default(),
            cache_dir,
            compiled: Mutex::new(HashMap::new()),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Forgets the compiled components whose digest `keep` refuses (those of no live
    /// plugin version: rejected uploads, replaced versions), so that memory holds only what
    /// serves; their on-disk artifacts stay for a later use.
    pub fn retain_compiled(&self, keep: impl Fn(&str) -> bool) {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|digest, _| keep(digest));
    }

    /// The registry of every policy's idle instances.
    pub fn idle(&self) -> Arc<IdleInstances> {
        self.idle.clone()
    }

    /// The epoch ticker, to hold [`Ticking`] around guest calls.
    pub fn ticker(&self) -> Arc<Ticker> {
        self.ticker.clone()
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let compat = h.finish();
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{compat:016x}.cwasm")))
    }

    /// Compiles `bytes` (or reuses the in-memory or on-disk artifact for the same digest).
    /// Returns the component and its SHA-256 digest (hex).
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String), PolicyError> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(PolicyError::Invalid(format!(
                "component is {} bytes, over the {MAX_COMPONENT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok((c.clone(), digest));
        }
        let path = self.artifact_path(&digest);
        let cached = path.as_ref().filter(|p| p.exists()).and_then(|p| {
            // SAFETY: the file is in the gateway's owner-only cache directory and was written
            // by `compile` below from `Component::serialize` of this same engine
            // configuration (the compatibility hash is part of its name); no other process
            // writes there. This is the only place artifacts are deserialized.
            #[allow(unsafe_code)]
            let c = unsafe { Component::deserialize_file(&self.engine, p) };
            c.map_err(|e| tracing::warn!(path = %p.display(), error = %e, "ignoring unusable cached artifact"))
                .ok()
        });
        let component = match cached {
            Some(c) => c,
            None => {
                if !wasmparser_is_component(bytes) {
                    return Err(PolicyError::Invalid(
                        "not a WebAssembly component (a core module or other bytes)".into(),
                    ));
                }
                let c = Component::new(&self.engine, bytes).map_err(|e| {
                    PolicyError::Invalid(format!("cannot compile the component: {e:#}"))
                })?;
                if let Some(p) = &path {
                    match c.serialize() {
                        Ok(art) => {
                            if let Err(e) = crate::private::write_private_file(p, &art) {
                                tracing::warn!(path = %p.display(), error = %e, "cannot cache compiled artifact");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot serialize compiled artifact"),
                    }
                }
                c
            }
        };
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), component.clone());
        Ok((component, digest))
    }
}

/// Whether `bytes` start with the component-model preamble (magic + layer 1).
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn recognises_components_and_rejects_core_modules() {
        let core = b"\0asm\x01\0\0\0";
        let component = b"\0asm\x0d\0\x01\0";
        assert!(!wasmparser_is_component(core));
        assert!(wasmparser_is_component(component));
        assert!(!wasmparser_is_component(b"garbage!"));
    }

    /// A policy's idle instances, counted.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Reclaim for Counted {
        fn idle(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn reclaim(&self, n: usize) -> usize {
            let n = n.min(self.idle());
            self.0.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            n
        }
    }

    fn counted(n: usize) -> Arc<dyn Reclaim> {
        Arc::new(Counted(n.into()))
    }

    #[test]
    fn reclaiming_some_takes_half_of_the_largest_idle_pool_only() {
        let all = IdleInstances::default();
        let (a, b, c) = (counted(3), counted(7), counted(0));
        for p in [&a, &b, &c] {
            all.register(Arc::downgrade(p));
        }
        assert_eq!(all.reclaim_some(), 4);
        assert_eq!((a.idle(), b.idle()), (3, 3));
        // A tie: one of them loses two.
        assert_eq!(all.reclaim_some(), 2);
        assert_eq!(a.idle() + b.idle(), 4);
        assert_eq!(all.reclaim_all(), 4);
        assert_eq!(all.reclaim_some(), 0, "nothing idle is left");
        // A dropped policy's pool is not reclaimed from (nor kept alive).
        let d = counted(5);
        all.register(Arc::downgrade(&d));
        drop(d);
        assert_eq!(all.reclaim_all(), 0);
    }

    /// The smallest component: the preamble alone (no imports, no exports).
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// The cached artifact files in `dir`.
    fn artifacts(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn compiled_components_of_no_live_plugin_are_forgotten() {
        let rt = PolicyRuntime::new(None, 1).unwrap();
        let (_, digest) = rt.compile(EMPTY_COMPONENT).unwrap();
        let cached = |rt: &PolicyRuntime| rt.compiled.lock().unwrap().len();
        rt.retain_compiled(|d| d == digest);
        assert_eq!(cached(&rt), 1);
        rt.retain_compiled(|d| d != digest);
        assert_eq!(cached(&rt), 0);
    }

    #[test]
    fn a_cache_directory_others_can_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared-cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let rt = PolicyRuntime::new(Some(dir.clone()), 1).unwrap();
        rt.compile(EMPTY_COMPONENT).unwrap();
        assert!(artifacts(&dir).is_empty(), "an artifact was written");
    }

    #[cfg(unix)]
    fn inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    #[cfg(unix)]
    #[test]
    fn compiled_artifacts_are_cached_by_digest_in_an_owner_only_dir_and_reused_by_a_new_runtime() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let rt = PolicyRuntime::new(Some(dir.clone()), 1).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let (_, digest) = rt.compile(EMPTY_COMPONENT).unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(EMPTY_COMPONENT)));
        let files = artifacts(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with(&format!("{digest}-")), "{name}");
        // A new runtime (an empty in-memory cache) loads the artifact instead of compiling
        // and writing it again: every write replaces the file (a new inode).
        let before = inode(&files[0]);
        let rt2 = PolicyRuntime::new(Some(dir.clone()), 1).unwrap();
        rt2.compile(EMPTY_COMPONENT).unwrap();
        assert_eq!(artifacts(&dir), files);
        assert_eq!(inode(&files[0]), before);
    }

    #[cfg(unix)]
    #[test]
    fn an_unusable_cached_artifact_is_ignored_and_replaced_by_a_fresh_compilation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        PolicyRuntime::new(Some(dir.clone()), 1)
            .unwrap()
            .compile(EMPTY_COMPONENT)
            .unwrap();
        let file = artifacts(&dir).remove(0);
        let good = std::fs::read(&file).unwrap();
        // Garbage, and a truncated artifact, under the expected name.
        for bad in [b"not an artifact".to_vec(), good[..good.len() / 2].to_vec()] {
            std::fs::write(&file, &bad).unwrap();
            let rt = PolicyRuntime::new(Some(dir.clone()), 1).unwrap();
            rt.compile(EMPTY_COMPONENT).unwrap();
            assert_eq!(std::fs::read(&file).unwrap(), good);
        }
    }

    #[test]
    fn profiler_is_off_unless_perfmap_is_asked_for_and_rejects_unknown_agents() {
        for off in [None, Some(""), Some("none")] {
            assert!(parse_profiler(off).unwrap().is_none(), "{off:?}");
        }
        assert!(matches!(
            parse_profiler(Some("perfmap")),
            Ok(Some(wasmtime::ProfilingStrategy::PerfMap))
        ));
        let err = parse_profiler(Some("jitdump")).unwrap_err().to_string();
        assert!(
            err.contains("SLUICE_WASM_PROFILER") && err.contains("jitdump"),
            "{err}"
        );
    }
}
