//! The policy's configuration (JSON from the host, converted from the route's TOML table)
//! and its validation into [`Settings`].
//!
//! Every table refuses unknown keys, so a typo is an error; every error names the key at
//! fault (`keys[1].pem: is a private key; give the public key`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::Value;

use crate::alg::{AlgSet, Algorithm};
use crate::claims::ClaimRules;
use crate::duration;
use crate::extract::TokenSource;
use crate::jwk::{JwkSource, parse_jwk};
use crate::key::{Key, KeyMaterial};
use sluice_sdk::context::{MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTES};

/// Default `jwks_ttl`: how long fetched keys are used before they are refreshed.
pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(300);
/// Default `jwks_min_refetch`: the least time between two JWKS fetches.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// The smallest `jwks_min_refetch` accepted.
pub const MIN_JWKS_MIN_REFETCH: Duration = Duration::from_secs(1);
/// Default `leeway` for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest `leeway` accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);
/// Default `max_token_bytes`.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// The largest `max_token_bytes` accepted.
pub const MAX_MAX_TOKEN_BYTES: usize = 65536;
/// Most entries of `claims_to_attributes`: each sets two attributes, and the credential one
/// more, within the [`MAX_ATTRIBUTES`] a request holds.
pub const MAX_CLAIMS_TO_ATTRIBUTES: usize = (MAX_ATTRIBUTES - 1) / 2;
/// Default `realm` in `WWW-Authenticate`.
pub const DEFAULT_REALM: &str = "sluice";

/// The configuration, as written by the operator.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Keys given inline: HMAC secrets, PEM or JWK public keys. Default: none (then
    /// `jwks_url` is required).
    pub keys: Vec<KeyConfig>,
    /// A JWKS document fetched through the `outbound-http` capability (the host must
    /// allowlist its host). `https://` only, unless `jwks_allow_http`. Default: none.
    pub jwks_url: Option<String>,
    /// How long fetched keys are used before a refresh is attempted. Default: `"5m"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub jwks_ttl: Duration,
    /// The least time between two JWKS fetches, whatever causes them (expiry, an unknown
    /// `kid`, a failed fetch). At least `"1s"`, at most `jwks_ttl`. Default: `"30s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub jwks_min_refetch: Duration,
    /// Allow a plain `http://` `jwks_url` (keys fetched in clear text can be replaced on the
    /// way). Default: `false`.
    pub jwks_allow_http: bool,
    /// Algorithms accepted at all; each key is further limited to its own type's algorithms
    /// and its `algorithms`. Default: every supported algorithm.
    pub algorithms: Option<Vec<Algorithm>>,
    /// Accepted `iss` value(s). Default: `iss` not checked.
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` value(s); the token's `aud` (string or array) must contain one.
    /// Default: none, and then tokens carrying `aud` are refused (RFC 7519 §4.1.3).
    pub audience: Option<OneOrMany>,
    /// Clock skew tolerated for `exp` and `nbf`, at most `"10m"`. Default: `"30s"`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub leeway: Duration,
    /// Required `typ` header, e.g. `"at+jwt"` (compared case-insensitively, an
    /// `application/` prefix ignored). Default: not checked.
    pub typ: Option<String>,
    /// Claims that must be present. Default: `["exp"]`.
    pub required_claims: Vec<String>,
    /// Where the token is read from. Default: `Authorization: Bearer <token>`.
    pub token: TokenSourceConfig,
    /// Claims copied into context attributes, `claim = "attribute"`; each also sets
    /// `jwt.claim.<claim>`. Default: `{ sub = "consumer" }`.
    pub claims_to_attributes: BTreeMap<String, String>,
    /// Whether the token goes on to the upstream; `false` removes it (the header, the query
    /// parameter or the cookie). Default: `true`.
    pub forward_token: bool,
    /// The realm in `WWW-Authenticate`. Default: `"sluice"`.
    pub realm: String,
    /// The longest token accepted, in bytes (at most 65536). Default: `8192`.
    pub max_token_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keys: Vec::new(),
            jwks_url: None,
            jwks_ttl: DEFAULT_JWKS_TTL,
            jwks_min_refetch: DEFAULT_JWKS_MIN_REFETCH,
            jwks_allow_http: false,
            algorithms: None,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            typ: None,
            required_claims: vec!["exp".into()],
            token: TokenSourceConfig::default(),
            claims_to_attributes: BTreeMap::from([("sub".into(), "consumer".into())]),
            forward_token: true,
            realm: DEFAULT_REALM.into(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// One string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One inline key: exactly one of `secret`, `secret_base64`, `pem`, `jwk`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id tokens name in `kid`. Default: none (the key is tried for every token
    /// whose algorithm it allows), or the JWK's `kid`.
    pub kid: Option<String>,
    /// The algorithms this key verifies, within its type (`HS*` for secrets, `RS*`/`PS*` for
    /// RSA, `ES256` for P-256, `ES384` for P-384, `EdDSA`/`Ed25519` for Ed25519).
    /// Default: all of its type (for secrets, those whose hash size the secret reaches).
    pub algorithms: Option<Vec<Algorithm>>,
    /// An HMAC secret as text (its UTF-8 bytes, at least 32).
    pub secret: Option<String>,
    /// An HMAC secret in base64 or base64url (at least 32 bytes decoded).
    pub secret_base64: Option<String>,
    /// A PEM public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    pub pem: Option<String>,
    /// A JWK object (public `RSA`, `EC`, `OKP` key, or an `oct` secret).
    pub jwk: Option<Value>,
}

/// Where the token is read from: exactly one of `header`, `query`, `cookie`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSourceConfig {
    /// A request header. Default (when none of the three is set): `authorization`.
    pub header: Option<String>,
    /// The scheme before the token in `header`, matched case-insensitively; `""` for a bare
    /// token. Default: `"Bearer"` for `authorization`, none for other headers.
    pub scheme: Option<String>,
    /// A query parameter.
    pub query: Option<String>,
    /// A cookie.
    pub cookie: Option<String>,
}

/// The JWKS endpoint settings.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// The URL.
    pub url: String,
    /// Refresh after this long.
    pub ttl: Duration,
    /// At most one fetch per this long.
    pub min_refetch: Duration,
}

/// A validated configuration, ready to verify tokens.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Inline keys.
    pub keys: Vec<Key>,
    /// The JWKS endpoint, if any.
    pub jwks: Option<JwksSettings>,
    /// Algorithms accepted at all.
    pub algorithms: AlgSet,
    /// Required `typ`, normalised (lower case, no `application/`).
    pub typ: Option<String>,
    /// Claim rules.
    pub rules: ClaimRules,
    /// Where the token is.
    pub source: TokenSource,
    /// `(claim, attribute)` pairs.
    pub attributes: Vec<(String, String)>,
    /// Whether the token is forwarded upstream.
    pub forward_token: bool,
    /// The `WWW-Authenticate` realm.
    pub realm: String,
    /// The longest token accepted.
    pub max_token_bytes: usize,
}

impl Config {
    /// Parses the JSON configuration text; errors name the key path.
    ///
    /// # Errors
    /// `path: message` for the first problem.
    pub fn from_json(json: &str) -> Result<Config, String> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| format!("invalid configuration: {e}"))?;
        Config::from_value(value)
    }

    /// Parses the configuration from JSON; errors name the key path
    /// (`keys[0].algorithms[1]: unsupported algorithm `none`, …`).
    ///
    /// # Errors
    /// `path: message` for the first problem.
    pub fn from_value(value: Value) -> Result<Config, String> {
        if !value.is_object() {
            return Err("the configuration must be a table (a JSON object)".into());
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }

    /// Validates the configuration and builds the [`Settings`].
    ///
    /// # Errors
    /// `key: message` for the first problem.
    pub fn validate(self) -> Result<Settings, String> {
        let algorithms = match &self.algorithms {
            None => AlgSet::ALL,
            Some(list) if list.is_empty() => return Err("algorithms: must not be empty".into()),
            Some(list) => list.iter().copied().collect(),
        };

        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, key) in self.keys.into_iter().enumerate() {
            keys.push(
                key.compile(algorithms)
                    .map_err(|e| format!("keys[{i}]{e}"))?,
            );
        }

        let jwks = match self.jwks_url {
            None => None,
            Some(url) => {
                check_url(&url, self.jwks_allow_http).map_err(|e| format!("jwks_url: {e}"))?;
                if self.jwks_min_refetch < MIN_JWKS_MIN_REFETCH {
                    return Err("jwks_min_refetch: must be at least 1s".into());
                }
                if self.jwks_ttl < self.jwks_min_refetch {
                    return Err("jwks_ttl: must be at least jwks_min_refetch".into());
                }
                Some(JwksSettings {
                    url,
                    ttl: self.jwks_ttl,
                    min_refetch: self.jwks_min_refetch,
                })
            }
        };
        if keys.is_empty() && jwks.is_none() {
            return Err("keys: give at least one key, or a jwks_url".into());
        }

        let typ = match self.typ {
            Some(t) if t.trim().is_empty() => return Err("typ: must not be empty".into()),
            Some(t) => Some(normalize_typ(&t)),
            None => None,
        };
        let issuers = non_empty_list(self.issuer, "issuer")?;
        let audiences = non_empty_list(self.audience, "audience")?;
        if self.required_claims.iter().any(|c| c.is_empty()) {
            return Err("required_claims: names must not be empty".into());
        }
        if self.leeway > MAX_LEEWAY {
            return Err("leeway: must be at most 10m".into());
        }

        let source = self.token.compile().map_err(|e| format!("token.{e}"))?;

        if self.claims_to_attributes.len() > MAX_CLAIMS_TO_ATTRIBUTES {
            return Err(format!(
                "claims_to_attributes: at most {MAX_CLAIMS_TO_ATTRIBUTES} claims (each sets two \
                 attributes, and a request holds at most {MAX_ATTRIBUTES})"
            ));
        }
        let mut attributes = Vec::with_capacity(self.claims_to_attributes.len());
        for (claim, attribute) in self.claims_to_attributes {
            if claim.is_empty() || attribute.is_empty() {
                return Err(
                    "claims_to_attributes: claim and attribute names must not be empty".into(),
                );
            }
            if attribute.len() > MAX_ATTRIBUTE_BYTES
                || crate::policy::CLAIM_ATTRIBUTE_PREFIX.len() + claim.len() > MAX_ATTRIBUTE_BYTES
            {
                return Err(format!(
                    "claims_to_attributes.{claim}: names make attributes over \
                     {MAX_ATTRIBUTE_BYTES} bytes, the most an attribute name holds"
                ));
            }
            attributes.push((claim, attribute));
        }

        if self.realm.is_empty()
            || self
                .realm
                .chars()
                .any(|c| c == '"' || c == '\\' || !(' '..='~').contains(&c))
        {
            return Err("realm: must be non-empty printable ASCII without `\"` or `\\`".into());
        }
        if !(16..=MAX_MAX_TOKEN_BYTES).contains(&self.max_token_bytes) {
            return Err(format!(
                "max_token_bytes: must be between 16 and {MAX_MAX_TOKEN_BYTES}"
            ));
        }

        Ok(Settings {
            keys,
            jwks,
            algorithms,
            typ,
            rules: ClaimRules {
                issuers,
                audiences,
                required: self.required_claims,
                leeway: self.leeway,
            },
            source,
            attributes,
            forward_token: self.forward_token,
            realm: self.realm,
            max_token_bytes: self.max_token_bytes,
        })
    }
}

impl KeyConfig {
    /// Builds the key; the error starts with `.field: ` (or `: `).
    fn compile(self, allowed: AlgSet) -> Result<Key, String> {
        let given = [
            self.secret.is_some(),
            self.secret_base64.is_some(),
            self.pem.is_some(),
            self.jwk.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(": give exactly one of secret, secret_base64, pem, jwk".into());
        }
        let own: Option<AlgSet> = match &self.algorithms {
            Some(list) if list.is_empty() => return Err(".algorithms: must not be empty".into()),
            Some(list) => Some(list.iter().copied().collect()),
            None => None,
        };
        if let Some(kid) = &self.kid
            && (kid.is_empty() || kid.len() > crate::token::MAX_KID_LEN)
        {
            return Err(".kid: must be 1 to 256 bytes".into());
        }

        let (material, kid, field, jwk_algs) = if let Some(secret) = self.secret {
            (
                KeyMaterial::Hmac(secret.into_bytes()),
                self.kid,
                "secret",
                None,
            )
        } else if let Some(b64) = self.secret_base64 {
            let bytes = decode_any_base64(b64.trim())
                .ok_or_else(|| ".secret_base64: is not base64 or base64url".to_string())?;
            (KeyMaterial::Hmac(bytes), self.kid, "secret_base64", None)
        } else if let Some(pem) = self.pem {
            let material = KeyMaterial::from_pem(&pem).map_err(|e| format!(".pem: {e}"))?;
            (material, self.kid, "pem", None)
        } else {
            let jwk = self.jwk.unwrap_or_default();
            let key = parse_jwk(&jwk, JwkSource::Config, AlgSet::ALL)
                .map_err(|e| format!(".jwk: {e}"))?;
            let kid = match (self.kid, key.kid) {
                (Some(mine), Some(theirs)) if mine != theirs => {
                    return Err(".kid: differs from the JWK's kid".into());
                }
                (mine, theirs) => mine.or(theirs),
            };
            (key.material, kid, "jwk", Some(key.algorithms))
        };

        let family = material.family();
        if let KeyMaterial::Hmac(secret) = &material
            && secret.len() < 32
        {
            return Err(format!(
                ".{field}: an HMAC secret must be at least 32 bytes (it has {})",
                secret.len()
            ));
        }
        if let Some(own) = own
            && !own.is_subset_of(family)
        {
            let alien: AlgSet = own.iter().filter(|a| !family.contains(*a)).collect();
            return Err(format!(
                ".algorithms: this key ({}) cannot verify {alien} (it verifies {family}; HMAC \
                 secrets need at least 32/48/64 bytes for HS256/384/512)",
                material.kind()
            ));
        }
        let algorithms = own
            .unwrap_or(family)
            .intersect(jwk_algs.unwrap_or(AlgSet::ALL))
            .intersect(family)
            .intersect(allowed);
        if algorithms.is_empty() {
            return Err(format!(
                ": allows no algorithm (this key ({}) verifies {family}; allowed: {allowed})",
                material.kind()
            ));
        }
        Ok(Key {
            kid,
            algorithms,
            material,
        })
    }
}

fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    if text.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
    } else {
        STANDARD
            .decode(text)
            .ok()
            .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
    }
}

fn non_empty_list(value: Option<OneOrMany>, key: &str) -> Result<Vec<String>, String> {
    let list = value.map(OneOrMany::into_vec).unwrap_or_default();
    if list.iter().any(String::is_empty) {
        return Err(format!("{key}: values must not be empty"));
    }
    Ok(list)
}

fn check_url(url: &str, allow_http: bool) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !allow_http {
            return Err("must be https:// (set jwks_allow_http to allow http://)".into());
        }
        rest
    } else {
        return Err("must be an https:// URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("must name a host (and no user info)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// `typ` as compared: lower case, without an `application/` prefix (RFC 7515 §4.1.9).
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

#[cfg(test)]
mod tests;
