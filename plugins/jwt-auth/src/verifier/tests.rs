//! The verification core against the security battery: row 5 (the JWT attack matrix, with
//! a valid control token per algorithm) and row 6 (JWKS rotation, unknown-kid flood,
//! failing endpoint), with a scripted environment that records every fetch.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::alg::Algorithm;
use crate::config::Config;
use crate::env::fake::FakeEnv;
use crate::testkeys::{self, TestSigner, sign, sign_as, sign_raw, signer_for};
use crate::token::MAX_KID_LEN;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://idp.example";
const JWKS_URL: &str = "https://idp.example/jwks.json";

fn hmac_secret() -> String {
    // 84 bytes: enough for HS256, HS384 and HS512.
    testkeys::HMAC_SECRET.repeat(2)
}

/// Inline keys for every algorithm, each with a kid.
fn inline_config() -> Value {
    json!({
        "keys": [
            {"kid": "hs", "secret": hmac_secret()},
            {"kid": "rsa", "pem": testkeys::rsa_a_public_pem()},
            {"kid": "p256", "pem": testkeys::p256_public_pem()},
            {"jwk": testkeys::p384_jwk("p384")},
            {"kid": "ed", "jwk": testkeys::ed25519_jwk("ed")},
        ],
        "issuer": ISS,
        "audience": "api",
    })
}

fn verifier(config: Value) -> Verifier {
    let config = Config::from_json(&config.to_string()).unwrap();
    Verifier::new(config.validate().unwrap())
}

fn kid_for(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hs",
        Algorithm::ES256 => "p256",
        Algorithm::ES384 => "p384",
        Algorithm::EdDSA | Algorithm::Ed25519 => "ed",
        _ => "rsa",
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": "api",
        "sub": "alice",
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "iat": NOW - 10,
    })
}

fn header(alg: Algorithm) -> Value {
    json!({"alg": alg.name(), "typ": "JWT", "kid": kid_for(alg)})
}

fn control(alg: Algorithm) -> String {
    sign(&header(alg), &claims(), &signer_for(alg))
}

fn check(v: &mut Verifier, token: &str) -> Result<Claims, AuthError> {
    let mut env = FakeEnv::at(NOW);
    let result = v.verify(token, &mut env);
    assert!(env.fetched.is_empty(), "unexpected fetch {:?}", env.fetched);
    result.map(|verified| verified.claims)
}

// ---- row 5: the attack matrix ----

#[test]
fn control_token_for_each_algorithm_is_accepted() {
    let mut v = verifier(inline_config());
    for alg in Algorithm::ALL {
        let claims = check(&mut v, &control(alg)).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["sub"], "alice", "{alg}");
    }
}

#[test]
fn alg_none_in_every_casing_is_refused() {
    let mut v = verifier(inline_config());
    for casing in ["none", "None", "NONE", "nONE", "NoNe", "nonE"] {
        let header = json!({"alg": casing, "kid": "hs"});
        // With an empty signature, a junk signature and a valid HMAC over the input.
        let unsigned = sign_raw(&header, &claims(), b"");
        assert!(check(&mut v, &unsigned).is_err(), "{casing} unsigned");
        let junk = sign_raw(&header, &claims(), b"junk");
        assert_eq!(check(&mut v, &junk), Err(AuthError::AlgNone), "{casing}");
        let hmac = sign_as(
            Algorithm::HS256,
            &header,
            &claims(),
            &signer_for(Algorithm::HS256),
        );
        assert_eq!(check(&mut v, &hmac), Err(AuthError::AlgNone), "{casing}");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    use rsa::pkcs8::EncodePublicKey;
    let public = rsa::RsaPublicKey::from(&testkeys::rsa_a());
    let der = public.to_public_key_der().unwrap().as_bytes().to_vec();
    let secrets = [
        testkeys::rsa_a_public_pem().into_bytes(),
        testkeys::rsa_a_public_pem().trim().as_bytes().to_vec(),
        testkeys::rsa_a_public_pkcs1_pem().into_bytes(),
        der,
    ];
    // The RSA key given as PEM with a kid, as a JWK, and without a kid.
    let configs = [
        json!({"keys": [{"kid": "rsa", "pem": testkeys::rsa_a_public_pem()}], "audience": "api"}),
        json!({"keys": [{"jwk": testkeys::rsa_a_jwk("rsa")}], "audience": "api"}),
        json!({"keys": [{"pem": testkeys::rsa_a_public_pem()}], "audience": "api"}),
    ];
    for config in configs {
        let mut v = verifier(config);
        for secret in &secrets {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let token = sign(
                    &json!({"alg": alg.name(), "kid": "rsa"}),
                    &claims(),
                    &TestSigner::Hmac(secret.clone()),
                );
                assert_eq!(
                    check(&mut v, &token),
                    Err(AuthError::NoMatchingKey),
                    "{alg}"
                );
            }
        }
        // The control: the same key verifies a genuine RS256 token.
        check(&mut v, &control(Algorithm::RS256)).unwrap();
    }
}

#[test]
fn other_cross_family_confusions_are_refused() {
    let mut v = verifier(inline_config());
    // An ES256 token naming the RSA key, an RS256 token naming the EC key, EdDSA naming HMAC.
    for (alg, kid, signer) in [
        (Algorithm::ES256, "rsa", TestSigner::P256),
        (Algorithm::RS256, "p256", TestSigner::RsaA),
        (Algorithm::EdDSA, "hs", TestSigner::Ed25519),
        (Algorithm::ES384, "p256", TestSigner::P384),
    ] {
        let token = sign(&json!({"alg": alg.name(), "kid": kid}), &claims(), &signer);
        assert_eq!(
            check(&mut v, &token),
            Err(AuthError::NoMatchingKey),
            "{alg}/{kid}"
        );
    }
}

#[test]
fn embedded_jwk_is_refused_without_use() {
    // The attacker signs with their own key and embeds its public half.
    let attacker = p256::ecdsa::SigningKey::from_slice(&[0x44; 32]).unwrap();
    let point = attacker.verifying_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    let header = json!({"alg": "ES256", "kid": "p256", "jwk": jwk});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let sig: p256::ecdsa::Signature = signature::Signer::sign(&attacker, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    let mut v = verifier(inline_config());
    assert_eq!(
        check(&mut v, &token),
        Err(AuthError::ForbiddenHeader("jwk"))
    );
    // Even validly signed by the configured key, a token carrying `jwk` is refused.
    let token = sign(&header, &claims(), &TestSigner::P256);
    assert_eq!(
        check(&mut v, &token),
        Err(AuthError::ForbiddenHeader("jwk"))
    );
}

#[test]
fn jku_x5u_x5c_headers_are_refused_and_never_fetched() {
    let mut config = inline_config();
    config["jwks_url"] = json!(JWKS_URL);
    let mut v = verifier(config);
    for (param, value) in [
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ] {
        let mut header = header(Algorithm::RS256);
        header[param] = value;
        let token = sign(&header, &claims(), &TestSigner::RsaA);
        let mut env = FakeEnv::at(NOW);
        assert_eq!(
            v.verify(&token, &mut env),
            Err(AuthError::ForbiddenHeader(param))
        );
        // Refused before any key lookup: not even the configured JWKS was fetched.
        assert!(env.fetched.is_empty(), "{param}: fetched {:?}", env.fetched);
    }
}

#[test]
fn crit_header_is_refused() {
    let mut v = verifier(inline_config());
    let mut header = header(Algorithm::ES256);
    header["crit"] = json!(["b64"]);
    header["b64"] = json!(false);
    let token = sign(&header, &claims(), &TestSigner::P256);
    assert_eq!(
        check(&mut v, &token),
        Err(AuthError::ForbiddenHeader("crit"))
    );
}

fn hostile_kids() -> Vec<String> {
    vec![
        "../../../../etc/passwd".into(),
        "/dev/null".into(),
        "..\\..\\windows\\win.ini".into(),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        "' OR '1'='1".into(),
        "https://evil.example/key.pem".into(),
        "file:///etc/passwd".into(),
        "rsa\0".into(),
        "rsa\r\nX-Injected: 1".into(),
        "\u{202e}asr".into(),
        "RSA".into(),
        " rsa".into(),
        "".into(),
        "k".repeat(MAX_KID_LEN),
    ]
}

#[test]
fn hostile_kid_is_only_an_opaque_lookup_key() {
    let mut v = verifier(inline_config());
    for kid in hostile_kids() {
        let token = sign(
            &json!({"alg": "RS256", "kid": kid}),
            &claims(),
            &TestSigner::RsaA,
        );
        assert_eq!(
            check(&mut v, &token),
            Err(AuthError::NoMatchingKey),
            "{kid:?}"
        );
    }
    for len in [MAX_KID_LEN + 1, 10_000] {
        let token = sign(
            &json!({"alg": "RS256", "kid": "k".repeat(len)}),
            &claims(),
            &TestSigner::RsaA,
        );
        // Too long to be looked up at all (and a 10 kB kid is over max_token_bytes).
        assert!(check(&mut v, &token).is_err(), "{len}");
    }
    let huge = sign(
        &json!({"alg": "RS256", "kid": "k".repeat(10_000)}),
        &claims(),
        &TestSigner::RsaA,
    );
    assert_eq!(check(&mut v, &huge), Err(AuthError::TooLarge));
}

#[test]
fn hostile_kid_against_a_jwks_fetches_only_the_configured_url() {
    let mut v = verifier(json!({"jwks_url": JWKS_URL, "issuer": ISS, "audience": "api"}));
    let mut env = FakeEnv::at(NOW);
    env.default_answer = Some(Ok(jwks(&[testkeys::rsa_a_jwk("rsa")])));
    for kid in hostile_kids() {
        let token = sign(
            &json!({"alg": "RS256", "kid": kid}),
            &claims(),
            &TestSigner::RsaA,
        );
        assert_eq!(v.verify(&token, &mut env), Err(AuthError::NoMatchingKey));
    }
    // One fetch for the first load; the unknown kids' refetch is rate-limited.
    assert_eq!(env.fetched, vec![JWKS_URL.to_string()]);
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let mut v = verifier(inline_config());
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::Expired));
    // Within the default 30 s leeway it still passes.
    c["exp"] = json!(NOW - 29);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    check(&mut v, &token).unwrap();

    let mut c = claims();
    c["nbf"] = json!(NOW + 31);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::NotYetValid));
    c["nbf"] = json!(NOW + 29);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    check(&mut v, &token).unwrap();

    // exp is required by default.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    assert_eq!(
        check(&mut v, &token),
        Err(AuthError::MissingClaim("exp".into()))
    );
}

#[test]
fn configured_leeway_applies() {
    let mut config = inline_config();
    config["leeway"] = json!("0s");
    let mut v = verifier(config);
    let mut c = claims();
    c["exp"] = json!(NOW - 1);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::Expired));
}

#[test]
fn wrong_issuer_audience_and_type_are_refused() {
    let mut config = inline_config();
    config["typ"] = json!("at+jwt");
    let mut v = verifier(config);
    let at_header = || {
        let mut h = header(Algorithm::ES256);
        h["typ"] = json!("at+JWT");
        h
    };
    check(&mut v, &sign(&at_header(), &claims(), &TestSigner::P256)).unwrap();
    let mut app = at_header();
    app["typ"] = json!("application/at+jwt");
    check(&mut v, &sign(&app, &claims(), &TestSigner::P256)).unwrap();

    for typ in [json!("JWT"), json!(null), json!("at+jwt2")] {
        let mut h = at_header();
        h["typ"] = typ.clone();
        let token = sign(&h, &claims(), &TestSigner::P256);
        assert_eq!(check(&mut v, &token), Err(AuthError::WrongType), "{typ}");
    }
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    let token = sign(&at_header(), &c, &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::WrongIssuer));
    let mut c = claims();
    c["aud"] = json!(["other", "api-x"]);
    let token = sign(&at_header(), &c, &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::WrongAudience));
    let mut c = claims();
    c["aud"] = json!(["other", "api"]);
    let token = sign(&at_header(), &c, &TestSigner::P256);
    check(&mut v, &token).unwrap();
}

#[test]
fn ecdsa_zero_signatures_are_refused() {
    let mut v = verifier(inline_config());
    for (alg, len) in [(Algorithm::ES256, 64), (Algorithm::ES384, 96)] {
        // r = s = 0 ("psychic signatures", CVE-2022-21449).
        let token = sign_raw(&header(alg), &claims(), &vec![0; len]);
        assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature), "{alg}");
        // r = 0 with a real s, and s = 0 with a real r.
        let real = URL_SAFE_NO_PAD
            .decode(control(alg).rsplit('.').next().unwrap())
            .unwrap();
        let mut r0 = real.clone();
        r0[..len / 2].fill(0);
        let mut s0 = real.clone();
        s0[len / 2..].fill(0);
        for sig in [r0, s0] {
            let token = sign_raw(&header(alg), &claims(), &sig);
            assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature), "{alg}");
        }
        // r = s = n (the group order, which reduces to 0).
        let order: &[u8] = if alg == Algorithm::ES256 {
            &hex_literal_p256_order()
        } else {
            &hex_literal_p384_order()
        };
        let token = sign_raw(&header(alg), &claims(), &[order, order].concat());
        assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature), "{alg}");
    }
    // The direct check on the crate, as the brief asks: zero scalars do not parse.
    assert!(p256::ecdsa::Signature::from_slice(&[0; 64]).is_err());
    assert!(p384::ecdsa::Signature::from_slice(&[0; 96]).is_err());
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_literal_p256_order() -> Vec<u8> {
    hex_decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
}

fn hex_literal_p384_order() -> Vec<u8> {
    hex_decode(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf\
         581a0db248b0a77aecec196accc52973",
    )
}

#[test]
fn der_encoded_ecdsa_signatures_are_refused() {
    let mut v = verifier(inline_config());
    let token = control(Algorithm::ES256);
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let der = sig.to_der();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(der.as_bytes()));
    assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature));
}

#[test]
fn truncated_tokens_are_refused() {
    let mut v = verifier(inline_config());
    for alg in [
        Algorithm::HS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        let token = control(alg);
        let step = if alg == Algorithm::RS256 { 7 } else { 1 };
        for end in (0..token.len()).step_by(step) {
            assert!(check(&mut v, &token[..end]).is_err(), "{alg} cut at {end}");
        }
        check(&mut v, &token).unwrap();
    }
}

#[test]
fn tampered_tokens_are_refused() {
    let mut v = verifier(inline_config());
    for alg in Algorithm::ALL {
        let token = control(alg);
        let (header_b64, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        // Claims changed after signing.
        let mut c = claims();
        c["sub"] = json!("mallory");
        let forged = format!(
            "{header_b64}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        assert_eq!(
            check(&mut v, &forged),
            Err(AuthError::BadSignature),
            "{alg}"
        );
        // One bit of the signature flipped.
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[3] ^= 0x01;
        let flipped = format!(
            "{}.{}",
            &token[..token.rfind('.').unwrap()],
            URL_SAFE_NO_PAD.encode(&raw)
        );
        assert_eq!(
            check(&mut v, &flipped),
            Err(AuthError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn signature_by_another_key_is_refused() {
    let mut v = verifier(inline_config());
    let token = sign(&header(Algorithm::RS256), &claims(), &TestSigner::RsaB);
    assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature));
    let token = sign(
        &header(Algorithm::HS256),
        &claims(),
        &TestSigner::Hmac(b"another-secret-of-at-least-32-bytes!".to_vec()),
    );
    assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature));
}

#[test]
fn garbage_is_refused() {
    let mut v = verifier(inline_config());
    let mut seed = 0x1234_5678_u32;
    let mut garbage = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "Bearer".into(),
        "null".into(),
        "{}.{}.{}".into(),
        "eyJhbGciOiJIUzI1NiJ9".into(),
        "eyJhbGciOiJIUzI1NiJ9.".into(),
        "eyJhbGciOiJIUzI1NiJ9..".into(),
        "eyJhbGciOiJIUzI1NiJ9.e30.".into(),
        ".e30.c2ln".into(),
        "\u{0}\u{0}.\u{0}.\u{0}".into(),
        "ü.ö.ä".into(),
        "a".repeat(9000),
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("null")),
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("[1,2]")),
        format!(
            "{}.e30.c2ln",
            URL_SAFE_NO_PAD.encode(vec![0xff, 0xfe, 0x00])
        ),
    ];
    for _ in 0..200 {
        let len = (seed % 300) as usize;
        let s: String = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                b"abcXYZ019-_.=+/ {}\"\\"[(seed % 20) as usize] as char
            })
            .collect();
        garbage.push(s);
    }
    for g in &garbage {
        assert!(check(&mut v, g).is_err(), "accepted {g:?}");
    }
}

#[test]
fn payload_must_be_a_unique_json_object() {
    let mut v = verifier(inline_config());
    let header_b64 = URL_SAFE_NO_PAD.encode(header(Algorithm::HS256).to_string());
    for payload in [
        r#"{"sub":"alice","sub":"admin","exp":1700000300}"#,
        r#"["sub"]"#,
        "not json",
    ] {
        let input = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(payload));
        let sig = testkeys::sign_bytes(
            Algorithm::HS256,
            &signer_for(Algorithm::HS256),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert!(
            matches!(check(&mut v, &token), Err(AuthError::Malformed(_))),
            "{payload}"
        );
    }
}

#[test]
fn key_and_global_allowlists_apply() {
    let mut v = verifier(json!({"keys": [
        {"kid": "rsa", "pem": testkeys::rsa_a_public_pem(), "algorithms": ["PS256"]},
    ]}));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let rs = sign(&header(Algorithm::RS256), &c, &TestSigner::RsaA);
    assert_eq!(check(&mut v, &rs), Err(AuthError::NoMatchingKey));
    let ps = sign(&header(Algorithm::PS256), &c, &TestSigner::RsaA);
    check(&mut v, &ps).unwrap();

    // A global allowlist: only ES256 and RS256, whatever the keys could verify.
    let mut v = verifier(json!({
        "keys": [
            {"kid": "p256", "pem": testkeys::p256_public_pem()},
            {"kid": "rsa", "pem": testkeys::rsa_a_public_pem()},
        ],
        "algorithms": ["ES256", "RS256"],
        "audience": "api",
    }));
    for alg in Algorithm::ALL {
        let result = check(&mut v, &control(alg));
        if matches!(alg, Algorithm::ES256 | Algorithm::RS256) {
            result.unwrap();
        } else {
            assert_eq!(result, Err(AuthError::UnsupportedAlg), "{alg}");
        }
    }
    // A key the global allowlist leaves useless is a configuration error.
    let config = json!({"keys": [{"secret": hmac_secret()}], "algorithms": ["ES256"]});
    let err = Config::from_json(&config.to_string())
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.starts_with("keys[0]: allows no algorithm"), "{err}");
}

#[test]
fn keys_without_kid_match_any_token_with_their_algorithm() {
    let mut v = verifier(json!({"keys": [
        {"secret": "a-different-secret-that-is-32-bytes!"},
        {"secret": hmac_secret(), "algorithms": ["HS256"]},
        {"pem": testkeys::ed25519_public_pem()},
    ]}));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    for alg in [Algorithm::HS256, Algorithm::EdDSA] {
        let token = sign(&json!({"alg": alg.name()}), &c, &signer_for(alg));
        check(&mut v, &token).unwrap();
        let token = sign(
            &json!({"alg": alg.name(), "kid": "x"}),
            &c,
            &signer_for(alg),
        );
        check(&mut v, &token).unwrap();
    }
    let hs512 = sign(&json!({"alg": "HS512"}), &c, &signer_for(Algorithm::HS512));
    assert_eq!(check(&mut v, &hs512), Err(AuthError::NoMatchingKey));
}

#[test]
fn keys_with_kid_need_a_token_naming_it() {
    let mut v = verifier(inline_config());
    let mut h = header(Algorithm::ES256);
    h.as_object_mut().unwrap().remove("kid");
    let token = sign(&h, &claims(), &TestSigner::P256);
    assert_eq!(check(&mut v, &token), Err(AuthError::NoMatchingKey));
}

#[test]
fn candidate_keys_are_bounded() {
    let mut keys: Vec<Value> = (0..MAX_CANDIDATE_KEYS + 2)
        .map(|i| json!({"secret": format!("decoy-secret-number-{i:02}-padding-padding")}))
        .collect();
    keys.push(json!({"secret": hmac_secret()}));
    let mut v = verifier(json!({ "keys": keys }));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let token = sign(&json!({"alg": "HS256"}), &c, &signer_for(Algorithm::HS256));
    // The right key is beyond the bound: refused rather than tried.
    assert_eq!(check(&mut v, &token), Err(AuthError::BadSignature));
}

// ---- row 6: the JWKS cache ----

fn jwks(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

fn jwks_verifier() -> Verifier {
    verifier(json!({
        "jwks_url": JWKS_URL,
        "jwks_ttl": "5m",
        "jwks_min_refetch": "30s",
        "issuer": ISS,
        "audience": "api",
    }))
}

fn rs256(kid: &str, signer: TestSigner) -> String {
    sign(
        &json!({"alg": "RS256", "kid": kid}),
        &claims_at(NOW),
        &signer,
    )
}

fn eddsa(kid: &str) -> String {
    sign(
        &json!({"alg": "EdDSA", "kid": kid}),
        &claims_at(NOW),
        &TestSigner::Ed25519,
    )
}

fn claims_at(now: u64) -> Value {
    let mut c = claims();
    c["exp"] = json!(now + 86_400);
    c
}

#[test]
fn jwks_is_fetched_once_and_cached() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let t1 = eddsa("k1");
    env.answers.push_back(Ok(jwks(&[
        testkeys::ed25519_jwk("k1"),
        testkeys::p256_jwk("e1"),
    ])));
    for _ in 0..50 {
        v.verify(&t1, &mut env).unwrap();
        env.advance_secs(1);
    }
    assert_eq!(env.fetched.len(), 1);
    assert_eq!(v.jwks().unwrap().keys().len(), 2);
}

#[test]
fn jwks_refreshes_after_ttl() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let t1 = rs256("k1", TestSigner::RsaA);
    env.default_answer = Some(Ok(jwks(&[testkeys::rsa_a_jwk("k1")])));
    v.verify(&t1, &mut env).unwrap();
    env.advance_secs(299);
    v.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 1);
    env.advance_secs(1);
    v.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2);
}

#[test]
fn jwks_rotation_new_key_accepted_after_one_refetch() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let (t1, t2) = (rs256("k1", TestSigner::RsaA), rs256("k2", TestSigner::RsaB));
    env.answers
        .push_back(Ok(jwks(&[testkeys::rsa_a_jwk("k1")])));
    v.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 1);

    // The identity provider rotates to k2 (and drops k1) a minute later.
    env.advance_secs(60);
    env.answers
        .push_back(Ok(jwks(&[testkeys::rsa_b_jwk("k2")])));
    v.verify(&t2, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2, "exactly one refetch");
    // Now k2 is cached: no more fetches for it.
    for _ in 0..10 {
        v.verify(&t2, &mut env).unwrap();
    }
    assert_eq!(env.fetched.len(), 2);
    // k1 is gone from the new set.
    assert_eq!(v.verify(&t1, &mut env), Err(AuthError::NoMatchingKey));
    assert_eq!(env.fetched.len(), 2, "rate-limited");
}

#[test]
fn jwks_rotation_right_after_a_fetch_waits_for_min_refetch() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let (t1, t2) = (rs256("k1", TestSigner::RsaA), rs256("k2", TestSigner::RsaB));
    env.answers
        .push_back(Ok(jwks(&[testkeys::rsa_a_jwk("k1")])));
    v.verify(&t1, &mut env).unwrap();
    env.default_answer = Some(Ok(jwks(&[testkeys::rsa_b_jwk("k2")])));
    env.advance_secs(10);
    assert_eq!(v.verify(&t2, &mut env), Err(AuthError::NoMatchingKey));
    assert_eq!(env.fetched.len(), 1);
    env.advance_secs(20);
    v.verify(&t2, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2);
}

#[test]
fn unknown_kid_flood_is_rate_limited() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let t1 = eddsa("k1");
    env.default_answer = Some(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    v.verify(&t1, &mut env).unwrap();
    // 2,000 tokens with made-up kids over 100 seconds: one refetch per 30 s at most.
    for i in 0..2000u64 {
        let kid = format!("flood-{i}");
        // Refused before any signature check, so the signature can be junk.
        let token = sign_raw(
            &json!({"alg": "ES256", "kid": kid}),
            &claims_at(NOW),
            &[1; 64],
        );
        assert_eq!(v.verify(&token, &mut env), Err(AuthError::NoMatchingKey));
        if i % 20 == 19 {
            env.advance_secs(1);
        }
    }
    // The initial load at t = 0, then one refetch at each of t = 30, 60 and 90 s.
    assert_eq!(env.fetched.len(), 4);
    // Valid tokens kept working throughout.
    v.verify(&t1, &mut env).unwrap();
}

#[test]
fn failing_endpoint_keeps_cached_keys() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let t1 = eddsa("k1");
    env.answers
        .push_back(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    v.verify(&t1, &mut env).unwrap();
    // The endpoint goes down: errors, garbage, an empty set.
    env.default_answer = Some(Err("status 503".into()));
    env.answers.push_back(Err("timeout".into()));
    env.answers.push_back(Ok(b"<html>oops</html>".to_vec()));
    env.answers.push_back(Ok(jwks(&[])));
    // Well past the TTL, for an hour, a request every 5 s.
    env.advance_secs(301);
    for _ in 0..720 {
        v.verify(&t1, &mut env).unwrap();
        env.advance_secs(5);
    }
    // Refresh attempts are rate-limited to one per 30 s.
    let fetches = env.fetched.len();
    assert!((110..=125).contains(&fetches), "{fetches} fetches");
    assert!(
        env.logs
            .iter()
            .any(|(l, m)| *l == LogLevel::Warn && m.contains("keeping 1 cached key")),
        "{:?}",
        env.logs.last()
    );
    // When it recovers, the next refresh loads the new set.
    env.default_answer = Some(Ok(jwks(&[testkeys::rsa_b_jwk("k2")])));
    env.advance_secs(30);
    v.verify(&rs256("k2", TestSigner::RsaB), &mut env).unwrap();
}

#[test]
fn endpoint_down_at_start_recovers_after_min_refetch() {
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    let t1 = eddsa("k1");
    env.answers.push_back(Err("connection refused".into()));
    for _ in 0..100 {
        assert_eq!(v.verify(&t1, &mut env), Err(AuthError::NoMatchingKey));
    }
    assert_eq!(env.fetched.len(), 1);
    env.answers
        .push_back(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    env.advance_secs(30);
    v.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2);
}

#[test]
fn jwks_never_supplies_hmac_keys() {
    // A JWKS publishing an `oct` key must not make HS256 tokens verifiable with it.
    let secret = hmac_secret();
    let mut v = jwks_verifier();
    let mut env = FakeEnv::at(NOW);
    env.default_answer = Some(Ok(jwks(&[
        json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(&secret)}),
        testkeys::rsa_a_jwk("k1"),
    ])));
    let token = sign(
        &json!({"alg": "HS256", "kid": "h"}),
        &claims_at(NOW),
        &TestSigner::Hmac(secret.into_bytes()),
    );
    assert_eq!(v.verify(&token, &mut env), Err(AuthError::NoMatchingKey));
    assert_eq!(v.jwks().unwrap().keys().len(), 1);
}

#[test]
fn inline_keys_work_beside_the_jwks_when_it_is_down() {
    let mut config = inline_config();
    config["jwks_url"] = json!(JWKS_URL);
    let mut v = verifier(config);
    let mut env = FakeEnv::at(NOW);
    env.default_answer = Some(Err("down".into()));
    for alg in Algorithm::ALL {
        v.verify(&control(alg), &mut env).unwrap();
    }
    assert_eq!(env.fetched.len(), 1);
}

#[test]
fn instances_share_the_document_and_the_fetch_claim() {
    let mut env = FakeEnv::at(NOW);
    env.default_answer = Some(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    let t1 = eddsa("k1");
    let mut a = jwks_verifier();
    let mut b = jwks_verifier();
    a.verify(&t1, &mut env).unwrap();
    b.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 1, "b started from the shared document");
    assert_eq!(b.jwks().unwrap().fetches(), 0);

    // Rotation: a fetches, b adopts a's document.
    env.advance_secs(40);
    env.default_answer = Some(Ok(jwks(&[testkeys::p256_jwk("k2")])));
    let t2 = sign(
        &json!({"alg": "ES256", "kid": "k2"}),
        &claims_at(NOW),
        &TestSigner::P256,
    );
    a.verify(&t2, &mut env).unwrap();
    b.verify(&t2, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2);

    // A fresh instance per request: still one fetch per jwks_min_refetch in all.
    let before = env.fetched.len();
    for i in 0..900u64 {
        let mut fresh = jwks_verifier();
        fresh.verify(&t2, &mut env).unwrap();
        let flood = sign_raw(
            &json!({"alg": "ES256", "kid": format!("f{i}")}),
            &claims_at(NOW),
            &[1; 64],
        );
        assert_eq!(
            fresh.verify(&flood, &mut env),
            Err(AuthError::NoMatchingKey)
        );
        if i % 10 == 9 {
            env.advance_secs(1);
        }
    }
    // Requests from t = 40 s to 129.9 s; the claim of the fetch at 40 s frees at 70 s,
    // the next at 100 s: two fetches.
    assert_eq!(env.fetched.len() - before, 2);
}

#[test]
fn new_instances_use_the_shared_document_while_the_endpoint_is_down() {
    let mut env = FakeEnv::at(NOW);
    env.answers
        .push_back(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    let t1 = eddsa("k1");
    jwks_verifier().verify(&t1, &mut env).unwrap();
    env.default_answer = Some(Err("down".into()));
    // Long past the TTL, a new instance starts from the stale shared copy and keeps using
    // it while its refresh attempts fail.
    env.advance_secs(3600);
    let mut fresh = jwks_verifier();
    fresh.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2, "one failed refresh attempt");
    fresh.verify(&t1, &mut env).unwrap();
    assert_eq!(env.fetched.len(), 2);
}

#[test]
fn kv_down_falls_back_to_the_local_limit() {
    let mut env = FakeEnv::at(NOW);
    env.kv_down = true;
    env.default_answer = Some(Ok(jwks(&[testkeys::ed25519_jwk("k1")])));
    let t1 = eddsa("k1");
    let mut v = jwks_verifier();
    v.verify(&t1, &mut env).unwrap();
    for i in 0..1000u64 {
        let flood = sign_raw(
            &json!({"alg": "EdDSA", "kid": format!("f{i}")}),
            &claims_at(NOW),
            &[1; 64],
        );
        assert_eq!(v.verify(&flood, &mut env), Err(AuthError::NoMatchingKey));
    }
    assert_eq!(env.fetched.len(), 1);
    assert!(env.kv.is_empty());
}
