//! Durations in configuration: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`, or a bare
//! number of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `"<digits><unit>"` with unit `ms`, `s`, `m`, `h` or `d`, as the SDK (and so
/// every Sluice policy) does.
///
/// # Errors
/// A message naming the expected form.
pub fn parse(text: &str) -> Result<Duration, String> {
    sluice_sdk::config::parse_duration_ms(text).map(Duration::from_millis)
}

/// Serde `deserialize_with` for a duration given as a string or a number of seconds.
///
/// # Errors
/// When the value is neither a valid duration string nor a non-negative integer.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected a duration such as \"30s\" or a number of seconds")
    })? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_junk() {
        for bad in ["", "s", "30", "-1s", "1.5s", "10x", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
