//! Maps key paths to source lines and source offsets to key paths, so that every
//! configuration error can name the file, the line and the key.

use std::fmt;
use std::ops::Range;

use toml_edit::{Document, Item, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path of keys and indices into the configuration, printed as `routes[2].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path extended by a key.
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.into()));
        Self(v)
    }

    /// The path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if n == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed document kept for locating keys.
pub struct Locator {
    src: String,
    doc: Option<Document<String>>,
}

impl Locator {
    /// Parses `src` for span information (a syntax error leaves only offsets usable).
    pub fn new(src: String) -> Self {
        let doc = Document::parse(src.clone()).ok();
        Self { src, doc }
    }

    /// 1-based line of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Line of the value (or, failing that, the nearest enclosing key) at `path`.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        self.line_in_table_like(doc.as_table(), None, &path.0)
    }

    /// The key path of the innermost key or value whose span contains `offset`.
    pub fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let doc = self.doc.as_ref()?;
        find_in_table(doc.as_table(), offset, &KeyPath::default())
    }

    fn line_in_array(&self, item: &Item, index: usize, rest: &[Seg]) -> Option<usize> {
        let tail = &rest[1..];
        match item {
            Item::ArrayOfTables(a) => {
                let t = a.get(index)?;
                self.line_in_table_like(t, t.span(), tail)
            }
            Item::Value(Value::Array(a)) => {
                let v = a.get(index)?;
                match v {
                    Value::InlineTable(t) => self.line_in_table_like(t, t.span(), tail),
                    other => other.span().map(|r| self.line_of_offset(r.start)),
                }
            }
            _ => None,
        }
    }

    fn line_in_table_like(
        &self,
        table: &dyn toml_edit::TableLike,
        own: Option<Range<usize>>,
        tail: &[Seg],
    ) -> Option<usize> {
        let own_line = own.map(|r| self.line_of_offset(r.start));
        let Some((Seg::Key(k), rest)) = tail.split_first() else {
            return own_line;
        };
        let Some((key, value)) = table.get_key_value(k) else {
            return own_line;
        };
        let key_line = key
            .span()
            .map(|r| self.line_of_offset(r.start))
            .or(own_line);
        match rest.first() {
            None => value
                .span()
                .map(|r| self.line_of_offset(r.start))
                .or(key_line),
            Some(Seg::Index(i)) => self.line_in_array(value, *i, rest).or(key_line),
            Some(Seg::Key(_)) => match value.as_table_like() {
                Some(t) => self.line_in_table_like(t, value.span(), rest).or(key_line),
                None => key_line,
            },
        }
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
}

fn find_in_table(table: &dyn toml_edit::TableLike, offset: usize, at: &KeyPath) -> Option<KeyPath> {
    for (k, v) in table.iter() {
        let here = at.key(k);
        let key_span = table.key(k).and_then(|key| key.span());
        if contains(key_span, offset) {
            return Some(here);
        }
        if let Some(found) = find_in_item(v, offset, &here) {
            return Some(found);
        }
    }
    None
}

fn find_in_item(item: &Item, offset: usize, at: &KeyPath) -> Option<KeyPath> {
    match item {
        Item::Table(t) => {
            find_in_table(t, offset, at).or_else(|| contains(t.span(), offset).then(|| at.clone()))
        }
        Item::ArrayOfTables(a) => a.iter().enumerate().find_map(|(i, t)| {
            find_in_table(t, offset, &at.index(i))
                .or_else(|| contains(t.span(), offset).then(|| at.index(i)))
        }),
        Item::Value(v) => find_in_value(v, offset, at),
        Item::None => None,
    }
}

fn find_in_value(v: &Value, offset: usize, at: &KeyPath) -> Option<KeyPath> {
    if !contains(v.span(), offset) {
        return None;
    }
    match v {
        Value::InlineTable(t) => find_in_table(t, offset, at).or_else(|| Some(at.clone())),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_in_value(x, offset, &at.index(i)))
            .or_else(|| Some(at.clone())),
        _ => Some(at.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[gateway]\nworkers = 2\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nupstream = \"x\"\nheaders = [{ name = \"h\" }]\n";

    fn path(segs: &[Seg]) -> KeyPath {
        KeyPath(segs.to_vec())
    }

    #[test]
    fn finds_lines_of_nested_keys() {
        let l = Locator::new(SRC.to_string());
        let k = |s: &str| Seg::Key(s.into());
        assert_eq!(l.line_of(&path(&[k("gateway"), k("workers")])), Some(2));
        assert_eq!(
            l.line_of(&path(&[k("routes"), Seg::Index(1), k("upstream")])),
            Some(9)
        );
        assert_eq!(
            l.line_of(&path(&[
                k("routes"),
                Seg::Index(1),
                k("headers"),
                Seg::Index(0)
            ])),
            Some(10)
        );
    }

    #[test]
    fn finds_the_key_path_at_an_offset() {
        let l = Locator::new(SRC.to_string());
        let off = SRC.find("upstream").unwrap();
        assert_eq!(l.path_at(off).unwrap().to_string(), "routes[1].upstream");
        let off = SRC.find("\"h\"").unwrap();
        assert_eq!(
            l.path_at(off).unwrap().to_string(),
            "routes[1].headers[0].name"
        );
    }

    #[test]
    fn prints_paths_with_indices() {
        let p = KeyPath::default().key("routes").index(3).key("upstream");
        assert_eq!(p.to_string(), "routes[3].upstream");
    }
}
