//! Verification keys: what they are, which algorithms each allows, and signature checks.
//!
//! The key decides what can be verified with it, never the token: an RSA key only ever
//! verifies RS*/PS* signatures, an HMAC secret only HS*, and so on ([`Key::allows`]). This
//! is what rules out algorithm confusion (an `HS256` token "signed" with an RSA public key).

use std::fmt;

use hmac::{Hmac, Mac};
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::{Sha256, Sha384, Sha512};
use signature::Verifier;

use crate::alg::{AlgSet, Algorithm};

/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits (bounds verification cost; the `rsa` crate's
/// own limit).
pub const MAX_RSA_BITS: usize = 4096;

/// The key material of one verification key.
#[derive(Clone)]
pub enum KeyMaterial {
    /// An HMAC shared secret.
    Hmac(Vec<u8>),
    /// An RSA public key (at least [`MIN_RSA_BITS`]).
    Rsa(Box<RsaPublicKey>),
    /// A P-256 public key.
    P256(Box<p256::ecdsa::VerifyingKey>),
    /// A P-384 public key.
    P384(Box<p384::ecdsa::VerifyingKey>),
    /// An Ed25519 public key.
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

impl KeyMaterial {
    /// Every algorithm this kind of key can verify.
    pub fn family(&self) -> AlgSet {
        match self {
            KeyMaterial::Hmac(secret) => Algorithm::ALL
                .into_iter()
                .filter(|a| {
                    a.hmac_min_secret_len()
                        .is_some_and(|min| secret.len() >= min)
                })
                .collect(),
            KeyMaterial::Rsa(_) => AlgSet::RSA,
            KeyMaterial::P256(_) => AlgSet::P256,
            KeyMaterial::P384(_) => AlgSet::P384,
            KeyMaterial::Ed25519(_) => AlgSet::ED25519,
        }
    }

    /// A short name of the key type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Hmac(_) => "HMAC secret",
            KeyMaterial::Rsa(_) => "RSA public key",
            KeyMaterial::P256(_) => "P-256 public key",
            KeyMaterial::P384(_) => "P-384 public key",
            KeyMaterial::Ed25519(_) => "Ed25519 public key",
        }
    }

    /// Parses a PEM public key: SPKI (`BEGIN PUBLIC KEY`, any supported type) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`). Private keys and certificates are refused.
    ///
    /// # Errors
    /// A message saying why the PEM is not a usable public key.
    pub fn from_pem(pem: &str) -> Result<KeyMaterial, String> {
        let pem = pem.trim();
        if pem.contains("PRIVATE KEY-----") {
            return Err("is a private key; give the public key".into());
        }
        if pem.starts_with("-----BEGIN CERTIFICATE-----") {
            return Err("is a certificate; give its public key (`BEGIN PUBLIC KEY`)".into());
        }
        if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            let key = RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| format!("invalid: {e}"))?;
            return KeyMaterial::rsa(key);
        }
        if !pem.starts_with("-----BEGIN PUBLIC KEY-----") {
            return Err("is not a PEM public key (`-----BEGIN PUBLIC KEY-----`)".into());
        }
        if let Ok(key) = RsaPublicKey::from_public_key_pem(pem) {
            return KeyMaterial::rsa(key);
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(KeyMaterial::P256(Box::new(key)));
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(KeyMaterial::P384(Box::new(key)));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return KeyMaterial::ed25519(key.as_bytes());
        }
        Err("is not an RSA, P-256, P-384 or Ed25519 public key".into())
    }

    /// Wraps an RSA key after checking its size.
    ///
    /// # Errors
    /// When the modulus is outside [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
    pub fn rsa(key: RsaPublicKey) -> Result<KeyMaterial, String> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
            ));
        }
        if bits > MAX_RSA_BITS {
            return Err(format!(
                "RSA key has {bits} bits; at most {MAX_RSA_BITS} are accepted"
            ));
        }
        Ok(KeyMaterial::Rsa(Box::new(key)))
    }

    /// An Ed25519 key from its 32 bytes; weak (small-order) points are refused.
    ///
    /// # Errors
    /// When the bytes are not a valid, non-weak Ed25519 point.
    pub fn ed25519(bytes: &[u8; 32]) -> Result<KeyMaterial, String> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| "is not a valid Ed25519 public key".to_string())?;
        if key.is_weak() {
            return Err("is a weak (small-order) Ed25519 key".into());
        }
        Ok(KeyMaterial::Ed25519(Box::new(key)))
    }

    /// Checks `signature` over `message` with `alg`. `alg` must be in [`KeyMaterial::family`]
    /// (callers check [`Key::allows`] first); a mismatch fails closed.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (KeyMaterial::Hmac(secret), Algorithm::HS256) => {
                hmac_verify::<Hmac<Sha256>>(secret, message, signature)
            }
            (KeyMaterial::Hmac(secret), Algorithm::HS384) => {
                hmac_verify::<Hmac<Sha384>>(secret, message, signature)
            }
            (KeyMaterial::Hmac(secret), Algorithm::HS512) => {
                hmac_verify::<Hmac<Sha512>>(secret, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::RS256) => {
                pkcs1v15_verify::<Sha256>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::RS384) => {
                pkcs1v15_verify::<Sha384>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::RS512) => {
                pkcs1v15_verify::<Sha512>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::PS256) => {
                pss_verify::<Sha256>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::PS384) => {
                pss_verify::<Sha384>(key, message, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::PS512) => {
                pss_verify::<Sha512>(key, message, signature)
            }
            (KeyMaterial::P256(key), Algorithm::ES256) => {
                // Exactly r || s, 32 bytes each; zero scalars are refused by `from_slice`.
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (KeyMaterial::P384(key), Algorithm::ES384) => {
                p384::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (KeyMaterial::Ed25519(key), Algorithm::EdDSA | Algorithm::Ed25519) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
            }
            _ => false,
        }
    }
}

fn hmac_verify<M: Mac + hmac::digest::KeyInit>(
    secret: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(message);
    // Constant-time comparison; a signature of the wrong length fails.
    mac.verify_slice(signature).is_ok()
}

fn pkcs1v15_verify<D>(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    let verifier = rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone());
    rsa::pkcs1v15::Signature::try_from(signature)
        .is_ok_and(|sig| verifier.verify(message, &sig).is_ok())
}

fn pss_verify<D>(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    // The salt length is the hash output size, as RFC 7518 §3.5 requires.
    let verifier = rsa::pss::VerifyingKey::<D>::new(key.clone());
    rsa::pss::Signature::try_from(signature).is_ok_and(|sig| verifier.verify(message, &sig).is_ok())
}

/// One verification key: an optional key id, the algorithms it may verify, its material.
#[derive(Clone)]
pub struct Key {
    /// The key id tokens name in their `kid` header; `None` matches any token.
    pub kid: Option<String>,
    /// The algorithms this key verifies (a non-empty subset of its family).
    pub algorithms: AlgSet,
    /// The key itself.
    pub material: KeyMaterial,
}

impl Key {
    /// Whether this key may verify a token whose header says `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(alg) && self.material.family().contains(alg)
    }

    /// Whether this key is a candidate for a token with key id `kid`: keys without a kid
    /// match every token, keys with one only tokens naming it.
    pub fn matches_kid(&self, kid: Option<&str>) -> bool {
        match (&self.kid, kid) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (HMAC secrets).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("kind", &self.material.kind())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;

    #[test]
    fn hmac_family_follows_secret_length() {
        assert_eq!(
            KeyMaterial::Hmac(vec![1; 32]).family(),
            AlgSet::of(&[Algorithm::HS256])
        );
        assert_eq!(
            KeyMaterial::Hmac(vec![1; 48]).family(),
            AlgSet::of(&[Algorithm::HS256, Algorithm::HS384])
        );
        assert_eq!(KeyMaterial::Hmac(vec![1; 64]).family(), AlgSet::HMAC);
        assert!(KeyMaterial::Hmac(vec![1; 31]).family().is_empty());
    }

    #[test]
    fn pem_parsing_recognises_each_type() {
        let rsa = KeyMaterial::from_pem(&testkeys::rsa_a_public_pem()).unwrap();
        assert_eq!(rsa.kind(), "RSA public key");
        let rsa1 = KeyMaterial::from_pem(&testkeys::rsa_a_public_pkcs1_pem()).unwrap();
        assert_eq!(rsa1.kind(), "RSA public key");
        let p256 = KeyMaterial::from_pem(&testkeys::p256_public_pem()).unwrap();
        assert_eq!(p256.kind(), "P-256 public key");
        let p384 = KeyMaterial::from_pem(&testkeys::p384_public_pem()).unwrap();
        assert_eq!(p384.kind(), "P-384 public key");
        let ed = KeyMaterial::from_pem(&testkeys::ed25519_public_pem()).unwrap();
        assert_eq!(ed.kind(), "Ed25519 public key");
    }

    #[test]
    fn pem_rejects_private_small_and_garbage() {
        let err = KeyMaterial::from_pem(testkeys::RSA_A_PRIVATE_PEM)
            .err()
            .unwrap();
        assert!(err.contains("private key"), "{err}");
        let err = KeyMaterial::from_pem(testkeys::RSA_1024_PUBLIC_PEM)
            .err()
            .unwrap();
        assert!(err.contains("1024 bits"), "{err}");
        let err = KeyMaterial::from_pem("hello").err().unwrap();
        assert!(err.contains("not a PEM public key"), "{err}");
        let err =
            KeyMaterial::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .err()
                .unwrap();
        assert!(err.contains("not an RSA"), "{err}");
    }

    #[test]
    fn weak_ed25519_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(KeyMaterial::ed25519(&identity).is_err());
    }

    #[test]
    fn mismatched_alg_fails_closed() {
        let key = KeyMaterial::from_pem(&testkeys::rsa_a_public_pem()).unwrap();
        assert!(!key.verify(Algorithm::HS256, b"m", b"sig"));
        assert!(!key.verify(Algorithm::ES256, b"m", &[0; 64]));
    }

    #[test]
    fn kid_matching() {
        let key = |kid: Option<&str>| Key {
            kid: kid.map(str::to_owned),
            algorithms: AlgSet::HMAC,
            material: KeyMaterial::Hmac(vec![0; 32]),
        };
        assert!(key(None).matches_kid(None));
        assert!(key(None).matches_kid(Some("x")));
        assert!(key(Some("x")).matches_kid(Some("x")));
        assert!(!key(Some("x")).matches_kid(Some("X")));
        assert!(!key(Some("x")).matches_kid(None));
        let debug = format!("{:?}", key(Some("x")));
        assert!(!debug.contains("[0"), "{debug}");
    }
}
