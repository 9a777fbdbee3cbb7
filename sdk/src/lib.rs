//! `sluice-sdk`: write Sluice gateway policies in Rust.
//!
//! A policy is a type implementing [`Policy`], exported with [`export_policy!`] and built
//! to a WebAssembly component for the `sluice:policy@0.1.0` world. The gateway calls
//! `init` once per configured instance with the route's configuration, then
//! [`Policy::on_request`] and [`Policy::on_response`] for each request. A policy with no
//! response phase is exported with [`export_request_policy!`] (the `request-policy` world),
//! and the gateway then never calls it on the way back. A policy that must
//! see request bodies also implements [`BodyPolicy`] and is exported with
//! [`export_body_policy!`] (the `body-policy` world): the gateway then buffers the body
//! and calls [`BodyPolicy::on_request_body`].
//!
//! - Request, response and context: [`Request`], [`Response`], [`Context`].
//! - Decisions: [`RequestDecision`] (`Continue | Edit | Respond`), [`ResponseDecision`],
//!   with the builders [`Edits`], [`ResponseEdits`] and [`LocalResponse`].
//! - Host capabilities, each needing a grant from the operator: [`log`], [`clock`],
//!   [`kv`], [`rate_limit`], [`analytics`], [`http`]. A component imports only the
//!   capabilities its code calls.
//! - Natively (not `wasm32`), the capabilities go to an in-memory fake host, and
//!   [`testing`] runs policies in ordinary `cargo test` unit tests.

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
mod alloc;
pub mod analytics;
pub mod clock;
pub mod config;
pub mod context;
pub mod decision;
mod export;
mod host;
pub mod http;
pub mod kv;
pub mod log;
pub mod policy;
pub mod query;
pub mod rate_limit;
pub mod request;
#[cfg(any(test, all(target_arch = "wasm32", feature = "allocator")))]
mod size_classes;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::Context;
pub use decision::{
    Edits, Header, LocalResponse, RequestDecision, ResponseDecision, ResponseEdits,
};
#[doc(hidden)]
pub use export::__private;
pub use policy::{BodyPolicy, Policy};
pub use request::{Request, Response};

/// Lets the generated bindings name this crate by its external path.
#[cfg(target_arch = "wasm32")]
extern crate self as sluice_sdk;
