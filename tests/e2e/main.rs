//! End-to-end tests: the real `sluice` binary, real sockets, real upstream servers.
//! One test binary with one module per area (wasmtime's `tests/all` layout).

mod admin;
mod bodies;
mod defences;
mod dispatch;
mod h2_limits;
mod jwt;
mod lifecycle;
mod liveness;
mod logs;
mod policies;
mod protocols;
mod routing;
mod slow_clients;
mod state;
mod upstreams;
mod wasi;

/// A listener named `main` on a random loopback port, plus `extra` TOML.
pub fn config(extra: &str) -> String {
    format!(
        "[gateway]\ndrain_timeout = \"5s\"\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n{extra}"
    )
}
