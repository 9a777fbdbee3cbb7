//! JSON Web Keys (RFC 7517) and key sets: turning them into [`Key`]s.
//!
//! Only public verification keys are read: `RSA` (`n`, `e`), `EC` on P-256/P-384 (`x`,
//! `y`), `OKP` Ed25519 (`x`), and — from configuration only — `oct` (`k`). Private members
//! are never read. A key whose `use` is not `sig`, or whose `key_ops` lacks `verify`, is not
//! a verification key. A key's `alg` member, when present, is the only algorithm it verifies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use serde_json::Value;

use crate::alg::{AlgSet, Algorithm};
use crate::key::{Key, KeyMaterial};

/// The most keys taken from one JWKS document; the rest are ignored.
pub const MAX_JWKS_KEYS: usize = 64;

/// The members of a JWK this policy reads.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

/// Where a JWK comes from, which decides whether symmetric keys are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwkSource {
    /// The operator's configuration: `oct` (HMAC) keys are allowed.
    Config,
    /// A fetched JWKS document: `oct` keys are refused (a shared secret has no business in
    /// a published key set).
    Jwks,
}

/// Parses one JWK into a [`Key`], restricted to `allowed` algorithms.
///
/// # Errors
/// A message saying why the JWK is not a usable verification key.
pub fn parse_jwk(value: &Value, source: JwkSource, allowed: AlgSet) -> Result<Key, String> {
    let raw = RawJwk::deserialize(value).map_err(|e| format!("not a JWK: {e}"))?;
    if let Some(use_) = &raw.use_
        && use_ != "sig"
    {
        return Err(format!("has use `{use_}`, not `sig`"));
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("has key_ops without `verify`".into());
    }
    let material = match raw.kty.as_deref() {
        Some("RSA") => {
            let n = member(&raw.n, "n")?;
            let e = member(&raw.e, "e")?;
            if n.first() == Some(&0) || e.first() == Some(&0) || e.len() > 8 {
                return Err("has a non-minimal or oversized `n`/`e`".into());
            }
            let key = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
                .map_err(|e| format!("is not a valid RSA key: {e}"))?;
            KeyMaterial::rsa(key)?
        }
        Some("EC") => {
            let x = member(&raw.x, "x")?;
            let y = member(&raw.y, "y")?;
            match raw.crv.as_deref() {
                Some("P-256") => {
                    let point = ec_point::<32>(&x, &y)?;
                    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| "is not a point on P-256".to_string())?;
                    KeyMaterial::P256(Box::new(key))
                }
                Some("P-384") => {
                    let point = ec_point::<48>(&x, &y)?;
                    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| "is not a point on P-384".to_string())?;
                    KeyMaterial::P384(Box::new(key))
                }
                Some(other) => return Err(format!("has unsupported curve `{other}`")),
                None => return Err("has no `crv`".into()),
            }
        }
        Some("OKP") => match raw.crv.as_deref() {
            Some("Ed25519") => {
                let x = member(&raw.x, "x")?;
                let bytes: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| "has an Ed25519 `x` that is not 32 bytes".to_string())?;
                KeyMaterial::ed25519(&bytes)?
            }
            Some(other) => return Err(format!("has unsupported curve `{other}`")),
            None => return Err("has no `crv`".into()),
        },
        Some("oct") if source == JwkSource::Config => {
            let k = member(&raw.k, "k")?;
            KeyMaterial::Hmac(k)
        }
        Some("oct") => return Err("is a symmetric (`oct`) key; not taken from a JWKS".into()),
        Some(other) => return Err(format!("has unsupported kty `{other}`")),
        None => return Err("has no `kty`".into()),
    };

    let family = material.family();
    if family.is_empty() {
        // Only HMAC secrets shorter than 32 bytes get here.
        return Err("is an HMAC secret shorter than 32 bytes".into());
    }
    let mut algorithms = family.intersect(allowed);
    if let Some(alg) = &raw.alg {
        let alg =
            Algorithm::from_name(alg).ok_or_else(|| format!("has unsupported alg `{alg}`"))?;
        if !family.contains(alg) {
            return Err(format!(
                "has alg `{alg}`, which this key ({}) cannot verify",
                material.kind()
            ));
        }
        algorithms = algorithms.intersect(AlgSet::of(&[alg]));
    }
    if algorithms.is_empty() {
        return Err(format!(
            "allows no algorithm (this key ({}) verifies {family}; allowed here: {allowed})",
            material.kind()
        ));
    }
    Ok(Key {
        kid: raw.kid,
        algorithms,
        material,
    })
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = value.as_deref().ok_or_else(|| format!("has no `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("has a `{name}` that is not base64url"))
}

/// An uncompressed SEC1 point from fixed-length coordinates.
fn ec_point<const N: usize>(x: &[u8], y: &[u8]) -> Result<Vec<u8>, String> {
    if x.len() != N || y.len() != N {
        return Err(format!("has EC coordinates that are not {N} bytes"));
    }
    let mut point = Vec::with_capacity(1 + 2 * N);
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Ok(point)
}

/// The usable keys of a JWKS document and the reasons others were skipped.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    /// Keys that can verify something allowed.
    pub keys: Vec<Key>,
    /// One line per skipped key: its index, kid (escaped, truncated) and why.
    pub skipped: Vec<String>,
}

/// Parses a JWKS document (`{"keys": [...]}`), keeping at most [`MAX_JWKS_KEYS`] usable
/// keys. Unusable keys are skipped, not fatal: an identity provider may publish encryption
/// keys or curves this policy does not support beside the signing keys it needs.
///
/// # Errors
/// When the document is not JSON with a `keys` array.
pub fn parse_jwks(body: &[u8], allowed: AlgSet) -> Result<ParsedJwks, String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<Value>,
    }
    if crate::token::json_depth(body) > crate::token::MAX_JSON_DEPTH {
        return Err("not a JWKS document: JSON nested too deeply".into());
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWKS document (JSON with a `keys` array): {e}"))?;
    let mut parsed = ParsedJwks::default();
    for (i, value) in doc.keys.iter().enumerate() {
        if parsed.keys.len() == MAX_JWKS_KEYS {
            parsed.skipped.push(format!(
                "keys[{i}..]: over the limit of {MAX_JWKS_KEYS} keys"
            ));
            break;
        }
        match parse_jwk(value, JwkSource::Jwks, allowed) {
            Ok(key) => parsed.keys.push(key),
            Err(why) => {
                let kid = value.get("kid").and_then(Value::as_str).unwrap_or("");
                parsed
                    .skipped
                    .push(format!("keys[{i}] (kid {}): {why}", printable(kid, 64)));
            }
        }
    }
    Ok(parsed)
}

/// `text` escaped for a log line and cut to `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use serde_json::json;

    #[test]
    fn parses_each_public_key_type() {
        for (jwk, kind, algs) in [
            (testkeys::rsa_a_jwk("r"), "RSA public key", AlgSet::RSA),
            (testkeys::p256_jwk("e"), "P-256 public key", AlgSet::P256),
            (testkeys::p384_jwk("e3"), "P-384 public key", AlgSet::P384),
            (
                testkeys::ed25519_jwk("o"),
                "Ed25519 public key",
                AlgSet::ED25519,
            ),
        ] {
            let key = parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).unwrap();
            assert_eq!(key.material.kind(), kind);
            assert_eq!(key.algorithms, algs);
        }
    }

    #[test]
    fn alg_member_restricts_the_key() {
        let mut jwk = testkeys::rsa_a_jwk("r");
        jwk["alg"] = json!("PS256");
        let key = parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).unwrap();
        assert_eq!(key.algorithms, AlgSet::of(&[Algorithm::PS256]));
        jwk["alg"] = json!("HS256");
        let err = parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).err().unwrap();
        assert!(err.contains("cannot verify"), "{err}");
        jwk["alg"] = json!("none");
        assert!(parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).is_err());
    }

    #[test]
    fn oct_only_from_config() {
        let jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 32]), "kid": "h"});
        let key = parse_jwk(&jwk, JwkSource::Config, AlgSet::ALL).unwrap();
        assert_eq!(key.algorithms, AlgSet::of(&[Algorithm::HS256]));
        assert!(parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).is_err());
        let short = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 16])});
        let err = parse_jwk(&short, JwkSource::Config, AlgSet::ALL)
            .err()
            .unwrap();
        assert!(err.contains("shorter than 32 bytes"), "{err}");
    }

    #[test]
    fn refuses_bad_keys() {
        let mut enc = testkeys::p256_jwk("e");
        enc["use"] = json!("enc");
        let mut ops = testkeys::p256_jwk("e");
        ops["key_ops"] = json!(["encrypt"]);
        let mut off_curve = testkeys::p256_jwk("e");
        off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        let mut short_x = testkeys::p256_jwk("e");
        short_x["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]));
        let mut wrong_crv = testkeys::p256_jwk("e");
        wrong_crv["crv"] = json!("P-384");
        let mut p521 = testkeys::p256_jwk("e");
        p521["crv"] = json!("P-521");
        let mut small_rsa = testkeys::rsa_a_jwk("r");
        small_rsa["n"] = json!(URL_SAFE_NO_PAD.encode([0xffu8; 128]));
        let mut padded_n = testkeys::rsa_a_jwk("r");
        let n = URL_SAFE_NO_PAD
            .decode(padded_n["n"].as_str().unwrap())
            .unwrap();
        padded_n["n"] = json!(URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat()));
        for (name, jwk) in [
            ("use enc", enc),
            ("key_ops", ops),
            ("off curve", off_curve),
            ("short x", short_x),
            ("wrong crv", wrong_crv),
            ("p521", p521),
            ("1024-bit rsa", small_rsa),
            ("padded n", padded_n),
            ("no kty", json!({"x": "AA"})),
            ("string", json!("key")),
            ("x25519", json!({"kty": "OKP", "crv": "X25519", "x": "AA"})),
        ] {
            assert!(
                parse_jwk(&jwk, JwkSource::Jwks, AlgSet::ALL).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn jwks_skips_unusable_keys_and_caps_count() {
        let doc = json!({"keys": [
            testkeys::p256_jwk("a"),
            {"kty": "RSA", "use": "enc", "kid": "enc\n1"},
            testkeys::ed25519_jwk("b"),
        ]});
        let parsed = parse_jwks(doc.to_string().as_bytes(), AlgSet::ALL).unwrap();
        assert_eq!(parsed.keys.len(), 2);
        assert_eq!(parsed.skipped.len(), 1);
        assert!(
            parsed.skipped[0].contains("\"enc\\n1\""),
            "{:?}",
            parsed.skipped
        );

        let many: Vec<Value> = (0..MAX_JWKS_KEYS + 5)
            .map(|i| testkeys::ed25519_jwk(&i.to_string()))
            .collect();
        let doc = json!({ "keys": many }).to_string();
        let parsed = parse_jwks(doc.as_bytes(), AlgSet::ALL).unwrap();
        assert_eq!(parsed.keys.len(), MAX_JWKS_KEYS);

        assert!(parse_jwks(b"{}", AlgSet::ALL).is_err());
        assert!(parse_jwks(b"<html>", AlgSet::ALL).is_err());
    }

    #[test]
    fn global_allowlist_applies() {
        let only_es256 = AlgSet::of(&[Algorithm::ES256]);
        let err = parse_jwk(&testkeys::rsa_a_jwk("r"), JwkSource::Jwks, only_es256)
            .err()
            .unwrap();
        assert!(err.contains("allows no algorithm"), "{err}");
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\"b\n", 10), "\"a\\\"b\\n\"");
        assert_eq!(printable("abcdef", 3), "\"abc…\"");
    }
}
