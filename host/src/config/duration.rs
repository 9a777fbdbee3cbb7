//! Human-readable durations in configuration (`"250ms"`, `"30s"`, `"5m"`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a human-readable string in `gateway.toml`.
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
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
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
    fn rejects_a_duration_without_unit() {
        let err = toml::from_str::<W>("d = \"30\"").err().unwrap().to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }
}
