//! The per-request context: string attributes shared by the policies of one request.

use crate::host::{ContextSource, RawContext};

/// The attribute naming the authenticated consumer, set by authentication policies and
/// read by rate limiting and analytics.
pub const CONSUMER: &str = "consumer";

/// The attribute identifying the credential used (never the secret itself).
pub const CREDENTIAL: &str = "credential";

/// The prefix of the attributes carrying JWT claims: `jwt.claim.<name>`.
pub const JWT_CLAIM_PREFIX: &str = "jwt.claim.";

/// The longest attribute key or value: the host fails a call that sets a longer one.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// The most attributes a request carries: the host fails a call that sets one more.
pub const MAX_ATTRIBUTES: usize = 64;

/// String attributes shared by the policies of one request, e.g. the consumer set by an
/// authentication policy and read by rate-limit and analytics policies. Well-known keys:
/// [`CONSUMER`], [`CREDENTIAL`], `jwt.claim.<name>`.
///
/// Policies should prefix their private attributes with their own name
/// (`analytics.start`) so that they do not collide.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    raw: &'a RawContext,
}

impl<'a> Context<'a> {
    pub(crate) fn new(raw: &'a RawContext) -> Self {
        Self { raw }
    }

    /// The value of the attribute `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        ContextSource::get(self.raw, key)
    }

    /// Sets the attribute `key` (overwrites). A key or value over [`MAX_ATTRIBUTE_BYTES`],
    /// or a new key beyond [`MAX_ATTRIBUTES`], fails the policy's call (the test harness
    /// panics likewise): check sizes of values that come from requests first.
    pub fn set(&self, key: &str, value: &str) {
        ContextSource::set(self.raw, key, value);
    }

    /// The authenticated consumer ([`CONSUMER`]), if an earlier policy set it.
    pub fn consumer(&self) -> Option<String> {
        self.get(CONSUMER)
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}
