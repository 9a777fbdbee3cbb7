//! Micro-costs of the fast path: route matching and a local rate-limit check.
//! Run: `cargo bench -p sluice --bench fastpath`.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use sluice::routing::{Conditions, PathMatch, RouteMatch, Router, anchored};
use sluice::state::{Limit, LocalLimiter};

fn router() -> Router<usize> {
    let mut r = Router::default();
    let mut n = 0;
    let mut add = |hosts: &[&str], path: PathMatch| {
        let m = RouteMatch {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path,
            conditions: Conditions::default(),
        };
        r.add(n, &m, n);
        n += 1;
    };
    for i in 0..20 {
        add(&[], PathMatch::Exact(format!("/service{i}/health")));
        add(&[], PathMatch::Prefix(format!("/service{i}/")));
        add(
            &[],
            PathMatch::from_path(&format!("/users{i}/{{id}}/posts")).unwrap(),
        );
    }
    add(&["api.example.com"], PathMatch::Prefix("/".into()));
    add(&[], PathMatch::Regex(anchored("/v[0-9]+/.*").unwrap()));
    r.finish();
    r
}

fn bench(c: &mut Criterion) {
    let r = router();
    let headers = HeaderMap::new();
    c.bench_function("route_match_62_routes", |b| {
        b.iter(|| {
            r.find(
                "www.example.com",
                &Method::GET,
                "/users7/42/posts",
                None,
                &headers,
            )
        })
    });
    let l = LocalLimiter::new();
    let lim = Limit {
        requests: u32::MAX,
        window_ms: 1000,
        burst: 0,
    };
    let keys: Vec<String> = (0..1024).map(|i| format!("consumer-{i}")).collect();
    let mut i = 0;
    c.bench_function("ratelimit_local_check", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            l.check(&keys[i], lim, 1)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
