//! The `jwt-auth` policy through the real gateway (security battery rows 5 and 6).
//!
//! Row 5: every forged, confused, expired or malformed token is answered 401 with an RFC
//! 6750 `Bearer` challenge, never reaches the upstream, and makes the policy fetch nothing
//! (neither the configured JWKS, rate-limited to one fetch per `jwks_min_refetch`, nor any
//! URL a token names — even one on an allowlisted host); valid control tokens (RS256 from a
//! JWKS served by a real test server; HS256, ES256 and a PEM RSA key from the inline
//! configuration) pass with their claims mapped into context attributes.
//!
//! Row 6: a rotated JWKS is picked up with exactly one refetch, pooled or with a fresh
//! instance per request; a flood of unknown `kid`s causes no fetch beyond one per
//! `jwks_min_refetch`; a JWKS endpoint failing in several ways leaves the cached keys in use;
//! a slow one does not count against the plugin's CPU deadline.
//!
//! Capabilities: without `outbound-http` the configuration is refused; a JWKS host missing
//! from `outbound_allowlist` is never contacted.
//!
//! Tokens are signed here with `ring` (already the gateway's TLS crypto); the RSA keys are
//! the plugin's test fixtures, the EC keys are generated per test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};
use sluice_tests::gateway::validate;
use sluice_tests::upstream::full;
use sluice_tests::{Gateway, Resp, Upstream, get, plugin_path};

use crate::config;

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "orders-api";
/// The inline HMAC secret (kid `hs1`); at least 32 bytes, as HS256 requires.
const HS_SECRET: &str = "e2e-only-hmac-secret-0123456789abcdef-0123";
/// The plugin's RSA-2048 test keys (PKCS#8); they protect nothing.
const RSA_A_PEM: &str = include_str!("../../plugins/jwt-auth/testdata/rsa-a.pem");
const RSA_B_PEM: &str = include_str!("../../plugins/jwt-auth/testdata/rsa-b.pem");
/// The order n of the P-256 group (an ECDSA `r` or `s` must be in `1..n`).
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// Bound on any wait for time to pass (`jwks_min_refetch` is 1 s where it must elapse).
const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two polls of a condition that needs time to pass.
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------------------

fn b64u(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_secs()).expect("time")
}

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x100 => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str) -> Vec<u8> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

/// An RSA test key.
struct Rsa(RsaKeyPair);

impl Rsa {
    fn load(pkcs8_pem: &str) -> Self {
        Self(RsaKeyPair::from_pkcs8(&unpem(pkcs8_pem)).expect("RSA test key"))
    }

    /// `RSAPublicKey` (PKCS#1) DER.
    fn pkcs1_der(&self) -> Vec<u8> {
        self.0.public().as_ref().to_vec()
    }

    /// `SubjectPublicKeyInfo` DER.
    fn spki_der(&self) -> Vec<u8> {
        let rsa_encryption = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let alg = der(
            0x30,
            &[der(0x06, &rsa_encryption), vec![0x05, 0x00]].concat(),
        );
        let bits = [vec![0], self.pkcs1_der()].concat();
        der(0x30, &[alg, der(0x03, &bits)].concat())
    }

    fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    fn pkcs1_pem(&self) -> String {
        pem("RSA PUBLIC KEY", &self.pkcs1_der())
    }

    fn jwk(&self, kid: &str) -> Value {
        let c = PublicKeyComponents::<Vec<u8>>::from(self.0.public());
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(&c.n), "e": b64u(&c.e)})
    }

    /// An RS256 signature.
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .expect("RSA sign");
        sig
    }
}

/// A P-256 key, signing as JWS wants (`r || s`) or as X.509 does (DER).
struct Ec {
    fixed: EcdsaKeyPair,
    asn1: EcdsaKeyPair,
}

impl Ec {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256");
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Self {
        let rng = SystemRandom::new();
        let load = |alg| EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng).expect("P-256 key");
        Self {
            fixed: load(&ECDSA_P256_SHA256_FIXED_SIGNING),
            asn1: load(&ECDSA_P256_SHA256_ASN1_SIGNING),
        }
    }

    /// The public JWK (without `kid`).
    fn jwk(&self) -> Value {
        let point = self.fixed.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64u(&point[1..33]), "y": b64u(&point[33..65])})
    }

    /// An ES256 signature (`r || s`, 64 bytes).
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.fixed.sign(&SystemRandom::new(), msg).expect("sign");
        sig.as_ref().to_vec()
    }

    /// The same signature DER-encoded, which JWS does not allow.
    fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.asn1.sign(&SystemRandom::new(), msg).expect("sign");
        sig.as_ref().to_vec()
    }
}

fn hmac(alg: ring::hmac::Algorithm, secret: &[u8], msg: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(alg, secret), msg)
        .as_ref()
        .to_vec()
}

/// The keys of a test: `a` is published by the JWKS server, `b` is configured inline as a
/// PEM (kid `pem-b`) — or, in the rotation tests, the next key — and `ec` inline as a JWK.
struct Keys {
    a: Rsa,
    b: Rsa,
    ec: Ec,
}

impl Keys {
    fn new() -> Self {
        Self {
            a: Rsa::load(RSA_A_PEM),
            b: Rsa::load(RSA_B_PEM),
            ec: Ec::generate(),
        }
    }
}

/// A compact JWS of raw header and payload texts.
fn jws_raw(header: &str, payload: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64u(header), b64u(payload));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64u(sig))
}

fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    jws_raw(&header.to_string(), &claims.to_string(), sign)
}

/// `{"alg", "typ": "at+jwt", "kid"}`.
fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut h = json!({"alg": alg, "typ": "at+jwt"});
    if let Some(kid) = kid {
        h["kid"] = json!(kid);
    }
    h
}

/// Valid claims (sub alice, tenant acme, expiring in 10 minutes) with `changes` applied: a
/// `null` removes the claim.
fn claims(changes: Value) -> Value {
    let now = now();
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme",
        "iat": now, "exp": now + 600,
    });
    for (k, v) in changes.as_object().expect("an object") {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A valid RS256 token signed by `key` with `kid`.
fn rs256(key: &Rsa, kid: &str) -> String {
    jws(&header("RS256", Some(kid)), &claims(json!({})), |m| {
        key.sign(m)
    })
}

// ---------------------------------------------------------------------------------------
// The JWKS server
// ---------------------------------------------------------------------------------------

/// What the JWKS server answers.
#[derive(Clone, Debug)]
enum Answer {
    /// 200 with `{"keys": …}`.
    Keys(Value),
    /// This status with a JSON error body.
    Status(u16),
    /// 200 with this body.
    Body(String),
    /// 200 with `{"keys": …}` after this delay (a slow identity provider).
    Slow(Duration, Value),
}

/// A real HTTP server playing the identity provider's JWKS endpoint; it counts fetches
/// per path and its answer can be switched at any time.
struct Jwks {
    up: Upstream,
    answer: Arc<Mutex<Answer>>,
}

impl Jwks {
    async fn start(keys: Value) -> Self {
        let answer = Arc::new(Mutex::new(Answer::Keys(keys)));
        let current = answer.clone();
        let up = Upstream::with(move |_req| {
            let answer = current.lock().unwrap().clone();
            async move {
                if let Answer::Slow(delay, _) = &answer {
                    tokio::time::sleep(*delay).await;
                }
                let (status, body) = match answer {
                    Answer::Keys(keys) | Answer::Slow(_, keys) => {
                        (200, json!({ "keys": keys }).to_string())
                    }
                    Answer::Status(s) => (s, "{\"error\":\"unavailable\"}".to_string()),
                    Answer::Body(b) => (200, b),
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap()
            }
        })
        .await;
        Self { up, answer }
    }

    fn serve(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.up.addr)
    }

    /// Requests for `path` so far (whatever was answered).
    fn fetches(&self, path: &str) -> usize {
        self.up.seen().iter().filter(|s| s.uri == path).count()
    }
}

// ---------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------

/// A compiled-artifact cache for this module's gateways (compiling the component in a
/// debug build takes seconds; loading the artifact milliseconds).
fn cache_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-jwt-cache")
}

const ALL_GRANTS: &str = r#"["clock", "log", "kv", "outbound-http"]"#;

/// `[policy]` and the two plugins: `jwt-auth` with `grants`, allowed to reach `allow`, and
/// `echo-attrs` (copies context attributes into `x-ctx-*` response headers).
fn plugins(grants: &str, allow: &[SocketAddr]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[policy]
cache_dir = "{cache}"

[plugins.jwt-auth]
path = "{jwt}"
grants = {grants}
outbound_allowlist = [{allow}]
cpu_timeout = "200ms"

[plugins.echo-attrs]
path = "{echo}"

"#,
        cache = cache_dir().display(),
        jwt = plugin_path("jwt_auth").display(),
        echo = plugin_path("echo_attrs").display(),
        allow = allow.join(", "),
    )
}

/// `[upstreams.u]` on `up`.
fn upstream(up: &Upstream) -> String {
    format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n",
        up.addr
    )
}

/// A route `/NAME/` to upstream `u` through `jwt-auth` (in `mode`, with `jwt_config` as
/// its configuration table) and then `echo-attrs`.
fn route(name: &str, mode: &str, jwt_config: &str) -> String {
    format!(
        r#"[[routes]]
name = "{name}"
path_prefix = "/{name}/"
upstream = "u"

[[routes.policies]]
plugin = "jwt-auth"
mode = "{mode}"
[routes.policies.config]
{jwt_config}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "after", echo = ["consumer", "credential", "tenant"] }}

"#
    )
}

/// A jwt-auth configuration with the JWKS at `jwks_url` plus `extra` lines.
fn jwks_config(jwks_url: &str, ttl: &str, min_refetch: &str, extra: &str) -> String {
    format!(
        r#"jwks_url = "{jwks_url}"
jwks_allow_http = true
jwks_ttl = "{ttl}"
jwks_min_refetch = "{min_refetch}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
claims_to_attributes = {{ sub = "consumer", tenant = "tenant" }}
{extra}
"#
    )
}

/// A JSON object of strings as a TOML inline table.
fn toml_table(v: &Value) -> String {
    let fields: Vec<String> = v
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| format!("{k} = \"{}\"", v.as_str().expect("a string")))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

/// Compiles the components once into the cache (with `sluice validate`, which has no
/// start-up deadline), so that the gateways of the tests come up quickly.
fn warm_cache() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let cfg = format!(
            "{}[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"jwt-auth\"\nconfig = {{ keys = [{{ kid = \"hs1\", secret = \"{HS_SECRET}\" }}] }}\n[[routes.policies]]\nplugin = \"echo-attrs\"\nconfig = {{ name = \"w\" }}\n",
            plugins(ALL_GRANTS, &[])
        );
        let (code, out) = validate(&config(&cfg));
        assert_eq!(code, 0, "{out}");
    });
}

fn start(body: &str) -> Gateway {
    warm_cache();
    Gateway::start(&config(body))
}

/// `GET /ROUTE/orders` with `Authorization: Bearer TOKEN`.
async fn call(gw: &Gateway, route: &str, token: &str) -> Resp {
    let url = gw.url("main", &format!("/{route}/orders"));
    get(&url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// A 200 from the upstream with the claims mapped (consumer alice, tenant acme) and the
/// credential naming the key that verified the token.
#[track_caller]
fn assert_accepted(what: &str, r: &Resp, kid: &str) {
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{what}: {r:?}");
    assert_eq!(r.header("x-ctx-consumer"), Some("alice"), "{what}");
    assert_eq!(r.header("x-ctx-tenant"), Some("acme"), "{what}");
    let credential = format!("jwt:{kid}");
    assert_eq!(r.header("x-ctx-credential"), Some(&*credential), "{what}");
}

const INVALID: &str = r#"Bearer realm="sluice", error="invalid_token""#;
const EXPIRED: &str =
    r#"Bearer realm="sluice", error="invalid_token", error_description="The access token expired""#;

/// A 401 from the policy with the `invalid_token` challenge (saying "expired" only when
/// `expired`), and nothing from the upstream.
#[track_caller]
fn assert_refused(what: &str, r: &Resp, expired: bool) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    let (challenge, message) = if expired {
        (EXPIRED, "the access token expired")
    } else {
        (INVALID, "the access token is invalid")
    };
    assert_eq!(r.header("www-authenticate"), Some(challenge), "{what}");
    assert_eq!(
        r.json(),
        json!({"error": "invalid_token", "message": message}),
        "{what}"
    );
    assert_eq!(r.header("x-ctx-consumer"), None, "{what}");
    assert_eq!(r.header("x-trace"), None, "{what}: a later policy ran");
}

// ---------------------------------------------------------------------------------------
// Row 5: the attack matrix
// ---------------------------------------------------------------------------------------

/// Every attack of battery row 5 as (name, token, whether the refusal says "expired").
fn attacks(k: &Keys, jwks_url: &str, attacker: &Jwks) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = Vec::new();
    let mut add = |name: String, token: String| out.push((name, token, false));
    let good = claims(json!({}));
    let rsa_a = |m: &[u8]| k.a.sign(m);

    // alg none in several casings, with no signature, a junk one, or a real RS256 one.
    for alg in ["none", "None", "NONE", "nOnE", "NoNe", "nonE"] {
        let input = format!(
            "{}.{}",
            b64u(header(alg, None).to_string()),
            b64u(good.to_string())
        );
        add(format!("alg {alg}, empty signature"), format!("{input}."));
        add(
            format!("alg {alg}, junk signature"),
            format!("{input}.{}", b64u("sig")),
        );
        add(
            format!("alg {alg} with kid rsa-a and a real RS256 signature"),
            jws(&header(alg, Some("rsa-a")), &good, rsa_a),
        );
    }
    // Algorithm names are exact, and alg is required.
    for alg in [
        json!("rs256"),
        json!("RS256 "),
        json!(""),
        json!(null),
        json!(["RS256"]),
    ] {
        let mut h = header("RS256", Some("rsa-a"));
        h["alg"] = alg.clone();
        add(
            format!("alg {alg} with a real RS256 signature"),
            jws(&h, &good, rsa_a),
        );
    }
    let mut h = header("RS256", Some("rsa-a"));
    h.as_object_mut().unwrap().remove("alg");
    add(
        "no alg, a real RS256 signature".into(),
        jws(&h, &good, rsa_a),
    );

    // HS256/384/512 "signed" with the RSA public key as the secret, in every encoding a
    // confused verifier might use: the JWKS key (kid rsa-a) and the inline PEM (kid pem-b).
    for (key, kid) in [(&k.a, "rsa-a"), (&k.b, "pem-b")] {
        let jwk_text = key.jwk(kid).to_string();
        let n = PublicKeyComponents::<Vec<u8>>::from(key.0.public()).n;
        let secrets: [(&str, Vec<u8>); 7] = [
            ("SPKI PEM", key.spki_pem().into_bytes()),
            (
                "SPKI PEM without newline",
                key.spki_pem().trim_end().as_bytes().to_vec(),
            ),
            ("PKCS#1 PEM", key.pkcs1_pem().into_bytes()),
            ("SPKI DER", key.spki_der()),
            ("PKCS#1 DER", key.pkcs1_der()),
            ("JWK JSON", jwk_text.into_bytes()),
            ("modulus", n),
        ];
        for (form, secret) in &secrets {
            for kid in [Some(kid), None, Some("hs1")] {
                add(
                    format!("HS256 with the {form} of {kid:?}'s RSA key as secret, kid {kid:?}"),
                    jws(&header("HS256", kid), &good, |m| {
                        hmac(ring::hmac::HMAC_SHA256, secret, m)
                    }),
                );
            }
        }
        for (alg, h) in [
            ("HS384", ring::hmac::HMAC_SHA384),
            ("HS512", ring::hmac::HMAC_SHA512),
        ] {
            add(
                format!("{alg} with the SPKI PEM of {kid} as secret"),
                jws(&header(alg, Some(kid)), &good, |m| {
                    hmac(h, key.spki_pem().as_bytes(), m)
                }),
            );
        }
    }

    // Keys carried or pointed to by the token. The attacker's key server is allowlisted for
    // the plugin, so only the policy stands between these tokens and a fetch.
    let intruder = Ec::generate();
    let intruder_sign = |m: &[u8]| intruder.sign(m);
    for kid in [None, Some("ec1"), Some("intruder")] {
        let mut h = header("ES256", kid);
        h["jwk"] = intruder.jwk();
        add(
            format!("embedded jwk of the signer's own EC key, kid {kid:?}"),
            jws(&h, &good, intruder_sign),
        );
    }
    let mut h = header("RS256", Some("rsa-a"));
    h["jwk"] = k.a.jwk("rsa-a");
    add(
        "embedded jwk of the real key on an otherwise valid token".into(),
        jws(&h, &good, rsa_a),
    );
    let attacker_jwks = attacker.url("/jwks.json");
    let attacker_cert = attacker.url("/cert.pem");
    for (param, url, kid, signer) in [
        ("jku", &attacker_jwks, "attacker", &k.b),
        ("jku", &attacker_jwks, "rsa-a", &k.a),
        ("jku", &jwks_url.to_string(), "rsa-a", &k.a),
        ("jku", &format!("{jwks_url}?other"), "attacker", &k.b),
        ("x5u", &attacker_cert, "attacker", &k.b),
        ("x5u", &attacker_cert, "rsa-a", &k.a),
    ] {
        let mut h = header("RS256", Some(kid));
        h[param] = json!(url);
        add(
            format!("{param} {url} with kid {kid}"),
            jws(&h, &good, |m| signer.sign(m)),
        );
    }
    let cert_key = rcgen::KeyPair::generate().expect("cert key");
    let cert = rcgen::CertificateParams::new(vec!["idp.test".to_string()])
        .expect("cert params")
        .self_signed(&cert_key)
        .expect("self-signed cert");
    let cert_signer = Ec::from_pkcs8(&cert_key.serialize_der());
    let mut h = header("ES256", None);
    h["x5c"] = json!([STANDARD.encode(cert.der())]);
    add(
        "x5c with the signer's self-signed certificate".into(),
        jws(&h, &good, |m| cert_signer.sign(m)),
    );
    let mut h = header("RS256", Some("rsa-a"));
    h["crit"] = json!(["exp"]);
    add(
        "crit on an otherwise valid token".into(),
        jws(&h, &good, rsa_a),
    );

    // Hostile kids, each on a token really signed by the JWKS key.
    let hostile_kids = [
        json!("../../../../etc/passwd"),
        json!("/dev/zero"),
        json!(attacker_jwks),
        json!("rsa-a' OR '1'='1"),
        json!("rsa-a\u{0}"),
        json!("rsa-a\n"),
        json!("RSA-A"),
        json!(" rsa-a"),
        json!("rsa-a/../rsa-a"),
        json!("*"),
        json!(""),
        json!("x".repeat(256)),
        json!("x".repeat(257)),
        json!("k".repeat(5000)),
        json!(1),
        json!(["rsa-a"]),
        json!({"$ne": null}),
    ];
    for kid in hostile_kids {
        let mut h = header("RS256", None);
        h["kid"] = kid.clone();
        let shown: String = kid.to_string().chars().take(40).collect();
        add(format!("hostile kid {shown}"), jws(&h, &good, rsa_a));
    }

    // Claims: time, issuer, audience; and the typ header.
    let now = now();
    let bad_claims = [
        ("not yet valid", json!({"nbf": now + 3600})),
        ("nbf just beyond the leeway", json!({"nbf": now + 120})),
        ("exp as a string", json!({"exp": (now + 600).to_string()})),
        ("no exp", json!({"exp": null})),
        ("wrong iss", json!({"iss": "https://evil.test/"})),
        (
            "iss without the trailing slash",
            json!({"iss": "https://idp.test"}),
        ),
        ("iss as an array", json!({"iss": [ISSUER]})),
        ("no iss", json!({"iss": null})),
        ("wrong aud", json!({"aud": "other-api"})),
        ("aud array without ours", json!({"aud": ["other-api", "x"]})),
        ("aud as a number", json!({"aud": 1})),
        ("no aud", json!({"aud": null})),
    ];
    for (name, change) in bad_claims {
        add(
            format!("RS256: {name}"),
            jws(
                &header("RS256", Some("rsa-a")),
                &claims(change.clone()),
                rsa_a,
            ),
        );
        add(
            format!("HS256: {name}"),
            jws(&header("HS256", Some("hs1")), &claims(change), |m| {
                hmac(ring::hmac::HMAC_SHA256, HS_SECRET.as_bytes(), m)
            }),
        );
    }
    for typ in [
        json!("JWT"),
        json!("at+jwt+x"),
        json!("application/jwt"),
        json!(null),
    ] {
        let mut h = header("RS256", Some("rsa-a"));
        h["typ"] = typ.clone();
        add(format!("typ {typ}"), jws(&h, &good, rsa_a));
    }
    let mut h = header("RS256", Some("rsa-a"));
    h.as_object_mut().unwrap().remove("typ");
    add("no typ".into(), jws(&h, &good, rsa_a));

    // ECDSA: r = s = 0, r = s = n, one half zero, DER instead of r || s, wrong sizes.
    let es = |sig: Vec<u8>| jws(&header("ES256", Some("ec1")), &good, move |_| sig);
    let valid_es =
        k.ec.sign(signing_input(&header("ES256", Some("ec1")), &good).as_bytes());
    add("ES256 r = s = 0".into(), es(vec![0; 64]));
    add(
        "ES256 r = s = 0 without kid".into(),
        jws(&header("ES256", None), &good, |_| vec![0; 64]),
    );
    add("ES256 r = s = n".into(), es([P256_N, P256_N].concat()));
    add(
        "ES256 r = 0".into(),
        es([&[0; 32][..], &valid_es[32..]].concat()),
    );
    add(
        "ES256 s = 0".into(),
        es([&valid_es[..32], &[0; 32][..]].concat()),
    );
    add(
        "ES256 DER signature".into(),
        jws(&header("ES256", Some("ec1")), &good, |m| k.ec.sign_der(m)),
    );
    add(
        "ES256 63-byte signature".into(),
        es(valid_es[..63].to_vec()),
    );
    add(
        "ES256 65-byte signature".into(),
        es([&valid_es[..], &[0]].concat()),
    );
    add(
        "ES256 r = s = 0 claiming the RSA kid".into(),
        jws(&header("ES256", Some("rsa-a")), &good, |_| vec![0; 64]),
    );

    // Truncated, tampered and garbage tokens.
    let valid = rs256(&k.a, "rsa-a");
    let len = valid.len();
    let mut cuts: Vec<usize> = (1..32).map(|i| i * len / 32).collect();
    let dots: Vec<usize> = valid.match_indices('.').map(|(i, _)| i).collect();
    for d in &dots {
        cuts.extend([d - 1, *d, d + 1]);
    }
    cuts.extend([len - 1, len - 2, len - 3]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        add(
            format!("truncated to {cut} of {len} bytes"),
            valid[..cut].to_string(),
        );
    }
    let flip = |at: usize| {
        let mut b = valid.clone().into_bytes();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    add(
        "a character changed in the header".into(),
        flip(dots[0] / 2),
    );
    add(
        "a character changed in the payload".into(),
        flip((dots[0] + dots[1]) / 2),
    );
    add(
        "a character changed in the signature".into(),
        flip((dots[1] + len) / 2),
    );
    add("first signature byte changed".into(), flip(dots[1] + 1));
    let (input, sig) = valid.rsplit_once('.').unwrap();
    let forged_payload = b64u(claims(json!({"sub": "mallory"})).to_string());
    let header_b64 = input.split('.').next().unwrap();
    add(
        "payload swapped under a valid signature".into(),
        format!("{header_b64}.{forged_payload}.{sig}"),
    );
    add(
        "signature of another token".into(),
        format!(
            "{}.{sig}",
            signing_input(
                &header("RS256", Some("rsa-a")),
                &claims(json!({"tenant": "evil"}))
            )
        ),
    );
    add("padded signature".into(), format!("{valid}=="));
    add(
        "padded header".into(),
        format!("{header_b64}=.{}", &valid[header_b64.len() + 1..]),
    );
    add(
        "standard base64 signature".into(),
        format!(
            "{input}.{}",
            STANDARD.encode(URL_SAFE_NO_PAD.decode(sig).unwrap())
        ),
    );
    add("a fourth part".into(), format!("{valid}.{sig}"));
    add("trailing dot".into(), format!("{valid}."));
    add("two parts".into(), input.to_string());
    add(
        "JWE (five parts)".into(),
        format!("{}.a.b.c.d", b64u(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)),
    );
    add(
        "payload is not JSON, validly signed".into(),
        jws_raw(
            &header("RS256", Some("rsa-a")).to_string(),
            "not json",
            rsa_a,
        ),
    );
    add(
        "payload is an array, validly signed".into(),
        jws_raw(&header("RS256", Some("rsa-a")).to_string(), "[]", rsa_a),
    );
    let dup_sub = claims(json!({}))
        .to_string()
        .replacen('{', "{\"sub\":\"mallory\",", 1);
    add(
        "payload with a duplicate sub, validly signed".into(),
        jws_raw(&header("RS256", Some("rsa-a")).to_string(), &dup_sub, rsa_a),
    );
    add(
        "header with a duplicate alg".into(),
        jws_raw(
            r#"{"alg":"HS256","alg":"RS256","kid":"rsa-a","typ":"at+jwt"}"#,
            &good.to_string(),
            rsa_a,
        ),
    );
    let deep = format!(
        r#"{{"alg":"RS256","kid":"rsa-a","typ":"at+jwt","x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    add(
        "header nested 40 deep".into(),
        jws_raw(&deep, &good.to_string(), rsa_a),
    );
    add(
        "header is not JSON".into(),
        jws_raw("{alg:RS256}", &good.to_string(), rsa_a),
    );
    let long = jws(
        &header("RS256", Some("rsa-a")),
        &claims(json!({"pad": "p".repeat(9000)})),
        rsa_a,
    );
    add("longer than max_token_bytes".into(), long);
    for junk in [
        "garbage",
        "a.b.c",
        "..",
        "...",
        "e30.e30.e30",
        "eyJ",
        "null",
        "Bearer",
        "%00%00.%00.%00",
        "ümlaut.äöü.ß",
        "eyJhbGciOiJSUzI1NiJ9",
    ] {
        add(format!("garbage {junk:?}"), junk.to_string());
    }
    add(
        "random bytes".into(),
        format!(
            "{}.{}.{}",
            b64u([7u8; 40]),
            b64u([9u8; 60]),
            b64u([1u8; 256])
        ),
    );

    // Expired (the only refusal that says why).
    for (name, exp) in [
        ("an hour ago", now - 3600),
        ("beyond the 30 s leeway", now - 120),
    ] {
        out.push((
            format!("expired {name}"),
            jws(
                &header("RS256", Some("rsa-a")),
                &claims(json!({"exp": exp})),
                rsa_a,
            ),
            true,
        ));
    }
    out
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64u(header.to_string()), b64u(claims.to_string()))
}

/// The valid control tokens of the matrix route as (name, token, kid of the verifying key).
fn controls(k: &Keys) -> Vec<(&'static str, String, &'static str)> {
    let good = claims(json!({}));
    let mut app_typ = header("RS256", Some("rsa-a"));
    app_typ["typ"] = json!("application/AT+JWT");
    vec![
        ("RS256 from the JWKS", rs256(&k.a, "rsa-a"), "rsa-a"),
        (
            "HS256 from the inline secret",
            jws(&header("HS256", Some("hs1")), &good, |m| {
                hmac(ring::hmac::HMAC_SHA256, HS_SECRET.as_bytes(), m)
            }),
            "hs1",
        ),
        (
            "ES256 from the inline JWK",
            jws(&header("ES256", Some("ec1")), &good, |m| k.ec.sign(m)),
            "ec1",
        ),
        ("RS256 from the inline PEM", rs256(&k.b, "pem-b"), "pem-b"),
        (
            "RS256 with typ application/AT+JWT",
            jws(&app_typ, &good, |m| k.a.sign(m)),
            "rsa-a",
        ),
        (
            "RS256 with an aud array containing ours",
            jws(
                &header("RS256", Some("rsa-a")),
                &claims(json!({"aud": ["other-api", AUDIENCE]})),
                |m| k.a.sign(m),
            ),
            "rsa-a",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_confused_expired_and_malformed_tokens_get_401_and_cause_no_fetch() {
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("rsa-a")])).await;
    // A key server under the attacker's control, allowlisted for the plugin all the same.
    let attacker = Jwks::start(json!([k.b.jwk("attacker")])).await;
    let backend = Upstream::named("ok").await;
    let jwks_url = jwks.url("/jwks.json");
    let mut ec1 = k.ec.jwk();
    ec1["kid"] = json!("ec1");
    let keys = format!(
        "keys = [{{ kid = \"hs1\", secret = \"{HS_SECRET}\", algorithms = [\"HS256\"] }}, {{ kid = \"pem-b\", pem = \"{}\" }}, {{ jwk = {} }}]\ntyp = \"at+jwt\"\nforward_token = false",
        k.b.spki_pem().replace('\n', "\\n"),
        toml_table(&ec1),
    );
    // jwks_min_refetch = 1h: the one fetch allowed is the first; the attacks cause none.
    let gw = start(&format!(
        "{}{}{}",
        plugins(ALL_GRANTS, &[jwks.up.addr, attacker.up.addr]),
        upstream(&backend),
        route("api", "pooled", &jwks_config(&jwks_url, "1h", "1h", &keys)),
    ));

    let controls = controls(&k);
    for (name, token, kid) in &controls {
        assert_accepted(name, &call(&gw, "api", token).await, kid);
    }
    assert_eq!(backend.hits(), controls.len());
    assert!(
        backend
            .seen()
            .iter()
            .all(|s| !s.headers.contains_key("authorization")),
        "forward_token = false removes the token"
    );
    assert_eq!(
        jwks.fetches("/jwks.json"),
        1,
        "the JWKS is fetched on first use"
    );

    let attacks = attacks(&k, &jwks_url, &attacker);
    assert!(attacks.len() > 150, "{}", attacks.len());
    for (name, token, expired) in &attacks {
        let r = call(&gw, "api", token).await;
        assert_refused(name, &r, *expired);
        assert_eq!(
            backend.hits(),
            controls.len(),
            "{name}: reached the upstream"
        );
        assert_eq!(jwks.up.hits(), 1, "{name}: caused a JWKS fetch");
        assert_eq!(attacker.up.hits(), 0, "{name}: fetched from the attacker");
    }

    // No credentials at all: the challenge carries no error code (RFC 6750 §3.1).
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")]] {
        let r = get(&gw.url("main", "/api/orders"), &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="sluice""#)
        );
        assert_eq!(r.json()["error"], "unauthorized");
    }

    // The controls still pass: the refusals were the tokens', not a broken cache.
    for (name, token, kid) in &controls {
        assert_accepted(name, &call(&gw, "api", token).await, kid);
    }
    assert_eq!(backend.hits(), 2 * controls.len());
    let paths: Vec<String> = jwks.up.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/jwks.json"], "only the configured URL, once");
    assert_eq!(attacker.up.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Row 6: JWKS rotation, floods, failures
// ---------------------------------------------------------------------------------------

/// Routes `pooled` and `isolated` (one policy instance per request), each with its own
/// JWKS path on `jwks` (`/pooled.json`, `/isolated.json`) and the given cache timings.
fn two_routes(jwks: &Jwks, ttl: &str, min_refetch: &str) -> String {
    let mut out = String::new();
    for mode in ["pooled", "isolated"] {
        let url = jwks.url(&format!("/{mode}.json"));
        out.push_str(&route(mode, mode, &jwks_config(&url, ttl, min_refetch, "")));
    }
    out
}

/// Sends `token` to `route` until it is accepted (every earlier answer must be a 401),
/// within [`DEADLINE`]; returns how many 401s came first.
async fn until_accepted(gw: &Gateway, route: &str, token: &str, kid: &str) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut refused = 0;
    loop {
        let r = call(gw, route, token).await;
        if r.status == 200 {
            assert_accepted(route, &r, kid);
            return refused;
        }
        assert_refused(route, &r, false);
        refused += 1;
        assert!(Instant::now() < deadline, "{route}: {kid} never accepted");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_jwks_key_is_accepted_after_exactly_one_refetch() {
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("k1")])).await;
    let backend = Upstream::named("ok").await;
    let gw = start(&format!(
        "{}{}{}",
        plugins(ALL_GRANTS, &[jwks.up.addr]),
        upstream(&backend),
        two_routes(&jwks, "1h", "1s"),
    ));
    let (old, new) = (rs256(&k.a, "k1"), rs256(&k.b, "k2"));

    for route in ["pooled", "isolated"] {
        let path = format!("/{route}.json");
        for _ in 0..4 {
            assert_accepted(route, &call(&gw, route, &old).await, "k1");
        }
        // One fetch, even with a fresh instance per request: they share it through kv.
        assert_eq!(jwks.fetches(&path), 1, "{route}");
        // Not yet published: refused, and no refetch within jwks_min_refetch of the first.
        assert_refused(route, &call(&gw, route, &new).await, false);
    }

    // The identity provider publishes k2 next to k1.
    jwks.serve(Answer::Keys(json!([k.b.jwk("k2"), k.a.jwk("k1")])));
    for route in ["pooled", "isolated"] {
        let path = format!("/{route}.json");
        let before = jwks.fetches(&path);
        assert!(before <= 2, "{route}: {before} fetches");
        until_accepted(&gw, route, &new, "k2").await;
        assert_eq!(
            jwks.fetches(&path),
            before + 1,
            "{route}: k2 accepted after one refetch"
        );
        for _ in 0..4 {
            assert_accepted(route, &call(&gw, route, &new).await, "k2");
            assert_accepted(route, &call(&gw, route, &old).await, "k1");
        }
        assert_eq!(
            jwks.fetches(&path),
            before + 1,
            "{route}: known keys fetch nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_min_refetch() {
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("k1")])).await;
    let backend = Upstream::named("ok").await;
    let began = Instant::now();
    let gw = start(&format!(
        "{}{}{}",
        plugins(ALL_GRANTS, &[jwks.up.addr]),
        upstream(&backend),
        two_routes(&jwks, "2m", "1m"),
    ));
    let valid = rs256(&k.a, "k1");
    for route in ["pooled", "isolated"] {
        assert_accepted(route, &call(&gw, route, &valid).await, "k1");
    }

    // 200 tokens per route, each with a new kid (junk signatures: the attacker has no key),
    // 8 at a time so that several pooled instances are busy at once; a valid token every
    // 20th request.
    const FLOOD: usize = 200;
    let junk = b64u([0x5a; 256]);
    let requests: Vec<(&str, usize)> = ["pooled", "isolated"]
        .into_iter()
        .flat_map(|route| (0..FLOOD).map(move |i| (route, i)))
        .collect();
    let gw = &gw;
    let answers: Vec<(&str, usize, Resp)> = futures_util::stream::iter(requests)
        .map(|(route, i)| {
            let token = if i % 20 == 19 {
                valid.clone()
            } else {
                let h = header("RS256", Some(&format!("flood-{i}")));
                format!("{}.{junk}", signing_input(&h, &claims(json!({}))))
            };
            async move { (route, i, call(gw, route, &token).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (route, i, r) in &answers {
        if i % 20 == 19 {
            assert_accepted(&format!("{route} valid #{i}"), r, "k1");
        } else {
            assert_refused(&format!("{route} flood-{i}"), r, false);
        }
    }
    assert_eq!(backend.hits(), 2 + 2 * FLOOD / 20);

    // Fetches are at least jwks_min_refetch apart, so in `elapsed` there can be at most
    // elapsed / 1m + 1 of them (the first being the one on first use).
    let bound = began.elapsed().as_secs() as usize / 60 + 1;
    for route in ["pooled", "isolated"] {
        let fetches = jwks.fetches(&format!("/{route}.json"));
        assert!(
            (1..=bound).contains(&fetches),
            "{route}: {fetches} JWKS fetches for a {FLOOD}-token flood (at most {bound})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_jwks_endpoint_leaves_the_cached_keys_working() {
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("k1")])).await;
    let backend = Upstream::named("ok").await;
    let began = Instant::now();
    // jwks_ttl = 1s: every second the keys are due for a refresh that fails.
    let gw = start(&format!(
        "{}{}{}",
        plugins(ALL_GRANTS, &[jwks.up.addr]),
        upstream(&backend),
        two_routes(&jwks, "1s", "1s"),
    ));
    let (old, new) = (rs256(&k.a, "k1"), rs256(&k.b, "k2"));
    for route in ["pooled", "isolated"] {
        assert_accepted(route, &call(&gw, route, &old).await, "k1");
    }

    let unusable_key = json!([{"kty": "oct", "kid": "k2", "k": b64u(HS_SECRET)}]);
    let failures = [
        Answer::Status(500),
        Answer::Status(404),
        Answer::Body("<html>maintenance</html>".into()),
        Answer::Body("{\"keys\": []}".into()),
        Answer::Keys(unusable_key),
    ];
    for failure in failures {
        jwks.serve(failure.clone());
        let before: Vec<usize> = ["pooled", "isolated"]
            .iter()
            .map(|r| jwks.fetches(&format!("/{r}.json")))
            .collect();
        // Until both routes have retried against the failing endpoint (once the TTL and
        // jwks_min_refetch have passed), the cached k1 keeps verifying, and k2 — which the
        // broken answers do not provide — is refused.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut retried = 0;
            for (route, before) in ["pooled", "isolated"].into_iter().zip(&before) {
                let what = format!("{route} while the JWKS answers {failure:?}");
                assert_accepted(&what, &call(&gw, route, &old).await, "k1");
                assert_refused(&what, &call(&gw, route, &new).await, false);
                if jwks.fetches(&format!("/{route}.json")) > *before {
                    retried += 1;
                }
            }
            if retried == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no retry while answering {failure:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        // The requests made during the retry are answered from the cache as well.
        for route in ["pooled", "isolated"] {
            assert_accepted(route, &call(&gw, route, &old).await, "k1");
        }
    }
    assert!(
        gw.wait_stderr(
            |l| l.contains("fetch failed") && l.contains("keeping 1 cached key(s)"),
            Duration::from_secs(5)
        ),
        "the failed fetches are logged"
    );

    // Recovery: the endpoint answers again, with k2 published.
    jwks.serve(Answer::Keys(json!([k.a.jwk("k1"), k.b.jwk("k2")])));
    for route in ["pooled", "isolated"] {
        until_accepted(&gw, route, &new, "k2").await;
        assert_accepted(route, &call(&gw, route, &old).await, "k1");
    }

    // However often the keys were due, fetches were at least jwks_min_refetch apart.
    let bound = began.elapsed().as_secs() as usize + 1;
    for route in ["pooled", "isolated"] {
        let fetches = jwks.fetches(&format!("/{route}.json"));
        assert!(
            fetches <= bound,
            "{route}: {fetches} fetches in at most {bound} s"
        );
    }
}

/// A JWKS endpoint answering key `k1` after `delay`, a backend, a gateway with the
/// `pooled` and `isolated` routes on it, and a token signed with `k1`.
async fn slow_jwks_gateway(delay: Duration) -> (Jwks, Upstream, Gateway, String) {
    let k = Keys::new();
    let jwks = Jwks::start(json!([])).await;
    jwks.serve(Answer::Slow(delay, json!([k.a.jwk("k1")])));
    let backend = Upstream::named("ok").await;
    let gw = start(&format!(
        "{}{}{}",
        plugins(ALL_GRANTS, &[jwks.up.addr]),
        upstream(&backend),
        two_routes(&jwks, "1h", "1s"),
    ));
    let valid = rs256(&k.a, "k1");
    (jwks, backend, gw, valid)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_fetch_slower_than_the_cpu_timeout_does_not_count_as_cpu() {
    // The identity provider takes 600 ms to answer; the plugin's CPU budget is 200 ms, its
    // wall budget 2 s. Waiting for the answer is not CPU time: the keys load and are used.
    let (jwks, _backend, gw, valid) = slow_jwks_gateway(Duration::from_millis(600)).await;
    for route in ["pooled", "isolated"] {
        let started = Instant::now();
        let r = call(&gw, route, &valid).await;
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "{route}: no slow fetch"
        );
        assert_accepted(route, &r, "k1");
        assert_accepted(route, &call(&gw, route, &valid).await, "k1");
        assert_eq!(jwks.fetches(&format!("/{route}.json")), 1, "{route}");
    }
    assert!(
        !gw.stderr().iter().any(|l| l.contains("policy failed")),
        "{:?}",
        gw.stderr()
    );
}

/// A JWKS fetch slower than the policy's wall budget (2 s) times out inside the call, at
/// the time left to it less a margin: the policy hears of the timeout and answers (no key:
/// 401), instead of being cancelled with its call (a policy failure, its instance lost).
#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_fetch_slower_than_the_call_budget_times_out_within_the_call() {
    let (_jwks, _backend, gw, valid) = slow_jwks_gateway(Duration::from_secs(4)).await;
    for route in ["pooled", "isolated"] {
        let started = Instant::now();
        let r = call(&gw, route, &valid).await;
        assert_refused(route, &r, false);
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "{route}: no slow fetch"
        );
    }
    assert!(
        !gw.stderr().iter().any(|l| l.contains("policy failed")),
        "{:?}",
        gw.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

/// A whole configuration for the capability tests: route `api` with the JWKS on `jwks` and
/// the inline HMAC key `hs1`.
fn capability_config(
    grants: &str,
    allow: &[SocketAddr],
    jwks: &Jwks,
    backend: &Upstream,
) -> String {
    let keys = format!("keys = [{{ kid = \"hs1\", secret = \"{HS_SECRET}\" }}]");
    config(&format!(
        "{}{}{}",
        plugins(grants, allow),
        upstream(backend),
        route(
            "api",
            "pooled",
            &jwks_config(&jwks.url("/jwks.json"), "5m", "30s", &keys)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_outbound_http_grant_the_configuration_is_refused() {
    warm_cache();
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("k1")])).await;
    let backend = Upstream::named("ok").await;
    let allow = [jwks.up.addr];
    let (code, out) = validate(&capability_config(ALL_GRANTS, &allow, &jwks, &backend));
    assert_eq!(code, 0, "the control configuration is valid: {out}");
    let (code, out) = validate(&capability_config(
        r#"["clock", "log", "kv"]"#,
        &allow,
        &jwks,
        &backend,
    ));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "routes[0].policies[0]: plugin \"jwt-auth\": the component imports sluice:policy/outbound-http@0.1.0, which is not granted to it"
        ),
        "{out}"
    );
    let cfg = capability_config(r#"["clock", "log", "kv"]"#, &allow, &jwks, &backend);
    match Gateway::try_start(&cfg) {
        Ok(_) => panic!("the gateway started without the outbound-http grant"),
        Err(e) => assert!(e.contains("sluice:policy/outbound-http@0.1.0"), "{e}"),
    }
    assert_eq!(jwks.up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_host_missing_from_the_allowlist_is_never_contacted() {
    warm_cache();
    let k = Keys::new();
    let jwks = Jwks::start(json!([k.a.jwk("k1")])).await;
    let backend = Upstream::named("ok").await;
    // Allowlisted: the same host on another port (the backend's), not the JWKS server.
    let gw = Gateway::start(&capability_config(
        ALL_GRANTS,
        &[backend.addr],
        &jwks,
        &backend,
    ));
    for _ in 0..3 {
        assert_refused(
            "RS256 without reachable keys",
            &call(&gw, "api", &rs256(&k.a, "k1")).await,
            false,
        );
    }
    let hs = jws(&header("HS256", Some("hs1")), &claims(json!({})), |m| {
        hmac(ring::hmac::HMAC_SHA256, HS_SECRET.as_bytes(), m)
    });
    assert_accepted(
        "HS256 from the inline secret",
        &call(&gw, "api", &hs).await,
        "hs1",
    );
    assert_eq!(jwks.up.hits(), 0, "the JWKS server was contacted");
    assert!(
        gw.wait_stderr(
            |l| l.contains("fetch failed") && l.contains("denied"),
            Duration::from_secs(5)
        ),
        "the denied fetch is logged: {:?}",
        gw.stderr()
    );
}
