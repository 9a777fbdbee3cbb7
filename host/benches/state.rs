//! State micro-benchmarks: the `local` rate-limit check (target ≤ 100 ns) and a local kv
//! read. Run with `cargo bench -p sluice --bench state`; results go to bench/RESULTS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::state::{Limit, LocalLimiter};

fn local_rate_limit(c: &mut Criterion) {
    let limiter = LocalLimiter::new();
    let limit = Limit {
        requests: 1_000_000_000,
        window_ms: 1000,
        burst: 0,
    };
    // 1024 distinct keys, as from many consumers; each already known (the steady state).
    let keys: Vec<String> = (0..1024).map(|i| format!("consumer-{i}")).collect();
    for k in &keys {
        limiter.check(k, limit, 1);
    }
    let mut i = 0usize;
    c.bench_function("rate_limit/local_check_existing_key", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(limiter.check(black_box(&keys[i]), limit, 1))
        })
    });
}

fn local_kv_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = sluice::state::Db::open(&dir.path().join("b.redb")).unwrap();
    let kv = sluice::state::LocalKv::new(db, Default::default()).unwrap();
    rt.block_on(kv.set("bench", "key", b"value".to_vec(), None))
        .unwrap();
    c.bench_function("kv/local_get", |b| {
        b.iter(|| black_box(kv.get("bench", black_box("key")).unwrap()))
    });
}

criterion_group!(benches, local_rate_limit, local_kv_get);
criterion_main!(benches);
