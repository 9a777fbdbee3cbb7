//! A query string that can be read and edited without re-encoding what it does not
//! change.

use std::fmt;

/// A parsed query string: `&`-separated `name=value` pairs, kept in their raw (encoded)
/// form so that untouched pairs are forwarded byte for byte. Names are compared after
/// percent-decoding, case-sensitively.
///
/// ```
/// use sluice_sdk::query::Query;
/// let mut q = Query::parse("a=1&api_key=s%20ecret&b");
/// assert_eq!(q.get("api_key").as_deref(), Some("s ecret"));
/// q.remove("api_key");
/// q.append("c", "x y");
/// assert_eq!(q.to_string(), "a=1&b&c=x+y");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Raw pairs: (encoded name, encoded value if `=` was present).
    pairs: Vec<(String, Option<String>)>,
}

impl Query {
    /// Parses a raw query string (without `?`). Empty segments are dropped.
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|seg| match seg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (seg.to_owned(), None),
            })
            .collect();
        Self { pairs }
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The number of parameters (counting repeated names).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The decoded value of the first parameter `name` (empty for `name` without `=`).
    pub fn get(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(n, _)| decode(n) == name)
            .map(|(_, v)| v.as_deref().map(decode).unwrap_or_default())
    }

    /// True when a parameter `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| decode(n) == name)
    }

    /// The decoded names and values, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .map(|(n, v)| (decode(n), v.as_deref().map(decode).unwrap_or_default()))
            .collect()
    }

    /// Removes every parameter `name`; true when one was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.pairs.len();
        self.pairs.retain(|(n, _)| decode(n) != name);
        self.pairs.len() != before
    }

    /// Appends `name=value` (encoded), keeping existing parameters of that name.
    pub fn append(&mut self, name: &str, value: &str) {
        self.pairs.push((encode(name), Some(encode(value))));
    }

    /// Replaces every parameter `name` with one `name=value`, at the position of the
    /// first one (or at the end when absent).
    pub fn set(&mut self, name: &str, value: &str) {
        let pair = (encode(name), Some(encode(value)));
        match self.pairs.iter().position(|(n, _)| decode(n) == name) {
            Some(i) => {
                self.pairs[i] = pair;
                let mut seen = false;
                self.pairs.retain(|(n, _)| {
                    if decode(n) != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.pairs.push(pair),
        }
    }

    /// Renames every parameter `from` to `to`, keeping values and positions; parameters
    /// already named `to` are removed first. True when one was renamed.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if from == to || !self.contains(from) {
            return false;
        }
        self.remove(to);
        let encoded = encode(to);
        for (n, _) in &mut self.pairs {
            if decode(n) == from {
                n.clone_from(&encoded);
            }
        }
        true
    }
}

/// The query string, without `?` (empty when there are no parameters).
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            f.write_str(n)?;
            if let Some(v) = v {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

fn decode(raw: &str) -> String {
    form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_pairs_keep_their_encoding() {
        let mut q = Query::parse("a=%41&b=2");
        q.remove("b");
        assert_eq!(q.to_string(), "a=%41");
        assert_eq!(q.get("a").as_deref(), Some("A"));
    }

    #[test]
    fn set_replaces_all_and_keeps_position() {
        let mut q = Query::parse("x=1&y=2&x=3");
        q.set("x", "9");
        assert_eq!(q.to_string(), "x=9&y=2");
        q.set("z", "a&b");
        assert_eq!(q.to_string(), "x=9&y=2&z=a%26b");
    }

    #[test]
    fn rename_overwrites_target() {
        let mut q = Query::parse("old=1&new=2&k");
        assert!(q.rename("old", "new"));
        assert_eq!(q.to_string(), "new=1&k");
        assert!(!q.rename("missing", "x"));
        assert_eq!(q.get("k").as_deref(), Some(""));
    }

    #[test]
    fn empty_segments_dropped() {
        let q = Query::parse("&&a=1&");
        assert_eq!(q.len(), 1);
        assert!(Query::parse("").is_empty());
    }
}
