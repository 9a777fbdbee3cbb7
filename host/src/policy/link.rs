//! Linking a policy: checking a component's imports against its grants and building the
//! linker that defines only the granted capabilities (plus WASI, granting nothing, for
//! components that import it), then the `InstancePre` every instance of it starts from.

use wasmtime::Engine;
use wasmtime::component::{HasSelf, InstancePre, Linker, LinkerInstance, WasmList, WasmStr};

use super::PolicyError;
use super::bindings::World;
use super::bindings::sluice::policy::{clock, kv, log, outbound_http, rate_limit, types};
use super::capabilities::{Capabilities, Capability, Grants};
use super::engine::PolicyRuntime;
use super::host::HostState;
use super::wasi;

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
pub(super) fn needs_fiber(
    engine: &Engine,
    component: &wasmtime::component::Component,
    io: SyncIo,
) -> bool {
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
pub(super) fn prepare(
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
