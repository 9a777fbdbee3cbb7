//! The `[admin]` part of `gateway.toml`: the admin API's listener and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Dur, ListenerTls};

/// The admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Whether the admin API runs. Default: true.
    pub enabled: bool,
    /// Address to bind. Default: "127.0.0.1:9901".
    pub bind: SocketAddr,
    /// TLS (and optional mTLS with `client_ca`) for the admin listener. Default: none.
    pub tls: Option<ListenerTls>,
    /// Allow a non-loopback `bind` without `tls`. Default: false (such a config is refused).
    pub allow_plaintext_non_loopback: bool,
    /// Where a generated bootstrap token is written (owner-only) when no token exists and
    /// `SLUICE_ADMIN_TOKEN` is unset. Default: "data/admin-token".
    pub token_file: PathBuf,
    /// Largest plugin upload in bytes. Default: 52428800 (50 MB).
    pub max_plugin_bytes: usize,
    /// Longest a plugin upload may take to compile. Default: 60s.
    pub compile_timeout: Dur,
    /// Base64 Ed25519 public keys; when any is listed, an upload must carry a signature
    /// by one of them over its SHA-256 digest (header `x-sluice-signature`). Default: none.
    pub trusted_keys: Vec<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9901)),
            tls: None,
            allow_plaintext_non_loopback: false,
            token_file: PathBuf::from("data/admin-token"),
            max_plugin_bytes: 50 * 1024 * 1024,
            compile_timeout: Dur::secs(60),
            trusted_keys: Vec::new(),
        }
    }
}
