//! Expiry in the local kv store: reclaiming a namespace's expired entries when it is at its
//! quota, and the periodic sweep, both bounded so that the store's one writer (which every
//! plugin's writes wait on) is never held by a scan of a large table.

use std::collections::HashMap;

use redb::ReadableTable;

use super::db::io;
use super::local::{Counts, Kv, add_count, decode, live};

/// Entries examined by one step of a sweep (one transaction).
pub(super) const SWEEP_STEP: usize = 4096;
/// Shortest time between two scans of one namespace for expired entries.
const PURGE_EVERY_MS: u64 = 1000;

/// Where a sweep resumes: the first `(namespace, key)` not examined yet.
pub(super) type Cursor = (String, String);

/// What one sweep step did.
pub(super) struct Swept {
    /// Entries removed.
    pub(super) removed: u64,
    /// Where the next step starts; `None` when the table has been walked to its end.
    pub(super) next: Option<Cursor>,
}

/// What the writer knows of each namespace's expiries, so that a namespace at its quota
/// is scanned only when an entry may have expired. Kept by the one writer thread, which
/// makes every write, so it cannot go stale while the process runs; unknown at start.
#[derive(Default)]
pub(super) struct Expiries(HashMap<String, Bounds>);

struct Bounds {
    /// No entry of the namespace expires before this (`u64::MAX`: none expires).
    earliest: u64,
    /// When the namespace was last scanned.
    scanned: u64,
}

impl Expiries {
    /// Whether an entry of `ns` may have expired by `now` and the namespace was not
    /// scanned in the last second.
    pub(super) fn may_have_expired(&self, ns: &str, now: u64) -> bool {
        self.0
            .get(ns)
            .is_none_or(|b| b.earliest <= now && now.saturating_sub(b.scanned) >= PURGE_EVERY_MS)
    }

    /// Notes an entry of `ns` stored to expire at `expires` (0: never).
    pub(super) fn stored(&mut self, ns: &str, expires: u64) {
        if expires != 0
            && let Some(b) = self.0.get_mut(ns)
        {
            b.earliest = b.earliest.min(expires);
        }
    }

    /// Forgets everything known (after a failed transaction).
    pub(super) fn forget(&mut self) {
        self.0.clear();
    }

    fn scanned(&mut self, ns: &str, earliest: u64, now: u64) {
        self.0.insert(
            ns.to_owned(),
            Bounds {
                earliest,
                scanned: now,
            },
        );
    }
}

/// Removes the expired entries of `ns`; returns the entries left.
pub(super) fn purge_namespace(
    kv: &mut Kv<'_>,
    counts: &mut Counts<'_>,
    ns: &str,
    now: u64,
    expiries: &mut Expiries,
) -> Result<u64, super::StoreError> {
    let mut expired = Vec::new();
    let (mut left, mut earliest) = (0u64, u64::MAX);
    for entry in kv.range((ns, "")..).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        let (entry_ns, key) = k.value();
        if entry_ns != ns {
            break;
        }
        let expires = decode(v.value()).0;
        if live(expires, now) {
            left += 1;
            if expires != 0 {
                earliest = earliest.min(expires);
            }
        } else {
            expired.push(key.to_owned());
        }
    }
    for key in &expired {
        kv.remove((ns, key.as_str())).map_err(io)?;
    }
    if left == 0 {
        counts.remove(ns).map_err(io)?;
    } else {
        counts.insert(ns, left).map_err(io)?;
    }
    expiries.scanned(ns, earliest, now);
    Ok(left)
}

/// Examines up to [`SWEEP_STEP`] entries from `from` and removes the expired ones.
pub(super) fn sweep_step(
    kv: &mut Kv<'_>,
    counts: &mut Counts<'_>,
    from: Option<Cursor>,
    now: u64,
) -> Result<Swept, super::StoreError> {
    let (ns0, key0) = from.unwrap_or_default();
    let mut expired = Vec::new();
    let mut next = None;
    for (i, entry) in kv
        .range((ns0.as_str(), key0.as_str())..)
        .map_err(io)?
        .enumerate()
    {
        let (k, v) = entry.map_err(io)?;
        let (ns, key) = k.value();
        if i == SWEEP_STEP {
            next = Some((ns.to_owned(), key.to_owned()));
            break;
        }
        if !live(decode(v.value()).0, now) {
            expired.push((ns.to_owned(), key.to_owned()));
        }
    }
    for (ns, key) in &expired {
        kv.remove((ns.as_str(), key.as_str())).map_err(io)?;
        add_count(counts, ns, -1)?;
    }
    Ok(Swept {
        removed: expired.len() as u64,
        next,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::db::Db;
    use crate::state::kv::{KvError, KvLimits};
    use crate::state::local::LocalKv;

    fn store(path: &std::path::Path, max_keys: usize) -> LocalKv {
        LocalKv::new(
            Db::open(path).unwrap(),
            KvLimits {
                max_keys,
                ..KvLimits::default()
            },
        )
        .unwrap()
    }

    /// Spins until the store's wall clock has passed `ms` milliseconds from now.
    fn pass_ms(ms: u64) {
        let start = super::super::local::now_ms();
        while super::super::local::now_ms() < start + ms {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_namespace_is_rescanned_only_once_an_entry_may_have_expired_and_a_second_passed() {
        let mut e = Expiries::default();
        // Unknown: scan.
        assert!(e.may_have_expired("a", 10_000));
        // Scanned with nothing expiring: never again, until an entry with a TTL is stored.
        e.scanned("a", u64::MAX, 10_000);
        assert!(!e.may_have_expired("a", 1_000_000));
        e.stored("a", 0);
        assert!(!e.may_have_expired("a", 1_000_000));
        e.stored("a", 12_000);
        assert!(!e.may_have_expired("a", 11_999), "nothing expired yet");
        assert!(e.may_have_expired("a", 12_000));
        // Scanned recently: not again within a second, even if an entry expired since.
        e.scanned("a", 12_500, 12_400);
        assert!(!e.may_have_expired("a", 13_000));
        assert!(e.may_have_expired("a", 13_400));
        // Other namespaces are unaffected.
        assert!(e.may_have_expired("b", 0));
    }

    #[tokio::test]
    async fn a_quota_lowered_below_the_live_entries_refuses_new_keys_after_reclaiming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let k = store(&path, 4);
            for key in ["a", "b", "c"] {
                k.set("ns", key, vec![], None).await.unwrap();
            }
            k.set("ns", "t", vec![], Some(Duration::from_millis(1)))
                .await
                .unwrap();
        }
        pass_ms(2);
        let k = loop {
            match Db::open(&path) {
                Ok(db) => {
                    break LocalKv::new(
                        db,
                        KvLimits {
                            max_keys: 2,
                            ..KvLimits::default()
                        },
                    )
                    .unwrap();
                }
                Err(e) if e.to_string().contains("in use") => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        // The expired entry is reclaimed, but three live ones are still over the quota of 2.
        assert_eq!(
            k.set("ns", "new", vec![], None).await,
            Err(KvError::QuotaExceeded)
        );
        assert_eq!(k.get("ns", "new").unwrap(), None);
    }

    #[tokio::test]
    async fn a_sweep_walks_the_whole_table_in_steps_and_removes_only_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir.path().join("kv.redb"), 10_000);
        // More entries than one step holds, in two namespaces, with a live one in between.
        let n = SWEEP_STEP + SWEEP_STEP / 2;
        let ttl = Some(Duration::from_millis(1));
        let keys: Vec<(&str, String)> = (0..n)
            .map(|i| (if i % 2 == 0 { "a" } else { "b" }, format!("k{i}")))
            .collect();
        let writes = keys.iter().map(|(ns, key)| k.set(ns, key, vec![], ttl));
        for r in futures_util::future::join_all(writes).await {
            r.unwrap();
        }
        k.set("b", "live", vec![1], None).await.unwrap();
        pass_ms(2);
        assert_eq!(k.sweep().await.unwrap(), n as u64);
        assert_eq!(k.get("b", "live").unwrap(), Some(vec![1]));
        assert_eq!(k.sweep().await.unwrap(), 0);
    }
}
