//! Ranges of the numbers that size buffers, tables, semaphores and threads. A value outside
//! its range is reported at its key instead of becoming a panic (a semaphore of more than
//! `usize::MAX >> 3` permits), a silent truncation (an HTTP/2 header-list limit past
//! `u32::MAX`), a useless listener (no HTTP/2 stream allowed) or an allocation of gigabytes
//! per request (hyper sizes its header array from `max_headers`).

use crate::config::{Config, Issue, KeyPath, MAX_INSTANCES_LIMIT};

/// The most runtime worker threads.
pub const MAX_WORKERS: u64 = 1024;
/// The longest kv key a configuration may allow.
pub const MAX_KV_KEY_BYTES: usize = 64 * 1024;
/// The largest kv value a configuration may allow (the policy runtime sizes the data a
/// host call may copy out of a guest from it).
pub const MAX_KV_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// The most connections, and circuit-breaker slots and waiters (checked where upstream
/// groups are built).
pub const MAX_CONNECTIONS: u64 = 1_000_000;

/// The numeric settings outside their ranges, each named by its key. Settings of the
/// process (`gateway.workers`) are among them, so that `sluice run` can check before it
/// starts its runtime.
pub fn check(config: &Config) -> Vec<Issue> {
    let l = &config.limits;
    let at = |table: &str, key: &str| KeyPath::default().key(table).key(key);
    let rules = [
        (
            at("gateway", "workers"),
            config.gateway.workers as u64,
            0,
            MAX_WORKERS,
        ),
        (
            at("limits", "max_connections"),
            l.max_connections as u64,
            1,
            MAX_CONNECTIONS,
        ),
        (
            at("limits", "max_header_bytes"),
            l.max_header_bytes as u64,
            8192,
            1 << 20,
        ),
        (at("limits", "max_headers"), l.max_headers as u64, 1, 10_000),
        // A semaphore holds at most `usize::MAX >> 3` permits.
        (
            at("limits", "max_buffered_body_bytes"),
            l.max_buffered_body_bytes,
            1,
            1 << 60,
        ),
        (
            at("limits", "h2_max_concurrent_streams"),
            u64::from(l.h2_max_concurrent_streams),
            1,
            10_000,
        ),
        (
            at("policy", "max_instances"),
            u64::from(config.policy.max_instances),
            1,
            u64::from(MAX_INSTANCES_LIMIT),
        ),
        (
            at("policy", "kv_max_key_bytes"),
            config.policy.kv_max_key_bytes as u64,
            1,
            MAX_KV_KEY_BYTES as u64,
        ),
        (
            at("policy", "kv_max_value_bytes"),
            config.policy.kv_max_value_bytes as u64,
            1,
            MAX_KV_VALUE_BYTES as u64,
        ),
        (
            at("policy", "kv_max_keys"),
            config.policy.kv_max_keys as u64,
            1,
            10_000_000,
        ),
    ];
    let mut issues: Vec<Issue> = rules
        .into_iter()
        .filter(|(_, value, min, max)| !(min..=max).contains(&value))
        .map(|(key, _, min, max)| Issue::new(key, format!("must be {min} to {max}")))
        .collect();
    // Below it, every body of the default size read whole would get 503.
    if l.max_buffered_body_bytes < l.max_body_bytes {
        issues.push(Issue::new(
            at("limits", "max_buffered_body_bytes"),
            format!(
                "must be at least limits.max_body_bytes ({})",
                l.max_body_bytes
            ),
        ));
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issues of a configuration with `toml` added, as `key: message`.
    fn issues(toml: &str) -> Vec<String> {
        let text = format!("{toml}\n[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n");
        let loaded = crate::config::load_str(&text, "t.toml".into(), ".".into()).unwrap();
        check(&loaded.config)
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn the_shipped_and_default_settings_are_in_range() {
        assert!(issues("").is_empty());
        let shipped = crate::config::load_str(
            crate::config::EMBEDDED_DEFAULT,
            "gateway.toml".into(),
            ".".into(),
        )
        .unwrap();
        assert!(check(&shipped.config).is_empty());
    }

    #[test]
    fn each_sizing_setting_out_of_range_is_named_with_its_range() {
        for (toml, want) in [
            (
                "[gateway]\nworkers = 100000",
                "gateway.workers: must be 0 to 1024",
            ),
            (
                "[limits]\nmax_connections = 0",
                "limits.max_connections: must be 1 to 1000000",
            ),
            (
                "[limits]\nmax_header_bytes = 4294967296",
                "limits.max_header_bytes: must be 8192 to 1048576",
            ),
            (
                "[limits]\nmax_header_bytes = 100",
                "limits.max_header_bytes: must be 8192 to 1048576",
            ),
            (
                "[limits]\nmax_headers = 100000000",
                "limits.max_headers: must be 1 to 10000",
            ),
            (
                "[limits]\nmax_headers = 0",
                "limits.max_headers: must be 1 to 10000",
            ),
            (
                "[limits]\nmax_buffered_body_bytes = 0\nmax_body_bytes = 0",
                "limits.max_buffered_body_bytes: must be 1 to 1152921504606846976",
            ),
            (
                "[limits]\nmax_buffered_body_bytes = 1000\nmax_body_bytes = 1001",
                "limits.max_buffered_body_bytes: must be at least limits.max_body_bytes (1001)",
            ),
            (
                "[limits]\nh2_max_concurrent_streams = 0",
                "limits.h2_max_concurrent_streams: must be 1 to 10000",
            ),
            (
                "[policy]\nmax_instances = 0",
                "policy.max_instances: must be 1 to 100000",
            ),
            (
                "[policy]\nmax_instances = 100001",
                "policy.max_instances: must be 1 to 100000",
            ),
            (
                "[policy]\nkv_max_value_bytes = 1000000000",
                "policy.kv_max_value_bytes: must be 1 to 16777216",
            ),
        ] {
            assert_eq!(issues(toml), [want], "{toml}");
        }
        assert!(issues("[policy]\nmax_instances = 8\n[gateway]\nworkers = 1024").is_empty());
    }
}
