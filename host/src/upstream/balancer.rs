//! Load-balancing algorithms over a group's eligible targets.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use rand::Rng;

use super::TargetState;

/// A request-derived key for consistent hashing, if the group hashes.
pub(crate) type HashKey<'a> = Option<&'a [u8]>;

/// The algorithm state of one group.
pub enum Balancer {
    /// Smooth weighted round robin (nginx's algorithm): even interleaving by weight.
    RoundRobin(Mutex<Vec<i64>>),
    /// Weighted random.
    Weighted,
    /// Power of two random choices by fewest in-flight requests (weight-scaled).
    LeastRequest,
    /// A ring of virtual nodes (`160 × weight` per target), walked clockwise to the first
    /// eligible target.
    Hash(Vec<(u64, usize)>),
}

/// Virtual nodes per unit of weight on the hash ring.
const VNODES_PER_WEIGHT: u32 = 160;

impl Balancer {
    /// Builds the state for `kind` over `targets`.
    pub fn new(kind: crate::config::Balance, targets: &[TargetState]) -> Self {
        use crate::config::Balance;
        match kind {
            Balance::RoundRobin => Self::RoundRobin(Mutex::new(vec![0; targets.len()])),
            Balance::Weighted => Self::Weighted,
            Balance::LeastRequest => Self::LeastRequest,
            Balance::Hash => {
                let mut ring = Vec::new();
                for (i, t) in targets.iter().enumerate() {
                    for v in 0..VNODES_PER_WEIGHT * t.weight {
                        ring.push((fnv1a(format!("{}#{v}", t.address).as_bytes()), i));
                    }
                }
                ring.sort_unstable();
                Self::Hash(ring)
            }
        }
    }

    /// Chooses a target index among those for which `eligible` holds.
    pub fn pick(
        &self,
        targets: &[TargetState],
        key: HashKey<'_>,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Self::RoundRobin(current) => {
                let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, t) in targets.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let w = i64::from(t.weight);
                    current[i] += w;
                    total += w;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                current[b] -= total;
                Some(b)
            }
            Self::Weighted => {
                let total: u64 = (0..targets.len())
                    .filter(|i| eligible(*i))
                    .map(|i| u64::from(targets[i].weight))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut n = rand::rng().random_range(0..total);
                for (i, t) in targets.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let w = u64::from(t.weight);
                    if n < w {
                        return Some(i);
                    }
                    n -= w;
                }
                None
            }
            Self::LeastRequest => {
                let ok: Vec<usize> = (0..targets.len()).filter(|i| eligible(*i)).collect();
                match ok.len() {
                    0 => None,
                    1 => Some(ok[0]),
                    n => {
                        let mut rng = rand::rng();
                        let a = ok[rng.random_range(0..n)];
                        let mut b = ok[rng.random_range(0..n - 1)];
                        if b == a {
                            b = ok[n - 1];
                        }
                        let load = |i: usize| {
                            (targets[i].in_flight.load(Ordering::Relaxed) as u64 + 1) * 1000
                                / u64::from(targets[i].weight)
                        };
                        Some(if load(b) < load(a) { b } else { a })
                    }
                }
            }
            Self::Hash(ring) => {
                let Some(key) = key else {
                    // No key on this request: fall back to a uniformly random eligible target.
                    let ok: Vec<usize> = (0..targets.len()).filter(|i| eligible(*i)).collect();
                    return (!ok.is_empty()).then(|| ok[rand::rng().random_range(0..ok.len())]);
                };
                // With no eligible target the walk below would visit the whole ring (160
                // points per unit of weight) on every request: look at the targets first.
                if !(0..targets.len()).any(&eligible) {
                    return None;
                }
                let h = fnv1a(key);
                let start = ring.partition_point(|(p, _)| *p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|i| eligible(*i))
            }
        }
    }
}

/// 64-bit FNV-1a with a mixing finaliser: stable across processes and versions, so every gateway of a fleet maps a
/// key to the same target.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser: FNV alone leaves similar keys close together on the ring.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;

    fn targets(weights: &[u32]) -> Vec<TargetState> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| TargetState::new(format!("10.0.0.{i}:80"), *w))
            .collect()
    }

    fn counts(b: &Balancer, t: &[TargetState], n: usize, key: HashKey<'_>) -> Vec<usize> {
        let mut c = vec![0; t.len()];
        for _ in 0..n {
            c[b.pick(t, key, |_| true).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let t = targets(&[1, 2, 3]);
        let b = Balancer::new(Balance::RoundRobin, &t);
        assert_eq!(counts(&b, &t, 600, None), vec![100, 200, 300]);
    }

    #[test]
    fn round_robin_skips_ineligible_targets() {
        let t = targets(&[1, 1, 1]);
        let b = Balancer::new(Balance::RoundRobin, &t);
        for _ in 0..10 {
            assert_ne!(b.pick(&t, None, |i| i != 1), Some(1));
        }
        assert_eq!(b.pick(&t, None, |_| false), None);
    }

    #[test]
    fn weighted_random_is_close_to_weights() {
        let t = targets(&[1, 3]);
        let b = Balancer::new(Balance::Weighted, &t);
        let c = counts(&b, &t, 40_000, None);
        let share = c[1] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{c:?}");
    }

    #[test]
    fn least_request_prefers_idle_targets() {
        let t = targets(&[1, 1]);
        t[0].in_flight.store(50, Ordering::Relaxed);
        let b = Balancer::new(Balance::LeastRequest, &t);
        assert_eq!(counts(&b, &t, 100, None), vec![0, 100]);
    }

    #[test]
    fn hash_is_sticky_and_moves_only_keys_of_a_removed_target() {
        let t = targets(&[1, 1, 1, 1]);
        let b = Balancer::new(Balance::Hash, &t);
        let mut moved = 0;
        for k in 0..1000 {
            let key = format!("user-{k}");
            let first = b.pick(&t, Some(key.as_bytes()), |_| true).unwrap();
            assert_eq!(b.pick(&t, Some(key.as_bytes()), |_| true), Some(first));
            let without = b.pick(&t, Some(key.as_bytes()), |i| i != 2).unwrap();
            if first != 2 {
                assert_eq!(without, first);
            } else {
                moved += 1;
            }
        }
        assert!((150..350).contains(&moved), "{moved}");
    }
}
