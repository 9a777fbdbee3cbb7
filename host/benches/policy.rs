//! Per-policy dispatch cost: a no-op policy (`plugins/fixtures/noop`) called with a
//! realistic request (10 headers), pooled and isolated. Build the plugins first
//! (`just plugins`). Run: `cargo bench -p sluice --bench policy`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator the `sluice` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::PolicySettings;
use sluice::policy::{
    CallData, CallLimits, Capabilities, Grants, InstanceMode, Outbound, PolicyEnv, PolicyInstance,
    RequestView,
};

fn noop_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-unknown-unknown/release/noop.wasm")
}

fn request() -> CallData {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        ),
        ("x-request-id", "7b8f3c2a-4d1e-4f6a-9b2c-1e3d5f7a9b0c"),
        ("x-forwarded-for", "203.0.113.7"),
        ("cookie", "session=abc123; theme=dark; lang=en"),
        ("content-type", "application/json"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    CallData {
        req: RequestView {
            method: Method::GET,
            path: "/v1/orders/42".into(),
            query: Some("expand=items".into()),
            headers,
            route: Arc::from("orders"),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn instance(rt: &tokio::runtime::Runtime, mode: InstanceMode) -> PolicyInstance {
    let bytes = std::fs::read(noop_path()).expect("build the plugins first: just plugins");
    let store = sluice::state::Store::in_memory(None, None, Default::default()).unwrap();
    let env = PolicyEnv::new(&PolicySettings::default(), std::sync::Arc::new(store), None).unwrap();
    let runtime = env.runtime().unwrap();
    let (component, _) = runtime.compile(&bytes).unwrap();
    let policy: sluice::config::PolicyRef = toml::from_str("plugin = \"bench\"").unwrap();
    let caps = Arc::new(Capabilities {
        plugin: "bench".into(),
        epoch: Instant::now(),
        kv: env.kv("bench", &policy).unwrap(),
        limiter: env.limiter("bench", &policy).unwrap(),
        analytics: env.analytics.clone(),
        outbound: Outbound::new(Vec::new(), None),
    });
    let limits = CallLimits {
        max_memory: 16 << 20,
        cpu: Duration::from_millis(20),
        wall: Duration::from_secs(2),
        recycle_after: u32::MAX,
    };
    rt.block_on(PolicyInstance::new(
        &runtime,
        "bench".into(),
        "noop".into(),
        &component,
        Grants::default(),
        "{}".into(),
        caps,
        mode,
        limits,
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, mode) in [
        ("noop_pooled", InstanceMode::Pooled),
        ("noop_isolated", InstanceMode::Isolated),
    ] {
        let inst = instance(&rt, mode);
        let mut data = request();
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        inst.on_request(&mut data).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
