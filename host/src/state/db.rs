//! The embedded store: one redb file, its tables, and schema migrations.
//!
//! The file is opened in redb's single-writer mode: this process writes, and other processes
//! (`sluice backup`) may open it read-only at the same time and see only committed
//! transactions. Every commit is durable (`Durability::Immediate`, redb's default): once a
//! write is acknowledged it survives kill -9 and power loss.
//!
//! Schema history (the version lives in `meta["schema_version"]`):
//! - 1: `meta`, `kv` (plugin key-value entries);
//! - 2: adds `kv_counts` (live entry count per namespace, so the per-namespace key cap is
//!   checked in O(1) instead of by a scan). Migration 1→2 counts the existing entries;
//! - 3: adds `config` (the resources managed through the admin API, one document with its
//!   revision), `blobs` (plugin components by SHA-256) and `tokens` (admin tokens by the
//!   SHA-256 of their secret). Migration 2→3 creates them empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

/// The schema this build writes.
pub const SCHEMA_VERSION: u64 = 3;

/// Store metadata (`schema_version`).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Plugin kv entries: `(namespace, key)` → 8-byte big-endian expiry in Unix milliseconds
/// (0: never) followed by the value.
pub(crate) const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Entries per kv namespace (expired but not yet swept entries included).
pub(crate) const KV_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("kv_counts");
/// Admin-managed configuration: `"managed"` → JSON document.
pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
/// Plugin components: SHA-256 (hex) → bytes.
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Admin tokens: SHA-256 (hex) of the secret → JSON record.
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened.
    #[error("cannot open {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// The file was written by a newer Sluice.
    #[error("{path} has schema version {found}; this build understands up to {SCHEMA_VERSION}")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// A read or write failed.
    #[error("store: {0}")]
    Io(String),
}

/// Maps any redb error into [`StoreError::Io`].
pub(crate) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The opened store.
#[derive(Clone)]
pub struct Db {
    db: Arc<Database>,
    path: PathBuf,
}

impl Db {
    /// Runs `f` on tokio's blocking pool, off the workers that serve requests: for the
    /// admin plane's write transactions, which wait for the kv writer's transaction and
    /// then fsync (with component bytes, megabytes of them).
    pub async fn off_workers<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io)?
    }

    /// Opens (creating when absent, with an owner-only parent directory) and migrates the
    /// store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    fail("the file is in use by another sluice process".into())
                }
                e => fail(e.to_string()),
            })?;
        let db = Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    /// A store in memory (nothing persists): for checking configurations and for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(io)?;
        let db = Self {
            db: Arc::new(db),
            path: PathBuf::from(":memory:"),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb handle.
    pub(crate) fn inner(&self) -> &Database {
        &self.db
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let meta = tx.open_table(META).map_err(io)?;
        Ok(meta
            .get("schema_version")
            .map_err(io)?
            .map_or(0, |v| v.value()))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        let found = {
            let meta = tx.open_table(META).map_err(io)?;
            meta.get("schema_version").map_err(io)?.map(|v| v.value())
        };
        let found = match found {
            Some(v) => v,
            None => {
                // A new file: create every table at the current version.
                tx.open_table(KV).map_err(io)?;
                tx.open_table(KV_COUNTS).map_err(io)?;
                create_admin_tables(&tx)?;
                SCHEMA_VERSION
            }
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        if found < 2 {
            migrate_1_to_2(&tx)?;
            tracing::info!(path = %self.path.display(), "store migrated to schema 2");
        }
        if found < 3 {
            create_admin_tables(&tx)?;
            tracing::info!(path = %self.path.display(), "store migrated to schema 3");
        }
        tx.open_table(META)
            .map_err(io)?
            .insert("schema_version", SCHEMA_VERSION)
            .map_err(io)?;
        tx.commit().map_err(io)
    }
}

/// Version 2 counts the entries of every namespace into `kv_counts`.
fn migrate_1_to_2(tx: &WriteTransaction) -> Result<(), StoreError> {
    let kv = tx.open_table(KV).map_err(io)?;
    let mut counts = tx.open_table(KV_COUNTS).map_err(io)?;
    let mut tally = std::collections::BTreeMap::<String, u64>::new();
    for entry in kv.iter().map_err(io)? {
        let (k, _) = entry.map_err(io)?;
        *tally.entry(k.value().0.to_owned()).or_default() += 1;
    }
    for (ns, n) in tally {
        counts.insert(ns.as_str(), n).map_err(io)?;
    }
    Ok(())
}

/// Version 3 adds the admin tables.
fn create_admin_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(CONFIG).map_err(io)?;
    tx.open_table(BLOBS).map_err(io)?;
    tx.open_table(TOKENS).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn a_new_store_is_created_at_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("sub/s.redb")).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_store_is_migrated_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.redb");
        {
            // The layout a version-1 build wrote: meta + kv, no counts.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            {
                let mut kv = tx.open_table(KV).unwrap();
                let mut v = 0u64.to_be_bytes().to_vec();
                v.extend_from_slice(b"x");
                kv.insert(("a", "k1"), v.as_slice()).unwrap();
                kv.insert(("a", "k2"), v.as_slice()).unwrap();
                kv.insert(("b", "k1"), v.as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        let tx = db.inner().begin_read().unwrap();
        assert_eq!(tx.open_table(TOKENS).unwrap().len().unwrap(), 0);
        let counts = tx.open_table(KV_COUNTS).unwrap();
        assert_eq!(counts.get("a").unwrap().unwrap().value(), 2);
        assert_eq!(counts.get("b").unwrap().unwrap().value(), 1);
        assert_eq!(tx.open_table(KV).unwrap().len().unwrap(), 3);
    }

    #[test]
    fn a_store_from_a_newer_build_is_refused_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            tx.commit().unwrap();
        }
        let err = Db::open(&path).err().expect("refused").to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
