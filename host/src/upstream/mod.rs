//! Upstream groups: targets, load balancing, pooled connections, health (active and
//! passive), the circuit breaker and the retry budget.
//!
//! A group is built once per configuration snapshot and is immutable apart from its atomic
//! health and load counters. Active health checks run in a task that ends when the group is
//! dropped.

mod balancer;
mod breaker;
mod connector;
mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use balancer::{Balancer, fnv1a};
pub use breaker::{Breaker, Refused, RetryBudget};
pub use connector::{ConnectError, Connector, default_port};

use crate::body::BoxBody;
use crate::config::{self, HashOn, UpstreamProtocol};

/// Live state of one target.
pub struct TargetState {
    /// `host:port` as configured.
    pub address: String,
    /// The address as a URI authority.
    pub authority: Authority,
    /// Relative weight.
    pub weight: u32,
    /// Requests in flight (for least-request balancing).
    pub in_flight: AtomicUsize,
    /// Verdict of active health checking (true until a check says otherwise).
    pub healthy: AtomicBool,
    /// Consecutive failed requests (passive health).
    pub failures: AtomicU32,
    /// Milliseconds since the group's start until which the target is ejected.
    pub ejected_until: AtomicU64,
    /// Consecutive passed and failed health probes, `passed << 32 | failed` (one of the two
    /// is always 0); kept here, not in the checker, so that a reload carries them over.
    pub probe_streaks: AtomicU64,
}

impl TargetState {
    /// A healthy target with no load.
    pub fn new(address: String, weight: u32) -> Self {
        let authority = address
            .parse()
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        Self {
            address,
            authority,
            weight,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            probe_streaks: AtomicU64::new(0),
        }
    }
}

/// A named group of targets and everything needed to send requests to them.
pub struct UpstreamGroup {
    /// The group's name.
    pub name: String,
    /// Its targets.
    pub targets: Vec<TargetState>,
    balancer: Balancer,
    /// What `hash` balancing hashes.
    pub hash_on: Option<HashOn>,
    /// The pooled client.
    pub client: Client<Connector, BoxBody>,
    /// Whether requests go out as HTTP/2.
    pub http2: bool,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Default time until the response head.
    pub request_timeout: Duration,
    /// Concurrency limits.
    pub breaker: Breaker,
    /// Retry settings.
    pub retry_attempts: u32,
    /// Retry budget.
    pub retry_budget: RetryBudget,
    passive: config::PassiveHealth,
    health: Option<config::HealthCheck>,
    epoch: Instant,
    /// Set when a newer snapshot replaced this group: its health checker stops (the group
    /// may live on while a long response or tunnel holds it).
    retired: AtomicBool,
}

impl UpstreamGroup {
    /// Builds a group from its configuration; errors are `(field, message)` pairs.
    pub fn build(name: &str, cfg: &config::Upstream) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if cfg.targets.is_empty() {
            errors.push(("targets".into(), "at least one target is required".into()));
        }
        for (i, t) in cfg.targets.iter().enumerate() {
            match t.address.parse::<Authority>() {
                Ok(a) if a.port_u16().is_some() => {}
                _ => errors.push((
                    format!("targets[{i}].address"),
                    format!("{:?} is not host:port", t.address),
                )),
            }
            if !(1..=1000).contains(&t.weight) {
                errors.push((
                    format!("targets[{i}].weight"),
                    "weight must be 1..=1000".into(),
                ));
            }
        }
        if cfg.balance == config::Balance::Hash && cfg.hash_on.is_none() {
            errors.push(("hash_on".into(), "balance = \"hash\" needs hash_on".into()));
        }
        let max = crate::snapshot::bounds::MAX_CONNECTIONS as usize;
        let cb = &cfg.circuit_breaker;
        for (key, value, min) in [
            ("max_concurrent", cb.max_concurrent, 1),
            ("max_pending", cb.max_pending, 0),
        ] {
            if !(min..=max).contains(&value) {
                errors.push((
                    format!("circuit_breaker.{key}"),
                    format!("must be {min} to {max}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&cfg.retry.budget_ratio) {
            errors.push((
                "retry.budget_ratio".into(),
                "must be within 0.0..=1.0".into(),
            ));
        }
        if let Some(hc) = &cfg.health_check {
            if !hc.path.starts_with('/') {
                errors.push(("health_check.path".into(), "must start with '/'".into()));
            }
            if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                errors.push((
                    "health_check".into(),
                    "thresholds must be at least 1".into(),
                ));
            }
        }
        let h2 = cfg.protocol == UpstreamProtocol::H2;
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let sni = match &t.sni {
                    None => None,
                    Some(s) => match rustls::pki_types::ServerName::try_from(s.clone()) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            errors.push(("tls.sni".into(), format!("invalid SNI name {s:?}")));
                            None
                        }
                    },
                };
                match crate::tls::client_config(t, h2) {
                    Ok(c) => Some((c, sni)),
                    Err(es) => {
                        errors.extend(es.into_iter().map(|(f, m)| (format!("tls.{f}"), m)));
                        None
                    }
                }
            }
        };
        let connector = Connector::new(cfg.connect_timeout.get(), tls);
        if !errors.is_empty() {
            return Err(errors);
        }
        let targets: Vec<TargetState> = cfg
            .targets
            .iter()
            .map(|t| TargetState::new(t.address.clone(), t.weight))
            .collect();
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(cfg.idle_timeout.get())
            .pool_max_idle_per_host(cfg.max_idle_per_target)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(h2);
        if h2 {
            // One HTTP/2 connection carries every request to a target: pinged, a dead one is
            // found and replaced instead of timing out every request until the kernel
            // gives up on it (minutes).
            builder
                .http2_keep_alive_interval(cfg.h2_ping_interval.get())
                .http2_keep_alive_timeout(cfg.h2_ping_timeout.get())
                .http2_keep_alive_while_idle(true);
        }
        let client = builder.build(connector);
        Ok(Self {
            name: name.to_string(),
            balancer: Balancer::new(cfg.balance, &targets),
            targets,
            hash_on: cfg.hash_on.clone(),
            client,
            http2: h2,
            scheme: if cfg.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            request_timeout: cfg.request_timeout.get(),
            breaker: Breaker::new(
                cfg.circuit_breaker.max_concurrent,
                cfg.circuit_breaker.max_pending,
            ),
            retry_attempts: cfg.retry.attempts,
            retry_budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.min_per_second),
            passive: cfg.passive.clone(),
            health: cfg.health_check.clone(),
            epoch: Instant::now(),
            retired: AtomicBool::new(false),
        })
    }

    /// Takes over what `old` (this upstream in the snapshot being replaced) learned about
    /// the targets both have — passive ejections and failure counts, and active health and
    /// probe streaks when both check it — so that a reload neither re-admits a dead target nor forgets an
    /// ejection; and retires `old`'s health checker.
    pub fn inherit(&self, old: &UpstreamGroup) {
        let (now, old_now) = (self.now_ms(), old.now_ms());
        for t in &self.targets {
            let Some(o) = old.targets.iter().find(|o| o.address == t.address) else {
                continue;
            };
            t.failures
                .store(o.failures.load(Ordering::Relaxed), Ordering::Relaxed);
            let left = o
                .ejected_until
                .load(Ordering::Relaxed)
                .saturating_sub(old_now);
            if left > 0 {
                t.ejected_until.store(now + left, Ordering::Relaxed);
            }
            if self.health.is_some() && old.health.is_some() {
                t.healthy
                    .store(o.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
                // Reloads come often (every admin change makes one): a recovering target's
                // passed probes must add up across them.
                t.probe_streaks
                    .store(o.probe_streaks.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        old.retire();
    }

    /// Marks the group replaced: its health checker stops.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether a newer snapshot replaced this group.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether target `i` may receive traffic now.
    pub fn eligible(&self, i: usize) -> bool {
        let t = &self.targets[i];
        t.healthy.load(Ordering::Relaxed)
            && self.now_ms() >= t.ejected_until.load(Ordering::Relaxed)
    }

    /// Picks a target, avoiding `exclude` (a target already tried) when another is eligible.
    pub fn pick(&self, key: Option<&[u8]>, exclude: Option<usize>) -> Option<usize> {
        let now = self.now_ms();
        let ok = |i: usize| {
            let t = &self.targets[i];
            Some(i) != exclude
                && t.healthy.load(Ordering::Relaxed)
                && now >= t.ejected_until.load(Ordering::Relaxed)
        };
        self.balancer
            .pick(&self.targets, key, ok)
            .or_else(|| exclude.filter(|i| self.eligible(*i)))
            // Passive ejection never empties an upstream: when every target that passes its
            // health checks is ejected, they all take traffic again (Envoy's panic routing,
            // for ejections). Otherwise a client able to make requests fail (slow URLs,
            // answers of 502-504) could take the whole upstream out for `ejection_time`.
            .or_else(|| {
                self.balancer.pick(&self.targets, key, |i| {
                    self.targets[i].healthy.load(Ordering::Relaxed)
                })
            })
    }

    /// Records the outcome of a request to target `i` for passive health.
    pub fn report(&self, i: usize, success: bool) {
        let t = &self.targets[i];
        if success {
            t.failures.store(0, Ordering::Relaxed);
            return;
        }
        let limit = self.passive.consecutive_failures;
        if limit == 0 {
            return;
        }
        let n = t.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= limit {
            t.failures.store(0, Ordering::Relaxed);
            let until = self.now_ms() + self.passive.ejection_time.get().as_millis() as u64;
            t.ejected_until.store(until, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, target = %t.address, failures = n,
                "target ejected after consecutive failures");
        }
    }

    /// Starts active health checking, if configured. The task stops when the group is dropped.
    /// `inherited`: the group took over an older one's targets ([`Self::inherit`]), so its
    /// first probe waits an interval.
    pub fn start_health_checks(self: &Arc<Self>, inherited: bool) {
        if let Some(hc) = self.health.clone() {
            health::spawn(Arc::downgrade(self), hc, inherited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(toml: &str) -> UpstreamGroup {
        let cfg: config::Upstream = toml::from_str(toml).unwrap();
        UpstreamGroup::build("u", &cfg).unwrap()
    }

    /// Reloads are frequent (each admin change is one): a recovering target's passed probes
    /// and its ejection carry over to the new group, so they add up across reloads.
    #[test]
    fn a_reload_keeps_health_streaks_ejections_and_verdicts() {
        let toml = "targets = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\" }]\n\
                    health_check = { path = \"/h\" }\n";
        let old = group(toml);
        old.targets[0].healthy.store(false, Ordering::Relaxed);
        old.targets[0]
            .probe_streaks
            .store(2 << 32, Ordering::Relaxed);
        old.targets[1].failures.store(3, Ordering::Relaxed);
        let new = group(toml);
        new.inherit(&old);
        assert!(old.is_retired());
        assert!(!new.targets[0].healthy.load(Ordering::Relaxed));
        assert_eq!(
            new.targets[0].probe_streaks.load(Ordering::Relaxed),
            2 << 32
        );
        assert_eq!(new.targets[1].failures.load(Ordering::Relaxed), 3);
        // Without health checks on both sides, active verdicts do not carry over.
        let unchecked = group("targets = [{ address = \"127.0.0.1:1\" }]\n");
        unchecked.inherit(&new);
        assert!(unchecked.targets[0].healthy.load(Ordering::Relaxed));
    }
}
