use serde_json::json;

use super::*;
use crate::testkeys;

fn validate(value: serde_json::Value) -> Result<Settings, String> {
    Config::from_json(&value.to_string())?.validate()
}

fn err(value: serde_json::Value) -> String {
    validate(value).unwrap_err()
}

fn secret_key() -> serde_json::Value {
    json!({"secret": testkeys::HMAC_SECRET})
}

#[test]
fn defaults_are_pinned() {
    let c = Config::default();
    assert_eq!(c.jwks_ttl, Duration::from_secs(300));
    assert_eq!(c.jwks_min_refetch, Duration::from_secs(30));
    assert_eq!(c.leeway, Duration::from_secs(30));
    assert_eq!(c.required_claims, vec!["exp".to_string()]);
    assert_eq!(
        c.claims_to_attributes,
        BTreeMap::from([("sub".to_string(), "consumer".to_string())])
    );
    assert!(c.forward_token);
    assert!(!c.jwks_allow_http);
    assert_eq!(c.realm, "sluice");
    assert_eq!(c.max_token_bytes, 8192);

    let s = validate(json!({"keys": [secret_key()]})).unwrap();
    assert_eq!(
        s.source,
        TokenSource::Header {
            name: "authorization".into(),
            scheme: Some("Bearer".into())
        }
    );
    assert_eq!(s.algorithms, AlgSet::ALL);
    assert!(s.rules.issuers.is_empty() && s.rules.audiences.is_empty());
    assert_eq!(s.attributes, vec![("sub".into(), "consumer".into())]);
}

#[test]
fn full_example_parses() {
    let s = validate(json!({
        "keys": [
            {"kid": "hs", "secret_base64": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "algorithms": ["HS256"]},
            {"kid": "rsa", "pem": testkeys::rsa_a_public_pem(), "algorithms": ["RS256", "PS256"]},
            {"jwk": testkeys::p256_jwk("ec")},
        ],
        "jwks_url": "https://idp.example/.well-known/jwks.json",
        "jwks_ttl": "10m",
        "jwks_min_refetch": 60,
        "issuer": ["https://idp.example", "https://idp2.example"],
        "audience": "api",
        "leeway": "5s",
        "typ": "application/AT+JWT",
        "required_claims": ["exp", "sub"],
        "token": {"cookie": "session"},
        "claims_to_attributes": {"sub": "consumer", "tenant": "tenant"},
        "forward_token": false,
        "realm": "api",
        "max_token_bytes": 4096,
    }))
    .unwrap();
    assert_eq!(s.keys.len(), 3);
    assert_eq!(s.keys[0].algorithms, AlgSet::of(&[Algorithm::HS256]));
    assert_eq!(
        s.keys[1].algorithms,
        AlgSet::of(&[Algorithm::RS256, Algorithm::PS256])
    );
    assert_eq!(s.keys[2].kid.as_deref(), Some("ec"));
    let jwks = s.jwks.unwrap();
    assert_eq!(jwks.ttl, Duration::from_secs(600));
    assert_eq!(jwks.min_refetch, Duration::from_secs(60));
    assert_eq!(s.typ.as_deref(), Some("at+jwt"));
    assert_eq!(s.rules.issuers.len(), 2);
    assert_eq!(s.source, TokenSource::Cookie("session".into()));
    assert_eq!(s.attributes.len(), 2);
    assert!(!s.forward_token);
}

#[test]
fn parse_errors_name_the_key() {
    for (json, want) in [
        (
            json!({"jwks_ttll": "5m"}),
            "jwks_ttll: unknown field `jwks_ttll`",
        ),
        (
            json!({"keys": [{"secrte": "x"}]}),
            "keys[0].secrte: unknown field `secrte`",
        ),
        (
            json!({"leeway": "soon"}),
            "leeway: invalid duration \"soon\"",
        ),
        (json!({"leeway": -1}), "leeway: expected a duration"),
        (
            json!({"keys": [secret_key(), {"secret": testkeys::HMAC_SECRET, "algorithms": ["none"]}]}),
            "keys[1].algorithms[0]: unsupported algorithm `none`",
        ),
        (
            json!({"algorithms": ["HS256", "NONE"]}),
            "algorithms[1]: unsupported algorithm `NONE`",
        ),
        (
            json!({"token": {"header": 5}}),
            "token.header: invalid type",
        ),
        (
            json!({"forward_token": "no"}),
            "forward_token: invalid type",
        ),
        (json!([]), "the configuration must be a table"),
    ] {
        let e = Config::from_json(&json.to_string()).unwrap_err();
        assert!(e.starts_with(want), "{json}: got {e:?}, want {want:?}");
    }
}

#[test]
fn validation_errors_name_the_key() {
    let pem = testkeys::rsa_a_public_pem();
    let cases = [
        (json!({}), "keys: give at least one key, or a jwks_url"),
        (json!({"keys": [{}]}), "keys[0]: give exactly one of"),
        (
            json!({"keys": [{"secret": "x", "pem": pem}]}),
            "keys[0]: give exactly one of",
        ),
        (
            json!({"keys": [{"secret": "too-short"}]}),
            "keys[0].secret: an HMAC secret must be at least 32 bytes (it has 9)",
        ),
        (
            json!({"keys": [{"secret_base64": "!!!"}]}),
            "keys[0].secret_base64: is not base64",
        ),
        (
            json!({"keys": [{"pem": testkeys::RSA_A_PRIVATE_PEM}]}),
            "keys[0].pem: is a private key",
        ),
        (
            json!({"keys": [{"pem": testkeys::RSA_1024_PUBLIC_PEM}]}),
            "keys[0].pem: RSA key has 1024 bits",
        ),
        (
            json!({"keys": [{"pem": pem, "algorithms": ["HS256"]}]}),
            "keys[0].algorithms: this key (RSA public key) cannot verify HS256",
        ),
        (
            json!({"keys": [{"secret": testkeys::HMAC_SECRET, "algorithms": ["HS512"]}]}),
            "keys[0].algorithms: this key (HMAC secret) cannot verify HS512",
        ),
        (
            json!({"keys": [{"pem": pem, "algorithms": []}]}),
            "keys[0].algorithms: must not be empty",
        ),
        (
            json!({"keys": [{"kid": "a", "jwk": testkeys::p256_jwk("b")}]}),
            "keys[0].kid: differs from the JWK's kid",
        ),
        (
            json!({"keys": [{"kid": "", "pem": pem}]}),
            "keys[0].kid: must be 1 to 256 bytes",
        ),
        (
            json!({"keys": [{"jwk": {"kty": "EC", "crv": "P-521"}}]}),
            "keys[0].jwk: has no `x`",
        ),
        (
            json!({"keys": [secret_key()], "algorithms": []}),
            "algorithms: must not be empty",
        ),
        (
            json!({"jwks_url": "http://idp.example/jwks"}),
            "jwks_url: must be https://",
        ),
        (
            json!({"jwks_url": "ftp://idp.example/jwks"}),
            "jwks_url: must be an https:// URL",
        ),
        (
            json!({"jwks_url": "https:///jwks"}),
            "jwks_url: must name a host",
        ),
        (
            json!({"jwks_url": "https://user:pw@idp.example/jwks"}),
            "jwks_url: must name a host (and no user info)",
        ),
        (
            json!({"jwks_url": "https://idp.example/jwks", "jwks_min_refetch": "0s"}),
            "jwks_min_refetch: must be at least 1s",
        ),
        (
            json!({"jwks_url": "https://idp.example/jwks", "jwks_ttl": "10s"}),
            "jwks_ttl: must be at least jwks_min_refetch",
        ),
        (
            json!({"keys": [secret_key()], "typ": " "}),
            "typ: must not be empty",
        ),
        (
            json!({"keys": [secret_key()], "issuer": ""}),
            "issuer: values must not be empty",
        ),
        (
            json!({"keys": [secret_key()], "audience": ["a", ""]}),
            "audience: values must not be empty",
        ),
        (
            json!({"keys": [secret_key()], "leeway": "1h"}),
            "leeway: must be at most 10m",
        ),
        (
            json!({"keys": [secret_key()], "required_claims": [""]}),
            "required_claims: names must not be empty",
        ),
        (
            json!({"keys": [secret_key()], "token": {"header": "a", "cookie": "b"}}),
            "token.header: give only one of",
        ),
        (
            json!({"keys": [secret_key()], "claims_to_attributes": {"sub": ""}}),
            "claims_to_attributes: claim and attribute names must not be empty",
        ),
        (
            json!({"keys": [secret_key()], "claims_to_attributes": {"sub": "a".repeat(4097)}}),
            "claims_to_attributes.sub: names make attributes over 4096 bytes",
        ),
        (
            json!({"keys": [secret_key()], "claims_to_attributes": {"s".repeat(4090): "a"}}),
            "claims_to_attributes.sss",
        ),
        (
            json!({"keys": [secret_key()], "claims_to_attributes":
                (0..32).map(|i| (format!("c{i}"), json!(format!("a{i}")))).collect::<serde_json::Map<_, _>>()}),
            "claims_to_attributes: at most 31 claims",
        ),
        (
            json!({"keys": [secret_key()], "realm": "a\"b"}),
            "realm: must be",
        ),
        (
            json!({"keys": [secret_key()], "max_token_bytes": 1}),
            "max_token_bytes: must be",
        ),
    ];
    for (json, want) in cases {
        let e = err(json.clone());
        assert!(e.starts_with(want), "{json}: got {e:?}, want {want:?}");
    }
}

#[test]
fn http_jwks_needs_opt_in() {
    let s = validate(json!({"jwks_url": "http://127.0.0.1:8080/jwks", "jwks_allow_http": true}))
        .unwrap();
    assert_eq!(s.jwks.unwrap().url, "http://127.0.0.1:8080/jwks");
}

#[test]
fn secret_base64_accepts_both_alphabets() {
    let bytes: Vec<u8> = (0u8..48).map(|i| i.wrapping_mul(37) ^ 0xfb).collect();
    for text in [STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
        let s = validate(json!({"keys": [{"secret_base64": text}]})).unwrap();
        match &s.keys[0].material {
            KeyMaterial::Hmac(secret) => assert_eq!(secret, &bytes),
            _ => panic!("not HMAC"),
        }
        assert_eq!(
            s.keys[0].algorithms,
            AlgSet::of(&[Algorithm::HS256, Algorithm::HS384])
        );
    }
}

#[test]
fn typ_normalisation() {
    assert_eq!(normalize_typ("JWT"), "jwt");
    assert_eq!(normalize_typ("application/at+jwt"), "at+jwt");
    assert_eq!(normalize_typ("Application/JWT"), "jwt");
}

#[test]
fn claims_to_attributes_accepts_as_many_claims_as_a_request_has_attributes_for() {
    let most: serde_json::Map<_, _> = (0..MAX_CLAIMS_TO_ATTRIBUTES)
        .map(|i| (format!("c{i}"), json!(format!("a{i}"))))
        .collect();
    let s = validate(json!({"keys": [secret_key()], "claims_to_attributes": most})).unwrap();
    // Each sets two attributes, and the credential one more.
    assert!(2 * s.attributes.len() < MAX_ATTRIBUTES);
    let longest = "c".repeat(MAX_ATTRIBUTE_BYTES - crate::policy::CLAIM_ATTRIBUTE_PREFIX.len());
    let a = "a".repeat(MAX_ATTRIBUTE_BYTES);
    assert!(
        validate(json!({"keys": [secret_key()], "claims_to_attributes": {longest: a}})).is_ok()
    );
}
