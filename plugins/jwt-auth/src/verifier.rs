//! The verification of one token, end to end: size, structure and header, key selection,
//! signature, claims.
//!
//! Key selection follows RFC 8725 §3.1: the token's `alg` only narrows the keys tried to
//! those *configured* to allow that algorithm; it never decides how a key is used. `kid` is
//! an opaque string compared for equality, never a path, URL or query.

use crate::claims::Claims;
use crate::config::{Settings, normalize_typ};
use crate::env::{Env, LogLevel};
use crate::error::AuthError;
use crate::jwks::{JwksCache, Outcome};
use crate::key::Key;
use crate::token::{self, ParsedToken, b64_decode, parse_object};

/// The most keys one token's signature is checked against (tokens without a `kid` may
/// match several keys); bounds the work an unauthenticated request can cause.
pub const MAX_CANDIDATE_KEYS: usize = 8;

/// Verifies tokens against the configured keys and the JWKS cache.
#[derive(Debug)]
pub struct Verifier {
    settings: Settings,
    jwks: Option<JwksCache>,
}

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Its claims.
    pub claims: Claims,
    /// The `kid` of the configured or fetched key that verified it, if that key has one.
    pub key_id: Option<String>,
}

enum SignatureCheck {
    Verified(Option<String>),
    NoCandidate,
    /// Candidates were tried and none verified; `kid_known` when one of them has exactly
    /// the token's `kid` (the others are keys without a `kid`, candidates for any token).
    BadSignature {
        kid_known: bool,
    },
}

impl Verifier {
    /// A verifier for validated `settings`; the JWKS (if any) is fetched on first use.
    pub fn new(settings: Settings) -> Self {
        let jwks = settings
            .jwks
            .clone()
            .map(|jwks| JwksCache::new(jwks, settings.algorithms));
        Verifier { settings, jwks }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The JWKS cache, when a `jwks_url` is configured.
    pub fn jwks(&self) -> Option<&JwksCache> {
        self.jwks.as_ref()
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// The reason the token is refused.
    pub fn verify(&mut self, token: &str, env: &mut dyn Env) -> Result<Verified, AuthError> {
        if token.len() > self.settings.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let parsed = token::parse(token)?;
        if !self.settings.algorithms.contains(parsed.alg) {
            return Err(AuthError::UnsupportedAlg);
        }
        if let Some(want) = &self.settings.typ {
            match &parsed.typ {
                Some(typ) if normalize_typ(typ) == *want => {}
                _ => return Err(AuthError::WrongType),
            }
        }

        if let Some(cache) = &mut self.jwks {
            cache.refresh_if_stale(env);
        }
        let mut check = self.check_signature(&parsed);
        // A token naming a key the set does not have: no candidate at all, or only keys
        // without a `kid` (which would otherwise hide a rotation until the TTL runs out).
        let unknown_kid = match check {
            SignatureCheck::NoCandidate => true,
            SignatureCheck::BadSignature { kid_known } => !kid_known && parsed.kid.is_some(),
            SignatureCheck::Verified(_) => false,
        };
        if unknown_kid && let Some(cache) = &mut self.jwks {
            // Perhaps the keys rotated: refetch, at most once per jwks_min_refetch.
            match cache.update_for_unknown_key(env) {
                Outcome::Updated => check = self.check_signature(&parsed),
                Outcome::RateLimited => env.log(
                    LogLevel::Debug,
                    "jwks: unknown key, refetch skipped (jwks_min_refetch)",
                ),
                Outcome::Fresh | Outcome::Failed(_) => {}
            }
        }
        let key_id = match check {
            SignatureCheck::Verified(key_id) => key_id,
            SignatureCheck::NoCandidate => return Err(AuthError::NoMatchingKey),
            SignatureCheck::BadSignature { .. } => return Err(AuthError::BadSignature),
        };

        let payload = b64_decode(parsed.payload_b64, "payload is not base64url")?;
        let claims: Claims = parse_object(&payload, "payload is not a JSON object")?;
        self.settings.rules.validate(&claims, env.now_millis())?;
        Ok(Verified { claims, key_id })
    }

    fn candidates<'a>(&'a self, parsed: &'a ParsedToken<'_>) -> impl Iterator<Item = &'a Key> {
        let fetched = self.jwks.as_ref().map(JwksCache::keys).unwrap_or_default();
        self.settings
            .keys
            .iter()
            .chain(fetched)
            .filter(|key| key.allows(parsed.alg) && key.matches_kid(parsed.kid.as_deref()))
            .take(MAX_CANDIDATE_KEYS)
    }

    fn check_signature(&self, parsed: &ParsedToken<'_>) -> SignatureCheck {
        let (mut any, mut kid_known) = (false, false);
        for key in self.candidates(parsed) {
            any = true;
            kid_known |= key.kid.is_some();
            if key.material.verify(
                parsed.alg,
                parsed.signing_input.as_bytes(),
                &parsed.signature,
            ) {
                return SignatureCheck::Verified(key.kid.clone());
            }
        }
        if any {
            SignatureCheck::BadSignature { kid_known }
        } else {
            SignatureCheck::NoCandidate
        }
    }
}

#[cfg(test)]
mod tests;
