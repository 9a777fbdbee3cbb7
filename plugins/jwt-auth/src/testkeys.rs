//! Test-only keys and a token signer. The RSA keys are fixtures in `testdata/`; the EC and
//! Ed25519 keys come from fixed bytes. None of them protects anything.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Sha256, Sha384, Sha512};
use signature::{RandomizedSigner, SignatureEncoding, Signer};

use crate::alg::Algorithm;

pub(crate) const RSA_A_PRIVATE_PEM: &str = include_str!("../testdata/rsa-a.pem");
pub(crate) const RSA_B_PRIVATE_PEM: &str = include_str!("../testdata/rsa-b.pem");
pub(crate) const RSA_1024_PUBLIC_PEM: &str = include_str!("../testdata/rsa-1024.pub.pem");

/// A 32-byte HMAC secret used by most HS tests.
pub(crate) const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

pub(crate) fn rsa_a() -> RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::from_pkcs8_pem(RSA_A_PRIVATE_PEM).unwrap())
        .clone()
}

pub(crate) fn rsa_b() -> RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::from_pkcs8_pem(RSA_B_PRIVATE_PEM).unwrap())
        .clone()
}

pub(crate) fn rsa_a_public_pem() -> String {
    RsaPublicKey::from(&rsa_a())
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

pub(crate) fn rsa_a_public_pkcs1_pem() -> String {
    RsaPublicKey::from(&rsa_a())
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap()
}

fn rsa_jwk(key: &RsaPrivateKey, kid: &str) -> Value {
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

pub(crate) fn rsa_a_jwk(kid: &str) -> Value {
    rsa_jwk(&rsa_a(), kid)
}

pub(crate) fn rsa_b_jwk(kid: &str) -> Value {
    rsa_jwk(&rsa_b(), kid)
}

pub(crate) fn p256() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap()
}

pub(crate) fn p384() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&[0x22; 48]).unwrap()
}

pub(crate) fn ed25519() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x33; 32])
}

pub(crate) fn p256_public_pem() -> String {
    p256()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

pub(crate) fn p384_public_pem() -> String {
    p384()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

pub(crate) fn ed25519_public_pem() -> String {
    ed25519()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

pub(crate) fn p256_jwk(kid: &str) -> Value {
    let point = p256().verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

pub(crate) fn p384_jwk(kid: &str) -> Value {
    let point = p384().verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-384", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

pub(crate) fn ed25519_jwk(kid: &str) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(ed25519().verifying_key().as_bytes()),
    })
}

/// Which private key signs a test token.
#[derive(Clone, Debug)]
pub(crate) enum TestSigner {
    Hmac(Vec<u8>),
    RsaA,
    RsaB,
    P256,
    P384,
    Ed25519,
}

/// A deterministic RNG for PSS salts (tests only; never for real keys).
struct TestRng(u64);

impl rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for TestRng {}

fn hmac<M: hmac::Mac + hmac::digest::KeyInit>(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::Mac>::new_from_slice(secret).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// The signature of `alg` over `msg` by `signer`.
pub(crate) fn sign_bytes(alg: Algorithm, signer: &TestSigner, msg: &[u8]) -> Vec<u8> {
    use rsa::{pkcs1v15, pss};
    let rsa_key = || match signer {
        TestSigner::RsaA => rsa_a(),
        TestSigner::RsaB => rsa_b(),
        other => panic!("{alg} needs an RSA signer, not {other:?}"),
    };
    let mut rng = TestRng(7);
    match (alg, signer) {
        (Algorithm::HS256, TestSigner::Hmac(s)) => hmac::<hmac::Hmac<Sha256>>(s, msg),
        (Algorithm::HS384, TestSigner::Hmac(s)) => hmac::<hmac::Hmac<Sha384>>(s, msg),
        (Algorithm::HS512, TestSigner::Hmac(s)) => hmac::<hmac::Hmac<Sha512>>(s, msg),
        (Algorithm::RS256, _) => pkcs1v15::SigningKey::<Sha256>::new(rsa_key())
            .sign(msg)
            .to_vec(),
        (Algorithm::RS384, _) => pkcs1v15::SigningKey::<Sha384>::new(rsa_key())
            .sign(msg)
            .to_vec(),
        (Algorithm::RS512, _) => pkcs1v15::SigningKey::<Sha512>::new(rsa_key())
            .sign(msg)
            .to_vec(),
        (Algorithm::PS256, _) => pss::SigningKey::<Sha256>::new(rsa_key())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        (Algorithm::PS384, _) => pss::SigningKey::<Sha384>::new(rsa_key())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        (Algorithm::PS512, _) => pss::SigningKey::<Sha512>::new(rsa_key())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        (Algorithm::ES256, TestSigner::P256) => {
            let sig: p256::ecdsa::Signature = p256().sign(msg);
            sig.to_bytes().to_vec()
        }
        (Algorithm::ES384, TestSigner::P384) => {
            let sig: p384::ecdsa::Signature = p384().sign(msg);
            sig.to_bytes().to_vec()
        }
        (Algorithm::EdDSA | Algorithm::Ed25519, TestSigner::Ed25519) => {
            ed25519().sign(msg).to_bytes().to_vec()
        }
        (alg, signer) => panic!("cannot sign {alg} with {signer:?}"),
    }
}

/// A compact JWS of `header` and `claims` (JSON values), signed with the header's `alg`
/// (which must name a supported algorithm; use [`sign_raw`] for anything else).
pub(crate) fn sign(header: &Value, claims: &Value, signer: &TestSigner) -> String {
    let alg = Algorithm::from_name(header["alg"].as_str().unwrap()).unwrap();
    sign_as(alg, header, claims, signer)
}

/// Like [`sign`] but with `alg` chosen by the caller, whatever the header says.
pub(crate) fn sign_as(
    alg: Algorithm,
    header: &Value,
    claims: &Value,
    signer: &TestSigner,
) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign_bytes(alg, signer, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A token with the given raw signature bytes.
pub(crate) fn sign_raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// The signer that matches a key of the control set for `alg`.
pub(crate) fn signer_for(alg: Algorithm) -> TestSigner {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            TestSigner::Hmac(HMAC_SECRET.repeat(2).into_bytes())
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => TestSigner::RsaA,
        Algorithm::ES256 => TestSigner::P256,
        Algorithm::ES384 => TestSigner::P384,
        Algorithm::EdDSA | Algorithm::Ed25519 => TestSigner::Ed25519,
    }
}
