//! The policy: the verification core wired to the gateway through `sluice-sdk`.
//!
//! `on_request` reads the token, verifies it and either lets the request continue (with
//! the claims in context attributes, and the token removed if `forward_token = false`) or
//! answers 401 with an RFC 6750 challenge.

use std::cell::RefCell;

use serde_json::{Value, json};
use sluice_sdk::{Context, Edits, Header, Policy, Request, RequestDecision, clock, http, kv, log};

use crate::claims::attribute_text;
use crate::config::Config;
use crate::env::{Env, LogLevel};
use crate::error::AuthError;
use crate::extract::{RequestParts, Strip, TokenSource};
use crate::verifier::{Verified, Verifier};

/// The context attribute prefix for claims (`jwt.claim.<name>`).
pub const CLAIM_ATTRIBUTE_PREFIX: &str = "jwt.claim.";

/// The `jwt-auth` policy.
pub struct JwtAuth {
    /// The verifier, with its JWKS cache (mutable across requests of this instance).
    verifier: RefCell<Verifier>,
    source: TokenSource,
    attributes: Vec<(String, String)>,
    forward_token: bool,
    realm: String,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Policy for JwtAuth {
    /// Taken as raw JSON so that errors can name the key path (see [`Config::from_value`]).
    type Config = Value;

    fn new(config: Value) -> Result<Self, String> {
        let settings = Config::from_value(config)?.validate()?;
        Ok(JwtAuth {
            source: settings.source.clone(),
            attributes: settings.attributes.clone(),
            forward_token: settings.forward_token,
            realm: settings.realm.clone(),
            verifier: RefCell::new(Verifier::new(settings)),
        })
    }

    fn on_request(&self, req: &Request<'_>, ctx: &Context<'_>) -> RequestDecision {
        let parts = SdkRequest(req);
        let result = self
            .source
            .extract(&parts)
            .and_then(|token| self.verifier.borrow_mut().verify(&token, &mut HostEnv));
        match result {
            Ok(verified) => self.accept(&parts, ctx, &verified),
            Err(err) => {
                log::debug!("jwt-auth: refused on route {}: {err}", req.route());
                self.refuse(&err)
            }
        }
    }
}

impl JwtAuth {
    fn accept(
        &self,
        parts: &SdkRequest<'_, '_>,
        ctx: &Context<'_>,
        verified: &Verified,
    ) -> RequestDecision {
        // Every mapped claim is checked before any is set: a claim too long for an
        // attribute refuses the token (the host would fail the call, a 500).
        let mut mapped = Vec::with_capacity(self.attributes.len());
        for (claim, attribute) in &self.attributes {
            if let Some(value) = verified.claims.get(claim) {
                let text = attribute_text(value);
                if text.len() > sluice_sdk::context::MAX_ATTRIBUTE_BYTES {
                    let err = AuthError::ClaimTooLarge(claim.clone());
                    log::debug!("jwt-auth: refused: {err}");
                    return self.refuse(&err);
                }
                mapped.push((claim, attribute, text));
            }
        }
        for (claim, attribute, text) in mapped {
            ctx.set(attribute, &text);
            ctx.set(&format!("{CLAIM_ATTRIBUTE_PREFIX}{claim}"), &text);
        }
        let credential = match &verified.key_id {
            Some(kid) => format!("jwt:{kid}"),
            None => "jwt".to_string(),
        };
        ctx.set(sluice_sdk::context::CREDENTIAL, &credential);

        if self.forward_token {
            return RequestDecision::Continue;
        }
        let edits = match self.source.strip(parts) {
            Strip::RemoveHeader(name) => Edits::new().remove_header(name),
            Strip::SetQuery(query) => Edits::new().query(query),
            Strip::SetCookie(cookie) => Edits::new().set_header("cookie", cookie),
            Strip::RemoveCookie => Edits::new().remove_header("cookie"),
        };
        RequestDecision::edit(edits)
    }

    fn refuse(&self, err: &AuthError) -> RequestDecision {
        let (challenge, body) = challenge(&self.realm, err);
        RequestDecision::respond_json(401, &body).header("www-authenticate", challenge)
    }
}

/// The `WWW-Authenticate` value and the JSON body of a 401 for `err` (RFC 6750 §3).
pub fn challenge(realm: &str, err: &AuthError) -> (String, Value) {
    match err.code() {
        None => (
            format!("Bearer realm=\"{realm}\""),
            json!({"error": "unauthorized", "message": err.public()}),
        ),
        Some(code) => {
            let mut value = format!("Bearer realm=\"{realm}\", error=\"{code}\"");
            if *err == AuthError::Expired {
                value.push_str(", error_description=\"The access token expired\"");
            }
            (value, json!({"error": code, "message": err.public()}))
        }
    }
}

/// [`RequestParts`] over the SDK's request.
struct SdkRequest<'r, 'a>(&'r Request<'a>);

impl RequestParts for SdkRequest<'_, '_> {
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.0.header_all(name)
    }
    fn query(&self) -> Option<String> {
        self.0.query()
    }
}

/// [`Env`] over the host capabilities `clock`, `outbound-http`, `kv` and `log`.
struct HostEnv;

impl Env for HostEnv {
    fn now_millis(&self) -> u64 {
        clock::now_millis()
    }

    fn monotonic_nanos(&self) -> u64 {
        clock::monotonic_nanos()
    }

    fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let accept = Header::new("accept", "application/jwk-set+json, application/json");
        let response = http::get(url, &[accept]).map_err(|e| e.to_string())?;
        if response.status != 200 {
            return Err(format!("status {}", response.status));
        }
        Ok(response.body)
    }

    fn shared_get(&mut self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
            .inspect_err(|e| log::debug!("jwt-auth: kv get {key}: {e}"))
            .ok()
            .flatten()
    }

    fn shared_set(&mut self, key: &str, value: &[u8]) {
        if let Err(e) = kv::set(key, value, None) {
            log::warn!(
                "jwt-auth: cannot share {key} ({} bytes) with the plugin's other instances: {e}",
                value.len()
            );
        }
    }

    fn shared_claim(&mut self, key: &str, ttl_ms: u64) -> bool {
        kv::compare_and_set(key, None, b"1", Some(ttl_ms))
            .inspect_err(|e| log::debug!("jwt-auth: kv claim {key}: {e}"))
            .unwrap_or(true)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info => log::Level::Info,
            LogLevel::Warn => log::Level::Warn,
        };
        log::log(level, message);
    }
}

#[cfg(test)]
mod tests;
