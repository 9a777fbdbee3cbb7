//! Parsing a compact JWS (`header.payload.signature`) into checked parts.
//!
//! Only the structure and the header are checked here; the signature is verified by
//! [`crate::verifier`] and the claims by [`crate::claims`]. Everything is strict: base64url
//! without padding and with canonical trailing bits, JSON objects without duplicate members,
//! and header parameters that would make the token choose its own key (`jwk`, `jku`, `x5u`,
//! `x5c`) or require unknown processing (`crit`) refuse the token.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;

use crate::alg::Algorithm;
use crate::error::AuthError;

/// The deepest nesting of arrays and objects accepted in a token's JSON. Claims are flat
/// in practice; the bound keeps parsing (which recurses) far from the policy's small stack.
pub const MAX_JSON_DEPTH: usize = 16;

/// The longest `kid` accepted, in bytes. A longer one refuses the token before any lookup.
pub const MAX_KID_LEN: usize = 256;

/// Header parameters that carry or point to key material chosen by the token's author.
/// Trusting any of them lets an attacker sign with their own key, so their presence refuses
/// the token (they are never fetched or used).
pub const FORBIDDEN_HEADER_PARAMS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

/// The checked header and the raw parts of a compact JWS.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    /// The algorithm named by the header (already known to be supported, never `none`).
    pub alg: Algorithm,
    /// The `kid` header, an opaque lookup string.
    pub kid: Option<String>,
    /// The `typ` header.
    pub typ: Option<String>,
    /// `base64url(header) || '.' || base64url(payload)`: the bytes that were signed.
    pub signing_input: &'a str,
    /// The encoded payload.
    pub payload_b64: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The JOSE header members this policy reads; everything else is ignored except the
/// forbidden parameters and `crit`, which refuse the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    crit: Option<IgnoredAny>,
    jwk: Option<IgnoredAny>,
    jku: Option<IgnoredAny>,
    x5u: Option<IgnoredAny>,
    x5c: Option<IgnoredAny>,
}

/// Parses `token` (already size-checked by the caller) and checks its header.
///
/// # Errors
/// [`AuthError`] naming the first problem found.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(if token.split('.').count() == 5 {
            AuthError::Malformed("encrypted tokens (JWE) are not accepted")
        } else {
            AuthError::Malformed("not a compact JWS (three dot-separated parts)")
        });
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(AuthError::Malformed("empty header or payload"));
    }
    if signature_b64.is_empty() {
        return Err(AuthError::Malformed("unsigned token"));
    }

    let header_json = b64_decode(header_b64, "header is not base64url")?;
    let raw: RawHeader = parse_object(&header_json, "header is not a JSON object")?;

    let alg = match raw.alg {
        Some(Value::String(name)) => {
            if name.trim().eq_ignore_ascii_case("none") {
                return Err(AuthError::AlgNone);
            }
            Algorithm::from_name(&name).ok_or(AuthError::UnsupportedAlg)?
        }
        Some(_) => return Err(AuthError::Malformed("`alg` is not a string")),
        None => return Err(AuthError::Malformed("no `alg` header")),
    };
    for (name, present) in [
        ("jwk", raw.jwk.is_some()),
        ("jku", raw.jku.is_some()),
        ("x5u", raw.x5u.is_some()),
        ("x5c", raw.x5c.is_some()),
    ] {
        if present {
            return Err(AuthError::ForbiddenHeader(name));
        }
    }
    if raw.crit.is_some() {
        // RFC 7515 §4.1.11: no extension is understood here, so `crit` must refuse.
        return Err(AuthError::ForbiddenHeader("crit"));
    }
    let kid = match raw.kid {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid),
        Some(Value::String(_)) => return Err(AuthError::Malformed("`kid` is too long")),
        Some(_) => return Err(AuthError::Malformed("`kid` is not a string")),
    };
    let typ = match raw.typ {
        None => None,
        Some(Value::String(typ)) => Some(typ),
        Some(_) => return Err(AuthError::Malformed("`typ` is not a string")),
    };

    let signature = b64_decode(signature_b64, "signature is not base64url")?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(ParsedToken {
        alg,
        kid,
        typ,
        signing_input,
        payload_b64,
        signature,
    })
}

/// Decodes strict base64url: no padding, no whitespace, canonical trailing bits.
///
/// # Errors
/// [`AuthError::Malformed`] with `what`.
pub fn b64_decode(input: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(input)
        .map_err(|_| AuthError::Malformed(what))
}

/// Parses a JSON object, refusing duplicate members at its top level and nesting deeper
/// than [`MAX_JSON_DEPTH`].
///
/// # Errors
/// [`AuthError::Malformed`] with `what`, or naming the duplicate or the depth.
pub fn parse_object<T: for<'de> Deserialize<'de>>(
    json: &[u8],
    what: &'static str,
) -> Result<T, AuthError> {
    if json_depth(json) > MAX_JSON_DEPTH {
        return Err(AuthError::Malformed("JSON nested too deeply"));
    }
    let object: UniqueObject =
        serde_json::from_slice(json).map_err(|_| AuthError::Malformed(what))?;
    if object.duplicate {
        return Err(AuthError::Malformed("duplicate JSON member"));
    }
    T::deserialize(Value::Object(object.members.into_iter().collect()))
        .map_err(|_| AuthError::Malformed(what))
}

/// The deepest nesting of `[`/`{` in `json`, ignoring brackets inside strings. Malformed
/// input gets some number; the parser refuses it afterwards.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    max
}

/// A JSON object read member by member, noting whether a name occurred twice.
struct UniqueObject {
    members: BTreeMap<String, Value>,
    duplicate: bool,
}

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut members = BTreeMap::new();
                let mut duplicate = false;
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    duplicate |= members.insert(name, value).is_some();
                }
                Ok(UniqueObject { members, duplicate })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.c2ln", enc(header), enc(r#"{"sub":"a"}"#))
    }

    #[test]
    fn parses_a_plain_header() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT","x5t":"ignored"}"#);
        let p = parse(&t).unwrap();
        assert_eq!(p.alg, Algorithm::RS256);
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.typ.as_deref(), Some("JWT"));
        assert_eq!(p.signature, b"sig");
        assert_eq!(p.signing_input, &t[..t.rfind('.').unwrap()]);
    }

    #[test]
    fn none_in_every_casing_is_refused() {
        for alg in ["none", "None", "NONE", "nOnE", "noNe", " none"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#));
            assert_eq!(parse(&t).unwrap_err(), AuthError::AlgNone, "{alg}");
        }
        // An unsigned token (empty signature part) never gets as far as the header.
        let t = format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc("{}"));
        assert_eq!(
            parse(&t).unwrap_err(),
            AuthError::Malformed("unsigned token")
        );
    }

    #[test]
    fn key_carrying_headers_are_refused() {
        for param in FORBIDDEN_HEADER_PARAMS {
            let t = token(&format!(
                r#"{{"alg":"RS256","{param}":"https://evil.example/k"}}"#
            ));
            assert_eq!(
                parse(&t).unwrap_err(),
                AuthError::ForbiddenHeader(param),
                "{param}"
            );
        }
        let t = token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#);
        assert_eq!(parse(&t).unwrap_err(), AuthError::ForbiddenHeader("crit"));
    }

    #[test]
    fn structural_garbage_is_refused() {
        let long_kid = format!(
            r#"{{"alg":"HS256","kid":"{}"}}"#,
            "a".repeat(MAX_KID_LEN + 1)
        );
        let cases = [
            "".to_string(),
            ".".to_string(),
            "..".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            "a.b.c.d.e".to_string(),
            format!("{}.e30.", enc(r#"{"alg":"HS256"}"#)),
            "!!!.e30.c2ln".to_string(),
            format!("{}=.e30.c2ln", enc(r#"{"alg":"HS256"}"#)),
            format!("{}.e30.c2ln=", enc(r#"{"alg":"HS256"}"#)),
            format!("{}.e30.c2l+", enc(r#"{"alg":"HS256"}"#)),
            token("[]"),
            token("\"HS256\""),
            token("{"),
            token(r#"{"typ":"JWT"}"#),
            token(r#"{"alg":256}"#),
            token(r#"{"alg":"HS256","alg":"none"}"#),
            token(r#"{"alg":"HS256","kid":5}"#),
            token(r#"{"alg":"HS256","typ":["JWT"]}"#),
            token(r#"{"alg":"hs256"}"#),
            token(&long_kid),
        ];
        for t in &cases {
            assert!(parse(t).is_err(), "accepted {t:?}");
        }
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        // "c2lo" decodes to "sih"; "c2lp" has the same leading bits but different trailing
        // bits in a 2-char group, e.g. "YQ" vs "YR" for "a".
        assert_eq!(b64_decode("YQ", "x").unwrap(), b"a");
        assert!(b64_decode("YR", "x").is_err());
        assert!(b64_decode("YQ==", "x").is_err());
        assert!(b64_decode("Y Q", "x").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            parse_object::<Value>(deep.as_bytes(), "x").unwrap_err(),
            AuthError::Malformed("JSON nested too deeply")
        );
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(15), "]".repeat(15));
        assert!(parse_object::<Value>(ok.as_bytes(), "x").is_ok());
        // Brackets inside strings (with escaped quotes) do not count.
        assert_eq!(json_depth(br#"{"a":"[[[\"[[[","b":[1]}"#), 2);
    }

    #[test]
    fn duplicate_members_are_refused() {
        let err = parse_object::<Value>(br#"{"a":1,"a":2}"#, "x").unwrap_err();
        assert_eq!(err, AuthError::Malformed("duplicate JSON member"));
        assert!(parse_object::<Value>(br#"{"a":{"b":1}}"#, "x").is_ok());
    }
}
