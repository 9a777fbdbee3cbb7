//! Helpers for policy configurations.

/// Parses a duration such as `500ms`, `30s`, `1m`, `1h` or `1d` (a whole number and a
/// unit, optionally separated by spaces) into milliseconds.
///
/// ```
/// use sluice_sdk::config::parse_duration_ms;
/// assert_eq!(parse_duration_ms("1m"), Ok(60_000));
/// assert_eq!(parse_duration_ms("250 ms"), Ok(250));
/// assert!(parse_duration_ms("10").is_err());
/// ```
///
/// # Errors
/// A message naming the accepted form, for anything else (including overflow).
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 1m, 1h or 1d");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        for bad in ["", "m", "1.5s", "1 min", "-1s", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
