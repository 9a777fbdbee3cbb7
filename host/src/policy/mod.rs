//! The policy plane: WebAssembly components (typed by `wit/policy.wit`) run by wasmtime.
//!
//! - [`engine`]: the one `Engine` (pooling allocator, epochs) and the compile cache;
//! - [`capabilities`]: grantable host interfaces and what they reach;
//! - [`cpu`]: the CPU deadline of a call (wall time first, the thread's CPU clock after);
//! - [`host`]: store data and the host side of every interface;
//! - [`link`]: import checks against grants, the linker of the granted capabilities;
//! - [`instance`]: a configured policy, its `InstancePre` and instance pool;
//! - [`wasi`]: WASI 0.2 for components that import it, with a context that grants nothing;
//! - [`pipeline`]: a route's ordered policies and how their decisions apply.

mod bindings;
pub mod capabilities;
pub mod cpu;
pub mod engine;
pub mod env;
mod error;
pub mod host;
pub mod instance;
pub mod link;
pub mod wasi;

/// The WIT types (headers, edits, decisions) as generated for the host.
pub use bindings::sluice::policy::types as wit;
pub use capabilities::{Capabilities, Capability, Grants, Outbound};
pub use engine::PolicyRuntime;
pub use env::PolicyEnv;
pub use error::PolicyError;
pub use host::{Attributes, CallData, RequestView, ResponseView};
pub use instance::{CallLimits, InstanceMode, PolicyInstance, RequestDecision, ResponseDecision};
pub use link::check_component;
