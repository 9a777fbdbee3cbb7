//! `${VAR}` and `${VAR:-default}` substitution in the raw configuration text.
//!
//! Substitution happens before TOML parsing and never spans lines, so line numbers in later
//! errors still point at the file as written. `$${` produces a literal `${`.
//!
//! A value is placed according to where the reference stands, so that it can never change
//! the structure of the file: inside a basic string (`"…"`, `"""…"""`) it is escaped
//! (quotes, backslashes, control characters); inside a literal string (`'…'`) it may not
//! contain a `'` (nor a line break in a one-line string), which such a string cannot
//! escape; outside strings (`port = ${PORT}`) it must be a bare value: letters, digits and
//! `.`, `_`, `-`, `+`, `:`. References in comments are left alone.

/// A reference that cannot be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarError {
    /// Variable name.
    pub name: String,
    /// 1-based line of the reference.
    pub line: usize,
    /// Why, as the end of a sentence starting with the variable's name.
    pub reason: String,
}

/// Where the scanner stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Bare,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Substitutes variables using `lookup`; every reference that cannot be substituted (an
/// unset variable without a default, a value that does not fit where it stands) is reported.
pub fn interpolate(
    src: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<VarError>> {
    let mut out = String::with_capacity(src.len());
    let mut errors = Vec::new();
    let mut at = At::Bare;
    for (idx, line) in src.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(c) = rest.chars().next() {
            // A comment (outside strings) runs to the end of the line, copied as it is.
            if at == At::Bare && c == '#' {
                out.push_str(rest);
                break;
            }
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                continue;
            }
            if let Some(body) = rest.strip_prefix("${")
                && let Some(end) = body.find('}')
            {
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (expr, None),
                };
                let value = lookup(name).filter(|v| !v.is_empty()).or(default);
                let placed = match value {
                    Some(v) => place(&v, at),
                    None => Err(format!(
                        "is not set and has no default (use ${{{name}:-default}})"
                    )),
                };
                match placed {
                    Ok(v) => out.push_str(&v),
                    Err(reason) => errors.push(VarError {
                        name: name.to_string(),
                        line: idx + 1,
                        reason,
                    }),
                }
                rest = &body[end + 1..];
                continue;
            }
            let (token, next) = step(rest, at);
            out.push_str(&rest[..token]);
            rest = &rest[token..];
            at = next;
        }
        // A one-line string cannot run past its line (TOML reports that itself).
        if matches!(at, At::Basic | At::Literal) {
            at = At::Bare;
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The length of the token at the start of `rest` and where the scanner stands after it.
fn step(rest: &str, at: At) -> (usize, At) {
    let starts = |p: &str| rest.starts_with(p);
    match at {
        At::Bare if starts("\"\"\"") => (3, At::MultiBasic),
        At::Bare if starts("'''") => (3, At::MultiLiteral),
        At::Bare if starts("\"") => (1, At::Basic),
        At::Bare if starts("'") => (1, At::Literal),
        // An escape: the escaped character never ends the string.
        At::Basic | At::MultiBasic if starts("\\") => {
            let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
            (1 + escaped, at)
        }
        At::Basic if starts("\"") => (1, At::Bare),
        At::MultiBasic if starts("\"\"\"") => (3, At::Bare),
        At::Literal if starts("'") => (1, At::Bare),
        At::MultiLiteral if starts("'''") => (3, At::Bare),
        _ => (rest.chars().next().map_or(1, char::len_utf8), at),
    }
}

/// `value` as it may stand at `at`, or why it cannot.
fn place(value: &str, at: At) -> Result<String, String> {
    match at {
        At::Basic | At::MultiBasic => {
            let mut escaped = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '"' => escaped.push_str("\\\""),
                    '\\' => escaped.push_str("\\\\"),
                    c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", c as u32)),
                    c => escaped.push(c),
                }
            }
            Ok(escaped)
        }
        At::Literal | At::MultiLiteral if value.contains('\'') => {
            Err("contains ', which a literal ('…') string cannot hold; use a \"…\" string".into())
        }
        At::Literal if value.contains(['\n', '\r']) => {
            Err("contains a line break, which a one-line string cannot hold".into())
        }
        At::Literal | At::MultiLiteral => Ok(value.to_string()),
        At::Bare => {
            let bare = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+:".contains(c));
            if bare {
                Ok(value.to_string())
            } else {
                Err(
                    "is not a bare value (letters, digits, '.', '_', '-', '+', ':'); \
                     put the reference in a \"…\" string"
                        .into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9000".into()),
            "SECRET" => Some("p\"a\\ss\tw'rd".into()),
            "EVIL" => Some("x\"\n[[routes]]\nname = \"injected".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let out = interpolate("a = \"${PORT}\"\nb = \"${HOST:-127.0.0.1}\"\n", env).unwrap();
        assert_eq!(out, "a = \"9000\"\nb = \"127.0.0.1\"\n");
        assert_eq!(
            interpolate("port = ${PORT}\n", env).unwrap(),
            "port = 9000\n"
        );
    }

    #[test]
    fn reports_unset_variable_with_its_line() {
        let err = interpolate("a = 1\nb = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].name.as_str(), err[0].line), ("NOPE", 2));
        assert!(err[0].reason.contains("is not set"), "{}", err[0].reason);
    }

    #[test]
    fn keeps_escaped_and_lone_dollars() {
        let out = interpolate("a = \"$${X} costs $5\"", env).unwrap();
        assert_eq!(out, "a = \"${X} costs $5\"");
    }

    #[test]
    fn values_in_basic_strings_are_escaped_and_read_back_exactly() {
        #[derive(serde::Deserialize)]
        struct T {
            a: String,
            b: String,
        }
        let src = "a = \"${SECRET}\"\nb = \"\"\"x ${EVIL}\"\"\"\n";
        let t: T = toml::from_str(&interpolate(src, env).unwrap()).unwrap();
        assert_eq!(t.a, env("SECRET").unwrap());
        assert_eq!(t.b, format!("x {}", env("EVIL").unwrap()));
    }

    #[test]
    fn values_that_would_change_the_structure_are_refused() {
        for (src, why) in [
            ("a = '${SECRET}'\n", "literal"),
            ("a = ${EVIL}\n", "bare value"),
            ("a = ${SECRET}\n", "bare value"),
        ] {
            let err = interpolate(src, env).unwrap_err();
            assert!(err[0].reason.contains(why), "{src}: {err:?}");
        }
    }

    #[test]
    fn references_in_comments_and_after_escaped_quotes_are_handled() {
        // A commented-out reference to an unset variable is not an error.
        let out = interpolate("# port = ${NOPE}\na = 1 # ${NOPE}\n", env).unwrap();
        assert_eq!(out, "# port = ${NOPE}\na = 1 # ${NOPE}\n");
        // `\"` does not end the string: the reference is still inside it.
        let out = interpolate("a = \"q\\\" ${SECRET}\"\n", env).unwrap();
        assert!(out.starts_with("a = \"q\\\" p\\\"a"), "{out}");
        // A `#` inside a string is not a comment.
        assert_eq!(
            interpolate("a = \"#${PORT}\"\n", env).unwrap(),
            "a = \"#9000\"\n"
        );
    }
}
