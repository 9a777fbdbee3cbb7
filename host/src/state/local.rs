//! The `local` kv backend: plugin entries in the embedded store.
//!
//! Reads run inline (a redb read transaction on pages that are almost always cached).
//! Writes never run on a tokio worker: they go to one writer thread that commits them in
//! groups — every write waiting when a commit starts joins it, so one fsync serves many
//! requests under load — and each caller is answered only after its commit is durable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, Table};
use tokio::sync::{mpsc, oneshot};

use super::db::{Db, KV, KV_COUNTS, io};
use super::expiry::{Cursor, Expiries, Swept, purge_namespace, sweep_step};
use super::kv::{KvError, KvLimits};

/// Writes waiting for the writer beyond this many make callers wait (backpressure).
const QUEUE: usize = 4096;
/// Most writes committed together.
const GROUP: usize = 512;

/// Milliseconds since the Unix epoch: the clock expiry times are kept in.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn expiry(ttl: Option<Duration>, now: u64) -> u64 {
    ttl.map_or(0, |t| now.saturating_add(t.as_millis() as u64).max(1))
}

fn encode(expires: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&expires.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// `(expires, value)` of a stored entry.
pub(super) fn decode(raw: &[u8]) -> (u64, &[u8]) {
    let (head, value) = raw.split_at(8.min(raw.len()));
    let mut e = [0u8; 8];
    e[..head.len()].copy_from_slice(head);
    (u64::from_be_bytes(e), value)
}

/// Whether an entry expiring at `expires` (0: never) is live at `now`.
pub(super) fn live(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

enum Op {
    Set {
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    Delete,
    Increment {
        delta: i64,
        ttl: Option<Duration>,
    },
    CompareAndSet {
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
}

/// What a write answers.
enum Done {
    Unit,
    Flag(bool),
    Number(i64),
}

enum Job {
    Write {
        ns: String,
        key: String,
        op: Op,
        reply: oneshot::Sender<Result<Done, KvError>>,
    },
    /// One bounded step of a sweep, from `from` (the start: `None`).
    Sweep {
        from: Option<Cursor>,
        reply: oneshot::Sender<Result<Swept, KvError>>,
    },
}

/// The local kv store.
pub struct LocalKv {
    db: Db,
    limits: KvLimits,
    jobs: mpsc::Sender<Job>,
}

impl LocalKv {
    /// A store over `db` with `limits`; starts its writer thread.
    pub fn new(db: Db, limits: KvLimits) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            db: db.clone(),
            limits,
            expiries: Expiries::default(),
        };
        std::thread::Builder::new()
            .name("sluice-store".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self { db, limits, jobs })
    }

    /// The caps this store enforces.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        self.limits.check(key, value)
    }

    /// The live value at `key` in namespace `ns`.
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check(key, None)?;
        let read = || -> Result<Option<Vec<u8>>, super::StoreError> {
            let tx = self.db.inner().begin_read().map_err(io)?;
            let table = tx.open_table(KV).map_err(io)?;
            let Some(raw) = table.get((ns, key)).map_err(io)? else {
                return Ok(None);
            };
            let (expires, value) = decode(raw.value());
            Ok(live(expires, now_ms()).then(|| value.to_vec()))
        };
        read().map_err(|e| KvError::Unavailable(e.to_string()))
    }

    async fn write(&self, ns: &str, key: &str, op: Op) -> Result<Done, KvError> {
        let (reply, rx) = oneshot::channel();
        let job = Job::Write {
            ns: ns.to_owned(),
            key: key.to_owned(),
            op,
            reply,
        };
        let gone = || KvError::Unavailable("the store's writer stopped".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Stores `value` under `key`, expiring after `ttl` when given.
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.check(key, Some(&value))?;
        self.write(ns, key, Op::Set { value, ttl })
            .await
            .map(|_| ())
    }

    /// Removes `key`; true when a live value existed.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.check(key, None)?;
        match self.write(ns, key, Op::Delete).await? {
            Done::Flag(b) => Ok(b),
            _ => unreachable!("delete answers a flag"),
        }
    }

    /// Adds `delta` to the decimal counter at `key`; `ttl` applies when it is created.
    pub async fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.check(key, None)?;
        match self.write(ns, key, Op::Increment { delta, ttl }).await? {
            Done::Number(n) => Ok(n),
            _ => unreachable!("increment answers a number"),
        }
    }

    /// Stores `value` only if the live value equals `expected` (`None`: absent).
    pub async fn compare_and_set(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.check(key, Some(&value))?;
        let op = Op::CompareAndSet {
            expected,
            value,
            ttl,
        };
        match self.write(ns, key, op).await? {
            Done::Flag(b) => Ok(b),
            _ => unreachable!("compare-and-set answers a flag"),
        }
    }

    /// Removes every expired entry; returns how many. The table is walked in steps of
    /// [`SWEEP_STEP`](super::expiry::SWEEP_STEP) entries, each its own transaction, so that writes queued meanwhile
    /// wait for one step, not for the whole table.
    pub async fn sweep(&self) -> Result<u64, KvError> {
        let gone = || KvError::Unavailable("the store's writer stopped".into());
        let (mut removed, mut from) = (0, None);
        loop {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .send(Job::Sweep { from, reply })
                .await
                .map_err(|_| gone())?;
            let step = rx.await.map_err(|_| gone())??;
            removed += step.removed;
            match step.next {
                Some(next) => from = Some(next),
                None => return Ok(removed),
            }
        }
    }
}

struct Writer {
    db: Db,
    limits: KvLimits,
    expiries: Expiries,
}

/// The entries table: `(namespace, key)` to `expires ‖ value`.
pub(super) type Kv<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;
/// Entries per namespace.
pub(super) type Counts<'t> = Table<'t, &'static str, u64>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(GROUP);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < GROUP {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Applies `batch` in one transaction, then answers every job.
    fn commit(&mut self, batch: &mut Vec<Job>) {
        let mut results = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), super::StoreError> {
            let tx = self.db.inner().begin_write().map_err(io)?;
            // A batch of sweep steps that removed nothing changed nothing: it is not
            // committed (every commit is durable, an fsync).
            let mut changed = false;
            {
                let mut kv = tx.open_table(KV).map_err(io)?;
                let mut counts = tx.open_table(KV_COUNTS).map_err(io)?;
                let now = now_ms();
                for job in batch.iter_mut() {
                    results.push(match job {
                        Job::Write { ns, key, op, .. } => {
                            changed = true;
                            Ok(self.apply(&mut kv, &mut counts, ns, key, op, now)?)
                        }
                        Job::Sweep { from, .. } => {
                            let step = sweep_step(&mut kv, &mut counts, from.take(), now)?;
                            changed |= step.removed > 0;
                            Err(step)
                        }
                    });
                }
            }
            if changed {
                tx.commit().map_err(io)
            } else {
                tx.abort().map_err(io)
            }
        })();
        // The batch's purges were rolled back with it: what was learnt of expiries then is
        // forgotten (the next write at a quota rescans).
        if outcome.is_err() {
            self.expiries.forget();
        }
        for (job, result) in batch.drain(..).zip(
            results
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None)),
        ) {
            let failed = |e: &super::StoreError| KvError::Unavailable(e.to_string());
            match job {
                Job::Write { reply, .. } => {
                    let r = match (&outcome, result) {
                        (Err(e), _) => Err(failed(e)),
                        (Ok(()), Some(Ok(r))) => r,
                        _ => Err(KvError::Unavailable("store write failed".into())),
                    };
                    let _ = reply.send(r);
                }
                Job::Sweep { reply, .. } => {
                    let r = match (&outcome, result) {
                        (Err(e), _) => Err(failed(e)),
                        (Ok(()), Some(Err(step))) => Ok(step),
                        _ => Err(KvError::Unavailable("sweep failed".into())),
                    };
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// One write inside the open transaction. The outer error aborts the whole batch (an
    /// I/O failure); the inner one is this write's own refusal.
    fn apply(
        &mut self,
        kv: &mut Kv<'_>,
        counts: &mut Counts<'_>,
        ns: &str,
        key: &str,
        op: &mut Op,
        now: u64,
    ) -> Result<Result<Done, KvError>, super::StoreError> {
        let current = kv
            .get((ns, key))
            .map_err(io)?
            .map(|raw| {
                let (e, v) = decode(raw.value());
                (e, v.to_vec())
            })
            .filter(|(e, _)| live(*e, now));
        let present = kv.get((ns, key)).map_err(io)?.is_some();
        let (stored, answer) = match op {
            Op::Delete => {
                if present {
                    kv.remove((ns, key)).map_err(io)?;
                    add_count(counts, ns, -1)?;
                }
                return Ok(Ok(Done::Flag(current.is_some())));
            }
            Op::Set { value, ttl } => (
                encode(expiry(*ttl, now), &std::mem::take(value)),
                Done::Unit,
            ),
            Op::Increment { delta, ttl } => {
                let (n, expires) = match &current {
                    Some((e, v)) => {
                        match std::str::from_utf8(v).ok().and_then(|t| t.parse().ok()) {
                            Some(n) => (n, *e),
                            None => return Ok(Err(KvError::NotANumber)),
                        }
                    }
                    None => (0i64, expiry(*ttl, now)),
                };
                let next = n.saturating_add(*delta);
                (
                    encode(expires, next.to_string().as_bytes()),
                    Done::Number(next),
                )
            }
            Op::CompareAndSet {
                expected,
                value,
                ttl,
            } => {
                if current.as_ref().map(|(_, v)| v.as_slice()) != expected.as_deref() {
                    return Ok(Ok(Done::Flag(false)));
                }
                (
                    encode(expiry(*ttl, now), &std::mem::take(value)),
                    Done::Flag(true),
                )
            }
        };
        if !present {
            let max = self.limits.max_keys as u64;
            let n = counts.get(ns).map_err(io)?.map_or(0, |v| v.value());
            // At the quota, only expired entries can make room; the namespace is scanned
            // for them only when one may have expired (and at most once a second).
            if n >= max
                && (!self.expiries.may_have_expired(ns, now)
                    || purge_namespace(kv, counts, ns, now, &mut self.expiries)? >= max)
            {
                return Ok(Err(KvError::QuotaExceeded));
            }
            add_count(counts, ns, 1)?;
        }
        self.expiries.stored(ns, decode(&stored).0);
        kv.insert((ns, key), stored.as_slice()).map_err(io)?;
        Ok(Ok(answer))
    }
}

pub(super) fn add_count(
    counts: &mut Counts<'_>,
    ns: &str,
    delta: i64,
) -> Result<(), super::StoreError> {
    let n = counts.get(ns).map_err(io)?.map_or(0, |v| v.value());
    let next = n.saturating_add_signed(delta);
    if next == 0 {
        counts.remove(ns).map_err(io)?;
    } else {
        counts.insert(ns, next).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> LocalKv {
        let db = Db::open(&dir.path().join("kv.redb")).unwrap();
        LocalKv::new(
            db,
            KvLimits {
                max_key_bytes: 8,
                max_value_bytes: 4,
                max_keys: 2,
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn namespaces_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir);
        k.set("a", "k", b"1".to_vec(), None).await.unwrap();
        assert_eq!(k.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(k.get("b", "k").unwrap(), None);
    }

    #[tokio::test]
    async fn caps_are_enforced_with_distinct_errors() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir);
        let big_key = k.set("a", "123456789", vec![], None).await;
        assert_eq!(big_key, Err(KvError::KeyTooLarge));
        let big_value = k.set("a", "k", vec![0; 5], None).await;
        assert_eq!(big_value, Err(KvError::ValueTooLarge));
        k.set("a", "x", vec![], None).await.unwrap();
        k.set("a", "y", vec![], None).await.unwrap();
        assert_eq!(
            k.set("a", "z", vec![], None).await,
            Err(KvError::QuotaExceeded)
        );
        // Overwriting an existing key is not a new key; another namespace has its own cap.
        k.set("a", "x", vec![1], None).await.unwrap();
        k.set("b", "z", vec![1], None).await.unwrap();
        // Deleting frees a slot.
        assert!(k.delete("a", "y").await.unwrap());
        k.set("a", "z", vec![], None).await.unwrap();
    }

    #[tokio::test]
    async fn expired_values_are_absent_and_free_their_slot() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir);
        k.set("a", "t", b"v".to_vec(), Some(Duration::from_millis(1)))
            .await
            .unwrap();
        k.set("a", "p", b"v".to_vec(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        // Wait past the 1 ms TTL by the wall clock the store itself uses.
        let start = now_ms();
        while now_ms() < start + 2 {
            std::thread::yield_now();
        }
        assert_eq!(k.get("a", "t").unwrap(), None);
        assert!(k.get("a", "p").unwrap().is_some());
        // The namespace is at its cap of 2, but the expired key's slot is reclaimed.
        k.set("a", "n", b"v".to_vec(), None).await.unwrap();
        assert_eq!(k.sweep().await.unwrap(), 0, "already purged on demand");
    }

    #[tokio::test]
    async fn sweep_removes_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir);
        k.set("a", "t", b"v".to_vec(), Some(Duration::from_millis(1)))
            .await
            .unwrap();
        let start = now_ms();
        while now_ms() < start + 2 {
            std::thread::yield_now();
        }
        assert_eq!(k.sweep().await.unwrap(), 1);
        assert_eq!(k.sweep().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn increment_and_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let k = store(&dir);
        assert_eq!(k.increment("a", "n", 2, None).await.unwrap(), 2);
        assert_eq!(k.increment("a", "n", -5, None).await.unwrap(), -3);
        k.set("a", "s", b"ab".to_vec(), None).await.unwrap();
        assert_eq!(
            k.increment("a", "s", 1, None).await,
            Err(KvError::NotANumber)
        );
        let stale = k.compare_and_set("a", "s", Some(b"zz".to_vec()), b"c".to_vec(), None);
        assert!(!stale.await.unwrap());
        let fresh = k.compare_and_set("a", "s", Some(b"ab".to_vec()), b"c".to_vec(), None);
        assert!(fresh.await.unwrap());
        assert_eq!(k.get("a", "s").unwrap(), Some(b"c".to_vec()));
        let absent = k.compare_and_set("b", "new", None, b"1".to_vec(), None);
        assert!(absent.await.unwrap());
    }

    #[tokio::test]
    async fn acknowledged_writes_are_in_the_file_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let k = store(&dir);
            let writes: Vec<_> = (0..2)
                .map(|i| k.set("ns", ["a", "b"][i], vec![i as u8], None))
                .collect();
            for w in writes {
                w.await.unwrap();
            }
        }
        // The writer thread keeps the database open until it drains; wait for the lock.
        let path = dir.path().join("kv.redb");
        let db = loop {
            match Db::open(&path) {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("in use") => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        let k = LocalKv::new(db, KvLimits::default()).unwrap();
        assert_eq!(k.get("ns", "a").unwrap(), Some(vec![0]));
        assert_eq!(k.get("ns", "b").unwrap(), Some(vec![1]));
    }
}
