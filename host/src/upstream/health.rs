//! Active health checking: an HTTP GET to each target every interval; a target turns
//! unhealthy after `unhealthy_threshold` consecutive failed probes and healthy again after
//! `healthy_threshold` consecutive successful ones. Success is any 2xx or 3xx status.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Uri};

use super::UpstreamGroup;
use crate::body;
use crate::config::HealthCheck;

/// Spawns the probing loop; it exits when the group is gone or retired. A checker that
/// took over its targets' probe streaks (`inherited`, on a reload) first probes one interval
/// from now: probing at once would count each reload of a burst as a probe, and a target
/// would pass or fail its thresholds long before they had been met in time.
pub(super) fn spawn(group: Weak<UpstreamGroup>, hc: HealthCheck, inherited: bool) {
    tokio::spawn(async move {
        let every = hc.interval.get();
        let first = tokio::time::Instant::now() + if inherited { every } else { Duration::ZERO };
        let mut tick = tokio::time::interval_at(first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(g) = group.upgrade().filter(|g| !g.is_retired()) else {
                return;
            };
            let probes = g.targets.iter().map(|t| probe(&g, &t.authority, &hc));
            let results = futures_util::future::join_all(probes).await;
            for (t, ok) in g.targets.iter().zip(results) {
                let (good, bad) = record(&t.probe_streaks, ok);
                if ok {
                    if good >= hc.healthy_threshold && !t.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(upstream = %g.name, target = %t.address, "target healthy again");
                    }
                } else if bad >= hc.unhealthy_threshold && t.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(upstream = %g.name, target = %t.address, "target failed health checks");
                }
            }
        }
    });
}

/// Counts one probe in `streaks` (`passed << 32 | failed`); returns the streaks now.
fn record(streaks: &std::sync::atomic::AtomicU64, ok: bool) -> (u32, u32) {
    let v = streaks.load(Ordering::Relaxed);
    let (good, bad) = ((v >> 32) as u32, v as u32);
    let now = if ok {
        (good.saturating_add(1), 0)
    } else {
        (0, bad.saturating_add(1))
    };
    streaks.store(u64::from(now.0) << 32 | u64::from(now.1), Ordering::Relaxed);
    now
}

async fn probe(g: &UpstreamGroup, authority: &http::uri::Authority, hc: &HealthCheck) -> bool {
    let Ok(uri) = Uri::builder()
        .scheme(g.scheme.clone())
        .authority(authority.clone())
        .path_and_query(hc.path.as_str())
        .build()
    else {
        return false;
    };
    let Ok(req) = Request::get(uri)
        .header(http::header::USER_AGENT, "sluice-health-check")
        .body(body::empty())
    else {
        return false;
    };
    match tokio::time::timeout(hc.timeout.get(), g.client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success() || s.is_redirection()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn a_probe_extends_its_own_streak_and_ends_the_other() {
        let s = AtomicU64::new(0);
        assert_eq!(record(&s, true), (1, 0));
        assert_eq!(record(&s, true), (2, 0));
        assert_eq!(record(&s, false), (0, 1));
        assert_eq!(record(&s, false), (0, 2));
        assert_eq!(record(&s, true), (1, 0));
    }
}
