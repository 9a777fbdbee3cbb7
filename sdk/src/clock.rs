//! Capability `clock`: wall-clock and monotonic time.
//!
//! Requires the grant `clock`. Natively, the time is the fake clock of
//! [`crate::testing::TestHost`], which only moves when a test moves it.

use crate::host::{Active, Host};

/// Milliseconds since the Unix epoch (wall clock).
pub fn now_millis() -> u64 {
    Active::now_millis()
}

/// Nanoseconds from an arbitrary fixed point; only differences are meaningful. Use this
/// to measure durations.
pub fn monotonic_nanos() -> u64 {
    Active::monotonic_nanos()
}
