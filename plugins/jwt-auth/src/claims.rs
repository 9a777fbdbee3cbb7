//! Validating the claims of a token whose signature has verified (RFC 7519 §4.1).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::AuthError;

/// The claims of a verified token, a JSON object.
pub type Claims = Map<String, Value>;

/// What the claims must satisfy.
#[derive(Clone, Debug, Default)]
pub struct ClaimRules {
    /// Accepted `iss` values; empty means `iss` is not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty means the token must not carry `aud` at all (RFC 7519
    /// §4.1.3: a recipient that does not identify itself with a present `aud` must reject).
    pub audiences: Vec<String>,
    /// Claims that must be present.
    pub required: Vec<String>,
    /// Clock skew tolerated for `exp` and `nbf`.
    pub leeway: Duration,
}

impl ClaimRules {
    /// Checks `claims` at `now_millis` (Unix epoch milliseconds).
    ///
    /// `exp`, `nbf` and `iat` must be JSON numbers when present; `exp` must be after
    /// `now - leeway`, `nbf` at or before `now + leeway`.
    ///
    /// # Errors
    /// The first failed rule.
    pub fn validate(&self, claims: &Claims, now_millis: u64) -> Result<(), AuthError> {
        for name in &self.required {
            if !claims.contains_key(name) {
                return Err(AuthError::MissingClaim(name.clone()));
            }
        }
        let now = now_millis as f64 / 1000.0;
        let leeway = self.leeway.as_secs_f64();
        if let Some(exp) = numeric_date(claims, "exp")?
            && now >= exp + leeway
        {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now + leeway < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        numeric_date(claims, "iat")?;

        if !self.issuers.is_empty() {
            match claims.get("iss") {
                Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
                _ => return Err(AuthError::WrongIssuer),
            }
        }

        match claims.get("aud") {
            None if self.audiences.is_empty() => {}
            None => return Err(AuthError::WrongAudience),
            Some(aud) => {
                let accepted = |a: &str| self.audiences.iter().any(|mine| mine == a);
                let ok = match aud {
                    Value::String(a) => accepted(a),
                    Value::Array(items) => {
                        let mut any = false;
                        for item in items {
                            let Value::String(a) = item else {
                                return Err(AuthError::InvalidClaim("aud"));
                            };
                            any |= accepted(a);
                        }
                        any
                    }
                    _ => return Err(AuthError::InvalidClaim("aud")),
                };
                if !ok {
                    return Err(AuthError::WrongAudience);
                }
            }
        }
        Ok(())
    }
}

/// A NumericDate claim: absent, or a JSON number (seconds since the epoch, maybe fractional).
fn numeric_date(claims: &Claims, name: &'static str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or(AuthError::InvalidClaim(name)),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

/// The text of a claim for a context attribute: strings as they are, anything else as
/// compact JSON.
pub fn attribute_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            issuers: vec!["https://idp.example".into()],
            audiences: vec!["api".into(), "api2".into()],
            required: vec!["exp".into()],
            leeway: Duration::from_secs(30),
        }
    }

    fn ok() -> Value {
        json!({"iss": "https://idp.example", "aud": "api", "exp": 1_700_000_100, "sub": "u"})
    }

    fn check(v: Value) -> Result<(), AuthError> {
        rules().validate(&claims(v), NOW)
    }

    #[test]
    fn accepts_valid_claims() {
        check(ok()).unwrap();
        let mut v = ok();
        v["aud"] = json!(["other", "api2"]);
        check(v).unwrap();
        let mut v = ok();
        v["exp"] = json!(1_700_000_100.5);
        v["nbf"] = json!(1_700_000_000);
        v["iat"] = json!(1_699_999_000);
        check(v).unwrap();
    }

    #[test]
    fn exp_honours_leeway() {
        let mut v = ok();
        v["exp"] = json!(1_700_000_000 - 29);
        check(v.clone()).unwrap();
        v["exp"] = json!(1_700_000_000 - 30);
        assert_eq!(check(v.clone()), Err(AuthError::Expired));
        v["exp"] = json!(0);
        assert_eq!(check(v), Err(AuthError::Expired));
    }

    #[test]
    fn nbf_honours_leeway() {
        let mut v = ok();
        v["nbf"] = json!(1_700_000_000 + 30);
        check(v.clone()).unwrap();
        v["nbf"] = json!(1_700_000_000 + 31);
        assert_eq!(check(v), Err(AuthError::NotYetValid));
    }

    #[test]
    fn zero_leeway_is_exact() {
        let r = ClaimRules {
            leeway: Duration::ZERO,
            ..rules()
        };
        let mut v = ok();
        v["exp"] = json!(1_700_000_000);
        assert_eq!(r.validate(&claims(v.clone()), NOW), Err(AuthError::Expired));
        v["exp"] = json!(1_700_000_001);
        r.validate(&claims(v), NOW).unwrap();
    }

    #[test]
    fn wrong_types_are_refused() {
        for (name, bad) in [
            ("exp", json!("1700000100")),
            ("nbf", json!(null)),
            ("iat", json!([1])),
            ("aud", json!(5)),
            ("aud", json!(["api", 5])),
        ] {
            let mut v = ok();
            v[name] = bad;
            assert_eq!(check(v), Err(AuthError::InvalidClaim(name)), "{name}");
        }
    }

    #[test]
    fn issuer_is_checked() {
        for bad in [
            json!("https://evil.example"),
            json!(["https://idp.example"]),
            json!(1),
        ] {
            let mut v = ok();
            v["iss"] = bad;
            assert_eq!(check(v), Err(AuthError::WrongIssuer));
        }
        let mut v = ok();
        v.as_object_mut().unwrap().remove("iss");
        assert_eq!(check(v), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn audience_is_checked() {
        for bad in [json!("API"), json!([]), json!(["x", "y"])] {
            let mut v = ok();
            v["aud"] = bad;
            assert_eq!(check(v), Err(AuthError::WrongAudience));
        }
        let mut v = ok();
        v.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(v), Err(AuthError::WrongAudience));
        // No audience configured: a token without aud passes, one with aud does not.
        let r = ClaimRules {
            audiences: vec![],
            ..rules()
        };
        let mut v = ok();
        assert_eq!(
            r.validate(&claims(v.clone()), NOW),
            Err(AuthError::WrongAudience)
        );
        v.as_object_mut().unwrap().remove("aud");
        r.validate(&claims(v), NOW).unwrap();
    }

    #[test]
    fn required_claims() {
        let mut v = ok();
        v.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(v), Err(AuthError::MissingClaim("exp".into())));
        let r = ClaimRules {
            required: vec!["exp".into(), "tenant".into()],
            ..rules()
        };
        assert_eq!(
            r.validate(&claims(ok()), NOW),
            Err(AuthError::MissingClaim("tenant".into()))
        );
    }

    #[test]
    fn attribute_text_forms() {
        assert_eq!(attribute_text(&json!("a b")), "a b");
        assert_eq!(attribute_text(&json!(5)), "5");
        assert_eq!(attribute_text(&json!(["a", 1])), "[\"a\",1]");
        assert_eq!(attribute_text(&json!(true)), "true");
    }
}
