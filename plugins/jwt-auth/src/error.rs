//! Why a request was not authenticated, and what the client is told.

use std::fmt;

/// Why a token (or its absence) was refused. Every variant answers 401; [`AuthError::public`]
/// says what the client sees, [`fmt::Display`] the detail written to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token was found where the policy looks for one.
    MissingToken,
    /// More than one token was presented (e.g. two `Authorization` headers).
    AmbiguousToken,
    /// The token is longer than `max_token_bytes`.
    TooLarge,
    /// The token is not a well-formed compact JWS; the text says which part.
    Malformed(&'static str),
    /// The header's `alg` is `none` (in any casing).
    AlgNone,
    /// The header's `alg` is not a supported algorithm, or not allowed by the configuration.
    UnsupportedAlg,
    /// The header carries a parameter that is refused (`jwk`, `jku`, `x5u`, `x5c`, `crit`).
    ForbiddenHeader(&'static str),
    /// The header's `typ` is not the configured one.
    WrongType,
    /// No configured or fetched key matches the token's `kid` and `alg`.
    NoMatchingKey,
    /// A key matched, but the signature does not verify.
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is absent or not one of the configured issuers.
    WrongIssuer,
    /// `aud` is absent or names none of the configured audiences (or is present while no
    /// audience is configured).
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(String),
    /// A registered claim has the wrong JSON type (e.g. a string `exp`).
    InvalidClaim(&'static str),
    /// A claim mapped to an attribute is longer than an attribute may be.
    ClaimTooLarge(String),
}

impl AuthError {
    /// The RFC 6750 error code for `WWW-Authenticate`, or `None` when the request carried no
    /// credentials at all (RFC 6750 §3.1: then no error code is sent).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            AuthError::MissingToken => None,
            _ => Some("invalid_token"),
        }
    }

    /// The message the client sees. Deliberately coarse: only "missing" and "expired" are
    /// told apart (clients act on those); every other failure reads the same, so the answer
    /// does not help probe the configuration.
    pub fn public(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "an access token is required",
            AuthError::Expired => "the access token expired",
            _ => "the access token is invalid",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingToken => f.write_str("no token in the request"),
            AuthError::AmbiguousToken => f.write_str("more than one token in the request"),
            AuthError::TooLarge => f.write_str("token longer than max_token_bytes"),
            AuthError::Malformed(what) => write!(f, "malformed token: {what}"),
            AuthError::AlgNone => f.write_str("unsigned token (alg none)"),
            AuthError::UnsupportedAlg => f.write_str("algorithm not supported or not allowed"),
            AuthError::ForbiddenHeader(name) => write!(f, "refused header parameter `{name}`"),
            AuthError::WrongType => f.write_str("typ header does not match"),
            AuthError::NoMatchingKey => f.write_str("no key for this kid and alg"),
            AuthError::BadSignature => f.write_str("signature does not verify"),
            AuthError::Expired => f.write_str("token expired"),
            AuthError::NotYetValid => f.write_str("token not yet valid (nbf)"),
            AuthError::WrongIssuer => f.write_str("issuer not accepted"),
            AuthError::WrongAudience => f.write_str("audience not accepted"),
            AuthError::MissingClaim(name) => write!(f, "required claim `{name}` is absent"),
            AuthError::InvalidClaim(name) => write!(f, "claim `{name}` has the wrong type"),
            AuthError::ClaimTooLarge(name) => write!(
                f,
                "claim `{name}` is over {} bytes, the most an attribute holds",
                sluice_sdk::context::MAX_ATTRIBUTE_BYTES
            ),
        }
    }
}

impl std::error::Error for AuthError {}
