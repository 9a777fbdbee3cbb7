//! What a policy answers: typed decisions and the builders that make them.
//!
//! These mirror the WIT types `request-decision` and `response-decision` of
//! `sluice:policy@0.1.0`, as owned Rust values that tests can inspect.

/// The longest header value a decision may set or append: the host fails a call whose
/// decision holds a longer one.
pub const MAX_HEADER_VALUE_BYTES: usize = 16 * 1024;

/// The most header values one decision may set and append together: the host fails a call
/// whose decision holds more.
pub const MAX_HEADER_EDITS: usize = 64;

/// The largest body of a local response: the host fails a call whose decision holds a
/// larger one.
pub const MAX_LOCAL_BODY_BYTES: usize = 1024 * 1024;

/// Headers a decision may not set or append: the gateway frames each message and owns
/// the connection (`content-length`, `transfer-encoding`, `connection`, `keep-alive`,
/// `proxy-connection`, `upgrade`, `http2-settings`, `te`, `trailer`); the host fails a call
/// whose decision sets one. Removing them is allowed (and changes nothing on the wire).
pub const GATEWAY_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "http2-settings",
    "te",
    "trailer",
];

/// Panics, as the host fails the call, when `set` and `append` break the host's rules for
/// one decision's headers (used by the test harness).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn assert_host_takes(set: &[Header], append: &[Header]) {
    assert!(
        set.len() + append.len() <= MAX_HEADER_EDITS,
        "more than {MAX_HEADER_EDITS} header edits in one decision: the host fails this call"
    );
    for h in set.iter().chain(append) {
        let name = h.name.to_ascii_lowercase();
        assert!(
            !GATEWAY_HEADERS.contains(&name.as_str()),
            "header {:?} is the gateway's to set: the host fails this call",
            h.name
        );
        assert!(
            h.value.len() <= MAX_HEADER_VALUE_BYTES,
            "header {:?} over {MAX_HEADER_VALUE_BYTES} bytes: the host fails this call",
            h.name
        );
    }
}

/// One header: a case-insensitive name and its raw value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name (sent as given; the gateway compares names case-insensitively).
    pub name: String,
    /// The raw value bytes.
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value as UTF-8, or `None` when it is not valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// The first header named `name` (case-insensitive) in `headers`.
fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a Header> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))
}

/// What happens to the request after this policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RequestDecision {
    /// Go on unchanged.
    #[default]
    Continue,
    /// Go on with these changes.
    Edit(Edits),
    /// Stop here and answer with this response. Later policies and the upstream are
    /// skipped; the response phases of the policies already run still run.
    Respond(LocalResponse),
}

impl RequestDecision {
    /// A local response with `status`, no headers and an empty body; add to it with
    /// [`header`](Self::header), [`body`](Self::body) or [`json`](Self::json).
    ///
    /// ```
    /// use sluice_sdk::RequestDecision;
    /// let d = RequestDecision::respond(401)
    ///     .header("www-authenticate", r#"ApiKey realm="sluice""#)
    ///     .body("unauthorized");
    /// assert_eq!(d.status(), Some(401));
    /// ```
    pub fn respond(status: u16) -> Self {
        Self::Respond(LocalResponse::new(status))
    }

    /// A local response with a JSON body and `content-type: application/json`.
    pub fn respond_json(status: u16, body: &serde_json::Value) -> Self {
        Self::Respond(LocalResponse::new(status).json(body))
    }

    /// Continue with `edits`, or plain [`Continue`](Self::Continue) when they change nothing.
    pub fn edit(edits: Edits) -> Self {
        if edits.is_empty() {
            Self::Continue
        } else {
            Self::Edit(edits)
        }
    }

    /// Adds a header to the local response of a [`Respond`](Self::Respond) decision.
    /// On other decisions this does nothing (and asserts in debug builds).
    pub fn header(self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.map_response(|r| r.header(name, value))
    }

    /// Sets the body of a [`Respond`](Self::Respond) decision's local response.
    /// On other decisions this does nothing (and asserts in debug builds).
    pub fn body(self, body: impl Into<Vec<u8>>) -> Self {
        self.map_response(|r| r.body(body))
    }

    /// Sets a JSON body (and `content-type: application/json`) on a
    /// [`Respond`](Self::Respond) decision. On other decisions this does nothing (and
    /// asserts in debug builds).
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.map_response(|r| r.json(body))
    }

    fn map_response(self, f: impl FnOnce(LocalResponse) -> LocalResponse) -> Self {
        match self {
            Self::Respond(r) => Self::Respond(f(r)),
            other => {
                debug_assert!(false, "response builder used on {other:?}");
                other
            }
        }
    }

    /// True for [`Continue`](Self::Continue).
    pub fn is_continue(&self) -> bool {
        matches!(self, Self::Continue)
    }

    /// The status of the local response, for [`Respond`](Self::Respond).
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    /// The local response, for [`Respond`](Self::Respond).
    pub fn response(&self) -> Option<&LocalResponse> {
        match self {
            Self::Respond(r) => Some(r),
            _ => None,
        }
    }

    /// The edits, for [`Edit`](Self::Edit).
    pub fn edits(&self) -> Option<&Edits> {
        match self {
            Self::Edit(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Edits> for RequestDecision {
    fn from(edits: Edits) -> Self {
        Self::edit(edits)
    }
}

impl From<LocalResponse> for RequestDecision {
    fn from(response: LocalResponse) -> Self {
        Self::Respond(response)
    }
}

/// A response produced by the policy instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<Header>,
    /// The response body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (several headers may share a name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.headers
            .retain(|h| !h.name.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(Header::new("content-type", "application/json"));
        self.body = body.to_string().into_bytes();
        self
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name).map(|h| h.value.as_slice())
    }

    /// The first value of the header `name` as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        find(&self.headers, name).and_then(Header::value_str)
    }

    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Changes to the request before it continues. The gateway applies removals before
/// sets and appends.
///
/// ```
/// use sluice_sdk::{Edits, RequestDecision};
/// let d: RequestDecision = Edits::new()
///     .set_header("x-consumer", "alice")
///     .remove_header("x-api-key")
///     .into();
/// assert!(d.edits().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Edits {
    /// Headers replaced (or added when absent).
    pub set_headers: Vec<Header>,
    /// Headers appended (keeping existing values).
    pub append_headers: Vec<Header>,
    /// Header names removed.
    pub remove_headers: Vec<String>,
    /// A new path (must start with `/`).
    pub path: Option<String>,
    /// A new query string (without `?`; empty removes the query).
    pub query: Option<String>,
}

impl Edits {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the header `name` (or adds it when absent).
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set_headers.push(Header::new(name, value));
        self
    }

    /// Appends a value to the header `name`, keeping existing values.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.append_headers.push(Header::new(name, value));
        self
    }

    /// Removes every value of the header `name`.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.remove_headers.push(name.into());
        self
    }

    /// Replaces the path (must start with `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Replaces the query string (without `?`; empty removes the query).
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// True when these edits change nothing.
    pub fn is_empty(&self) -> bool {
        self.set_headers.is_empty()
            && self.append_headers.is_empty()
            && self.remove_headers.is_empty()
            && self.path.is_none()
            && self.query.is_none()
    }

    /// The value set for the header `name`, if these edits set it.
    pub fn set_value(&self, name: &str) -> Option<&[u8]> {
        find(&self.set_headers, name).map(|h| h.value.as_slice())
    }

    /// True when these edits remove the header `name`.
    pub fn removes(&self, name: &str) -> bool {
        self.remove_headers
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// What happens to the response after this policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseDecision {
    /// Go on unchanged.
    #[default]
    Continue,
    /// Go on with these changes.
    Edit(ResponseEdits),
}

impl ResponseDecision {
    /// Continue with `edits`, or plain [`Continue`](Self::Continue) when they change nothing.
    pub fn edit(edits: ResponseEdits) -> Self {
        if edits.is_empty() {
            Self::Continue
        } else {
            Self::Edit(edits)
        }
    }

    /// True for [`Continue`](Self::Continue).
    pub fn is_continue(&self) -> bool {
        matches!(self, Self::Continue)
    }

    /// The edits, for [`Edit`](Self::Edit).
    pub fn edits(&self) -> Option<&ResponseEdits> {
        match self {
            Self::Edit(e) => Some(e),
            Self::Continue => None,
        }
    }
}

impl From<ResponseEdits> for ResponseDecision {
    fn from(edits: ResponseEdits) -> Self {
        Self::edit(edits)
    }
}

/// Changes to the response before it continues towards the client. The gateway applies
/// removals before sets and appends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseEdits {
    /// Headers replaced (or added when absent).
    pub set_headers: Vec<Header>,
    /// Headers appended (keeping existing values).
    pub append_headers: Vec<Header>,
    /// Header names removed.
    pub remove_headers: Vec<String>,
}

impl ResponseEdits {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the header `name` (or adds it when absent).
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set_headers.push(Header::new(name, value));
        self
    }

    /// Appends a value to the header `name`, keeping existing values.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.append_headers.push(Header::new(name, value));
        self
    }

    /// Removes every value of the header `name`.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.remove_headers.push(name.into());
        self
    }

    /// True when these edits change nothing.
    pub fn is_empty(&self) -> bool {
        self.set_headers.is_empty()
            && self.append_headers.is_empty()
            && self.remove_headers.is_empty()
    }

    /// The value set for the header `name`, if these edits set it.
    pub fn set_value(&self, name: &str) -> Option<&[u8]> {
        find(&self.set_headers, name).map(|h| h.value.as_slice())
    }

    /// The value set for the header `name` as UTF-8, if these edits set it.
    pub fn set_str(&self, name: &str) -> Option<&str> {
        find(&self.set_headers, name).and_then(Header::value_str)
    }

    /// The values appended to the header `name`, in order.
    pub fn appended(&self, name: &str) -> Vec<&[u8]> {
        self.append_headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respond_builder_collects_headers_and_body() {
        let d = RequestDecision::respond(401)
            .header("www-authenticate", "ApiKey")
            .body("no");
        let r = d.response().unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header_str("WWW-Authenticate"), Some("ApiKey"));
        assert_eq!(r.body_str(), "no");
    }

    #[test]
    fn json_replaces_content_type() {
        let r = LocalResponse::new(400)
            .header("content-type", "text/plain")
            .json(&serde_json::json!({"a": 1}));
        assert_eq!(r.header_str("content-type"), Some("application/json"));
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.body_str(), r#"{"a":1}"#);
    }

    #[test]
    fn empty_edits_are_continue() {
        assert!(RequestDecision::edit(Edits::new()).is_continue());
        assert!(ResponseDecision::edit(ResponseEdits::new()).is_continue());
        let d = RequestDecision::from(Edits::new().path("/x"));
        assert_eq!(d.edits().unwrap().path.as_deref(), Some("/x"));
    }
}
