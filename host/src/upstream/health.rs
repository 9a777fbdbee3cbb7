//! Active health checking: an HTTP GET to each target every interval; a target turns
//! unhealthy after `unhealthy_threshold` consecutive failed probes and healthy again after
//! `healthy_threshold` consecutive successful ones. Success is any 2xx or 3xx status.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use http::{Request, Uri};

use super::UpstreamGroup;
use crate::body;
use crate::config::HealthCheck;

/// Spawns the probing loop; it exits when the group is gone or retired.
pub(super) fn spawn(group: Weak<UpstreamGroup>, hc: HealthCheck) {
    tokio::spawn(async move {
        let mut streaks: Vec<(u32, u32)> = Vec::new();
        let mut tick = tokio::time::interval(hc.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(g) = group.upgrade().filter(|g| !g.is_retired()) else {
                return;
            };
            streaks.resize(g.targets.len(), (0, 0));
            let probes = g.targets.iter().map(|t| probe(&g, &t.authority, &hc));
            let results = futures_util::future::join_all(probes).await;
            for (i, ok) in results.into_iter().enumerate() {
                let t = &g.targets[i];
                let (good, bad) = &mut streaks[i];
                if ok {
                    *good += 1;
                    *bad = 0;
                    if *good >= hc.healthy_threshold && !t.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(upstream = %g.name, target = %t.address, "target healthy again");
                    }
                } else {
                    *bad += 1;
                    *good = 0;
                    if *bad >= hc.unhealthy_threshold && t.healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!(upstream = %g.name, target = %t.address, "target failed health checks");
                    }
                }
            }
        }
    });
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
