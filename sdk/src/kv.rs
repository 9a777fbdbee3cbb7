//! Capability `kv`: a key-value store private to the plugin.
//!
//! Requires the grant `kv`. The host namespaces keys per plugin, so a plugin never sees
//! another's keys. Natively, the store is the in-memory map of
//! [`crate::testing::TestHost`].

use std::fmt;

use crate::host::{Active, Host};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The key is longer than the host allows.
    KeyTooLarge,
    /// The value is larger than the host allows.
    ValueTooLarge,
    /// The plugin's namespace holds the maximum number of keys.
    QuotaExceeded,
    /// The counter's value is not a decimal integer.
    NotANumber,
    /// The backend failed or timed out; the text says why.
    Unavailable(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyTooLarge => f.write_str("kv key too large"),
            Self::ValueTooLarge => f.write_str("kv value too large"),
            Self::QuotaExceeded => f.write_str("kv quota exceeded"),
            Self::NotANumber => f.write_str("kv value is not a number"),
            Self::Unavailable(why) => write!(f, "kv unavailable: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

/// The value stored under `key`, if any (expired values are absent).
///
/// # Errors
/// Any [`KvError`] the host reports.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    Active::kv_get(key)
}

/// The value stored under `key` as UTF-8 (lossy), if any.
///
/// # Errors
/// Any [`KvError`] the host reports.
pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
    Ok(get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Stores `value` under `key`, expiring after `ttl_ms` milliseconds when given.
///
/// # Errors
/// Any [`KvError`] the host reports.
pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
    Active::kv_set(key, value, ttl_ms)
}

/// Removes `key`; true when it existed.
///
/// # Errors
/// Any [`KvError`] the host reports.
pub fn delete(key: &str) -> Result<bool, KvError> {
    Active::kv_delete(key)
}

/// Adds `delta` to the decimal counter at `key` (absent counts as 0) and returns the new
/// value; `ttl_ms` applies when the key is created.
///
/// # Errors
/// [`KvError::NotANumber`] when the stored value is not a decimal integer, or any other
/// [`KvError`] the host reports.
pub fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
    Active::kv_increment(key, delta, ttl_ms)
}

/// Stores `value` only if the current value equals `expected` (`None`: the key must be
/// absent); true when stored.
///
/// # Errors
/// Any [`KvError`] the host reports.
pub fn compare_and_set(
    key: &str,
    expected: Option<&[u8]>,
    value: &[u8],
    ttl_ms: Option<u64>,
) -> Result<bool, KvError> {
    Active::kv_compare_and_set(key, expected, value, ttl_ms)
}
