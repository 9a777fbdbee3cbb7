//! Policy instances: one configured use of a plugin on a route. Checks the component's
//! imports against the grants, links only granted capabilities (plus WASI, granting nothing,
//! for components that import it; see [`super::wasi`]), keeps an `InstancePre`, and
//! runs calls either on pooled instances (reused, recycled after N uses, discarded after any
//! trap or cancelled call) or on a fresh instance per request (isolated).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{
    ComponentNamedList, HasSelf, InstancePre, Lift, Linker, LinkerInstance, Lower, Resource,
    TypedFunc, WasmList, WasmStr,
};
use wasmtime::{Engine, Store, UpdateDeadline};

use super::PolicyError;
use super::bindings::sluice::policy::{clock, kv, log, outbound_http, rate_limit, types};
use super::bindings::{Exports, World};
use super::capabilities::{Capabilities, Capability, Grants};
use super::engine::{EPOCH_TICK, PolicyRuntime, Ticker};
use super::host::{CallData, ContextRes, CpuClock, HostState, RequestHeadRes, ResponseHeadRes};
use super::wasi::{self, WasiState};

pub use types::{RequestDecision, ResponseDecision};

/// How instances are managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InstanceMode {
    /// Reuse warm instances (trusted code; fastest).
    #[default]
    Pooled,
    /// A fresh instance for every request (no state survives a request).
    Isolated,
}

/// Limits of one policy instance.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Linear memory cap in bytes.
    pub max_memory: usize,
    /// CPU deadline per call.
    pub cpu: Duration,
    /// Wall-clock deadline per call (covers host I/O waits).
    pub wall: Duration,
    /// Pooled instances are discarded after this many calls.
    pub recycle_after: u32,
}

/// What happens when a call reaches its epoch deadline. The epoch ticker counts wall time,
/// but time spent waiting in host I/O (an outbound request) is not CPU time: the deadline
/// is extended by what is left of the CPU budget once those waits are given back (and
/// never beyond the wall deadline); with nothing left, the call traps.
fn extend_deadline(limits: &CallLimits, cpu: &CpuClock) -> UpdateDeadline {
    let left = limits
        .cpu
        .saturating_sub(cpu.used())
        .min(limits.wall.saturating_sub(cpu.elapsed()));
    if left.is_zero() {
        return UpdateDeadline::Interrupt;
    }
    UpdateDeadline::Continue((left.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64)
}

struct Warm {
    store: Store<HostState>,
    exports: Exports,
    uses: u32,
}

/// The I/O capabilities' functions that answer without waiting for one policy instance,
/// because its backends are in this process: `kv.get` on the embedded store and
/// `rate-limit.check` on the `local` and `hybrid` limiters. They are linked as plain host
/// functions, so that a policy importing nothing else that waits (key-auth reading keys,
/// rate-limit on a local limit) is called without a fiber.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SyncIo {
    kv_get: bool,
    rate_limit_check: bool,
}

impl SyncIo {
    /// What answers without waiting for a policy reaching `caps`.
    pub(super) fn of(caps: &Capabilities) -> Self {
        Self {
            kv_get: !caps.kv.reads_wait_on_io(),
            rate_limit_check: !caps.limiter.waits_on_io(),
        }
    }

    /// Whether function `func` of capability `c` may wait on I/O (is an async host
    /// function in this linker).
    fn waits(self, c: Capability, func: &str) -> bool {
        match c {
            Capability::Log | Capability::Clock | Capability::Analytics => false,
            Capability::Kv => !(self.kv_get && func == "get"),
            Capability::RateLimit => !(self.rate_limit_check && func == "check"),
            Capability::OutboundHttp => true,
        }
    }
}

/// Whether calls into `component` must run on a fiber: it imports WASI (whose host side
/// is async) or a capability function that waits on I/O in this linker. A component's
/// import instances list only the functions it calls, so key-auth importing `kv.get` alone
/// needs no fiber on the embedded store. (wasmtime computes the same from the linked
/// definitions; it refuses a synchronous call if the two disagreed, so a mistake here is an
/// error, never unsoundness.)
fn needs_fiber(engine: &Engine, component: &wasmtime::component::Component, io: SyncIo) -> bool {
    use wasmtime::component::types::ComponentItem;
    component
        .component_type()
        .imports(engine)
        .any(|(name, item)| {
            if name.starts_with("wasi:") {
                return true;
            }
            let Some(c) = Capability::from_import(name) else {
                return false;
            };
            match item.ty {
                ComponentItem::ComponentInstance(inst) => inst.exports(engine).any(|(n, e)| {
                    matches!(e.ty, ComponentItem::ComponentFunc(_)) && io.waits(c, n)
                }),
                _ => true,
            }
        })
}

/// Builds a linker that defines only `grants` (plus the shared types), and WASI p2 when
/// `with_wasi`; the functions `io` names are defined synchronously.
fn linker(
    engine: &Engine,
    grants: Grants,
    with_wasi: bool,
    io: SyncIo,
) -> Result<Linker<HostState>, PolicyError> {
    let mut l = Linker::new(engine);
    let e = |e: wasmtime::Error| PolicyError::Engine(e.to_string());
    types::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    if with_wasi {
        wasi::add_to_linker(&mut l)?;
    }
    if grants.has(Capability::Log) {
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    }
    if grants.has(Capability::Clock) {
        clock::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    }
    if grants.has(Capability::Kv) {
        kv::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    }
    if grants.has(Capability::RateLimit) {
        rate_limit::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    }
    if grants.has(Capability::Analytics) {
        instance_of(&mut l, Capability::Analytics)
            .and_then(|mut i| {
                i.func_wrap("emit", |cx, (fields,): (WasmList<(WasmStr, WasmStr)>,)| {
                    super::host::analytics_emit(cx, fields)
                })
            })
            .map_err(e)?;
    }
    if grants.has(Capability::OutboundHttp) {
        outbound_http::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(e)?;
    }
    // Replace the async definitions `io` allows with synchronous ones.
    l.allow_shadowing(true);
    if grants.has(Capability::Kv) && io.kv_get {
        instance_of(&mut l, Capability::Kv)
            .and_then(|mut i| {
                i.func_wrap("get", |mut cx, (key,): (String,)| {
                    Ok((HostState::kv_get_now(cx.data_mut(), &key)?,))
                })
            })
            .map_err(e)?;
    }
    if grants.has(Capability::RateLimit) && io.rate_limit_check {
        instance_of(&mut l, Capability::RateLimit)
            .and_then(|mut i| {
                i.func_wrap(
                    "check",
                    |mut cx, (key, limit, cost): (String, rate_limit::Limit, u32)| {
                        Ok((HostState::rate_limit_check_now(
                            cx.data_mut(),
                            &key,
                            limit,
                            cost,
                        )?,))
                    },
                )
            })
            .map_err(e)?;
    }
    l.allow_shadowing(false);
    Ok(l)
}

/// The version of the WIT package (`sluice:policy@…`) the host implements.
const WIT_VERSION: &str = "0.1.0";

/// Capability `c`'s instance in `l`, to define its functions by hand.
fn instance_of(
    l: &mut Linker<HostState>,
    c: Capability,
) -> wasmtime::Result<LinkerInstance<'_, HostState>> {
    l.instance(&format!("{}@{WIT_VERSION}", c.interface()))
}

/// Refuses a component that imports anything not granted (naming the import). `wasi:*`
/// imports are accepted only for the WASI 0.2 interfaces Sluice links (granting nothing).
pub fn check_imports(
    engine: &Engine,
    component: &wasmtime::component::Component,
    grants: Grants,
) -> Result<(), PolicyError> {
    use wasmtime::component::types::ComponentItem;
    for (name, item) in component.component_type().imports(engine) {
        // World-level `use` of the contract's types shows up as type imports; only
        // instance and function imports carry behaviour.
        if matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_))
            || name.starts_with("sluice:policy/types@")
        {
            continue;
        }
        if name.starts_with("wasi:") {
            if wasi::is_provided(name) {
                continue;
            }
            return Err(PolicyError::Invalid(format!(
                "the component imports {name}, which Sluice does not provide \
                 (it links only WASI 0.2 cli, clocks, filesystem, io, random and sockets, \
                 granting nothing)"
            )));
        }
        match Capability::from_import(name) {
            Some(c) if grants.has(c) => {}
            Some(_) => {
                return Err(PolicyError::Ungranted {
                    import: name.to_string(),
                });
            }
            None => {
                return Err(PolicyError::Invalid(format!(
                    "the component imports {name}, which Sluice does not provide"
                )));
            }
        }
    }
    Ok(())
}

/// Checks that `component` is a `sluice:policy` component importing only what `grants`
/// allow, and pre-instantiates it; returns its world and whether it imports WASI.
fn prepare(
    runtime: &PolicyRuntime,
    component: &wasmtime::component::Component,
    grants: Grants,
    io: SyncIo,
) -> Result<(InstancePre<HostState>, World, bool), PolicyError> {
    check_imports(runtime.engine(), component, grants)?;
    let wasi = wasi::imports_wasi(runtime.engine(), component);
    let l = linker(runtime.engine(), grants, wasi, io)?;
    let ipre = l
        .instantiate_pre(component)
        .map_err(|e| PolicyError::Invalid(format!("cannot link the component: {e:#}")))?;
    let world = World::of(&ipre)
        .map_err(|e| PolicyError::Invalid(format!("not a sluice:policy component: {e:#}")))?;
    Ok((ipre, world, wasi))
}

/// Checks, without instantiating, that `component` is a component of a `sluice:policy`
/// world that imports only capabilities in `grants` (for uploads).
pub fn check_component(
    runtime: &PolicyRuntime,
    component: &wasmtime::component::Component,
    grants: Grants,
) -> Result<(), PolicyError> {
    prepare(runtime, component, grants, SyncIo::default()).map(|_| ())
}

/// Counters of one policy instance.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Calls that failed (trap, timeout, bad decision).
    pub failures: AtomicU64,
    /// Requests on which the policy was skipped because it failed open.
    pub skipped: AtomicU64,
    /// Instances created.
    pub instantiations: AtomicU64,
}

/// A configured policy, ready to serve.
pub struct PolicyInstance {
    /// `route/plugin` label for logs and error bodies.
    pub label: String,
    /// The plugin name.
    pub plugin: String,
    pre: InstancePre<HostState>,
    /// The component's world, its exports resolved once (not by name on every
    /// instantiation).
    world: World,
    /// Whether the component imports WASI (its stores then carry a WASI context).
    wasi: bool,
    /// Whether its WASI clocks are real (the `clock` grant) rather than frozen.
    wasi_clocks: bool,
    /// Whether nothing it imports is async in its linker (no WASI, no `outbound-http`, no
    /// `kv` or `rate-limit` function that waits on I/O; see [`SyncIo`]): instantiation and
    /// calls then run without a fiber (and without a wall-clock timer: nothing can wait on
    /// I/O; the epoch deadline bounds the CPU).
    sync: bool,
    config_json: String,
    caps: Arc<Capabilities>,
    mode: InstanceMode,
    limits: CallLimits,
    pool: Mutex<Vec<Warm>>,
    ticker: Arc<Ticker>,
    /// Counters.
    pub stats: PolicyStats,
}

/// Warm instances kept per policy instance.
const MAX_IDLE: usize = 64;

impl PolicyInstance {
    /// Links and pre-instantiates `component` for these grants, then proves the
    /// configuration by instantiating once and calling `init` (that instance is kept warm).
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        runtime: &PolicyRuntime,
        label: String,
        plugin: String,
        component: &wasmtime::component::Component,
        grants: Grants,
        config_json: String,
        caps: Arc<Capabilities>,
        mode: InstanceMode,
        limits: CallLimits,
    ) -> Result<Self, PolicyError> {
        let io = SyncIo::of(&caps);
        let (pre, world, wasi) = prepare(runtime, component, grants, io)?;
        let this = Self {
            label,
            plugin,
            pre,
            world,
            wasi,
            wasi_clocks: grants.has(Capability::Clock),
            sync: !wasi && !needs_fiber(runtime.engine(), component, io),
            config_json,
            caps,
            mode,
            limits,
            pool: Mutex::new(Vec::new()),
            ticker: runtime.ticker(),
            stats: PolicyStats::default(),
        };
        let warm = this.instantiate().await?;
        if this.mode == InstanceMode::Pooled {
            this.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(warm);
        }
        Ok(this)
    }

    /// Whether calls into this policy run on a fiber (it imports WASI or a host function
    /// that waits on I/O); otherwise they run on the caller's stack.
    pub fn uses_fiber(&self) -> bool {
        !self.sync
    }

    /// Whether the policy has a response phase (its component targets the `policy` or
    /// `body-policy` world; a `request-policy` component has none, and is not called on
    /// the way back).
    pub fn has_response_phase(&self) -> bool {
        self.world.has_response_phase()
    }

    /// Whether the policy wants request bodies.
    pub fn wants_body(&self) -> bool {
        self.world.has_body_phase()
    }

    /// The epoch deadline of one call: the CPU deadline, but never beyond the wall deadline.
    /// A guest that never returns to the host cannot be stopped by the wall-clock timer
    /// around the call (the call never yields to it), only by the epoch deadline.
    fn deadline_ticks(&self) -> u64 {
        let limit = self.limits.cpu.min(self.limits.wall);
        (limit.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
    }

    /// Starts the epoch deadline of a call (and its CPU clock, for calls that can wait on
    /// I/O). A fiber-less call cannot wait, so its wall time is its CPU time and the epoch
    /// deadline alone bounds it (no clock read per call): it is interrupted once the
    /// deadline's ticks have all elapsed, with one tick more so that a tick landing just
    /// after arming never cuts it short.
    fn arm(&self, store: &mut Store<HostState>) {
        if self.sync {
            store.set_epoch_deadline(self.deadline_ticks() + 1);
        } else {
            store.data_mut().cpu.start();
            store.set_epoch_deadline(self.deadline_ticks());
        }
    }

    async fn instantiate(&self) -> Result<Warm, PolicyError> {
        let _ticking = self.ticker.enter();
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let mut state = HostState::new(self.caps.clone(), self.limits.max_memory);
        if self.wasi {
            state = state.with_wasi(WasiState::new(&self.caps.plugin, self.wasi_clocks));
        }
        let mut store = Store::new(self.pre.component().engine(), state);
        store.limiter(|s| &mut s.limits);
        if self.sync {
            // A fiber-less call cannot wait: its deadline is never extended.
            store.epoch_deadline_trap();
        } else {
            let limits = self.limits;
            store.epoch_deadline_callback(move |ctx| Ok(extend_deadline(&limits, &ctx.data().cpu)));
        }
        self.arm(&mut store);
        let instance = if self.sync {
            self.pre.instantiate(&mut store)
        } else {
            tokio::time::timeout(self.limits.wall, self.pre.instantiate_async(&mut store))
                .await
                .map_err(|_| PolicyError::Timeout)?
        }
        .map_err(|e| PolicyError::trap("instantiate", e))?;
        let exports = self
            .world
            .load(&mut store, &instance)
            .map_err(|e| PolicyError::Invalid(format!("not a sluice:policy component: {e:#}")))?;
        self.arm(&mut store);
        let init = self
            .call(&mut store, exports.init(), (self.config_json.as_str(),))
            .await
            .map_err(|_| PolicyError::Timeout)?
            .map_err(|e| PolicyError::trap("init", e))?;
        init.map_err(PolicyError::init)?;
        Ok(Warm {
            store,
            exports,
            uses: 0,
        })
    }

    async fn take(&self) -> Result<Warm, PolicyError> {
        if self.mode == InstanceMode::Pooled
            && let Some(w) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return Ok(w);
        }
        self.instantiate().await
    }

    fn give_back(&self, mut w: Warm) {
        w.uses += 1;
        if self.mode == InstanceMode::Pooled && w.uses < self.limits.recycle_after {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < MAX_IDLE {
                pool.push(w);
            }
        }
    }

    /// Calls `f` with `args`: on the caller's stack for a fiber-less policy, else on a fiber
    /// bounded by the wall-clock deadline (`Err` when it passes).
    async fn call<P, R>(
        &self,
        store: &mut Store<HostState>,
        f: TypedFunc<P, (R,)>,
        args: P,
    ) -> Result<wasmtime::Result<R>, tokio::time::error::Elapsed>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (R,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        if self.sync {
            return Ok(f.call(store, args).map(|(r,)| r));
        }
        tokio::time::timeout(self.limits.wall, f.call_async(store, args))
            .await
            .map(|r| r.map(|(r,)| r))
    }

    /// Takes an instance and moves `data` into its store for one call.
    async fn begin(&self, data: &mut CallData) -> Result<Warm, PolicyError> {
        let mut w = self.take().await?;
        std::mem::swap(&mut w.store.data_mut().call, data);
        self.arm(&mut w.store);
        Ok(w)
    }

    /// Moves `data` back out; keeps the instance only if the call completed normally.
    fn finish<R>(
        &self,
        mut w: Warm,
        data: &mut CallData,
        what: &'static str,
        r: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, PolicyError> {
        std::mem::swap(&mut w.store.data_mut().call, data);
        match r {
            Ok(Ok(v)) => {
                self.give_back(w);
                Ok(v)
            }
            Ok(Err(e)) => Err(PolicyError::trap(what, e)),
            Err(_) => Err(PolicyError::Timeout),
        }
    }

    /// Calls `on-request`.
    pub async fn on_request(&self, data: &mut CallData) -> Result<RequestDecision, PolicyError> {
        let _ticking = self.ticker.enter();
        let mut w = self.begin(data).await?;
        let (req, ctx) = (Resource::new_borrow(0), Resource::new_borrow(0));
        let r = self
            .call(&mut w.store, w.exports.on_request(), (req, ctx))
            .await;
        self.finish(w, data, "on-request", r)
    }

    /// Calls `on-request-body` (only for policies that export it).
    pub async fn on_request_body(
        &self,
        data: &mut CallData,
        body: Vec<u8>,
    ) -> Result<RequestDecision, PolicyError> {
        let _ticking = self.ticker.enter();
        let mut w = self.begin(data).await?;
        let Some(f) = w.exports.on_request_body() else {
            return self.finish(
                w,
                data,
                "on-request-body",
                Ok(Err(wasmtime::format_err!("no on-request-body export"))),
            );
        };
        let args = (Resource::new_borrow(0), Resource::new_borrow(0), body);
        let r = self.call(&mut w.store, f, args).await;
        self.finish(w, data, "on-request-body", r)
    }

    /// Calls `on-response` (a `request-policy` component has none: it continues without
    /// taking an instance).
    pub async fn on_response(&self, data: &mut CallData) -> Result<ResponseDecision, PolicyError> {
        if !self.world.has_response_phase() {
            return Ok(ResponseDecision::Continue);
        }
        let _ticking = self.ticker.enter();
        let mut w = self.begin(data).await?;
        let req = Resource::<RequestHeadRes>::new_borrow(0);
        let resp = Resource::<ResponseHeadRes>::new_borrow(0);
        let ctx = Resource::<ContextRes>::new_borrow(0);
        let r = match w.exports.on_response() {
            Some(f) => self.call(&mut w.store, f, (req, resp, ctx)).await,
            // Unreachable: `request-policy` components return above.
            None => Ok(Ok(ResponseDecision::Continue)),
        };
        self.finish(w, data, "on-response", r)
    }
}
