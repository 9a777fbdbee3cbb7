//! WASI guests (ADR 0002): components built by the Python and JavaScript toolchains always
//! import WASI 0.2 interfaces (their language runtimes need them), even when the policy
//! itself only uses the `sluice:policy` contract. Such components are linked with WASI p2
//! backed by a context that grants nothing real:
//!
//! - no preopened directories (every path fails to resolve), no environment variables, no
//!   arguments, no working directory, a closed stdin;
//! - no network: TCP, UDP and name lookup are disabled and every socket address is denied;
//! - clocks: unless the plugin was granted `clock`, the WASI wall and monotonic clocks are
//!   frozen at zero (a sleep still waits for real, bounded by the call's deadlines);
//! - random: real, per-instance random state (WASI randomness reaches nothing outside the
//!   guest, and a guest without it would fall back to something predictable);
//! - stdout and stderr: written to the gateway's log at `debug`, tagged with the policy,
//!   each instance's output capped at [`OUTPUT_BUDGET`] bytes (the rest is dropped).
//!
//! Components without `wasi:*` imports (e.g. Rust policies built for
//! `wasm32-unknown-unknown`) get no WASI at all: no WASI state in their store, no WASI
//! functions in their linker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::PolicyError;
use super::host::HostState;

/// The WASI interfaces (without version) that [`add_to_linker`] defines, i.e. those of
/// `wasmtime_wasi::p2::add_to_linker_async`. An import of any other `wasi:*` interface is
/// refused at load time.
pub const PROVIDED_INTERFACES: [&str; 27] = [
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The WASI version family the linker implements (wasmtime-wasi 48 defines 0.2.12 and
/// links any semver-compatible 0.2.x import to it).
const PROVIDED_VERSION_PREFIX: &str = "0.2.";

/// Bytes of stdout plus stderr an instance may write to the log over its lifetime.
pub const OUTPUT_BUDGET: usize = 16 * 1024;

/// Largest `get-random-bytes` request (the default, 64 MiB, lets a guest make the host
/// allocate that much outside its memory cap).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// Most WASI resources (streams, descriptors, pollables …) an instance may hold at once.
const MAX_RESOURCES: usize = 4096;

/// Whether `import` (e.g. `wasi:io/poll@0.2.9`) is a WASI interface Sluice links.
pub fn is_provided(import: &str) -> bool {
    let Some((base, version)) = import.split_once('@') else {
        return false;
    };
    version.starts_with(PROVIDED_VERSION_PREFIX) && PROVIDED_INTERFACES.contains(&base)
}

/// Whether `component` imports any `wasi:*` interface (and so needs WASI linked).
pub fn imports_wasi(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:"))
}

/// Adds WASI p2 to `linker` (only for components that import it).
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), PolicyError> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| PolicyError::Engine(format!("cannot link WASI: {e:#}")))
}

/// The WASI state of one instance's store.
pub struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// A context that grants nothing real (see the module documentation). `plugin` tags
    /// the guest's output in the log; `real_clocks` is whether the plugin holds the `clock`
    /// grant.
    pub fn new(plugin: &str, real_clocks: bool) -> Box<Self> {
        let mut b = WasiCtx::builder();
        let budget = Arc::new(AtomicUsize::new(OUTPUT_BUDGET));
        let plugin: Arc<str> = Arc::from(plugin);
        b.stdout(GuestOutput {
            plugin: plugin.clone(),
            stream: "stdout",
            budget: budget.clone(),
        })
        .stderr(GuestOutput {
            plugin,
            stream: "stderr",
            budget,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .max_random_size(MAX_RANDOM_BYTES);
        if !real_clocks {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Box::new(Self {
            ctx: b.build(),
            table,
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI is linked only for components whose stores are created with a WasiState
        // (`PolicyInstance` decides both from the same `imports_wasi`).
        let w = self
            .wasi
            .as_deref_mut()
            .expect("WASI is linked only into stores that hold a WASI context");
        WasiCtxView {
            ctx: &mut w.ctx,
            table: &mut w.table,
        }
    }
}

/// The WASI wall and monotonic clocks of a plugin without the `clock` grant: always zero.
#[derive(Debug, Clone, Copy)]
pub struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A guest's stdout or stderr: each write becomes a `debug` line of the gateway's log,
/// until the instance's [`OUTPUT_BUDGET`] is spent.
#[derive(Clone)]
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    budget: Arc<AtomicUsize>,
}

impl GuestOutput {
    fn emit(&self, bytes: &[u8]) {
        let take = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(bytes.len()))
            })
            .map_or(0, |left| left.min(bytes.len()));
        let plugin = &*self.plugin;
        let stream = self.stream;
        if take > 0 {
            let text = String::from_utf8_lossy(&bytes[..take]);
            tracing::debug!(%plugin, stream, "{}", text.trim_end());
        }
        if take < bytes.len() && take > 0 {
            tracing::debug!(%plugin, stream, "output over {OUTPUT_BUDGET} bytes; the rest is dropped");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI p3 uses this; p3 is not linked.
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_p2_interfaces_of_the_linker_are_provided() {
        for ok in [
            "wasi:io/poll@0.2.9",
            "wasi:cli/environment@0.2.0",
            "wasi:sockets/tcp@0.2.12",
            "wasi:filesystem/preopens@0.2.3",
        ] {
            assert!(is_provided(ok), "{ok}");
        }
        for refused in [
            "wasi:http/types@0.2.9",
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:io/poll",
            "wasi:io/poll@0.3.0-rc-2025-09-16",
            "wasi:clocks/timezone@0.2.9",
            "wasi:keyvalue/store@0.2.0-draft",
            "sluice:policy/log@0.1.0",
        ] {
            assert!(!is_provided(refused), "{refused}");
        }
    }

    #[test]
    fn frozen_clocks_read_zero() {
        assert_eq!(HostWallClock::now(&FrozenClock), Duration::ZERO);
        assert_eq!(HostMonotonicClock::now(&FrozenClock), 0);
    }

    #[test]
    fn guest_output_spends_a_shared_budget() {
        let out = GuestOutput {
            plugin: Arc::from("p"),
            stream: "stdout",
            budget: Arc::new(AtomicUsize::new(10)),
        };
        let mut err = out.clone();
        err.stream = "stderr";
        out.emit(b"123456");
        err.emit(b"123456");
        assert_eq!(out.budget.load(Ordering::Relaxed), 0);
        out.emit(b"more");
        assert_eq!(out.budget.load(Ordering::Relaxed), 0);
    }
}
