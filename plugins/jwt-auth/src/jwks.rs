//! The JWKS cache: keys fetched from `jwks_url`, refreshed after `jwks_ttl`, refetched on
//! an unknown `kid` — and never fetched more than once per `jwks_min_refetch`, whatever
//! asks and however many instances of the policy the gateway runs.
//!
//! Two layers:
//! - **local**: the parsed keys in this instance. Each instance consults the shared layer
//!   at most once per `jwks_min_refetch`, and attempts a fetch at most that often.
//! - **shared** (the plugin's kv store): the last good document, stamped with its fetch
//!   time, so that a new or recycled instance starts from it instead of fetching; and a
//!   fetch *claim* (a compare-and-set key expiring after `jwks_min_refetch`), so that only
//!   one instance fetches per interval. If kv fails, each instance falls back to its local
//!   limit.
//!
//! A failed fetch keeps the keys already cached, locally and in kv (stale keys keep working
//! while the endpoint is down). Ages are wall-clock milliseconds (comparable across
//! instances); the local rate limit uses the monotonic clock.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::alg::AlgSet;
use crate::config::JwksSettings;
use crate::env::{Env, LogLevel};
use crate::jwk::{parse_jwks, printable};
use crate::key::Key;

/// Why the cache is asked to update, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No keys yet, or they are older than `jwks_ttl`.
    Refresh,
    /// A token named a `kid` (or needed an algorithm) that no cached key has.
    UnknownKey,
}

/// The outcome of an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The keys changed (a newer shared copy, or a successful fetch).
    Updated,
    /// Nothing to do: the keys are fresh.
    Fresh,
    /// The fetch failed; the cached keys stay. The text says why.
    Failed(String),
    /// No fetch: this instance, or another one, tried less than `jwks_min_refetch` ago.
    RateLimited,
}

/// Keys fetched from a JWKS endpoint.
#[derive(Debug)]
pub struct JwksCache {
    settings: JwksSettings,
    allowed: AlgSet,
    doc_key: String,
    claim_key: String,
    keys: Vec<Key>,
    /// Wall-clock ms at which the current keys were fetched (by any instance).
    fetched_at_ms: Option<u64>,
    /// Monotonic ns of this instance's last look at the shared copy.
    looked_at: Option<u64>,
    /// Monotonic ns of this instance's last fetch attempt (or claim attempt).
    attempted_at: Option<u64>,
    fetches: u64,
}

impl JwksCache {
    /// An empty cache for `settings`, keeping only keys that allow something in `allowed`.
    pub fn new(settings: JwksSettings, allowed: AlgSet) -> Self {
        let digest = Sha256::digest(settings.url.as_bytes());
        let id: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        JwksCache {
            doc_key: format!("jwks.doc:{id}"),
            claim_key: format!("jwks.fetch:{id}"),
            settings,
            allowed,
            keys: Vec::new(),
            fetched_at_ms: None,
            looked_at: None,
            attempted_at: None,
            fetches: 0,
        }
    }

    /// The cached keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// How many fetches this instance made (successful or not).
    pub fn fetches(&self) -> u64 {
        self.fetches
    }

    /// Whether the keys are missing or older than the TTL at `now_ms` (wall clock).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        self.fetched_at_ms
            .is_none_or(|t| Duration::from_millis(now_ms.saturating_sub(t)) >= self.settings.ttl)
    }

    fn gate_open(&self, last: Option<u64>, now: u64) -> bool {
        last.is_none_or(|t| {
            Duration::from_nanos(now.saturating_sub(t)) >= self.settings.min_refetch
        })
    }

    /// Brings missing or expired keys up to date: from the shared copy if another instance
    /// refreshed it, else by a fetch (rate-limited).
    pub fn refresh_if_stale(&mut self, env: &mut dyn Env) -> Outcome {
        if !self.is_stale(env.now_millis()) {
            return Outcome::Fresh;
        }
        let adopted = self.look_at_shared(env);
        if !self.is_stale(env.now_millis()) {
            return if adopted {
                Outcome::Updated
            } else {
                Outcome::Fresh
            };
        }
        match self.fetch(env, Reason::Refresh) {
            Outcome::RateLimited if adopted => Outcome::Updated,
            other => other,
        }
    }

    /// Looks for keys a token needs and the cache lacks: a newer shared copy, else a fetch
    /// (rate-limited).
    pub fn update_for_unknown_key(&mut self, env: &mut dyn Env) -> Outcome {
        if self.look_at_shared(env) {
            return Outcome::Updated;
        }
        self.fetch(env, Reason::UnknownKey)
    }

    /// Adopts the shared copy when it is newer than ours; at most once per
    /// `jwks_min_refetch` per instance. True when the keys changed.
    fn look_at_shared(&mut self, env: &mut dyn Env) -> bool {
        let now = env.monotonic_nanos();
        if !self.gate_open(self.looked_at, now) {
            return false;
        }
        self.looked_at = Some(now);
        let Some(stored) = env.shared_get(&self.doc_key) else {
            return false;
        };
        let Some((stamp, body)) = split_stamp(&stored) else {
            return false;
        };
        if self.fetched_at_ms.is_some_and(|mine| stamp <= mine) {
            return false;
        }
        match parse_jwks(body, self.allowed) {
            Ok(parsed) if !parsed.keys.is_empty() => {
                self.keys = parsed.keys;
                self.fetched_at_ms = Some(stamp);
                true
            }
            _ => false,
        }
    }

    /// Fetches the JWKS unless this instance tried less than `jwks_min_refetch` ago or
    /// another instance holds the fetch claim.
    fn fetch(&mut self, env: &mut dyn Env, reason: Reason) -> Outcome {
        let now = env.monotonic_nanos();
        if !self.gate_open(self.attempted_at, now) {
            return Outcome::RateLimited;
        }
        self.attempted_at = Some(now);
        let min_refetch_ms =
            u64::try_from(self.settings.min_refetch.as_millis()).unwrap_or(u64::MAX);
        if !env.shared_claim(&self.claim_key, min_refetch_ms) {
            return Outcome::RateLimited;
        }
        self.fetches += 1;
        let url = self.settings.url.clone();
        let fetched_at_ms = env.now_millis();
        let outcome = match env.fetch(&url) {
            Err(why) => Outcome::Failed(why),
            Ok(body) => match parse_jwks(&body, self.allowed) {
                Err(why) => Outcome::Failed(why),
                Ok(parsed) => {
                    for skipped in &parsed.skipped {
                        env.log(LogLevel::Warn, &format!("jwks {url}: skipped {skipped}"));
                    }
                    if parsed.keys.is_empty() {
                        Outcome::Failed("the document has no usable key".into())
                    } else {
                        let kids: Vec<String> = parsed
                            .keys
                            .iter()
                            .map(|k| k.kid.as_deref().map_or("-".into(), |k| printable(k, 40)))
                            .collect();
                        env.log(
                            LogLevel::Info,
                            &format!(
                                "jwks {url}: loaded {} key(s) ({reason:?}): {}",
                                parsed.keys.len(),
                                kids.join(", ")
                            ),
                        );
                        let mut stored = fetched_at_ms.to_be_bytes().to_vec();
                        stored.extend_from_slice(&body);
                        env.shared_set(&self.doc_key, &stored);
                        self.keys = parsed.keys;
                        self.fetched_at_ms = Some(fetched_at_ms);
                        Outcome::Updated
                    }
                }
            },
        };
        if let Outcome::Failed(why) = &outcome {
            env.log(
                LogLevel::Warn,
                &format!(
                    "jwks {url}: fetch failed ({reason:?}), keeping {} cached key(s): {why}",
                    self.keys.len()
                ),
            );
        }
        outcome
    }
}

/// `(stamp, body)` of a stored document: 8 bytes of big-endian fetch time, then the body.
fn split_stamp(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (stamp, body) = stored.split_at_checked(8)?;
    Some((u64::from_be_bytes(stamp.try_into().ok()?), body))
}
