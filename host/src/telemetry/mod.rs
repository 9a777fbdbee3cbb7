//! Telemetry: operational logs through `tracing`, and the per-request access log.

pub mod access_log;
pub mod analytics;

pub use access_log::{AccessLog, Record};
pub use analytics::AnalyticsSink;

/// Installs the global `tracing` subscriber (JSON lines on stderr). `RUST_LOG` overrides
/// `level`. Calling it twice is harmless.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
