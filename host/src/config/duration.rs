//! Human-readable durations in configuration (`"250ms"`, `"30s"`, `"5m"`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration a configuration may give: 366 days (a deadline this far ahead
/// still fits an `Instant`).
pub(super) const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration written as a human-readable string in `gateway.toml`: greater than zero (every
/// duration is a timeout, an interval or a period, and zero would close every connection or
/// spin a timer) and at most [`MAX`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// A whole number of seconds.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// The wrapped [`Duration`].
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let invalid = |why: &dyn fmt::Display| {
            serde::de::Error::custom(format!("invalid duration {s:?}: {why}"))
        };
        match humantime::parse_duration(&s) {
            Err(e) => Err(invalid(&e)),
            Ok(d) if d.is_zero() => Err(invalid(&"must be greater than zero")),
            Ok(d) if d > MAX => Err(invalid(&"longer than 366 days")),
            Ok(d) => Ok(Dur(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct W {
        d: Dur,
    }

    #[test]
    fn parses_human_durations() {
        let w: W = toml::from_str("d = \"250ms\"").unwrap();
        assert_eq!(w.d.get(), Duration::from_millis(250));
        let w: W = toml::from_str("d = \"2m\"").unwrap();
        assert_eq!(w.d.get(), Duration::from_secs(120));
    }

    #[test]
    fn rejects_zero_and_durations_past_366_days() {
        for (src, why) in [
            ("0s", "greater than zero"),
            ("0ms", "greater than zero"),
            ("367days", "366 days"),
            ("600000000000s", "366 days"),
        ] {
            let err = toml::from_str::<W>(&format!("d = \"{src}\""))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(why), "{src}: {err}");
        }
        let w: W = toml::from_str("d = \"366days\"").unwrap();
        assert_eq!(w.d.get(), MAX);
    }

    #[test]
    fn rejects_a_duration_without_unit() {
        let err = toml::from_str::<W>("d = \"30\"").err().unwrap().to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }
}
