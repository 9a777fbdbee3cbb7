//! An in-process key-value store with TTLs, namespaces and caps.
//!
//! Keys are `(namespace, key)`; each plugin gets its own namespace, so a plugin can never
//! address another's keys. Expired values are removed lazily on access and by
//! [`MemoryKv::sweep`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Caps enforced on every write.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Longest key in bytes. Default: 512.
    pub max_key_bytes: usize,
    /// Largest value in bytes. Default: 64 KiB.
    pub max_value_bytes: usize,
    /// Most keys per namespace. Default: 10 000.
    pub max_keys: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 64 * 1024,
            max_keys: 10_000,
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Key over `max_key_bytes`.
    #[error("key too large")]
    KeyTooLarge,
    /// Value over `max_value_bytes`.
    #[error("value too large")]
    ValueTooLarge,
    /// Namespace at `max_keys`.
    #[error("namespace holds the maximum number of keys")]
    QuotaExceeded,
    /// `increment` on a value that is not a decimal integer.
    #[error("value is not a number")]
    NotANumber,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
struct Namespace {
    entries: HashMap<String, Entry>,
}

/// The memory store.
pub struct MemoryKv {
    limits: KvLimits,
    spaces: Mutex<HashMap<String, Namespace>>,
}

impl MemoryKv {
    /// An empty store with `limits`.
    pub fn new(limits: KvLimits) -> Self {
        Self {
            limits,
            spaces: Mutex::new(HashMap::new()),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(KvError::KeyTooLarge);
        }
        Ok(())
    }

    fn with<R>(&self, ns: &str, f: impl FnOnce(&mut Namespace, Instant) -> R) -> R {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(space) = spaces.get_mut(ns) {
            return f(space, now);
        }
        f(spaces.entry(ns.to_string()).or_default(), now)
    }

    fn put(
        &self,
        space: &mut Namespace,
        now: Instant,
        key: &str,
        entry: Entry,
    ) -> Result<(), KvError> {
        let exists = space.entries.get(key).is_some_and(|e| e.live(now));
        if !exists && space.entries.len() >= self.limits.max_keys {
            space.entries.retain(|_, e| e.live(now));
            if space.entries.len() >= self.limits.max_keys {
                return Err(KvError::QuotaExceeded);
            }
        }
        space.entries.insert(key.to_string(), entry);
        Ok(())
    }

    /// The live value at `key`.
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        Ok(self.with(ns, |s, now| match s.entries.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                s.entries.remove(key);
                None
            }
            None => None,
        }))
    }

    /// Stores `value` with an optional TTL.
    pub fn set(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        self.check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(KvError::ValueTooLarge);
        }
        self.with(ns, |s, now| {
            let entry = Entry {
                value,
                expires: ttl.map(|t| now + t),
            };
            self.put(s, now, key, entry)
        })
    }

    /// Removes `key`; true when a live value existed.
    pub fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.check_key(key)?;
        Ok(self.with(ns, |s, now| {
            s.entries.remove(key).is_some_and(|e| e.live(now))
        }))
    }

    /// Adds `delta` to a decimal counter; `ttl` applies when the key is created.
    pub fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        self.check_key(key)?;
        self.with(ns, |s, now| {
            let (current, expires) = match s.entries.get(key) {
                Some(e) if e.live(now) => {
                    let n = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                        .ok_or(KvError::NotANumber)?;
                    (n, e.expires)
                }
                _ => (0, ttl.map(|t| now + t)),
            };
            let next = current.saturating_add(delta);
            let entry = Entry {
                value: next.to_string().into_bytes(),
                expires,
            };
            self.put(s, now, key, entry)?;
            Ok(next)
        })
    }

    /// Stores `value` only if the current value equals `expected` (`None`: absent).
    pub fn compare_and_set(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(KvError::ValueTooLarge);
        }
        self.with(ns, |s, now| {
            let current = s
                .entries
                .get(key)
                .filter(|e| e.live(now))
                .map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            let entry = Entry {
                value,
                expires: ttl.map(|t| now + t),
            };
            self.put(s, now, key, entry).map(|_| true)
        })
    }

    /// Removes every expired value.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        for s in spaces.values_mut() {
            s.entries.retain(|_, e| e.live(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> MemoryKv {
        MemoryKv::new(KvLimits {
            max_key_bytes: 8,
            max_value_bytes: 4,
            max_keys: 2,
        })
    }

    #[test]
    fn namespaces_are_isolated() {
        let k = kv();
        k.set("a", "k", b"1".to_vec(), None).unwrap();
        assert_eq!(k.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(k.get("b", "k").unwrap(), None);
    }

    #[test]
    fn caps_are_enforced_with_distinct_errors() {
        let k = kv();
        assert_eq!(
            k.set("a", "123456789", vec![], None),
            Err(KvError::KeyTooLarge)
        );
        assert_eq!(
            k.set("a", "k", vec![0; 5], None),
            Err(KvError::ValueTooLarge)
        );
        k.set("a", "x", vec![], None).unwrap();
        k.set("a", "y", vec![], None).unwrap();
        assert_eq!(k.set("a", "z", vec![], None), Err(KvError::QuotaExceeded));
        k.set("a", "x", vec![1], None).unwrap();
    }

    #[test]
    fn values_expire_after_their_ttl() {
        let k = kv();
        k.set("a", "t", b"v".to_vec(), Some(Duration::ZERO))
            .unwrap();
        assert_eq!(k.get("a", "t").unwrap(), None);
        k.set("a", "p", b"v".to_vec(), Some(Duration::from_secs(60)))
            .unwrap();
        assert!(k.get("a", "p").unwrap().is_some());
    }

    #[test]
    fn increment_and_compare_and_set() {
        let k = kv();
        assert_eq!(k.increment("a", "n", 2, None).unwrap(), 2);
        assert_eq!(k.increment("a", "n", -5, None).unwrap(), -3);
        k.set("a", "s", b"ab".to_vec(), None).unwrap();
        assert_eq!(k.increment("a", "s", 1, None), Err(KvError::NotANumber));
        assert!(
            !k.compare_and_set("a", "s", Some(b"zz"), b"c".to_vec(), None)
                .unwrap()
        );
        assert!(
            k.compare_and_set("a", "s", Some(b"ab"), b"c".to_vec(), None)
                .unwrap()
        );
    }
}
