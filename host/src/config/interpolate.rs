//! `${VAR}` and `${VAR:-default}` substitution in the raw configuration text.
//!
//! Substitution happens before TOML parsing and never spans lines, so line numbers in later
//! errors still point at the file as written. `$${` produces a literal `${`.

/// A reference to an unset variable that has no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVar {
    /// Variable name.
    pub name: String,
    /// 1-based line of the reference.
    pub line: usize,
}

/// Substitutes variables using `lookup`; every unset variable without a default is reported.
pub fn interpolate(
    src: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<MissingVar>> {
    let mut out = String::with_capacity(src.len());
    let mut missing = Vec::new();
    for (idx, line) in src.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(stripped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix("${")
                && let Some(end) = body.find('}')
            {
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => missing.push(MissingVar {
                        name: name.to_string(),
                        line: idx + 1,
                    }),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "9000".to_string())
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let out = interpolate("a = \"${PORT}\"\nb = \"${HOST:-127.0.0.1}\"\n", env).unwrap();
        assert_eq!(out, "a = \"9000\"\nb = \"127.0.0.1\"\n");
    }

    #[test]
    fn reports_unset_variable_with_its_line() {
        let err = interpolate("a = 1\nb = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(
            err,
            vec![MissingVar {
                name: "NOPE".into(),
                line: 2
            }]
        );
    }

    #[test]
    fn keeps_escaped_and_lone_dollars() {
        let out = interpolate("a = \"$${X} costs $5\"", env).unwrap();
        assert_eq!(out, "a = \"${X} costs $5\"");
    }
}
