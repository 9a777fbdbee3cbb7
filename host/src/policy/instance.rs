//! Policy instances: one configured use of a plugin on a route. Links it (only granted
//! capabilities; see [`super::link`]), keeps an `InstancePre`, and runs calls either on
//! pooled instances (reused, recycled after N uses, discarded after any trap or cancelled
//! call) or on a fresh instance per request (isolated).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{ComponentNamedList, InstancePre, Lift, Lower, Resource, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use super::PolicyError;
use super::bindings::sluice::policy::types;
use super::bindings::{Exports, World};
use super::capabilities::{Capabilities, Capability, Grants};
use super::cpu::{Budget, CpuClock, Sample, Verdict};
use super::engine::{EPOCH_TICK, IdleInstances, PolicyRuntime, Reclaim, Ticker};
use super::host::{CallData, ContextRes, HostState, RequestHeadRes, ResponseHeadRes};
use super::link::{SyncIo, needs_fiber, prepare};
use super::wasi::WasiState;

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

impl CallLimits {
    /// The CPU and wall budgets of one call.
    fn budget(&self) -> Budget {
        Budget {
            cpu: self.cpu,
            wall: self.wall,
        }
    }
}

/// What happens when a call reaches an epoch deadline: the call is charged the CPU time it
/// used (see [`super::cpu`]) and either interrupted or given its next deadline.
fn check_deadline(limits: &CallLimits, cpu: &mut CpuClock) -> UpdateDeadline {
    match cpu.check(limits.budget(), Sample::take()) {
        Verdict::Interrupt => UpdateDeadline::Interrupt,
        Verdict::Continue(left) => UpdateDeadline::Continue(ticks(left)),
    }
}

/// Epoch ticks in `d` (at least one).
fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

struct Warm {
    store: Store<HostState>,
    exports: Exports,
    uses: u32,
    /// For an instance created for the call about to be made, on a fiber: the wall deadline
    /// its creation started, which that call shares (creation, `init` and the call together
    /// get one wall budget, not one each). Fiber-less calls have no wall-clock timer.
    deadline: Option<tokio::time::Instant>,
}

/// Data the host may copy out of a guest in one go (a host call's arguments, or a call's
/// result): two of its largest kv values (`compare-and-set` passes the expected and the new
/// one) and a key, plus 4 MiB for a decision (a local answer's body is at most 1 MiB, its
/// header edits at most another) and the rest. wasmtime's default is 128 MiB: a small
/// guest could make the host allocate that much (the same buffer named many times over)
/// before the host's own limits refuse it.
fn hostcall_fuel(caps: &Capabilities) -> usize {
    let kv = caps.kv.limits();
    2 * kv.max_value_bytes + kv.max_key_bytes + (4 << 20)
}

/// Why an instantiation failed: the shared pool had no slot, or anything else.
enum Attempt {
    PoolFull(wasmtime::Error),
    Failed(PolicyError),
}

impl From<PolicyError> for Attempt {
    fn from(e: PolicyError) -> Self {
        Self::Failed(e)
    }
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
    pool: Arc<IdlePool>,
    idle: Arc<IdleInstances>,
    ticker: Arc<Ticker>,
    /// Counters.
    pub stats: PolicyStats,
}

/// Warm instances kept per policy instance.
const MAX_IDLE: usize = 64;

/// A policy's warm instances, waiting for its next calls.
#[derive(Default)]
struct IdlePool(Mutex<Vec<Warm>>);

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reclaim for IdlePool {
    fn idle(&self) -> usize {
        self.lock().len()
    }

    fn reclaim(&self, n: usize) -> usize {
        // Calls take from the end: the front is the least recently used. Dropped once the
        // lock is released (dropping a store resets its memory).
        let dropped: Vec<Warm> = {
            let mut idle = self.lock();
            let n = n.min(idle.len());
            idle.drain(..n).collect()
        };
        dropped.len()
    }
}

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
            sync: !needs_fiber(runtime.engine(), component, io),
            config_json,
            caps,
            mode,
            limits,
            pool: Arc::default(),
            idle: runtime.idle(),
            ticker: runtime.ticker(),
            stats: PolicyStats::default(),
        };
        let mut warm = this.instantiate().await?;
        warm.deadline = None;
        if this.mode == InstanceMode::Pooled {
            this.pool.lock().push(warm);
            let pool: Arc<dyn Reclaim> = this.pool.clone();
            this.idle.register(Arc::downgrade(&pool));
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

    /// The first epoch deadline of a call: half its CPU budget (never beyond its wall
    /// budget). A call that gets there is checked against its thread's CPU clock from then
    /// on (see [`super::cpu`]); the epoch deadline is the only thing that stops a guest
    /// that never returns to the host (the wall-clock timer around an async call is not
    /// polled while the guest runs).
    fn first_deadline_ticks(&self) -> u64 {
        ticks(self.limits.budget().first_check())
    }

    /// Starts the epoch deadline of a call and its CPU clock. A fiber-less call cannot wait,
    /// so its clock reads nothing until its first deadline (no clock read per call); it
    /// gets one tick more, so that a tick landing just after arming never cuts it short.
    fn arm(&self, store: &mut Store<HostState>) {
        if self.sync {
            store.data_mut().cpu.start_unclocked();
            store.set_epoch_deadline(self.first_deadline_ticks() + 1);
        } else {
            store.data_mut().cpu.start();
            store.set_epoch_deadline(self.first_deadline_ticks());
        }
    }

    /// A fresh instance, `init`ed. When the shared pool has no slot left, idle instances
    /// are reclaimed and instantiation is tried again: first half of those of the policy
    /// holding the most, then every policy's.
    async fn instantiate(&self) -> Result<Warm, PolicyError> {
        let mut full = match self.instantiate_once().await {
            Err(Attempt::PoolFull(e)) => e,
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(w) => return Ok(w),
        };
        for reclaim in [IdleInstances::reclaim_some, IdleInstances::reclaim_all] {
            if reclaim(&self.idle) == 0 {
                continue;
            }
            match self.instantiate_once().await {
                Err(Attempt::PoolFull(e)) => full = e,
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(w) => return Ok(w),
            }
        }
        Err(PolicyError::trap("instantiate", full))
    }

    async fn instantiate_once(&self) -> Result<Warm, Attempt> {
        let _ticking = self.ticker.enter();
        // Only a fiber can wait, so only a fiber's calls need a wall-clock timer (a
        // fiber-less call reads no clock: the epoch deadline bounds it).
        let deadline = (!self.sync).then(|| tokio::time::Instant::now() + self.limits.wall);
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let mut state = HostState::new(self.caps.clone(), self.limits.max_memory);
        if self.wasi {
            state = state.with_wasi(WasiState::new(&self.caps.plugin, self.wasi_clocks));
        }
        let mut store = Store::new(self.pre.component().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel(hostcall_fuel(&self.caps));
        let limits = self.limits;
        store.epoch_deadline_callback(move |mut ctx| {
            Ok(check_deadline(&limits, &mut ctx.data_mut().cpu))
        });
        self.arm(&mut store);
        let instance = match deadline {
            None => self.pre.instantiate(&mut store),
            Some(deadline) => {
                tokio::time::timeout_at(deadline, self.pre.instantiate_async(&mut store))
                    .await
                    .map_err(|_| PolicyError::Timeout)?
            }
        }
        .map_err(|e| {
            if e.chain()
                .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
            {
                Attempt::PoolFull(e)
            } else {
                Attempt::Failed(PolicyError::trap("instantiate", e))
            }
        })?;
        let exports = self
            .world
            .load(&mut store, &instance)
            .map_err(|e| PolicyError::Invalid(format!("not a sluice:policy component: {e:#}")))?;
        self.arm(&mut store);
        let init = self
            .call(
                &mut store,
                exports.init(),
                (self.config_json.as_str(),),
                deadline,
            )
            .await
            .map_err(|_| PolicyError::Timeout)?
            .map_err(|e| PolicyError::trap("init", e))?;
        init.map_err(PolicyError::init)?;
        Ok(Warm {
            store,
            exports,
            uses: 0,
            deadline,
        })
    }

    async fn take(&self) -> Result<Warm, PolicyError> {
        if self.mode == InstanceMode::Pooled
            && let Some(w) = self.pool.lock().pop()
        {
            return Ok(w);
        }
        self.instantiate().await
    }

    fn give_back(&self, mut w: Warm) {
        w.uses += 1;
        if self.mode == InstanceMode::Pooled && w.uses < self.limits.recycle_after {
            let mut pool = self.pool.lock();
            if pool.len() < MAX_IDLE {
                pool.push(w);
            }
        }
    }

    /// Calls `f` with `args`: on the caller's stack for a fiber-less policy, else on a fiber
    /// bounded by the wall-clock `deadline` (the call's own wall budget from now when none
    /// is given; `Err` when it passes).
    async fn call<P, R>(
        &self,
        store: &mut Store<HostState>,
        f: TypedFunc<P, (R,)>,
        args: P,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<wasmtime::Result<R>, tokio::time::error::Elapsed>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (R,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        if self.sync {
            return Ok(f.call(store, args).map(|(r,)| r));
        }
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + self.limits.wall);
        store.data_mut().wall_deadline = Some(deadline);
        tokio::time::timeout_at(deadline, f.call_async(store, args))
            .await
            .map(|r| r.map(|(r,)| r))
    }

    /// Takes an instance and moves `data` into its store for one call; returns the call's
    /// wall deadline when it shares the one its instance's creation started (see
    /// [`Warm::deadline`]).
    async fn begin(
        &self,
        data: &mut CallData,
    ) -> Result<(Warm, Option<tokio::time::Instant>), PolicyError> {
        let mut w = self.take().await?;
        let deadline = w.deadline.take();
        std::mem::swap(&mut w.store.data_mut().call, data);
        self.arm(&mut w.store);
        Ok((w, deadline))
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
        let (mut w, deadline) = self.begin(data).await?;
        let (req, ctx) = (Resource::new_borrow(0), Resource::new_borrow(0));
        let r = self
            .call(&mut w.store, w.exports.on_request(), (req, ctx), deadline)
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
        let (mut w, deadline) = self.begin(data).await?;
        let Some(f) = w.exports.on_request_body() else {
            return self.finish(
                w,
                data,
                "on-request-body",
                Ok(Err(wasmtime::format_err!("no on-request-body export"))),
            );
        };
        let args = (Resource::new_borrow(0), Resource::new_borrow(0), body);
        let r = self.call(&mut w.store, f, args, deadline).await;
        self.finish(w, data, "on-request-body", r)
    }

    /// Calls `on-response` (a `request-policy` component has none: it continues without
    /// taking an instance).
    pub async fn on_response(&self, data: &mut CallData) -> Result<ResponseDecision, PolicyError> {
        if !self.world.has_response_phase() {
            return Ok(ResponseDecision::Continue);
        }
        let _ticking = self.ticker.enter();
        let (mut w, deadline) = self.begin(data).await?;
        let req = Resource::<RequestHeadRes>::new_borrow(0);
        let resp = Resource::<ResponseHeadRes>::new_borrow(0);
        let ctx = Resource::<ContextRes>::new_borrow(0);
        let r = match w.exports.on_response() {
            Some(f) => self.call(&mut w.store, f, (req, resp, ctx), deadline).await,
            // Unreachable: `request-policy` components return above.
            None => Ok(Ok(ResponseDecision::Continue)),
        };
        self.finish(w, data, "on-response", r)
    }
}
