//! Capability `log`: lines in the gateway's log, tagged with the policy.
//!
//! Requires the grant `log`.
//!
//! ```
//! sluice_sdk::log::info!("consumer {} authenticated", "alice");
//! sluice_sdk::log::log(sluice_sdk::log::Level::Warn, "kv unavailable");
//! ```

use crate::host::{Active, Host};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the policy handled.
    Warn,
    /// A failure.
    Error,
}

/// Writes one line to the gateway's log.
pub fn log(level: Level, message: &str) {
    Active::log(level, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log_trace {
    ($($arg:tt)*) => { $crate::__sluice_log!(Trace, $($arg)*) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log_debug {
    ($($arg:tt)*) => { $crate::__sluice_log!(Debug, $($arg)*) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log_info {
    ($($arg:tt)*) => { $crate::__sluice_log!(Info, $($arg)*) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log_warn {
    ($($arg:tt)*) => { $crate::__sluice_log!(Warn, $($arg)*) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log_error {
    ($($arg:tt)*) => { $crate::__sluice_log!(Error, $($arg)*) };
}

/// Logs a `format!`-style line at level trace.
pub use crate::__sluice_log_trace as trace;

/// Logs a `format!`-style line at level debug.
pub use crate::__sluice_log_debug as debug;

/// Logs a `format!`-style line at level info.
pub use crate::__sluice_log_info as info;

/// Logs a `format!`-style line at level warn.
pub use crate::__sluice_log_warn as warn;

/// Logs a `format!`-style line at level error.
pub use crate::__sluice_log_error as error;
