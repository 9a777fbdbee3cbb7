//! `key-auth`: authenticates requests by an API key sent in a header or a query
//! parameter, checked against SHA-256 hashes from the configuration or the plugin's kv
//! store. On success it sets the context attributes `consumer` and `credential` and (by
//! default) removes the key before forwarding; otherwise it answers 401.
//!
//! Capabilities: `kv` (called only with `kv_lookup = true`) and `log`.

mod config;

pub use config::{Config, ConsumerConfig, DEFAULT_HEADER, DEFAULT_REALM};

use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_sdk::{Context, Edits, Policy, Request, RequestDecision, context, kv, log};

/// The prefix of the kv keys mapping key hashes to consumers: `key:<sha256 hex>`.
pub const KV_PREFIX: &str = "key:";

/// The policy.
#[derive(Debug)]
pub struct KeyAuth {
    config: Config,
    consumers: Vec<config::Consumer>,
    challenge: String,
}

impl Policy for KeyAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let consumers = config.validate()?;
        let challenge = format!("ApiKey realm=\"{}\"", config.realm);
        Ok(Self {
            config,
            consumers,
            challenge,
        })
    }

    fn on_request(&self, req: &Request, ctx: &Context) -> RequestDecision {
        let (key, header_sent) = self.find_key(req);
        let Some(key) = key else {
            return self.unauthorized("missing API key");
        };
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let consumer = match self.lookup(&hash) {
            Ok(Some(name)) => name,
            Ok(None) => return self.unauthorized("invalid API key"),
            Err(e) => {
                log::warn!("key-auth: kv lookup failed: {e}");
                return RequestDecision::respond_json(
                    503,
                    &json!({ "error": "unavailable", "message": "credential store unavailable" }),
                );
            }
        };
        ctx.set(context::CONSUMER, &consumer);
        ctx.set(context::CREDENTIAL, &credential_id(&hash));
        if self.config.hide_credentials {
            self.hide(req, header_sent)
        } else {
            RequestDecision::Continue
        }
    }
}

impl KeyAuth {
    /// The key from the header, else from the query parameter (blank values count as
    /// absent), and whether the request has the header at all (read once, here).
    fn find_key(&self, req: &Request) -> (Option<String>, bool) {
        let header = (!self.config.header.is_empty())
            .then(|| req.header(&self.config.header))
            .flatten();
        let header_sent = header.is_some();
        let from_header = header
            .and_then(|v| String::from_utf8(v).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let key = from_header.or_else(|| {
            let param = self.config.query_param.as_deref()?;
            req.query_param(param)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        });
        (key, header_sent)
    }

    /// The consumer owning `hash`: the configured consumers first, then the kv store.
    fn lookup(&self, hash: &[u8; 32]) -> Result<Option<String>, kv::KvError> {
        // Every configured hash is compared, each in constant time, so the time taken
        // does not depend on which (if any) matched.
        let mut found = None;
        for consumer in &self.consumers {
            let equal = constant_time_eq(&consumer.hash, hash);
            if found.is_none() && equal {
                found = Some(consumer.name.clone());
            }
        }
        if found.is_some() || !self.config.kv_lookup {
            return Ok(found);
        }
        let name = kv::get_string(&format!("{KV_PREFIX}{}", hex(hash)))?;
        Ok(name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()))
    }

    /// Removes the key from the forwarded request: the header when it was sent, and the
    /// query parameter.
    fn hide(&self, req: &Request, header_sent: bool) -> RequestDecision {
        let mut edits = Edits::new();
        if header_sent {
            edits = edits.remove_header(self.config.header.as_str());
        }
        if let Some(param) = &self.config.query_param {
            let mut query = req.query_params();
            if query.remove(param) {
                edits = edits.query(query.to_string());
            }
        }
        RequestDecision::edit(edits)
    }

    fn unauthorized(&self, message: &str) -> RequestDecision {
        RequestDecision::respond_json(401, &json!({ "error": "unauthorized", "message": message }))
            .header("www-authenticate", self.challenge.as_str())
    }
}

/// Compares two hashes without data-dependent branches.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The `credential` attribute: a fingerprint of the key (the first 16 hex digits of its
/// SHA-256), never the key itself.
fn credential_id(hash: &[u8; 32]) -> String {
    format!("apikey:{}", hex(&hash[..8]))
}

// No response phase: the `request-policy` world (the gateway skips it on the way back).
sluice_sdk::export_request_policy!(KeyAuth);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{Capability, TestContext, TestHost, TestRequest, json};

    /// `printf %s s3cret | sha256sum`
    const ALICE_KEY: &str = "s3cret";
    const ALICE_HASH: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

    fn host() -> TestHost {
        TestHost::with_grants(&[Capability::Kv, Capability::Log])
    }

    fn alice_policy(host: &TestHost, extra: serde_json::Value) -> KeyAuth {
        let mut config = json!({ "consumers": [{ "name": "alice", "key_sha256": ALICE_HASH }] });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        host.init(config).unwrap()
    }

    #[test]
    fn hash_constant_matches_key() {
        assert_eq!(hex(&Sha256::digest(ALICE_KEY)), ALICE_HASH);
    }

    #[test]
    fn valid_header_key_sets_consumer_and_removes_header() {
        let host = host();
        let policy = alice_policy(&host, json!({}));
        let ctx = TestContext::new();
        let req = TestRequest::get("/orders").header("X-API-Key", ALICE_KEY);
        let d = host.on_request(&policy, &req, &ctx);
        assert!(d.edits().unwrap().removes("x-api-key"));
        assert_eq!(ctx.get("consumer").as_deref(), Some("alice"));
        assert_eq!(
            ctx.get("credential").as_deref(),
            Some("apikey:1ec1c26b50d5d3c5")
        );
        assert!(
            host.used().is_empty(),
            "no capability needed for configured keys"
        );
    }

    #[test]
    fn keeps_key_when_hide_credentials_is_off() {
        let host = host();
        let policy = alice_policy(&host, json!({ "hide_credentials": false }));
        let req = TestRequest::get("/").header("x-api-key", ALICE_KEY);
        assert!(
            host.on_request(&policy, &req, &TestContext::new())
                .is_continue()
        );
    }

    #[test]
    fn key_from_query_parameter_is_removed_from_query() {
        let host = host();
        let policy = alice_policy(&host, json!({ "query_param": "api_key" }));
        let ctx = TestContext::new();
        let req = TestRequest::get("/x?a=1&api_key=s3cret&b=2");
        let d = host.on_request(&policy, &req, &ctx);
        let forwarded = req.apply(d.edits().unwrap());
        assert_eq!(forwarded.query.as_deref(), Some("a=1&b=2"));
        assert_eq!(ctx.get("consumer").as_deref(), Some("alice"));
    }

    #[test]
    fn missing_key_is_401_with_challenge_and_json() {
        let host = host();
        let policy = alice_policy(&host, json!({}));
        let ctx = TestContext::new();
        let d = host.on_request(&policy, &TestRequest::get("/"), &ctx);
        let r = d.response().unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header_str("www-authenticate"),
            Some(r#"ApiKey realm="sluice""#)
        );
        assert_eq!(r.header_str("content-type"), Some("application/json"));
        assert_eq!(
            r.body_str(),
            r#"{"error":"unauthorized","message":"missing API key"}"#
        );
        assert_eq!(ctx.get("consumer"), None);
    }

    #[test]
    fn wrong_or_blank_key_is_401() {
        let host = host();
        let policy = alice_policy(&host, json!({ "realm": "api" }));
        for key in ["wrong", "   "] {
            let req = TestRequest::get("/").header("x-api-key", key);
            let d = host.on_request(&policy, &req, &TestContext::new());
            let r = d.response().unwrap();
            assert_eq!(r.status, 401);
            assert_eq!(
                r.header_str("www-authenticate"),
                Some(r#"ApiKey realm="api""#)
            );
        }
    }

    #[test]
    fn kv_lookup_finds_consumer_by_hash() {
        let host = host();
        host.kv_insert(&format!("key:{ALICE_HASH}"), "bob");
        let policy: KeyAuth = host.init(json!({ "kv_lookup": true })).unwrap();
        let ctx = TestContext::new();
        let req = TestRequest::get("/").header("x-api-key", ALICE_KEY);
        assert!(host.on_request(&policy, &req, &ctx).edits().is_some());
        assert_eq!(ctx.get("consumer").as_deref(), Some("bob"));

        let req = TestRequest::get("/").header("x-api-key", "other");
        assert_eq!(
            host.on_request(&policy, &req, &TestContext::new()).status(),
            Some(401)
        );
    }

    #[test]
    fn kv_failure_is_503_and_logged() {
        let host = host();
        host.kv_fail(Some(kv::KvError::Unavailable("timeout".into())));
        let policy: KeyAuth = host.init(json!({ "kv_lookup": true })).unwrap();
        let req = TestRequest::get("/").header("x-api-key", ALICE_KEY);
        let d = host.on_request(&policy, &req, &TestContext::new());
        assert_eq!(d.status(), Some(503));
        assert!(host.logs()[0].message.contains("timeout"));
    }

    #[test]
    fn configured_consumers_win_over_kv() {
        let host = host();
        host.kv_insert(&format!("key:{ALICE_HASH}"), "mallory");
        let policy = alice_policy(&host, json!({ "kv_lookup": true }));
        let ctx = TestContext::new();
        let req = TestRequest::get("/").header("x-api-key", ALICE_KEY);
        host.on_request(&policy, &req, &ctx);
        assert_eq!(ctx.get("consumer").as_deref(), Some("alice"));
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn readme_examples_are_accepted() {
        let host = TestHost::new();
        let configs = sluice_sdk::testing::readme_configs(include_str!("../README.md"), "key-auth");
        assert!(!configs.is_empty());
        for config in configs {
            host.init::<KeyAuth>(config.clone())
                .unwrap_or_else(|e| panic!("{config}: {e}"));
        }
    }
}
