//! The configuration of `rate-limit` and its validation.

use serde::Deserialize;
use sluice_sdk::config::parse_duration_ms;
use sluice_sdk::rate_limit::Limit;

/// `rate-limit`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Requests allowed per window. Required.
    pub requests: u32,
    /// The window as a duration (`1s`, `1m`, `1h`, …). Set this or `window_ms`.
    #[serde(default)]
    pub window: Option<String>,
    /// The window in milliseconds. Set this or `window`.
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// The largest burst allowed. By default 0, meaning `requests`.
    #[serde(default)]
    pub burst: u32,
    /// What requests are counted by: `consumer`, `client_ip`, `route` or
    /// `header:<name>`. By default `consumer`.
    #[serde(default = "default_key")]
    pub key: String,
    /// When the key's source is absent (no consumer, no such header): `client_ip`
    /// counts by client IP instead, `allow` lets the request through uncounted.
    /// By default `client_ip`.
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// When the host's limiter reports an error (its backend is unavailable and the
    /// operator's `on_backend_error` is `closed`): `deny` answers 503, `allow` lets the
    /// request through. By default `deny`, so the operator's `closed` holds.
    #[serde(default)]
    pub on_error: OnError,
    /// Add `RateLimit-*` headers to allowed responses. By default true.
    #[serde(default = "default_true")]
    pub headers: bool,
}

fn default_key() -> String {
    "consumer".to_owned()
}

fn default_true() -> bool {
    true
}

/// What to do when the key's source is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// Count the request by client IP.
    #[default]
    ClientIp,
    /// Let the request through without counting it.
    Allow,
}

/// What to do when the host's limiter fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the request through (fail open).
    Allow,
    /// Answer 503 (fail closed).
    #[default]
    Deny,
}

/// What requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The context attribute `consumer`.
    Consumer,
    /// The client's IP address.
    ClientIp,
    /// The route: one counter for every request through this instance.
    Route,
    /// The first value of a request header (lower-case name).
    Header(String),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The limit passed to the host.
    pub limit: Limit,
    /// The key source.
    pub key: KeySource,
    /// See [`Config::on_missing_key`].
    pub on_missing_key: OnMissingKey,
    /// See [`Config::on_error`].
    pub on_error: OnError,
    /// See [`Config::headers`].
    pub headers: bool,
}

impl Config {
    /// Checks the configuration.
    ///
    /// # Errors
    /// A message naming the first problem found.
    pub fn validate(&self) -> Result<Settings, String> {
        if self.requests == 0 {
            return Err("`requests` must be at least 1".into());
        }
        let window_ms = match (&self.window, self.window_ms) {
            (Some(_), Some(_)) => return Err("set `window` or `window_ms`, not both".into()),
            (None, None) => return Err("missing `window` (e.g. \"1m\") or `window_ms`".into()),
            (Some(w), None) => parse_duration_ms(w).map_err(|e| format!("`window`: {e}"))?,
            (None, Some(ms)) => ms,
        };
        if window_ms == 0 {
            return Err("the window must be longer than 0 ms".into());
        }
        // The gateway's own bounds on a limit: checked here, at `init`, rather than by every
        // request's host call.
        const MAX_WINDOW_MS: u64 = 366 * 24 * 3600 * 1000;
        if window_ms > MAX_WINDOW_MS {
            return Err("the window must be at most 366 days".into());
        }
        if u64::from(self.requests) > window_ms.saturating_mul(1_000) {
            return Err("`requests` must be at most one per microsecond of the window".into());
        }
        let key = match self.key.as_str() {
            "consumer" => KeySource::Consumer,
            "client_ip" => KeySource::ClientIp,
            "route" => KeySource::Route,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.is_empty() && name.bytes().all(is_token_byte) => {
                    KeySource::Header(name.to_ascii_lowercase())
                }
                _ => {
                    return Err(format!(
                        "`key` {other:?}: expected consumer, client_ip, route or header:<name>"
                    ));
                }
            },
        };
        Ok(Settings {
            limit: Limit {
                requests: self.requests,
                window_ms,
                burst: self.burst,
            },
            key,
            on_missing_key: self.on_missing_key,
            on_error: self.on_error,
            headers: self.headers,
        })
    }
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Settings, String> {
        let c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate()
    }

    #[test]
    fn defaults() {
        let s = parse(json!({ "requests": 10, "window": "1m" })).unwrap();
        assert_eq!(
            s.limit,
            Limit {
                requests: 10,
                window_ms: 60_000,
                burst: 0
            }
        );
        assert_eq!(s.key, KeySource::Consumer);
        assert_eq!(s.on_missing_key, OnMissingKey::ClientIp);
        assert_eq!(s.on_error, OnError::Deny);
        assert!(s.headers);
    }

    #[test]
    fn keys_and_window_ms() {
        let s =
            parse(json!({ "requests": 1, "window_ms": 250, "key": "header:X-Tenant" })).unwrap();
        assert_eq!(s.key, KeySource::Header("x-tenant".into()));
        assert_eq!(s.limit.window_ms, 250);
        for (k, expected) in [
            ("client_ip", KeySource::ClientIp),
            ("route", KeySource::Route),
        ] {
            let s = parse(json!({ "requests": 1, "window": "1s", "key": k })).unwrap();
            assert_eq!(s.key, expected);
        }
    }

    #[test]
    fn rejections() {
        let cases = [
            (json!({ "requests": 0, "window": "1s" }), "at least 1"),
            (
                json!({ "requests": 1, "window_ms": 31_622_400_001u64 }),
                "366 days",
            ),
            (
                json!({ "requests": 4_000_000_000u32, "window_ms": 1 }),
                "one per microsecond",
            ),
            (
                json!({ "requests": 1001, "window_ms": 1 }),
                "one per microsecond",
            ),
            (json!({ "requests": 1 }), "missing `window`"),
            (
                json!({ "requests": 1, "window": "1s", "window_ms": 5 }),
                "not both",
            ),
            (
                json!({ "requests": 1, "window": "soon" }),
                "invalid duration",
            ),
            (json!({ "requests": 1, "window_ms": 0 }), "longer than 0"),
            (
                json!({ "requests": 1, "window": "1s", "key": "ip" }),
                "expected consumer",
            ),
            (
                json!({ "requests": 1, "window": "1s", "key": "header:" }),
                "expected consumer",
            ),
            (
                json!({ "requests": 1, "window": "1s", "on_error": "panic" }),
                "unknown variant",
            ),
            (
                json!({ "requests": 1, "window": "1s", "limit": 3 }),
                "unknown field",
            ),
            (json!({ "window": "1s" }), "missing field `requests`"),
        ];
        for (v, expected) in cases {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.contains(expected), "{v}: {err}");
        }
    }
}
