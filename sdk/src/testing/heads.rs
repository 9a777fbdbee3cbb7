//! Fake request and response heads and a fake context.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::decision::{Edits, Header, ResponseEdits};
use crate::host::{ContextSource, RequestSource, ResponseSource};
use crate::{Context, Request, Response};

/// A request head for tests, built like `TestRequest::get("/path?q=1").header("a", "b")`.
///
/// Defaults: scheme `http`, authority `localhost`, client IP `127.0.0.1`, route `test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRequest {
    /// The method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host (and port) addressed.
    pub authority: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    /// The headers, in order (names compared case-insensitively).
    pub headers: Vec<Header>,
    /// The client's IP address.
    pub client_ip: String,
    /// The matched route's name.
    pub route: String,
}

impl TestRequest {
    /// A request with `method` for `path_and_query` (`/p?x=1` sets path and query).
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            method: method.to_owned(),
            scheme: "http".into(),
            authority: "localhost".into(),
            path,
            query,
            headers: Vec::new(),
            client_ip: "127.0.0.1".into(),
            route: "test".into(),
        }
    }

    /// A `GET` request.
    pub fn get(path_and_query: &str) -> Self {
        Self::new("GET", path_and_query)
    }

    /// A `POST` request.
    pub fn post(path_and_query: &str) -> Self {
        Self::new("POST", path_and_query)
    }

    /// An `OPTIONS` request.
    pub fn options(path_and_query: &str) -> Self {
        Self::new("OPTIONS", path_and_query)
    }

    /// Adds a header value (repeat to send several values).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the client IP address.
    pub fn client_ip(mut self, ip: &str) -> Self {
        ip.clone_into(&mut self.client_ip);
        self
    }

    /// Sets the route name.
    pub fn route(mut self, route: &str) -> Self {
        route.clone_into(&mut self.route);
        self
    }

    /// Sets the scheme.
    pub fn scheme(mut self, scheme: &str) -> Self {
        scheme.clone_into(&mut self.scheme);
        self
    }

    /// Sets the authority.
    pub fn authority(mut self, authority: &str) -> Self {
        authority.clone_into(&mut self.authority);
        self
    }

    /// This request as the policy sees it.
    pub fn as_request(&self) -> Request<'_> {
        Request::new(self)
    }

    /// The first value of the header `name` as UTF-8.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(Header::value_str)
    }

    /// Every value of the header `name`, as UTF-8 (lossy).
    pub fn get_header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
            .collect()
    }

    /// The request the gateway forwards after applying `edits`: removals first, then
    /// sets (replacing every value), then appends, then path and query.
    pub fn apply(&self, edits: &Edits) -> Self {
        let mut next = self.clone();
        apply_headers(
            &mut next.headers,
            &edits.remove_headers,
            &edits.set_headers,
            &edits.append_headers,
        );
        if let Some(p) = &edits.path {
            next.path.clone_from(p);
        }
        if let Some(q) = &edits.query {
            next.query = (!q.is_empty()).then(|| q.clone());
        }
        next
    }
}

fn apply_headers(headers: &mut Vec<Header>, remove: &[String], set: &[Header], append: &[Header]) {
    headers.retain(|h| !remove.iter().any(|r| r.eq_ignore_ascii_case(&h.name)));
    for s in set {
        headers.retain(|h| !h.name.eq_ignore_ascii_case(&s.name));
    }
    headers.extend(set.iter().cloned());
    headers.extend(append.iter().cloned());
}

fn names(headers: &[Header]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in headers {
        let lower = h.name.to_ascii_lowercase();
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    out
}

fn first(headers: &[Header], name: &str) -> Option<Vec<u8>> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
}

fn all(headers: &[Header], name: &str) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
        .collect()
}

impl RequestSource for TestRequest {
    fn method(&self) -> String {
        self.method.clone()
    }
    fn scheme(&self) -> String {
        self.scheme.clone()
    }
    fn authority(&self) -> String {
        self.authority.clone()
    }
    fn path(&self) -> String {
        self.path.clone()
    }
    fn query(&self) -> Option<String> {
        self.query.clone()
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        first(&self.headers, name)
    }
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        all(&self.headers, name)
    }
    fn header_names(&self) -> Vec<String> {
        names(&self.headers)
    }
    fn client_ip(&self) -> String {
        self.client_ip.clone()
    }
    fn route(&self) -> String {
        self.route.clone()
    }
}

/// A response head for tests: `TestResponse::new(200).header("content-length", "12")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

impl TestResponse {
    /// A response with `status` and no headers.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    /// Adds a header value.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// This response as the policy sees it.
    pub fn as_response(&self) -> Response<'_> {
        Response::new(self)
    }

    /// The first value of the header `name` as UTF-8.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(Header::value_str)
    }

    /// Every value of the header `name`, as UTF-8 (lossy).
    pub fn get_header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
            .collect()
    }

    /// The response the gateway sends on after applying `edits`.
    pub fn apply(&self, edits: &ResponseEdits) -> Self {
        let mut next = self.clone();
        apply_headers(
            &mut next.headers,
            &edits.remove_headers,
            &edits.set_headers,
            &edits.append_headers,
        );
        next
    }
}

impl ResponseSource for TestResponse {
    fn status(&self) -> u16 {
        self.status
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        first(&self.headers, name)
    }
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        all(&self.headers, name)
    }
    fn header_names(&self) -> Vec<String> {
        names(&self.headers)
    }
}

/// Per-request context attributes for tests. Share one between the `on_request` and
/// `on_response` calls of a request (and between the policies of a pipeline).
#[derive(Debug, Default)]
pub struct TestContext {
    attributes: RefCell<BTreeMap<String, String>>,
}

impl TestContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an attribute, as an earlier policy would have.
    pub fn with(self, key: &str, value: &str) -> Self {
        self.attributes
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// The value of an attribute.
    pub fn get(&self, key: &str) -> Option<String> {
        self.attributes.borrow().get(key).cloned()
    }

    /// Every attribute.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        self.attributes.borrow().clone()
    }

    /// This context as the policy sees it.
    pub fn as_context(&self) -> Context<'_> {
        Context::new(self)
    }
}

impl ContextSource for TestContext {
    fn get(&self, key: &str) -> Option<String> {
        TestContext::get(self, key)
    }
    fn set(&self, key: &str, value: &str) {
        use crate::context::{MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTES};
        // As the host does: it fails the call.
        assert!(
            key.len() <= MAX_ATTRIBUTE_BYTES && value.len() <= MAX_ATTRIBUTE_BYTES,
            "context attribute over {MAX_ATTRIBUTE_BYTES} bytes: the host fails this call"
        );
        let mut attributes = self.attributes.borrow_mut();
        assert!(
            attributes.len() < MAX_ATTRIBUTES || attributes.contains_key(key),
            "more than {MAX_ATTRIBUTES} context attributes: the host fails this call"
        );
        attributes.insert(key.to_owned(), value.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reads_through_the_sdk_wrapper() {
        let req = TestRequest::get("/a?x=1&y=%20")
            .header("X-Key", "v1")
            .header("x-key", "v2")
            .client_ip("::ffff:192.0.2.1");
        let r = req.as_request();
        assert_eq!(r.path(), "/a");
        assert_eq!(r.query_param("y").as_deref(), Some(" "));
        assert_eq!(r.header_str("x-key").as_deref(), Some("v1"));
        assert_eq!(r.header_all("X-KEY").len(), 2);
        assert_eq!(r.header_names(), vec!["x-key".to_owned()]);
        assert_eq!(r.client_ip_addr(), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn response_reads_every_value_of_a_header() {
        let resp = TestResponse::new(200)
            .header("Set-Cookie", "a=1")
            .header("x-other", "x")
            .header("set-cookie", "b=2");
        let r = resp.as_response();
        assert_eq!(
            r.header_all("SET-COOKIE"),
            vec![b"a=1".to_vec(), b"b=2".to_vec()]
        );
        assert!(r.header_all("absent").is_empty());
        assert_eq!(r.header_str("set-cookie").as_deref(), Some("a=1"));
        assert_eq!(r.header_names(), vec!["set-cookie", "x-other"]);
    }

    #[test]
    fn apply_removes_before_setting() {
        let req = TestRequest::get("/?a=1").header("a", "1").header("b", "2");
        let next = req.apply(
            &Edits::new()
                .remove_header("a")
                .set_header("a", "x")
                .set_header("b", "y")
                .append_header("b", "z")
                .query(""),
        );
        assert_eq!(next.get_header_all("a"), vec!["x"]);
        assert_eq!(next.get_header_all("b"), vec!["y", "z"]);
        assert_eq!(next.query, None);
    }

    #[test]
    fn context_round_trips() {
        let ctx = TestContext::new().with("consumer", "alice");
        let c = ctx.as_context();
        assert_eq!(c.consumer().as_deref(), Some("alice"));
        c.set("x", "1");
        assert_eq!(ctx.get("x").as_deref(), Some("1"));
    }
}
