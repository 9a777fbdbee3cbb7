//! The configuration of `request-transformer` and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::decision::{GATEWAY_HEADERS, MAX_HEADER_EDITS, MAX_HEADER_VALUE_BYTES};

/// `request-transformer`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Changes to request headers. By default none.
    pub headers: Changes,
    /// Changes to query parameters. By default none.
    pub query: Changes,
    /// A new path for the request (the query is kept). By default unchanged.
    pub path: Option<String>,
}

/// One set of changes, applied in the order of the fields: `remove`, `rename`, `set`,
/// `add`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Changes {
    /// Names removed (every value). By default none.
    pub remove: Vec<String>,
    /// `old = "new"`: every value of `old` moves to `new`, replacing `new`'s values;
    /// nothing happens when `old` is absent. By default none.
    pub rename: BTreeMap<String, String>,
    /// `name = "value"`: replaces every value of `name`, or adds it. By default none.
    pub set: BTreeMap<String, String>,
    /// `name = "value"`: adds `name` only when the request (after the steps above) has
    /// none. By default none.
    pub add: BTreeMap<String, String>,
}

impl Changes {
    /// True when there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }
}

impl Config {
    /// Checks the configuration; header names are lower-cased.
    ///
    /// # Errors
    /// A message naming the first problem found.
    pub fn validate(mut self) -> Result<Self, String> {
        if self.headers.is_empty() && self.query.is_empty() && self.path.is_none() {
            return Err("nothing to do: set `headers`, `query` or `path`".into());
        }
        if let Some(p) = &self.path
            && let Err(why) = check_path(p)
        {
            return Err(format!("`path`: {p:?} {why}"));
        }
        let h = &mut self.headers;
        let names = h
            .remove
            .iter()
            .chain(h.rename.keys())
            .chain(h.rename.values())
            .chain(h.set.keys())
            .chain(h.add.keys());
        for name in names {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(format!("`headers`: {name:?} is not a header name"));
            }
        }
        // What the gateway takes in one decision, refused here rather than on every request.
        let written = h.rename.values().chain(h.set.keys()).chain(h.add.keys());
        for name in written.clone() {
            if GATEWAY_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "`headers`: {name:?} is the gateway's to set (it frames the message or the connection)"
                ));
            }
        }
        if written.count() > MAX_HEADER_EDITS {
            return Err(format!(
                "`headers`: more than {MAX_HEADER_EDITS} headers renamed, set and added together"
            ));
        }
        for (name, value) in h.set.iter().chain(h.add.iter()) {
            // What HTTP allows in a field value (RFC 9110 §5.5): no control character
            // other than tab.
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(format!(
                    "`headers`: the value of {name:?} contains a control character"
                ));
            }
            if value.len() > MAX_HEADER_VALUE_BYTES {
                return Err(format!(
                    "`headers`: the value of {name:?} is over {MAX_HEADER_VALUE_BYTES} bytes"
                ));
            }
        }
        h.remove.iter_mut().for_each(|n| n.make_ascii_lowercase());
        h.rename = lower_keys(&h.rename)
            .into_iter()
            .map(|(k, v)| (k, v.to_ascii_lowercase()))
            .collect();
        check_renames("headers", &h.rename)?;
        h.set = lower_keys(&h.set);
        h.add = lower_keys(&h.add);
        let q = &self.query;
        let names = q
            .remove
            .iter()
            .chain(q.rename.keys())
            .chain(q.rename.values())
            .chain(q.set.keys())
            .chain(q.add.keys());
        if names.clone().any(String::is_empty) {
            return Err("`query`: empty parameter name".into());
        }
        check_renames("query", &q.rename)?;
        Ok(self)
    }
}

/// Renames are applied side by side, not one after another: a name that is both renamed
/// and a rename's target (`a → b`, `b → c`), or two names renamed to one, would have no
/// clear meaning, and is refused.
fn check_renames(what: &str, rename: &BTreeMap<String, String>) -> Result<(), String> {
    let mut targets = std::collections::BTreeSet::new();
    for (from, to) in rename {
        if from != to && rename.contains_key(to) {
            return Err(format!(
                "`{what}.rename`: {to:?} is both renamed and a rename target (renames are not chained)"
            ));
        }
        if !targets.insert(to) {
            return Err(format!(
                "`{what}.rename`: more than one name is renamed to {to:?}"
            ));
        }
    }
    Ok(())
}

fn lower_keys(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Checks an absolute path (RFC 3986 `path-absolute`): it starts with one `/`; segments hold
/// unreserved characters, sub-delimiters, `:`, `@` and well-formed `%XX` escapes; no `.` or
/// `..` segment (an upstream would resolve it away, which is not what was configured).
fn check_path(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') || p.starts_with("//") {
        return Err("must start with a single `/`");
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err("has a `%` not followed by two hexadecimal digits");
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&c) => {}
            _ => return Err("holds a character a path may not (percent-encode it)"),
        }
        i += 1;
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("has a `.` or `..` segment");
    }
    Ok(())
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Config, String> {
        let c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate()
    }

    #[test]
    fn chained_or_converging_renames_are_refused() {
        let chained = parse(json!({ "headers": { "rename": { "a": "b", "b": "c" } } }));
        assert!(chained.unwrap_err().contains("not chained"));
        let converging = parse(json!({ "query": { "rename": { "a": "c", "b": "c" } } }));
        assert!(converging.unwrap_err().contains("more than one name"));
        // A swap is a chain too; renaming a name to itself changes nothing and is kept.
        assert!(parse(json!({ "headers": { "rename": { "a": "b", "b": "a" } } })).is_err());
        assert!(parse(json!({ "headers": { "rename": { "a": "a", "b": "c" } } })).is_ok());
    }

    #[test]
    fn defaults_are_empty() {
        let c = Config::default();
        assert!(c.headers.is_empty() && c.query.is_empty());
    }

    #[test]
    fn header_names_are_lower_cased() {
        let c =
            parse(json!({ "headers": { "rename": { "X-Old": "X-New" }, "set": { "X-A": "1" } } }))
                .unwrap();
        assert_eq!(c.headers.rename["x-old"], "x-new");
        assert_eq!(c.headers.set["x-a"], "1");
    }

    #[test]
    fn paths_with_escapes_and_sub_delimiters_are_accepted() {
        for p in [
            "/",
            "/v2/users",
            "/a%20b/c%2F",
            "/x;v=1/@me:1/~u/a-b_c.d",
            "/a/",
        ] {
            let c = parse(json!({ "path": p })).unwrap();
            assert_eq!(c.path.as_deref(), Some(p));
        }
    }

    #[test]
    fn rejections() {
        let cases = [
            (json!({}), "nothing to do"),
            (
                json!({ "headers": { "remove": ["bad name"] } }),
                "not a header name",
            ),
            (
                json!({ "headers": { "set": { "x": "a\r\nb: c" } } }),
                "control character",
            ),
            (
                json!({ "headers": { "add": { "x": "a\u{1}b" } } }),
                "control character",
            ),
            (
                json!({ "headers": { "set": { "x": "a\u{7f}" } } }),
                "control character",
            ),
            (
                json!({ "query": { "add": { "": "1" } } }),
                "empty parameter name",
            ),
            (
                json!({ "headers": { "set": { "Content-Length": "0" } } }),
                "the gateway's to set",
            ),
            (
                json!({ "headers": { "rename": { "x-te": "te" } } }),
                "the gateway's to set",
            ),
            (
                json!({ "headers": { "set": { "x": "v".repeat(16 * 1024 + 1) } } }),
                "over 16384 bytes",
            ),
            (
                json!({ "headers": { "add": (0..65).map(|i| (format!("x-{i}"), json!("1"))).collect::<serde_json::Map<_, _>>() } }),
                "more than 64 headers",
            ),
            (
                json!({ "headers": { "append": { "x": "1" } } }),
                "unknown field",
            ),
            (json!({ "header": {} }), "unknown field"),
            (json!({ "path": "v2/users" }), "single `/`"),
            (json!({ "path": "//evil.example/x" }), "single `/`"),
            (json!({ "path": "/a b" }), "percent-encode"),
            (json!({ "path": "/a?b=1" }), "percent-encode"),
            (json!({ "path": "/a#b" }), "percent-encode"),
            (json!({ "path": "/a\nb" }), "percent-encode"),
            (json!({ "path": "/a<b" }), "percent-encode"),
            (json!({ "path": "/a\\b" }), "percent-encode"),
            (json!({ "path": "/caf\u{e9}" }), "percent-encode"),
            (json!({ "path": "/a%zz" }), "hexadecimal"),
            (json!({ "path": "/a%2" }), "hexadecimal"),
            (json!({ "path": "/a/../admin" }), "`..` segment"),
            (json!({ "path": "/a/./b" }), "`..` segment"),
        ];
        for (v, expected) in cases {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.contains(expected), "{v}: {err}");
        }
    }
}
