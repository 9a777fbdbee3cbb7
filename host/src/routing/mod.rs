//! Request routing: picks the most specific route for a request.
//!
//! # Specificity order (deterministic)
//! 1. Host: an exact host beats a wildcard (`*.example.com`, longer suffix first), which beats
//!    a route with no host condition.
//! 2. Within one host class, path: exact, then template (`{param}`; more literal segments
//!    first), then regex, then prefix (longest first; no path condition is the prefix `""`).
//! 3. Then the route with more method/header/query conditions.
//! 4. Finally, order of appearance in the configuration.
//!
//! The first route in that order whose every condition holds wins.

pub mod matcher;
pub mod path;

use std::collections::HashMap;

use http::{HeaderMap, Method};

pub use matcher::{Conditions, Params, PathMatch, Segment, ValueCond, anchored};

/// A route's match specification.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Host patterns (lower-case; `*.suffix` for wildcards; empty: any host).
    pub hosts: Vec<String>,
    /// Path condition.
    pub path: PathMatch,
    /// Other conditions.
    pub conditions: Conditions,
}

struct Entry<T> {
    order: usize,
    path: PathMatch,
    conditions: Conditions,
    value: T,
}

impl<T> Entry<T> {
    fn key(&self) -> ((u8, usize), usize, usize) {
        (
            self.path.rank(),
            usize::MAX - self.conditions.weight(),
            self.order,
        )
    }
}

/// A compiled route table for one listener.
pub struct Router<T> {
    exact: HashMap<String, Vec<Entry<T>>>,
    /// `(suffix including the dot, entries)`, longest suffix first.
    wildcard: Vec<(String, Vec<Entry<T>>)>,
    any: Vec<Entry<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Vec::new(),
        }
    }
}

impl<T: Clone> Router<T> {
    /// Adds a route; `order` is its position in the configuration.
    pub fn add(&mut self, order: usize, m: &RouteMatch, value: T) {
        let entry = || Entry {
            order,
            path: m.path.clone(),
            conditions: m.conditions.clone(),
            value: value.clone(),
        };
        if m.hosts.is_empty() {
            self.any.push(entry());
        }
        for host in &m.hosts {
            if let Some(suffix) = host.strip_prefix('*') {
                match self.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                    Some((_, v)) => v.push(entry()),
                    None => self.wildcard.push((suffix.to_string(), vec![entry()])),
                }
            } else {
                self.exact.entry(host.clone()).or_default().push(entry());
            }
        }
    }

    /// Sorts every bucket into specificity order; call once after the last `add`.
    pub fn finish(&mut self) {
        for v in self.exact.values_mut() {
            v.sort_by_key(Entry::key);
        }
        for (_, v) in &mut self.wildcard {
            v.sort_by_key(Entry::key);
        }
        self.wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        self.any.sort_by_key(Entry::key);
    }

    /// Finds the most specific matching route. `host` must be lower-case without port.
    pub fn find(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<(&T, Params)> {
        let scan = |entries: &'_ [Entry<T>]| -> Option<(usize, Params)> {
            entries.iter().enumerate().find_map(|(i, e)| {
                let params = e.path.matches(path)?;
                e.conditions
                    .hold(method, headers, query)
                    .then_some((i, params))
            })
        };
        if let Some(entries) = self.exact.get(host)
            && let Some((i, p)) = scan(entries)
        {
            return Some((&entries[i].value, p));
        }
        for (suffix, entries) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some((i, p)) = scan(entries)
            {
                return Some((&entries[i].value, p));
            }
        }
        scan(&self.any).map(|(i, p)| (&self.any[i].value, p))
    }
}

/// Normalises a request host for routing: strips the port and lower-cases it.
pub fn normalize_host(raw: &str) -> String {
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |i| &raw[..=i])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(hosts: &[&str], path: PathMatch) -> RouteMatch {
        RouteMatch {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            path,
            conditions: Conditions::default(),
        }
    }

    fn find<'a>(r: &'a Router<&'static str>, host: &str, path: &str) -> Option<&'a str> {
        r.find(host, &Method::GET, path, None, &HeaderMap::new())
            .map(|(v, _)| *v)
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let mut r = Router::default();
        r.add(0, &m(&[], PathMatch::Prefix("/".into())), "any");
        r.add(
            1,
            &m(&["*.example.com"], PathMatch::Prefix("/".into())),
            "wild",
        );
        r.add(
            2,
            &m(&["api.example.com"], PathMatch::Prefix("/".into())),
            "exact",
        );
        r.finish();
        assert_eq!(find(&r, "api.example.com", "/x"), Some("exact"));
        assert_eq!(find(&r, "www.example.com", "/x"), Some("wild"));
        assert_eq!(find(&r, "example.com", "/x"), Some("any"));
    }

    #[test]
    fn path_specificity_is_exact_template_regex_prefix() {
        let mut r = Router::default();
        r.add(0, &m(&[], PathMatch::Prefix("/".into())), "root");
        r.add(1, &m(&[], PathMatch::Prefix("/users".into())), "prefix");
        r.add(
            2,
            &m(&[], PathMatch::Regex(anchored("/users/[0-9]+").unwrap())),
            "regex",
        );
        r.add(
            3,
            &m(&[], PathMatch::from_path("/users/{id}").unwrap()),
            "template",
        );
        r.add(4, &m(&[], PathMatch::Exact("/users/me".into())), "exact");
        r.finish();
        assert_eq!(find(&r, "h", "/users/me"), Some("exact"));
        assert_eq!(find(&r, "h", "/users/42"), Some("template"));
        assert_eq!(find(&r, "h", "/users/42/x"), Some("prefix"));
        assert_eq!(find(&r, "h", "/other"), Some("root"));
    }

    #[test]
    fn more_conditions_win_then_configuration_order() {
        let mut r = Router::default();
        r.add(0, &m(&[], PathMatch::Exact("/a".into())), "first");
        r.add(1, &m(&[], PathMatch::Exact("/a".into())), "second");
        let mut with_method = m(&[], PathMatch::Exact("/a".into()));
        with_method.conditions.methods = vec![Method::GET];
        r.add(2, &with_method, "get");
        r.finish();
        assert_eq!(find(&r, "h", "/a"), Some("get"));
        let found = r.find("h", &Method::POST, "/a", None, &HeaderMap::new());
        assert_eq!(found.map(|(v, _)| *v), Some("first"));
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}
