//! The configuration of `cors`, its validation and origin matching.

use serde::Deserialize;

/// `cors`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Allowed origins: exact (`https://app.example.com`), a subdomain pattern
    /// (`https://*.example.com`, one or more labels) or `*` for any origin. Required.
    pub origins: Vec<String>,
    /// Methods announced in preflight answers. By default `GET`, `HEAD`, `POST`.
    pub methods: Vec<String>,
    /// Request headers announced in preflight answers. By default none configured,
    /// which reflects the headers the browser asks for.
    pub allow_headers: Option<Vec<String>>,
    /// Response headers the browser may expose to scripts. By default none.
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies and HTTP auth). Not
    /// allowed with the origin `*`. By default false.
    pub credentials: bool,
    /// How long browsers may cache a preflight answer, in seconds. By default unset
    /// (the browser's default, 5 s).
    pub max_age: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            allow_headers: None,
            expose_headers: Vec::new(),
            credentials: false,
            max_age: None,
        }
    }
}

/// The allowed origins, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`).
    Any,
    /// A list of patterns.
    List(Vec<OriginPattern>),
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// Exactly this origin (lower-case).
    Exact(String),
    /// `scheme://<one or more labels>.<suffix>` (lower-case), e.g. `https://` and
    /// `.example.com`.
    Subdomains {
        /// `https://`
        scheme: String,
        /// `.example.com` (with the port, if any)
        suffix: String,
    },
}

impl Origins {
    /// True when `origin` (the request's `Origin` header) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::List(patterns) => patterns.iter().any(|p| match p {
                OriginPattern::Exact(o) => *o == origin,
                OriginPattern::Subdomains { scheme, suffix } => origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                    .is_some_and(|labels| {
                        !labels.is_empty()
                            && labels.split('.').all(|l| {
                                !l.is_empty()
                                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            })
                    }),
            }),
        }
    }
}

impl Config {
    /// Checks the configuration and compiles the origins.
    ///
    /// # Errors
    /// A message naming the first problem found.
    pub fn validate(&self) -> Result<Origins, String> {
        if self.origins.is_empty() {
            return Err("`origins` is empty: list the allowed origins, or \"*\"".into());
        }
        if self.methods.is_empty() {
            return Err("`methods` is empty".into());
        }
        for m in &self.methods {
            if m.is_empty() || !m.bytes().all(is_token_byte) {
                return Err(format!("`methods`: {m:?} is not a method"));
            }
        }
        let lists = [
            (
                "allow_headers",
                self.allow_headers.as_deref().unwrap_or_default(),
            ),
            ("expose_headers", self.expose_headers.as_slice()),
        ];
        for (field, list) in lists {
            for h in list {
                if h.is_empty() || !h.bytes().all(is_token_byte) {
                    return Err(format!("`{field}`: {h:?} is not a header name"));
                }
            }
        }
        if self.origins.iter().any(|o| o == "*") {
            if self.origins.len() > 1 {
                return Err("`origins`: \"*\" allows every origin; list nothing else".into());
            }
            if self.credentials {
                return Err(
                    "`origins = [\"*\"]` cannot be combined with `credentials = true`; list the origins"
                        .into(),
                );
            }
            return Ok(Origins::Any);
        }
        let patterns = self
            .origins
            .iter()
            .map(|o| compile(o))
            .collect::<Result<_, _>>()?;
        Ok(Origins::List(patterns))
    }
}

fn compile(origin: &str) -> Result<OriginPattern, String> {
    let lower = origin.to_ascii_lowercase();
    let bad = |why: &str| format!("`origins`: {origin:?} {why}");
    let (scheme, host) = lower
        .split_once("://")
        .ok_or_else(|| bad("must look like https://host[:port]"))?;
    if scheme.is_empty() || host.is_empty() || host.contains('/') {
        return Err(bad("must look like https://host[:port], without a path"));
    }
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
            Ok(OriginPattern::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{suffix}"),
            })
        }
        Some(_) => Err(bad("has an empty or repeated wildcard")),
        None if host.contains('*') => Err(bad("may only use a wildcard as its first label (*.)")),
        None => Ok(OriginPattern::Exact(lower)),
    }
}

/// RFC 9110 token characters (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Origins, String> {
        let c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate()
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.methods, ["GET", "HEAD", "POST"]);
        assert!(!c.credentials);
        assert_eq!(c.max_age, None);
        assert_eq!(c.allow_headers, None);
    }

    #[test]
    fn matching() {
        let o =
            parse(json!({ "origins": ["https://App.example.com", "https://*.example.org:8443"] }))
                .unwrap();
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!o.allows("http://app.example.com"));
        assert!(!o.allows("https://app.example.com.evil.net"));
        assert!(o.allows("https://a.example.org:8443"));
        assert!(o.allows("https://a.b.example.org:8443"));
        assert!(!o.allows("https://example.org:8443"));
        assert!(!o.allows("https://a.example.org"));
        assert!(!o.allows("https://evil.com/.example.org:8443"));
        assert!(!o.allows("https://a..example.org:8443"));
        assert!(parse(json!({ "origins": ["*"] })).unwrap().allows("null"));
    }

    #[test]
    fn rejections() {
        let cases = [
            (json!({}), "`origins` is empty"),
            (
                json!({ "origins": ["*"], "credentials": true }),
                "cannot be combined",
            ),
            (
                json!({ "origins": ["*", "https://a"] }),
                "list nothing else",
            ),
            (json!({ "origins": ["example.com"] }), "must look like"),
            (json!({ "origins": ["https://a.com/"] }), "without a path"),
            (json!({ "origins": ["https://a.*.com"] }), "first label"),
            (json!({ "origins": ["https://*."] }), "empty or repeated"),
            (
                json!({ "origins": ["*"], "methods": [] }),
                "`methods` is empty",
            ),
            (
                json!({ "origins": ["*"], "methods": ["GET POST"] }),
                "not a method",
            ),
            (
                json!({ "origins": ["*"], "expose_headers": ["a b"] }),
                "not a header name",
            ),
            (json!({ "origins": ["*"], "max_age": -1 }), "invalid value"),
            (
                json!({ "origins": ["*"], "allow_origin": [] }),
                "unknown field",
            ),
        ];
        for (v, expected) in cases {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.contains(expected), "{v}: {err}");
        }
    }
}
