//! Compiled match conditions of one route: path, method, header and query conditions.

use http::{HeaderMap, Method};
use regex::Regex;

/// How a route matches the request path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path equals this string.
    Exact(String),
    /// Segment template such as `/users/{id}/posts`.
    Template(Vec<Segment>),
    /// A regular expression over the whole path (anchored).
    Regex(Regex),
    /// The path starts with this string (`""` matches every path).
    Prefix(String),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Literal(String),
    /// `{name}`: any single non-empty segment.
    Param(String),
}

/// Path parameters captured by a template match, in template order.
pub type Params = Vec<(String, String)>;

impl PathMatch {
    /// Parses `path` (exact or template).
    pub fn from_path(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with '/'"));
        }
        if !path.contains('{') {
            return Ok(Self::Exact(path.to_string()));
        }
        let mut segs = Vec::new();
        for s in path[1..].split('/') {
            if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("invalid template parameter {s:?} in {path:?}"));
                }
                segs.push(Segment::Param(name.to_string()));
            } else if s.contains(['{', '}']) {
                return Err(format!(
                    "a template parameter must fill a whole segment: {s:?} in {path:?}"
                ));
            } else {
                segs.push(Segment::Literal(s.to_string()));
            }
        }
        Ok(Self::Template(segs))
    }

    /// Rank in the specificity order: lower is more specific.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (0, 0),
            Self::Template(segs) => {
                let literals = segs
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count();
                // More literal segments first, then longer templates.
                (1, usize::MAX - (literals * 1000 + segs.len()))
            }
            Self::Regex(_) => (2, 0),
            Self::Prefix(p) => (3, usize::MAX - p.len()),
        }
    }

    /// Matches `path`, returning captured parameters on success.
    pub fn matches(&self, path: &str) -> Option<Params> {
        match self {
            Self::Exact(p) => (p == path).then(Vec::new),
            Self::Prefix(p) => path.starts_with(p.as_str()).then(Vec::new),
            Self::Regex(r) => r.is_match(path).then(Vec::new),
            Self::Template(segs) => {
                let rest = path.strip_prefix('/')?;
                let mut params = Vec::new();
                let mut parts = rest.split('/');
                for seg in segs {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Literal(_) => return None,
                        Segment::Param(_) if part.is_empty() => return None,
                        Segment::Param(name) => params.push((name.clone(), part.to_string())),
                    }
                }
                parts.next().is_none().then_some(params)
            }
        }
    }
}

/// A condition on a value (header or query parameter).
#[derive(Debug, Clone)]
pub enum ValueCond {
    /// The name must be present.
    Present,
    /// The value must equal this.
    Exact(String),
    /// The value must match this anchored regex.
    Regex(Regex),
}

impl ValueCond {
    /// Whether `value` satisfies the condition.
    pub fn holds(&self, value: &str) -> bool {
        match self {
            Self::Present => true,
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// All non-path conditions of a route.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Allowed methods (empty: any).
    pub methods: Vec<Method>,
    /// Header conditions (name lower-case).
    pub headers: Vec<(http::HeaderName, ValueCond)>,
    /// Query conditions.
    pub query: Vec<(String, ValueCond)>,
}

impl Conditions {
    /// How many conditions there are (more conditions rank as more specific).
    pub fn weight(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len() + self.query.len()
    }

    /// Whether every condition holds for this request.
    pub fn hold(&self, method: &Method, headers: &HeaderMap, query: Option<&str>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        for (name, cond) in &self.headers {
            let ok = headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| cond.holds(s)));
            if !ok {
                return false;
            }
        }
        if !self.query.is_empty() {
            let q = query.unwrap_or("");
            for (name, cond) in &self.query {
                let ok = form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == name.as_str() && cond.holds(&v));
                if !ok {
                    return false;
                }
            }
        }
        true
    }
}

/// Compiles an anchored regular expression.
pub fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_captures_parameters_and_rejects_extra_segments() {
        let m = PathMatch::from_path("/users/{id}/posts").unwrap();
        assert_eq!(
            m.matches("/users/42/posts").unwrap(),
            vec![("id".to_string(), "42".to_string())]
        );
        assert!(m.matches("/users/42/posts/1").is_none());
        assert!(m.matches("/users//posts").is_none());
    }

    #[test]
    fn rejects_partial_segment_templates() {
        assert!(PathMatch::from_path("/users/x{id}").is_err());
        assert!(PathMatch::from_path("users").is_err());
    }

    #[test]
    fn ranks_exact_before_template_before_regex_before_prefix() {
        let e = PathMatch::Exact("/a".into()).rank();
        let t = PathMatch::from_path("/a/{b}").unwrap().rank();
        let r = PathMatch::Regex(anchored("/a.*").unwrap()).rank();
        let long = PathMatch::Prefix("/a/b".into()).rank();
        let short = PathMatch::Prefix("/a".into()).rank();
        assert!(e < t && t < r && r < long && long < short);
    }

    #[test]
    fn query_conditions_decode_values() {
        let c = Conditions {
            query: vec![("q".into(), ValueCond::Exact("a b".into()))],
            ..Default::default()
        };
        assert!(c.hold(&Method::GET, &HeaderMap::new(), Some("x=1&q=a+b")));
        assert!(!c.hold(&Method::GET, &HeaderMap::new(), Some("q=ab")));
    }
}
