//! Finding the token in a request (a header, a query parameter or a cookie), and removing it
//! when it must not reach the upstream.

use crate::config::TokenSourceConfig;
use crate::error::AuthError;

/// Where the token is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// A header (lower-case name), with an optional scheme before the token.
    Header {
        /// The header name, lower case.
        name: String,
        /// The scheme (e.g. `Bearer`), matched case-insensitively.
        scheme: Option<String>,
    },
    /// A query parameter (decoded name).
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// The parts of a request the extraction reads; implemented over the host's request head.
pub trait RequestParts {
    /// Every value of a header, in order (name in lower case).
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;
    /// The raw query string without `?`.
    fn query(&self) -> Option<String>;
}

/// How to remove the token before the request goes upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strip {
    /// Remove this header.
    RemoveHeader(String),
    /// Replace the query string with this one (empty removes the query).
    SetQuery(String),
    /// Replace the `Cookie` header with this value.
    SetCookie(String),
    /// Remove the `Cookie` header (the token was the only cookie).
    RemoveCookie,
}

impl TokenSourceConfig {
    /// Validates the source; the error starts with the field name.
    pub(crate) fn compile(self) -> Result<TokenSource, String> {
        let set = [
            self.header.is_some(),
            self.query.is_some(),
            self.cookie.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set > 1 {
            return Err("header: give only one of header, query, cookie".into());
        }
        if self.scheme.is_some() && (self.query.is_some() || self.cookie.is_some()) {
            return Err("scheme: only applies to a header".into());
        }
        if let Some(query) = self.query {
            if query.is_empty() {
                return Err("query: must not be empty".into());
            }
            return Ok(TokenSource::Query(query));
        }
        if let Some(cookie) = self.cookie {
            if cookie.is_empty() || !cookie.bytes().all(is_tchar) {
                return Err("cookie: must be a valid cookie name".into());
            }
            return Ok(TokenSource::Cookie(cookie));
        }
        let name = self
            .header
            .unwrap_or_else(|| "authorization".into())
            .to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err("header: must be a valid header name".into());
        }
        let scheme = match self.scheme {
            Some(s) if s.is_empty() => None,
            Some(s) if s.bytes().all(is_tchar) => Some(s),
            Some(_) => return Err("scheme: must be a single word, e.g. \"Bearer\"".into()),
            None if name == "authorization" => Some("Bearer".into()),
            None => None,
        };
        Ok(TokenSource::Header { name, scheme })
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl TokenSource {
    /// The token in `req`.
    ///
    /// # Errors
    /// [`AuthError::MissingToken`] when there is none (including an `Authorization` header
    /// with another scheme), [`AuthError::AmbiguousToken`] when there are several,
    /// [`AuthError::Malformed`] when the value is empty or not ASCII.
    pub fn extract(&self, req: &dyn RequestParts) -> Result<String, AuthError> {
        match self {
            TokenSource::Header { name, scheme } => {
                let values = req.header_all(name);
                let value = match values.as_slice() {
                    [] => return Err(AuthError::MissingToken),
                    [one] => one,
                    _ => return Err(AuthError::AmbiguousToken),
                };
                let value = std::str::from_utf8(value)
                    .ok()
                    .filter(|v| v.is_ascii())
                    .ok_or(AuthError::Malformed("token is not ASCII"))?
                    .trim();
                let token = match scheme {
                    None => value,
                    Some(scheme) => {
                        let (word, rest) = value.split_once(' ').unwrap_or((value, ""));
                        if !word.eq_ignore_ascii_case(scheme) {
                            return Err(AuthError::MissingToken);
                        }
                        rest.trim_start_matches(' ')
                    }
                };
                non_empty(token)
            }
            TokenSource::Query(param) => {
                let query = req.query().unwrap_or_default();
                let mut found = None;
                for (name, value) in query_pairs(&query) {
                    if name == *param {
                        if found.is_some() {
                            return Err(AuthError::AmbiguousToken);
                        }
                        found = Some(value);
                    }
                }
                non_empty(&found.ok_or(AuthError::MissingToken)?)
            }
            TokenSource::Cookie(cookie) => {
                let mut found = None;
                for header in req.header_all("cookie") {
                    let Ok(header) = std::str::from_utf8(&header) else {
                        continue;
                    };
                    for (name, value) in cookie_pairs(header) {
                        if name == cookie {
                            if found.is_some() {
                                return Err(AuthError::AmbiguousToken);
                            }
                            found = Some(value.to_string());
                        }
                    }
                }
                non_empty(&found.ok_or(AuthError::MissingToken)?)
            }
        }
    }

    /// How to remove the token from `req` (call after a successful [`TokenSource::extract`]).
    pub fn strip(&self, req: &dyn RequestParts) -> Strip {
        match self {
            TokenSource::Header { name, .. } => Strip::RemoveHeader(name.clone()),
            TokenSource::Query(param) => {
                let query = req.query().unwrap_or_default();
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty())
                    .filter(|pair| {
                        let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                        percent_decode(name) != *param
                    })
                    .collect();
                Strip::SetQuery(kept.join("&"))
            }
            TokenSource::Cookie(cookie) => {
                let mut kept = Vec::new();
                for header in req.header_all("cookie") {
                    let header = String::from_utf8_lossy(&header);
                    for part in header.split(';') {
                        let part = part.trim();
                        let name = part.split_once('=').map_or(part, |(n, _)| n.trim());
                        if !part.is_empty() && name != cookie {
                            kept.push(part.to_string());
                        }
                    }
                }
                if kept.is_empty() {
                    Strip::RemoveCookie
                } else {
                    Strip::SetCookie(kept.join("; "))
                }
            }
        }
    }
}

fn non_empty(token: &str) -> Result<String, AuthError> {
    if token.is_empty() {
        Err(AuthError::Malformed("empty token"))
    } else {
        Ok(token.to_string())
    }
}

/// Decoded `name=value` pairs of a query string (`+` is a space, `%XX` a byte).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `name=value` pairs of a `Cookie` header; a quoted value loses its quotes.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some((name.trim(), value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(&'static str, &'static [u8])>;

    #[derive(Default)]
    struct Req {
        headers: Headers,
        query: Option<&'static str>,
    }

    impl RequestParts for Req {
        fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_vec())
                .collect()
        }
        fn query(&self) -> Option<String> {
            self.query.map(str::to_owned)
        }
    }

    fn source(json: &str) -> TokenSource {
        serde_json::from_str::<TokenSourceConfig>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn bearer() -> TokenSource {
        source("{}")
    }

    fn with_headers(headers: Headers) -> Req {
        Req {
            headers,
            query: None,
        }
    }

    #[test]
    fn default_is_authorization_bearer() {
        assert_eq!(
            bearer(),
            TokenSource::Header {
                name: "authorization".into(),
                scheme: Some("Bearer".into())
            }
        );
        let req = with_headers(vec![("Authorization", b"Bearer abc.def.ghi")]);
        assert_eq!(bearer().extract(&req).unwrap(), "abc.def.ghi");
        let req = with_headers(vec![("authorization", b"bearer   abc ")]);
        assert_eq!(bearer().extract(&req).unwrap(), "abc");
    }

    #[test]
    fn bearer_failures() {
        let cases: [(Headers, AuthError); 6] = [
            (vec![], AuthError::MissingToken),
            (
                vec![("authorization", b"Basic dXNlcjpwYXNz")],
                AuthError::MissingToken,
            ),
            (
                vec![("authorization", b"Bearerabc")],
                AuthError::MissingToken,
            ),
            (
                vec![("authorization", b"Bearer ")],
                AuthError::Malformed("empty token"),
            ),
            (
                vec![
                    ("authorization", b"Bearer a"),
                    ("authorization", b"Bearer b"),
                ],
                AuthError::AmbiguousToken,
            ),
            (
                vec![("authorization", b"Bearer \xff")],
                AuthError::Malformed("token is not ASCII"),
            ),
        ];
        for (headers, want) in cases {
            assert_eq!(bearer().extract(&with_headers(headers)), Err(want));
        }
    }

    #[test]
    fn custom_header_without_scheme() {
        let s = source(r#"{"header": "X-JWT"}"#);
        let req = with_headers(vec![("x-jwt", b"abc")]);
        assert_eq!(s.extract(&req).unwrap(), "abc");
        assert_eq!(s.strip(&req), Strip::RemoveHeader("x-jwt".into()));
        let s = source(r#"{"header": "X-JWT", "scheme": "Token"}"#);
        let req = with_headers(vec![("x-jwt", b"token abc")]);
        assert_eq!(s.extract(&req).unwrap(), "abc");
    }

    #[test]
    fn query_parameter() {
        let s = source(r#"{"query": "access_token"}"#);
        let req = Req {
            query: Some("a=1&access_token=x.y.z&b=%41"),
            ..Default::default()
        };
        assert_eq!(s.extract(&req).unwrap(), "x.y.z");
        assert_eq!(s.strip(&req), Strip::SetQuery("a=1&b=%41".into()));
        let only = Req {
            query: Some("access%5Ftoken=x"),
            ..Default::default()
        };
        assert_eq!(s.extract(&only).unwrap(), "x");
        assert_eq!(s.strip(&only), Strip::SetQuery(String::new()));
        let twice = Req {
            query: Some("access_token=x&access_token=y"),
            ..Default::default()
        };
        assert_eq!(s.extract(&twice), Err(AuthError::AmbiguousToken));
        let none = Req {
            query: Some("a=1"),
            ..Default::default()
        };
        assert_eq!(s.extract(&none), Err(AuthError::MissingToken));
        assert_eq!(s.extract(&Req::default()), Err(AuthError::MissingToken));
    }

    #[test]
    fn cookie() {
        let s = source(r#"{"cookie": "jwt"}"#);
        let req = with_headers(vec![("cookie", b"a=1; jwt=\"x.y.z\"; b=2")]);
        assert_eq!(s.extract(&req).unwrap(), "x.y.z");
        assert_eq!(s.strip(&req), Strip::SetCookie("a=1; b=2".into()));
        let only = with_headers(vec![("cookie", b"jwt=x")]);
        assert_eq!(s.strip(&only), Strip::RemoveCookie);
        let twice = with_headers(vec![("cookie", b"jwt=x"), ("cookie", b"jwt=y")]);
        assert_eq!(s.extract(&twice), Err(AuthError::AmbiguousToken));
        let other = with_headers(vec![("cookie", b"jwtx=1; xjwt=2")]);
        assert_eq!(s.extract(&other), Err(AuthError::MissingToken));
    }

    #[test]
    fn invalid_sources_are_refused() {
        for (json, want) in [
            (r#"{"header": "a", "query": "b"}"#, "header:"),
            (r#"{"query": "b", "scheme": "Bearer"}"#, "scheme:"),
            (r#"{"header": "bad header"}"#, "header:"),
            (r#"{"cookie": "a;b"}"#, "cookie:"),
            (r#"{"query": ""}"#, "query:"),
            (r#"{"scheme": "Two Words"}"#, "scheme:"),
        ] {
            let err = serde_json::from_str::<TokenSourceConfig>(json)
                .unwrap()
                .compile()
                .unwrap_err();
            assert!(err.starts_with(want), "{json}: {err}");
        }
        assert!(serde_json::from_str::<TokenSourceConfig>(r#"{"heder": "x"}"#).is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
