//! The configuration of `request-transformer` and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;

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
            && (!p.starts_with('/') || !p.bytes().all(is_path_byte))
        {
            return Err(format!(
                "`path`: {p:?} is not an absolute path (it starts with `/`; no spaces, controls, `?` or `#`)"
            ));
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
        for (name, value) in h.set.iter().chain(h.add.iter()) {
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!(
                    "`headers`: the value of {name:?} contains CR, LF or NUL"
                ));
            }
        }
        h.remove.iter_mut().for_each(|n| n.make_ascii_lowercase());
        h.rename = lower_keys(&h.rename)
            .into_iter()
            .map(|(k, v)| (k, v.to_ascii_lowercase()))
            .collect();
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
        Ok(self)
    }
}

fn lower_keys(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Bytes allowed in a path as written in the configuration: visible ASCII other than `?`
/// and `#` (percent-encode anything else).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'?' && b != b'#'
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
    fn rejections() {
        let cases = [
            (json!({}), "nothing to do"),
            (
                json!({ "headers": { "remove": ["bad name"] } }),
                "not a header name",
            ),
            (
                json!({ "headers": { "set": { "x": "a\r\nb: c" } } }),
                "CR, LF or NUL",
            ),
            (
                json!({ "query": { "add": { "": "1" } } }),
                "empty parameter name",
            ),
            (
                json!({ "headers": { "append": { "x": "1" } } }),
                "unknown field",
            ),
            (json!({ "header": {} }), "unknown field"),
            (json!({ "path": "v2/users" }), "not an absolute path"),
            (json!({ "path": "/a b" }), "not an absolute path"),
            (json!({ "path": "/a?b=1" }), "not an absolute path"),
            (json!({ "path": "/a\nb" }), "not an absolute path"),
        ];
        for (v, expected) in cases {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.contains(expected), "{v}: {err}");
        }
    }
}
