//! Sluice: an API gateway whose policies are WebAssembly components.
//!
//! This crate is the gateway host. Dependencies run one way:
//! `config` → `routing`, `upstream`, `tls` → `snapshot` → `proxy` → `server` → `gateway`.
//!
//! - [`config`]: the typed `gateway.toml`, its loading and located errors;
//! - [`routing`]: the route table and its specificity order;
//! - [`upstream`]: targets, balancing, health, circuit breaking, retries, pooled clients;
//! - [`tls`]: rustls configurations for listeners and upstreams;
//! - [`snapshot`]: a configuration compiled into everything a request needs;
//! - [`proxy`]: the request path (routing, responders, forwarding, header hygiene);
//! - [`server`]: listeners, protocol settings, limits and draining;
//! - [`telemetry`]: operational logs and the access log;
//! - [`state`]: the embedded store, Redis, and the policies' kv and rate limits;
//! - [`control`]: composing the file with admin-managed resources; validated atomic swaps;
//! - [`admin`]: the admin API (axum) and its authentication;
//! - [`gateway`]: the process lifecycle (start, SIGHUP reload, SIGTERM drain);
//! - [`private`]: owner-only directories and files for the gateway's own data.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod control;
pub mod gateway;
pub mod policy;
pub mod private;
pub mod proxy;
pub mod routing;
pub mod scaffold;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
