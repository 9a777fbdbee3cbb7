//! JWS signature algorithms (RFC 7518, RFC 8037, RFC 9864) and sets of them.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A JWS signature algorithm this policy can verify.
///
/// The names are matched exactly (case-sensitive, as RFC 7515 requires), so `none`, `None`,
/// `NONE` or `hs256` are never algorithms. There is deliberately no `none` variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (salt length 32).
    PS256,
    /// RSASSA-PSS with SHA-384 (salt length 48).
    PS384,
    /// RSASSA-PSS with SHA-512 (salt length 64).
    PS512,
    /// ECDSA over P-256 with SHA-256.
    ES256,
    /// ECDSA over P-384 with SHA-384.
    ES384,
    /// EdDSA (RFC 8037); only the Ed25519 curve is supported.
    EdDSA,
    /// Ed25519, the fully-specified name of RFC 9864.
    Ed25519,
}

impl Algorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::Ed25519,
    ];

    /// The JOSE name, e.g. `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::Ed25519 => "Ed25519",
        }
    }

    /// Parses a JOSE name exactly (case-sensitive); `None` for anything unsupported,
    /// including every spelling of `none`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// For HMAC algorithms, the minimum secret length in bytes (the hash output size, as
    /// RFC 7518 §3.2 requires); `None` for the others.
    pub fn hmac_min_secret_len(self) -> Option<usize> {
        match self {
            Algorithm::HS256 => Some(32),
            Algorithm::HS384 => Some(48),
            Algorithm::HS512 => Some(64),
            _ => None,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Algorithm::from_name(&name).ok_or_else(|| {
            let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            serde::de::Error::custom(format!(
                "unsupported algorithm `{name}`, expected one of {}",
                all.join(", ")
            ))
        })
    }
}

/// A set of algorithms (a small bit set).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

impl AlgSet {
    /// The empty set.
    pub const EMPTY: AlgSet = AlgSet(0);

    /// The HMAC family.
    pub const HMAC: AlgSet = AlgSet::of(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    /// The RSA family (PKCS#1 v1.5 and PSS).
    pub const RSA: AlgSet = AlgSet::of(&[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ]);
    /// What a P-256 key can verify.
    pub const P256: AlgSet = AlgSet::of(&[Algorithm::ES256]);
    /// What a P-384 key can verify.
    pub const P384: AlgSet = AlgSet::of(&[Algorithm::ES384]);
    /// What an Ed25519 key can verify.
    pub const ED25519: AlgSet = AlgSet::of(&[Algorithm::EdDSA, Algorithm::Ed25519]);
    /// Every supported algorithm.
    pub const ALL: AlgSet = AlgSet::of(&Algorithm::ALL);

    /// The set of the given algorithms.
    pub const fn of(algs: &[Algorithm]) -> AlgSet {
        let mut bits = 0u16;
        let mut i = 0;
        while i < algs.len() {
            bits |= 1 << (algs[i] as u16);
            i += 1;
        }
        AlgSet(bits)
    }

    /// Whether `alg` is in the set.
    pub fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    /// The algorithms in both sets.
    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    /// Whether every algorithm of `self` is in `other`.
    pub fn is_subset_of(self, other: AlgSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The algorithms in the set, in [`Algorithm::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        AlgSet(iter.into_iter().fold(0, |bits, alg| bits | alg.bit()))
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Algorithm::name).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_exactly() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for bad in [
            "none", "None", "NONE", "nOnE", "hs256", "Hs256", "RS1", "", "ES512",
        ] {
            assert_eq!(Algorithm::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn families_do_not_overlap() {
        let families = [
            AlgSet::HMAC,
            AlgSet::RSA,
            AlgSet::P256,
            AlgSet::P384,
            AlgSet::ED25519,
        ];
        for (i, a) in families.iter().enumerate() {
            for b in &families[i + 1..] {
                assert!(a.intersect(*b).is_empty());
            }
        }
        let union: AlgSet = families.iter().flat_map(|f| f.iter()).collect();
        assert_eq!(union, AlgSet::ALL);
    }

    #[test]
    fn deserialize_rejects_none() {
        let err = serde_json::from_str::<Algorithm>("\"none\"").unwrap_err();
        assert!(err.to_string().contains("unsupported algorithm `none`"));
        assert_eq!(
            serde_json::from_str::<Algorithm>("\"ES384\"").unwrap(),
            Algorithm::ES384
        );
    }
}
