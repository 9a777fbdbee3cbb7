//! State behind the policies' `kv` and `rate-limit` capabilities.
//!
//! This module defines what the rest of the host sees; the backends live in submodules.
//! Today: an in-process memory store and an in-process rate limiter. The durable (redb) and
//! shared (Redis) backends plug in behind the same types.

pub mod kv;
pub mod ratelimit;

pub use kv::{KvError, KvLimits, MemoryKv};
pub use ratelimit::{Limit, LocalLimiter, Verdict};
