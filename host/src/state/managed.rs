//! Resources managed through the admin API, persisted in the embedded store: routes,
//! upstreams, plugins (settings, versions, the component bytes), consumers with hashed
//! credentials — one JSON document with a revision — and admin tokens (hashed).
//!
//! The document is replaced whole in one transaction, together with any new component
//! bytes, so a change is either entirely stored or not at all.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::db::{BLOBS, CONFIG, Db, META, StoreError, TOKENS, io};

/// The admin-managed resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Managed {
    /// Routes in order, each a `[[routes]]` table as JSON (with its `name`).
    pub routes: Vec<serde_json::Value>,
    /// Upstream groups by name, each an `[upstreams.NAME]` table as JSON.
    pub upstreams: BTreeMap<String, serde_json::Value>,
    /// Plugins by name.
    pub plugins: BTreeMap<String, ManagedPlugin>,
    /// Consumers by name.
    pub consumers: BTreeMap<String, Consumer>,
}

/// A plugin uploaded through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagedPlugin {
    /// The `[plugins.NAME]` settings other than `path` (grants, limits, …) as JSON.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Every uploaded version, oldest first.
    pub versions: Vec<PluginVersion>,
    /// The version routes use.
    pub active: Option<u32>,
}

impl ManagedPlugin {
    /// The active version's record.
    pub fn active_version(&self) -> Option<&PluginVersion> {
        let v = self.active?;
        self.versions.iter().find(|x| x.version == v)
    }
}

/// One uploaded component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// 1, 2, …
    pub version: u32,
    /// SHA-256 of the component (hex).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Upload time, Unix seconds.
    pub uploaded_at: u64,
    /// Whether a trusted key's signature was verified.
    pub signed: bool,
    /// That signature (Ed25519 over the SHA-256 digest, base64), kept so that it is checked
    /// again against the trusted keys of the day: a version signed by a key no longer
    /// trusted is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl PluginVersion {
    /// Whether its signature verifies against one of `trusted` (Ed25519 public keys,
    /// base64).
    pub fn trusted_by(&self, trusted: &[String]) -> bool {
        self.signature
            .as_deref()
            .is_some_and(|sig| signature_verifies(trusted, &self.digest, sig))
    }
}

/// Whether `signature` (base64) is an Ed25519 signature of the SHA-256 digest `digest_hex`
/// by one of `trusted` (base64 public keys).
pub fn signature_verifies(trusted: &[String], digest_hex: &str, signature: &str) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(sig), Ok(message)) = (b64.decode(signature.trim()), hex::decode(digest_hex)) else {
        return false;
    };
    trusted.iter().any(|k| {
        b64.decode(k.trim()).is_ok_and(|key| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
                .verify(&message, &sig)
                .is_ok()
        })
    })
}

/// An API consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consumer {
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Its credentials (hashed).
    pub credentials: Vec<Credential>,
}

/// A consumer credential: only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// Identifier within the consumer.
    pub id: String,
    /// `key` (an API key).
    pub kind: String,
    /// SHA-256 (hex) of the secret.
    pub sha256: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
}

/// An admin token record (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name.
    pub name: String,
    /// `admin` or `read-only`.
    pub role: Role,
    /// Creation time, Unix seconds.
    pub created_at: u64,
}

/// What a change of a token found.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenChange<T> {
    /// Done; the result.
    Done(T),
    /// No token has that name.
    NotFound,
    /// It is the last admin token (nobody could change the admin API afterwards).
    LastAdmin,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only.
    ReadOnly,
}

/// SHA-256 (hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The stored form of `doc` (JSON), once it is known to read back (nesting within the JSON
/// reader's limit); the error says why not.
pub fn stored_form(doc: &Managed) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
    serde_json::from_slice::<Managed>(&json)
        .map_err(|e| format!("the configuration is nested too deeply to be stored: {e}"))?;
    Ok(json)
}

const DOC: &str = "managed";
const REVISION: &str = "config_revision";

impl Db {
    /// The managed resources and their revision (0: never written).
    pub fn managed(&self) -> Result<(Managed, u64), StoreError> {
        let tx = self.inner().begin_read().map_err(io)?;
        let revision = tx
            .open_table(META)
            .map_err(io)?
            .get(REVISION)
            .map_err(io)?
            .map_or(0, |v| v.value());
        let config = tx.open_table(CONFIG).map_err(io)?;
        let doc = match config.get(DOC).map_err(io)? {
            Some(raw) => serde_json::from_slice(raw.value())
                .map_err(|e| StoreError::Io(format!("stored configuration: {e}")))?,
            None => Managed::default(),
        };
        Ok((doc, revision))
    }

    /// Replaces the managed resources with `doc`, whose [`stored_form`] is `json`, if the
    /// stored revision is still `expected`, storing `blobs` (digest → bytes) and dropping the
    /// components no plugin version of `doc` refers to any more (a deleted plugin's), in the
    /// same transaction; returns the new revision.
    pub fn put_managed(
        &self,
        doc: &Managed,
        json: &[u8],
        expected: u64,
        blobs: &[(String, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        let tx = self.inner().begin_write().map_err(io)?;
        let next = {
            let mut meta = tx.open_table(META).map_err(io)?;
            let current = meta.get(REVISION).map_err(io)?.map_or(0, |v| v.value());
            if current != expected {
                return Err(StoreError::Io(format!(
                    "the configuration changed concurrently (revision {current}, expected {expected})"
                )));
            }
            meta.insert(REVISION, current + 1).map_err(io)?;
            current + 1
        };
        tx.open_table(CONFIG)
            .map_err(io)?
            .insert(DOC, json)
            .map_err(io)?;
        {
            let mut table = tx.open_table(BLOBS).map_err(io)?;
            for (digest, bytes) in blobs {
                table
                    .insert(digest.as_str(), bytes.as_slice())
                    .map_err(io)?;
            }
            let referenced: std::collections::BTreeSet<&str> = doc
                .plugins
                .values()
                .flat_map(|p| p.versions.iter().map(|v| v.digest.as_str()))
                .collect();
            let mut unreferenced = Vec::new();
            for entry in table.iter().map_err(io)? {
                let (k, _) = entry.map_err(io)?;
                if !referenced.contains(k.value()) {
                    unreferenced.push(k.value().to_owned());
                }
            }
            for digest in unreferenced {
                table.remove(digest.as_str()).map_err(io)?;
            }
        }
        tx.commit().map_err(io)?;
        Ok(next)
    }

    /// A stored component.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.inner().begin_read().map_err(io)?;
        let table = tx.open_table(BLOBS).map_err(io)?;
        Ok(table.get(digest).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// The token whose secret hashes to `sha256`.
    pub fn token(&self, sha256: &str) -> Result<Option<TokenRecord>, StoreError> {
        let tx = self.inner().begin_read().map_err(io)?;
        let table = tx.open_table(TOKENS).map_err(io)?;
        match table.get(sha256).map_err(io)? {
            Some(raw) => Ok(serde_json::from_slice(raw.value()).ok()),
            None => Ok(None),
        }
    }

    /// Every token record.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let tx = self.inner().begin_read().map_err(io)?;
        let table = tx.open_table(TOKENS).map_err(io)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io)? {
            let (_, v) = entry.map_err(io)?;
            if let Ok(r) = serde_json::from_slice::<TokenRecord>(v.value()) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Stores a token (replacing any token of the same name); false when the name exists
    /// and `replace` is false.
    pub fn put_token(
        &self,
        sha256: &str,
        record: &TokenRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let tx = self.inner().begin_write().map_err(io)?;
        {
            let mut table = tx.open_table(TOKENS).map_err(io)?;
            let mut same_name = Vec::new();
            for entry in table.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                if serde_json::from_slice::<TokenRecord>(v.value())
                    .is_ok_and(|r| r.name == record.name)
                {
                    same_name.push(k.value().to_owned());
                }
            }
            if !same_name.is_empty() && !replace {
                return Ok(false);
            }
            for k in same_name {
                table.remove(k.as_str()).map_err(io)?;
            }
            let json = serde_json::to_vec(record).map_err(io)?;
            table.insert(sha256, json.as_slice()).map_err(io)?;
        }
        tx.commit().map_err(io)?;
        Ok(true)
    }

    /// Changes the role of the token named `name`. Refused when it would leave no admin
    /// token (an admin API nobody can change).
    pub fn set_token_role(
        &self,
        name: &str,
        role: Role,
    ) -> Result<TokenChange<TokenRecord>, StoreError> {
        self.change_token(name, |table, key, mut record, admins| {
            if record.role == Role::Admin && role != Role::Admin && admins == 1 {
                return Ok(TokenChange::LastAdmin);
            }
            record.role = role;
            let json = serde_json::to_vec(&record).map_err(io)?;
            table.insert(key, json.as_slice()).map_err(io)?;
            Ok(TokenChange::Done(record))
        })
    }

    /// Removes the token named `name`. Refused when it is the last admin token.
    pub fn delete_token(&self, name: &str) -> Result<TokenChange<()>, StoreError> {
        self.change_token(name, |table, key, record, admins| {
            if record.role == Role::Admin && admins == 1 {
                return Ok(TokenChange::LastAdmin);
            }
            table.remove(key).map_err(io)?;
            Ok(TokenChange::Done(()))
        })
    }

    /// Applies `change` to the token named `name` (its key, its record and the number of
    /// admin tokens) in one transaction; committed unless it refuses.
    fn change_token<T>(
        &self,
        name: &str,
        change: impl FnOnce(
            &mut redb::Table<'_, &'static str, &'static [u8]>,
            &str,
            TokenRecord,
            usize,
        ) -> Result<TokenChange<T>, StoreError>,
    ) -> Result<TokenChange<T>, StoreError> {
        let tx = self.inner().begin_write().map_err(io)?;
        let outcome = {
            let mut table = tx.open_table(TOKENS).map_err(io)?;
            let (mut found, mut admins) = (None, 0);
            for entry in table.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                let Ok(r) = serde_json::from_slice::<TokenRecord>(v.value()) else {
                    continue;
                };
                admins += usize::from(r.role == Role::Admin);
                if r.name == name {
                    found = Some((k.value().to_owned(), r));
                }
            }
            match found {
                Some((key, record)) => change(&mut table, &key, record, admins)?,
                None => TokenChange::NotFound,
            }
        };
        if matches!(outcome, TokenChange::Done(_)) {
            tx.commit().map_err(io)?;
        }
        Ok(outcome)
    }

    /// Copies every table into a new database file at `to` (a consistent snapshot: one read
    /// transaction).
    pub fn backup_to(&self, to: &std::path::Path) -> Result<(), StoreError> {
        copy_all(self.inner(), to)
    }
}

/// Copies the tables of `from` into a new file `to`.
pub(crate) fn copy_all(
    from: &impl ReadableDatabase,
    to: &std::path::Path,
) -> Result<(), StoreError> {
    use super::db::{KV, KV_COUNTS};
    let src = from.begin_read().map_err(io)?;
    let dst = redb::Database::create(to).map_err(io)?;
    let tx = dst.begin_write().map_err(io)?;
    macro_rules! copy {
        ($def:expr) => {{
            let s = src.open_table($def).map_err(io)?;
            let mut d = tx.open_table($def).map_err(io)?;
            for entry in s.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                d.insert(k.value(), v.value()).map_err(io)?;
            }
        }};
    }
    copy!(META);
    copy!(KV);
    copy!(KV_COUNTS);
    copy!(CONFIG);
    copy!(BLOBS);
    copy!(TOKENS);
    tx.commit().map_err(io)?;
    Ok(())
}

/// Opens `path` read-only (next to a running gateway) and copies it to `to`.
pub fn backup_file(path: &std::path::Path, to: &std::path::Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::Io(format!("{} already exists", to.display())));
    }
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(path)
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    copy_all(&db, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_documents_round_trip_with_optimistic_revisions_and_blobs() {
        let db = Db::in_memory().unwrap();
        let (doc, rev) = db.managed().unwrap();
        assert_eq!((doc.clone(), rev), (Managed::default(), 0));
        let mut next = doc;
        next.upstreams
            .insert("u".into(), serde_json::json!({"targets": []}));
        next.plugins.insert(
            "p".into(),
            ManagedPlugin {
                versions: vec![PluginVersion {
                    version: 1,
                    digest: "abc".into(),
                    size: 3,
                    uploaded_at: 0,
                    signed: false,
                    signature: None,
                }],
                active: Some(1),
                ..Default::default()
            },
        );
        let put = |doc: &Managed, expected, blobs: &[(String, Vec<u8>)]| {
            db.put_managed(doc, &stored_form(doc).unwrap(), expected, blobs)
        };
        let r1 = put(&next, 0, &[("abc".into(), vec![1, 2, 3])]).unwrap();
        assert_eq!(r1, 1);
        assert_eq!(db.managed().unwrap(), (next.clone(), 1));
        assert_eq!(db.blob("abc").unwrap(), Some(vec![1, 2, 3]));
        let stale = put(&Managed::default(), 0, &[]);
        assert!(stale.is_err(), "a stale revision is refused");
        assert_eq!(db.managed().unwrap().1, 1);
        // Deleting the plugin drops its component.
        next.plugins.clear();
        put(&next, 1, &[]).unwrap();
        assert_eq!(db.blob("abc").unwrap(), None);
    }

    #[test]
    fn tokens_are_found_by_hash_and_names_are_unique() {
        let db = Db::in_memory().unwrap();
        let rec = |n: &str, role| TokenRecord {
            name: n.into(),
            role,
            created_at: 0,
        };
        assert!(db.put_token("h1", &rec("a", Role::Admin), false).unwrap());
        assert!(
            !db.put_token("h2", &rec("a", Role::ReadOnly), false)
                .unwrap()
        );
        assert!(db.put_token("h2", &rec("a", Role::ReadOnly), true).unwrap());
        assert_eq!(db.token("h1").unwrap(), None, "replaced");
        assert_eq!(db.token("h2").unwrap().unwrap().role, Role::ReadOnly);
        assert_eq!(db.delete_token("a").unwrap(), TokenChange::Done(()));
        assert!(db.tokens().unwrap().is_empty());
        assert_eq!(db.delete_token("a").unwrap(), TokenChange::NotFound);
    }

    #[test]
    fn the_last_admin_token_is_neither_demoted_nor_deleted() {
        let db = Db::in_memory().unwrap();
        let rec = |n: &str, role| TokenRecord {
            name: n.into(),
            role,
            created_at: 0,
        };
        db.put_token("h1", &rec("root", Role::Admin), false)
            .unwrap();
        db.put_token("h2", &rec("viewer", Role::ReadOnly), false)
            .unwrap();
        assert_eq!(db.delete_token("root").unwrap(), TokenChange::LastAdmin);
        assert_eq!(
            db.set_token_role("root", Role::ReadOnly).unwrap(),
            TokenChange::LastAdmin
        );
        assert_eq!(db.token("h1").unwrap().unwrap().role, Role::Admin);
        // With a second admin, either may go.
        assert!(matches!(
            db.set_token_role("viewer", Role::Admin).unwrap(),
            TokenChange::Done(_)
        ));
        assert_eq!(db.delete_token("root").unwrap(), TokenChange::Done(()));
        assert_eq!(db.delete_token("viewer").unwrap(), TokenChange::LastAdmin);
    }
}
