//! The configuration of `key-auth` and its validation.

use serde::Deserialize;

/// The header read by default.
pub const DEFAULT_HEADER: &str = "x-api-key";
/// The realm advertised in `WWW-Authenticate` by default.
pub const DEFAULT_REALM: &str = "sluice";

/// `key-auth`'s configuration, as written in the route's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The request header carrying the key; empty disables header lookup.
    /// By default `x-api-key`.
    pub header: String,
    /// A query parameter carrying the key, read when the header is absent.
    /// By default none.
    pub query_param: Option<String>,
    /// Consumers and the SHA-256 (hex) of their keys. By default none.
    pub consumers: Vec<ConsumerConfig>,
    /// Also look keys up in the plugin's kv store: `key:<sha256 hex>` → consumer name.
    /// By default false.
    pub kv_lookup: bool,
    /// Remove the key (header and query parameter) before forwarding. By default true.
    pub hide_credentials: bool,
    /// The realm in `WWW-Authenticate: ApiKey realm="…"`. By default `sluice`.
    pub realm: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            query_param: None,
            consumers: Vec::new(),
            kv_lookup: false,
            hide_credentials: true,
            realm: DEFAULT_REALM.to_owned(),
        }
    }
}

/// One consumer and the hash of one of its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's name, set as the context attribute `consumer`.
    pub name: String,
    /// The SHA-256 of the key, as 64 hexadecimal digits (`printf %s "$KEY" | sha256sum`).
    pub key_sha256: String,
}

/// A consumer with its key hash decoded.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The consumer's name.
    pub name: String,
    /// The SHA-256 of the key.
    pub hash: [u8; 32],
}

impl Config {
    /// Checks the configuration and decodes the key hashes.
    ///
    /// # Errors
    /// A message naming the first problem found.
    pub fn validate(&self) -> Result<Vec<Consumer>, String> {
        if self.header.is_empty() && self.query_param.as_deref().is_none_or(str::is_empty) {
            return Err("no key source: set `header` or `query_param`".into());
        }
        if !self.header.bytes().all(is_token_byte) {
            return Err(format!(
                "`header` {:?} is not a valid header name",
                self.header
            ));
        }
        if self.consumers.is_empty() && !self.kv_lookup {
            return Err("no consumers: set `consumers` or `kv_lookup = true`".into());
        }
        if self
            .realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(
                "`realm` must not contain quotes, backslashes or control characters".into(),
            );
        }
        let mut consumers: Vec<Consumer> = Vec::with_capacity(self.consumers.len());
        for (i, c) in self.consumers.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(format!("consumers[{i}]: `name` is empty"));
            }
            let hash = decode_sha256(&c.key_sha256).ok_or_else(|| {
                format!(
                    "consumers[{i}] ({}): `key_sha256` must be 64 hexadecimal digits",
                    c.name
                )
            })?;
            if let Some(other) = consumers.iter().find(|o| o.hash == hash) {
                return Err(format!(
                    "consumers[{i}] ({}): the same key is already configured for {}",
                    c.name, other.name
                ));
            }
            consumers.push(Consumer {
                name: c.name.clone(),
                hash,
            });
        }
        Ok(consumers)
    }
}

/// Decodes 64 hex digits (either case) to 32 bytes.
fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Vec<Consumer>, String> {
        let c: Config = serde_json::from_value(json).map_err(|e| e.to_string())?;
        c.validate()
    }

    const HASH: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.header, "x-api-key");
        assert_eq!(c.query_param, None);
        assert!(c.hide_credentials);
        assert!(!c.kv_lookup);
        assert_eq!(c.realm, "sluice");
    }

    #[test]
    fn accepts_upper_case_hex() {
        let consumers = parse(serde_json::json!({
            "consumers": [{ "name": "alice", "key_sha256": HASH.to_uppercase() }]
        }))
        .unwrap();
        assert_eq!(consumers[0].hash[0], 0x1e);
    }

    #[test]
    fn rejects_bad_configurations() {
        let cases = [
            (serde_json::json!({}), "no consumers"),
            (
                serde_json::json!({"kv_lookup": true, "header": ""}),
                "no key source",
            ),
            (
                serde_json::json!({"consumers": [{"name": "a", "key_sha256": "abc"}]}),
                "64 hexadecimal digits",
            ),
            (
                serde_json::json!({"consumers": [
                    {"name": "a", "key_sha256": HASH}, {"name": "b", "key_sha256": HASH}
                ]}),
                "already configured for a",
            ),
            (
                serde_json::json!({"consumers": [{"name": " ", "key_sha256": HASH}]}),
                "`name` is empty",
            ),
            (
                serde_json::json!({"kv_lookup": true, "header": "x key"}),
                "valid header name",
            ),
            (
                serde_json::json!({"kv_lookup": true, "realm": "a\"b"}),
                "realm",
            ),
            (
                serde_json::json!({"kv_lookup": true, "hide_credential": false}),
                "unknown field",
            ),
        ];
        for (json, expected) in cases {
            let err = parse(json.clone()).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
