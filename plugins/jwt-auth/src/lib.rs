//! `jwt-auth`: a Sluice policy that authenticates requests by a JWT bearer token
//! (RFC 7519), following the JWT best current practices of RFC 8725.
//!
//! - [`policy`]: the [`policy::JwtAuth`] policy, exported as the component.
//! - [`config`]: the configuration and its validation.
//! - The verification core — [`token`] (structure and header), [`key`] and [`jwk`] (keys
//!   and what each may verify), [`jwks`] (the fetched key cache), [`claims`], and
//!   [`verifier`] tying them together — is plain Rust over the small [`env::Env`] trait,
//!   tested natively.
//! - [`extract`]: where the token is read from, and how it is removed.
//!
//! See `README.md` for the configuration reference.

pub mod alg;
pub mod claims;
pub mod config;
pub mod duration;
pub mod env;
pub mod error;
pub mod extract;
pub mod jwk;
pub mod jwks;
pub mod key;
pub mod policy;
pub mod token;
pub mod verifier;

#[cfg(test)]
mod testkeys;

// No response phase: the `request-policy` world (the gateway skips it on the way back).
sluice_sdk::export_request_policy!(policy::JwtAuth);
