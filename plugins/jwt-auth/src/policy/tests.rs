//! The policy through the SDK's fake host: the security battery rows 5 and 6 as the gateway
//! would see them (status, challenge, body, context attributes, edits), with every outbound
//! request recorded by the fake `outbound-http`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sluice_sdk::http::{HttpError, HttpResponse};
use sluice_sdk::testing::{Capability, TestContext, TestHost, TestRequest, readme_configs};
use sluice_sdk::{LocalResponse, RequestDecision};

use super::*;
use crate::alg::Algorithm;
use crate::testkeys::{self, TestSigner, sign, sign_as, sign_raw, signer_for};

/// The fake host's wall clock at start, in seconds.
const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://idp.example";
const JWKS_URL: &str = "https://idp.example/.well-known/jwks.json";

fn hmac_secret() -> String {
    testkeys::HMAC_SECRET.repeat(2)
}

fn inline_config() -> Value {
    json!({
        "keys": [
            {"kid": "hs", "secret": hmac_secret()},
            {"kid": "rsa", "pem": testkeys::rsa_a_public_pem()},
            {"kid": "p256", "pem": testkeys::p256_public_pem()},
            {"jwk": testkeys::p384_jwk("p384")},
            {"jwk": testkeys::ed25519_jwk("ed")},
        ],
        "issuer": ISS,
        "audience": "api",
        "claims_to_attributes": {"sub": "consumer", "tenant": "tenant"},
    })
}

fn jwks_config() -> Value {
    json!({
        "jwks_url": JWKS_URL,
        "jwks_ttl": "5m",
        "jwks_min_refetch": "30s",
        "issuer": ISS,
        "audience": "api",
    })
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
        "iss": ISS, "aud": "api", "sub": "alice", "tenant": "acme",
        "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10,
    })
}

fn header(alg: Algorithm) -> Value {
    json!({"alg": alg.name(), "typ": "at+jwt", "kid": kid_for(alg)})
}

fn control(alg: Algorithm) -> String {
    sign(&header(alg), &claims(), &signer_for(alg))
}

fn bearer(token: &str) -> TestRequest {
    TestRequest::get("/orders").header("authorization", format!("Bearer {token}"))
}

fn init(host: &TestHost, config: Value) -> JwtAuth {
    host.init(config).unwrap()
}

fn jwks_body(keys: &[Value]) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::new(200, json!({ "keys": keys }).to_string()))
}

/// Asserts `decision` is the 401 invalid_token answer.
#[track_caller]
fn assert_invalid_token(decision: &RequestDecision, what: &str) -> LocalResponse {
    let response = decision
        .response()
        .unwrap_or_else(|| panic!("{what}: not refused: {decision:?}"))
        .clone();
    assert_eq!(response.status, 401, "{what}");
    let challenge = response.header_str("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(r#"Bearer realm="sluice", error="invalid_token""#),
        "{what}: {challenge}"
    );
    assert_eq!(
        response.header_str("content-type"),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"], "invalid_token", "{what}");
    response
}

// ---- accepted tokens ----

#[test]
fn control_token_per_algorithm_continues_with_claims_in_context() {
    let host = TestHost::with_grants(&[Capability::Log, Capability::Clock]);
    let policy = init(&host, inline_config());
    for alg in Algorithm::ALL {
        let ctx = TestContext::new();
        let decision = host.on_request(&policy, &bearer(&control(alg)), &ctx);
        assert!(decision.is_continue(), "{alg}: {decision:?}");
        assert_eq!(ctx.get("consumer").as_deref(), Some("alice"), "{alg}");
        assert_eq!(ctx.get("tenant").as_deref(), Some("acme"));
        assert_eq!(ctx.get("jwt.claim.sub").as_deref(), Some("alice"));
        assert_eq!(ctx.get("jwt.claim.tenant").as_deref(), Some("acme"));
        let credential = format!("jwt:{}", kid_for(alg));
        assert_eq!(ctx.get("credential"), Some(credential));
        // Claims not configured stay out of the context.
        assert_eq!(ctx.get("jwt.claim.iss"), None);
    }
    assert!(host.http_requests().is_empty());
}

#[test]
fn non_string_claims_become_json_text() {
    let host = TestHost::new();
    let mut config = inline_config();
    config["claims_to_attributes"] = json!({"roles": "roles", "level": "level"});
    let policy = init(&host, config);
    let mut c = claims();
    c["roles"] = json!(["admin", "ops"]);
    c["level"] = json!(3);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    let ctx = TestContext::new();
    assert!(
        host.on_request(&policy, &bearer(&token), &ctx)
            .is_continue()
    );
    assert_eq!(ctx.get("roles").as_deref(), Some(r#"["admin","ops"]"#));
    assert_eq!(ctx.get("jwt.claim.level").as_deref(), Some("3"));
    // The default mapping is replaced, not merged.
    assert_eq!(ctx.get("consumer"), None);
}

#[test]
fn a_mapped_claim_too_long_for_an_attribute_refuses_the_token_and_sets_nothing() {
    let host = TestHost::new();
    let mut config = inline_config();
    config["claims_to_attributes"] = json!({"sub": "consumer", "groups": "groups"});
    let policy = init(&host, config);
    let mut c = claims();
    c["groups"] = json!("g".repeat(sluice_sdk::context::MAX_ATTRIBUTE_BYTES + 1));
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    let ctx = TestContext::new();
    let decision = host.on_request(&policy, &bearer(&token), &ctx);
    assert_invalid_token(&decision, "a 4097-byte claim");
    assert_eq!(ctx.get("consumer"), None);
    assert_eq!(ctx.get("groups"), None);
}

#[test]
fn token_is_forwarded_by_default_and_stripped_on_request() {
    let host = TestHost::new();
    let token = control(Algorithm::EdDSA);
    let policy = init(&host, inline_config());
    let d = host.on_request(&policy, &bearer(&token), &TestContext::new());
    assert_eq!(d, RequestDecision::Continue);

    let mut config = inline_config();
    config["forward_token"] = json!(false);
    let policy = init(&host, config);
    let req = bearer(&token).header("x-other", "1");
    let d = host.on_request(&policy, &req, &TestContext::new());
    let forwarded = req.apply(d.edits().expect("edits"));
    assert_eq!(forwarded.get_header("authorization"), None);
    assert_eq!(forwarded.get_header("x-other"), Some("1"));
}

#[test]
fn query_and_cookie_sources_with_stripping() {
    let host = TestHost::new();
    let token = control(Algorithm::ES256);

    let mut config = inline_config();
    config["token"] = json!({"query": "access_token"});
    config["forward_token"] = json!(false);
    let policy = init(&host, config);
    let req = TestRequest::get(&format!("/a?x=1&access_token={token}&y=2"));
    let d = host.on_request(&policy, &req, &TestContext::new());
    assert_eq!(
        req.apply(d.edits().unwrap()).query.as_deref(),
        Some("x=1&y=2")
    );
    // A bearer header is not looked at when the source is the query.
    let d = host.on_request(&policy, &bearer(&token), &TestContext::new());
    assert_eq!(d.status(), Some(401));

    let mut config = inline_config();
    config["token"] = json!({"cookie": "jwt"});
    config["forward_token"] = json!(false);
    let policy = init(&host, config);
    let req = TestRequest::get("/").header("cookie", format!("theme=dark; jwt={token}"));
    let d = host.on_request(&policy, &req, &TestContext::new());
    let forwarded = req.apply(d.edits().unwrap());
    assert_eq!(forwarded.get_header("cookie"), Some("theme=dark"));

    let mut config = inline_config();
    config["token"] = json!({"header": "x-jwt"});
    let policy = init(&host, config);
    let req = TestRequest::get("/").header("x-jwt", token.as_str());
    assert!(
        host.on_request(&policy, &req, &TestContext::new())
            .is_continue()
    );
}

// ---- refusals: status, challenge, body ----

#[test]
fn missing_token_gets_a_challenge_without_error_code() {
    let host = TestHost::new();
    let policy = init(&host, inline_config());
    for req in [
        TestRequest::get("/"),
        TestRequest::get("/").header("authorization", "Basic YTpi"),
    ] {
        let d = host.on_request(&policy, &req, &TestContext::new());
        let r = d.response().unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header_str("www-authenticate"),
            Some(r#"Bearer realm="sluice""#)
        );
        assert_eq!(
            r.body_str(),
            r#"{"error":"unauthorized","message":"an access token is required"}"#
        );
    }
}

#[test]
fn expired_token_says_so() {
    let host = TestHost::new();
    let mut config = inline_config();
    config["realm"] = json!("orders");
    let policy = init(&host, config);
    let mut c = claims();
    c["exp"] = json!(NOW - 60);
    let token = sign(&header(Algorithm::ES256), &c, &TestSigner::P256);
    let d = host.on_request(&policy, &bearer(&token), &TestContext::new());
    let r = d.response().unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header_str("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="The access token expired""#
        )
    );
    assert_eq!(
        r.body_str(),
        r#"{"error":"invalid_token","message":"the access token expired"}"#
    );
}

/// Every token of the battery's row 5: a name, the token, and the reason the policy must
/// log for refusing it (so each attack is refused for the right reason, not by accident).
fn row5_tokens() -> Vec<(String, String, &'static str)> {
    let mut tokens = Vec::new();
    let mut add = |name: &str, token: String, reason: &'static str| {
        tokens.push((name.to_string(), token, reason));
    };
    let no_key = "no key for this kid and alg";
    let bad_sig = "signature does not verify";
    for casing in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": casing, "kid": "hs", "typ": "at+jwt"});
        add(
            &format!("alg {casing}, empty signature"),
            sign_raw(&h, &claims(), b""),
            "unsigned token",
        );
        add(
            &format!("alg {casing}, HMAC signature"),
            sign_as(
                Algorithm::HS256,
                &h,
                &claims(),
                &signer_for(Algorithm::HS256),
            ),
            "unsigned token (alg none)",
        );
    }
    for secret in [
        testkeys::rsa_a_public_pem(),
        testkeys::rsa_a_public_pkcs1_pem(),
    ] {
        add(
            "HS256 signed with the RSA public key",
            sign(
                &json!({"alg": "HS256", "kid": "rsa", "typ": "at+jwt"}),
                &claims(),
                &TestSigner::Hmac(secret.into_bytes()),
            ),
            no_key,
        );
    }
    let attacker = p256::ecdsa::SigningKey::from_slice(&[0x44; 32]).unwrap();
    let point = attacker.verifying_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    let h = json!({"alg": "ES256", "typ": "at+jwt", "jwk": jwk});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(h.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let sig: p256::ecdsa::Signature = signature::Signer::sign(&attacker, input.as_bytes());
    add(
        "embedded jwk (attacker's key)",
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())),
        "refused header parameter `jwk`",
    );
    for (param, url, reason) in [
        (
            "jku",
            "https://evil.example/jwks.json",
            "refused header parameter `jku`",
        ),
        (
            "x5u",
            "https://evil.example/cert.pem",
            "refused header parameter `x5u`",
        ),
    ] {
        let mut h = header(Algorithm::RS256);
        h[param] = json!(url);
        add(param, sign(&h, &claims(), &TestSigner::RsaA), reason);
        let mut h = json!({"alg": "RS256", "kid": "unknown", "typ": "at+jwt"});
        h[param] = json!(url);
        add(
            &format!("{param} with unknown kid"),
            sign(&h, &claims(), &TestSigner::RsaA),
            reason,
        );
    }
    let mut h = header(Algorithm::RS256);
    h["x5c"] = json!(["MIIB"]);
    add(
        "x5c",
        sign(&h, &claims(), &TestSigner::RsaA),
        "refused header parameter `x5c`",
    );
    for (kid, reason) in [
        ("../../../../etc/passwd".to_string(), no_key),
        ("/dev/null".to_string(), no_key),
        ("https://evil.example/key".to_string(), no_key),
        ("' OR 1=1 --".to_string(), no_key),
        ("rsa\0".to_string(), no_key),
        ("k".repeat(256), no_key),
        ("k".repeat(5000), "`kid` is too long"),
        ("k".repeat(9000), "token longer than max_token_bytes"),
    ] {
        add(
            &format!("hostile kid {:?}", kid.chars().take(24).collect::<String>()),
            sign(
                &json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"}),
                &claims(),
                &TestSigner::RsaA,
            ),
            reason,
        );
    }
    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    add(
        "expired",
        sign(&header(Algorithm::ES256), &c, &TestSigner::P256),
        "token expired",
    );
    let mut c = claims();
    c["nbf"] = json!(NOW + 31);
    add(
        "not yet valid",
        sign(&header(Algorithm::ES256), &c, &TestSigner::P256),
        "token not yet valid",
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    add(
        "wrong iss",
        sign(&header(Algorithm::ES256), &c, &TestSigner::P256),
        "issuer not accepted",
    );
    let mut c = claims();
    c["aud"] = json!(["web"]);
    add(
        "wrong aud",
        sign(&header(Algorithm::ES256), &c, &TestSigner::P256),
        "audience not accepted",
    );
    let mut h = header(Algorithm::ES256);
    h["typ"] = json!("JWT");
    add(
        "wrong typ (at+jwt required)",
        sign(&h, &claims(), &TestSigner::P256),
        "typ header does not match",
    );
    add(
        "ES256 r=s=0",
        sign_raw(&header(Algorithm::ES256), &claims(), &[0; 64]),
        bad_sig,
    );
    add(
        "ES384 r=s=0",
        sign_raw(&header(Algorithm::ES384), &claims(), &[0; 96]),
        bad_sig,
    );
    let valid = control(Algorithm::RS256);
    // 342 base64url characters less 2: 255 bytes, one short of the modulus size.
    add(
        "truncated signature",
        valid[..valid.len() - 2].to_string(),
        bad_sig,
    );
    add(
        "truncated to two parts",
        valid[..valid.rfind('.').unwrap()].to_string(),
        "malformed token",
    );
    add(
        "truncated in the header",
        valid[..20].to_string(),
        "malformed token",
    );
    add("garbage", "garbage".to_string(), "malformed token");
    add("garbage dots", "a.b.c".to_string(), "malformed token");
    add(
        "signature by another RSA key",
        sign(&header(Algorithm::RS256), &claims(), &TestSigner::RsaB),
        bad_sig,
    );
    tokens
}

fn row5_config() -> Value {
    let mut config = inline_config();
    config["typ"] = json!("at+jwt");
    config
}

#[test]
fn battery_row5_every_attack_gets_401_and_no_outbound_request() {
    let host = TestHost::new();
    let policy = init(&host, row5_config());
    for (name, token, reason) in row5_tokens() {
        let ctx = TestContext::new();
        let d = host.on_request(&policy, &bearer(&token), &ctx);
        assert_invalid_token(&d, &name);
        assert_eq!(ctx.get("consumer"), None, "{name}");
        let logged = host.logs().last().unwrap().message.clone();
        assert!(
            logged.contains(reason),
            "{name}: logged {logged:?}, want {reason:?}"
        );
    }
    assert!(
        host.http_requests().is_empty(),
        "{:?}",
        host.http_requests()
    );
    // A valid control token gets through, for every algorithm.
    for alg in Algorithm::ALL {
        let d = host.on_request(&policy, &bearer(&control(alg)), &TestContext::new());
        assert!(d.is_continue(), "{alg}: {d:?}");
    }
}

#[test]
fn battery_row5_with_a_jwks_never_fetches_token_supplied_urls() {
    for (name, token, _) in row5_tokens() {
        let host = TestHost::new();
        host.http_route(JWKS_URL, jwks_body(&[testkeys::rsa_b_jwk("other")]));
        let mut config = row5_config();
        config["jwks_url"] = json!(JWKS_URL);
        let policy = init(&host, config);
        let d = host.on_request(&policy, &bearer(&token), &TestContext::new());
        assert_invalid_token(&d, &name);
        let requests = host.http_requests();
        assert!(
            requests.iter().all(|(url, _)| url == JWKS_URL),
            "{name}: {requests:?}"
        );
        // Refused on the header alone: nothing fetched at all, not even the JWKS.
        if ["jku", "x5u", "x5c", "embedded", "alg "]
            .iter()
            .any(|p| name.starts_with(p))
        {
            assert!(requests.is_empty(), "{name}: fetched {requests:?}");
        }
        assert!(requests.len() <= 1, "{name}: {requests:?}");
    }
}

#[test]
fn uses_only_log_clock_kv_and_outbound_http() {
    let host = TestHost::with_grants(&[
        Capability::Log,
        Capability::Clock,
        Capability::Kv,
        Capability::OutboundHttp,
    ]);
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let policy = init(&host, jwks_config());
    let token = sign(
        &json!({"alg": "EdDSA", "kid": "k1"}),
        &claims(),
        &TestSigner::Ed25519,
    );
    assert!(
        host.on_request(&policy, &bearer(&token), &TestContext::new())
            .is_continue()
    );
    assert!(
        host.on_request(&policy, &bearer("junk"), &TestContext::new())
            .status()
            == Some(401)
    );
    let used = host.used();
    assert!(used.contains(&Capability::OutboundHttp) && used.contains(&Capability::Clock));
}

// ---- row 6: JWKS through the fake outbound-http ----

fn eddsa(kid: &str) -> String {
    sign(
        &json!({"alg": "EdDSA", "kid": kid}),
        &claims_far(),
        &TestSigner::Ed25519,
    )
}

fn claims_far() -> Value {
    let mut c = claims();
    c["exp"] = json!(NOW + 86_400);
    c
}

#[test]
fn battery_row6_rotation_new_key_accepted_after_one_refetch() {
    let host = TestHost::new();
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let policy = init(&host, jwks_config());
    let t1 = eddsa("k1");
    for _ in 0..5 {
        assert!(
            host.on_request(&policy, &bearer(&t1), &TestContext::new())
                .is_continue()
        );
    }
    assert_eq!(host.http_requests().len(), 1);
    let (url, headers) = &host.http_requests()[0];
    assert_eq!(url, JWKS_URL);
    assert!(headers.iter().any(|h| h.name == "accept"));

    let t2 = rotate_to_rsa_k2(&host);
    assert_k2_after_one_refetch(&host, &policy, &t2);
    for _ in 0..5 {
        assert!(
            host.on_request(&policy, &bearer(&t2), &TestContext::new())
                .is_continue()
        );
    }
    assert_eq!(host.http_requests().len(), 2);
    // The retired key no longer verifies.
    let d = host.on_request(&policy, &bearer(&t1), &TestContext::new());
    assert_invalid_token(&d, "retired k1");
}

/// A configured key without a `kid` is a candidate for every token; a token naming a
/// `kid` that no key has still triggers the refetch that finds a rotated key.
#[test]
fn rotation_is_found_even_next_to_a_configured_key_without_kid() {
    let host = TestHost::new();
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let mut config = jwks_config();
    config["keys"] = json!([{ "pem": testkeys::rsa_a_public_pem() }]);
    let policy = init(&host, config);
    assert!(
        host.on_request(&policy, &bearer(&eddsa("k1")), &TestContext::new())
            .is_continue()
    );
    assert_eq!(host.http_requests().len(), 1);
    let t2 = rotate_to_rsa_k2(&host);
    assert_k2_after_one_refetch(&host, &policy, &t2);
}

/// Rotation: a minute later the endpoint publishes k2 only (an RSA key); a token signed
/// with it.
fn rotate_to_rsa_k2(host: &TestHost) -> String {
    host.advance_millis(60_000);
    host.http_route(JWKS_URL, jwks_body(&[testkeys::rsa_b_jwk("k2")]));
    sign(
        &json!({"alg": "RS256", "kid": "k2"}),
        &claims_far(),
        &TestSigner::RsaB,
    )
}

/// `token` is accepted as k2's after exactly one refetch (the second fetch in all).
#[track_caller]
fn assert_k2_after_one_refetch(host: &TestHost, policy: &JwtAuth, token: &str) {
    let ctx = TestContext::new();
    let d = host.on_request(policy, &bearer(token), &ctx);
    assert!(d.is_continue(), "{d:?}");
    assert_eq!(ctx.get("credential").as_deref(), Some("jwt:k2"));
    assert_eq!(host.http_requests().len(), 2, "one refetch");
}

#[test]
fn battery_row6_unknown_kid_flood_is_rate_limited() {
    let host = TestHost::new();
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let policy = init(&host, jwks_config());
    let valid = eddsa("k1");
    assert!(
        host.on_request(&policy, &bearer(&valid), &TestContext::new())
            .is_continue()
    );
    // 3,001 requests over 60 s, each with a fresh kid.
    for i in 0..=3000u64 {
        let token = sign_raw(
            &json!({"alg": "EdDSA", "kid": format!("flood-{i}")}),
            &claims(),
            &[7; 64],
        );
        let d = host.on_request(&policy, &bearer(&token), &TestContext::new());
        assert_invalid_token(&d, "flood");
        host.advance_millis(20);
    }
    // The load at t = 0, then one refetch at t = 30 s and one at t = 60 s.
    assert_eq!(host.http_requests().len(), 3);
    assert!(
        host.on_request(&policy, &bearer(&valid), &TestContext::new())
            .is_continue()
    );
}

#[test]
fn battery_row6_failing_endpoint_keeps_cached_keys() {
    let host = TestHost::new();
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let policy = init(&host, jwks_config());
    let valid = eddsa("k1");
    assert!(
        host.on_request(&policy, &bearer(&valid), &TestContext::new())
            .is_continue()
    );

    let failures: Vec<Result<HttpResponse, HttpError>> = vec![
        Err(HttpError::Timeout),
        Ok(HttpResponse::new(503, "unavailable")),
        Ok(HttpResponse::new(200, "<html>")),
        jwks_body(&[]),
        Err(HttpError::Failed("connection reset".into())),
        Err(HttpError::TooLarge),
    ];
    // Past the TTL; then each failure mode for a minute, a request every second.
    host.advance_millis(300_000);
    for failure in failures {
        host.http_route(JWKS_URL, failure);
        for _ in 0..60 {
            let d = host.on_request(&policy, &bearer(&valid), &TestContext::new());
            assert!(d.is_continue(), "{d:?}");
            host.advance_millis(1000);
        }
    }
    // 1 load + one attempt per 30 s over 6 minutes.
    assert_eq!(host.http_requests().len(), 1 + 12);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.level == log::Level::Warn && l.message.contains("keeping 1 cached key")),
    );
    // Recovery: the next attempt loads the new set.
    host.http_route(JWKS_URL, jwks_body(&[testkeys::p256_jwk("k3")]));
    host.advance_millis(30_000);
    let t3 = sign(
        &json!({"alg": "ES256", "kid": "k3"}),
        &claims_far(),
        &TestSigner::P256,
    );
    assert!(
        host.on_request(&policy, &bearer(&t3), &TestContext::new())
            .is_continue()
    );
}

#[test]
fn jwks_denied_by_the_host_refuses_tokens_and_logs() {
    let host = TestHost::new();
    // No route: the fake host denies the URL, like a host not on the allowlist.
    let policy = init(&host, jwks_config());
    let d = host.on_request(&policy, &bearer(&eddsa("k1")), &TestContext::new());
    assert_invalid_token(&d, "denied");
    assert!(
        host.logs()
            .iter()
            .any(|l| l.level == log::Level::Warn && l.message.contains("not allowlisted"))
    );
}

#[test]
fn battery_row6_instances_share_one_fetch_per_interval() {
    // The gateway may run many instances (a pool, or a fresh one per request): they share
    // the fetched document and the fetch claim through kv.
    let host = TestHost::new();
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let valid = eddsa("k1");
    for _ in 0..50 {
        // A fresh instance per request (isolated mode).
        let policy = init(&host, jwks_config());
        assert!(
            host.on_request(&policy, &bearer(&valid), &TestContext::new())
                .is_continue()
        );
    }
    assert_eq!(host.http_requests().len(), 1);

    // An unknown-kid flood over fresh instances: one fetch per jwks_min_refetch in all.
    host.advance_millis(1000);
    for i in 0..600u64 {
        let policy = init(&host, jwks_config());
        let token = sign_raw(
            &json!({"alg": "EdDSA", "kid": format!("flood-{i}")}),
            &claims(),
            &[7; 64],
        );
        assert_invalid_token(
            &host.on_request(&policy, &bearer(&token), &TestContext::new()),
            "flood",
        );
        host.advance_millis(100);
    }
    // Requests at t = 1.0 … 60.9 s; each fresh instance starts from the shared document
    // and may claim a fetch, but the claim taken by the load at t = 0 expires only at 30 s,
    // the next at 60 s: two more fetches.
    assert_eq!(host.http_requests().len(), 3);

    // Rotation seen by one pooled instance reaches another without a second fetch.
    let a = init(&host, jwks_config());
    let b = init(&host, jwks_config());
    assert!(
        host.on_request(&a, &bearer(&valid), &TestContext::new())
            .is_continue()
    );
    assert!(
        host.on_request(&b, &bearer(&valid), &TestContext::new())
            .is_continue()
    );
    host.advance_millis(31_000);
    host.http_route(JWKS_URL, jwks_body(&[testkeys::p256_jwk("k2")]));
    let t2 = sign(
        &json!({"alg": "ES256", "kid": "k2"}),
        &claims_far(),
        &TestSigner::P256,
    );
    let before = host.http_requests().len();
    assert!(
        host.on_request(&a, &bearer(&t2), &TestContext::new())
            .is_continue()
    );
    assert!(
        host.on_request(&b, &bearer(&t2), &TestContext::new())
            .is_continue()
    );
    assert_eq!(host.http_requests().len(), before + 1);
}

#[test]
fn kv_failure_falls_back_to_per_instance_limits() {
    let host = TestHost::new();
    host.kv_fail(Some(sluice_sdk::kv::KvError::Unavailable("down".into())));
    host.http_route(JWKS_URL, jwks_body(&[testkeys::ed25519_jwk("k1")]));
    let policy = init(&host, jwks_config());
    let valid = eddsa("k1");
    for i in 0..=300u64 {
        assert!(
            host.on_request(&policy, &bearer(&valid), &TestContext::new())
                .is_continue()
        );
        let token = sign_raw(
            &json!({"alg": "EdDSA", "kid": format!("x{i}")}),
            &claims(),
            &[7; 64],
        );
        assert_invalid_token(
            &host.on_request(&policy, &bearer(&token), &TestContext::new()),
            "flood",
        );
        host.advance_millis(100);
    }
    // t = 0 … 30 s: the load at t = 0, one refetch at t = 30 s (the instance's own limit).
    assert_eq!(host.http_requests().len(), 2);
}

// ---- configuration ----

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let host = TestHost::new();
    for (config, want) in [
        (json!({}), "keys: give at least one key, or a jwks_url"),
        (json!({"keys": [{"secret": "short"}]}), "keys[0].secret:"),
        (json!({"keys": [{"pem": "x"}], "leeway": "x"}), "leeway:"),
        (json!({"jwks_url": JWKS_URL, "jwks_ttl": "1s"}), "jwks_ttl:"),
        (
            json!({"jwks_url": JWKS_URL, "typo": 1}),
            "typo: unknown field",
        ),
    ] {
        let err = host.init::<JwtAuth>(config.clone()).unwrap_err();
        assert!(err.starts_with(want), "{config}: {err}");
    }
}

#[test]
fn toml_config_is_accepted() {
    let host = TestHost::new();
    let toml = format!(
        r#"
        jwks_url = "{JWKS_URL}"
        jwks_ttl = "10m"
        jwks_min_refetch = "1m"
        issuer = "{ISS}"
        audience = ["api", "api-v2"]
        leeway = "10s"
        required_claims = ["exp", "sub"]
        claims_to_attributes = {{ sub = "consumer", "tenant" = "tenant" }}
        forward_token = false
        [[keys]]
        kid = "hs"
        secret = "{}"
        algorithms = ["HS256"]
        "#,
        hmac_secret()
    );
    let policy: JwtAuth = host.init_toml(&toml).unwrap();
    let ctx = TestContext::new();
    let d = host.on_request(&policy, &bearer(&control(Algorithm::HS256)), &ctx);
    assert!(d.edits().unwrap().removes("authorization"));
    assert_eq!(ctx.get("tenant").as_deref(), Some("acme"));
}

#[test]
fn readme_examples_are_valid_configurations() {
    let configs = readme_configs(include_str!("../../README.md"), "jwt-auth");
    assert!(configs.len() >= 4, "{} examples", configs.len());
    let host = TestHost::new();
    for config in configs {
        if let Err(e) = host.init::<JwtAuth>(config.clone()) {
            panic!("README example refused: {e}\n{config}");
        }
    }
}
