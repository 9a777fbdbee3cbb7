//! Per-policy dispatch cost: a no-op policy (`plugins/fixtures/noop`) called with a
//! realistic request (10 headers), pooled and isolated; and the demo pipeline of
//! `bench/proxy.sh` (analytics, key-auth, rate-limit; request phases in order, response
//! phases in reverse), pooled, per request. Build the plugins first (`just plugins`).
//! Run: `cargo bench -p sluice --bench policy`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator the `sluice` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::PolicySettings;
use sluice::policy::{
    CallData, CallLimits, Capabilities, Capability, Grants, InstanceMode, Outbound, PolicyEnv,
    PolicyInstance, RequestDecision, RequestView,
};

fn plugin_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"))
}

/// The demo key of the pipeline bench and its SHA-256 (as `bench/proxy.sh` configures it).
const KEY: &str = "sluice-demo-key";
const KEY_SHA256: &str = "579084b337941a6a4a172d804df80263a01442341327e1c8aded14669aee6724";

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
        ("x-api-key", KEY),
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

/// One policy of `plugin` (file `file.wasm`) with `grants` and the JSON `config`.
fn instance(
    rt: &tokio::runtime::Runtime,
    env: &PolicyEnv,
    file: &str,
    grants: &[Capability],
    config: &str,
    mode: InstanceMode,
) -> PolicyInstance {
    let bytes = std::fs::read(plugin_path(file)).expect("build the plugins first: just plugins");
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
        file.into(),
        &component,
        Grants::of(grants),
        config.into(),
        caps,
        mode,
        limits,
    ))
    .unwrap()
}

fn env() -> Arc<PolicyEnv> {
    let store = sluice::state::Store::in_memory(None, None, Default::default()).unwrap();
    PolicyEnv::new(&PolicySettings::default(), Arc::new(store), None).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = env();
    for (name, mode) in [
        ("noop_pooled", InstanceMode::Pooled),
        ("noop_isolated", InstanceMode::Isolated),
    ] {
        let inst = instance(&rt, &env, "noop", &[], "{}", mode);
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

/// The demo pipeline, per request: three request phases, then three response phases in
/// reverse order, with the attributes of each request starting empty.
fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = env();
    let pooled = InstanceMode::Pooled;
    let consumers = format!(r#"[{{"name":"bench","key_sha256":"{KEY_SHA256}"}}]"#);
    let steps = [
        instance(
            &rt,
            &env,
            "analytics",
            &[Capability::Analytics, Capability::Clock],
            "{}",
            pooled,
        ),
        instance(
            &rt,
            &env,
            "key_auth",
            &[Capability::Kv, Capability::Log],
            &format!(r#"{{"header":"x-api-key","consumers":{consumers}}}"#),
            pooled,
        ),
        instance(
            &rt,
            &env,
            "rate_limit",
            &[Capability::RateLimit],
            r#"{"requests":10000000,"window":"1s","key":"consumer"}"#,
            pooled,
        ),
    ];
    let template = request();
    c.bench_function("demo_pipeline_pooled", |b| {
        b.iter_custom(|iters| {
            // The gateway moves each request's head into the pipeline; cloning it is not
            // part of what is measured.
            let requests: Vec<CallData> = (0..iters)
                .map(|_| CallData {
                    req: template.req.clone(),
                    ..Default::default()
                })
                .collect();
            rt.block_on(async {
                let start = Instant::now();
                for mut data in requests {
                    for s in &steps {
                        let d = s.on_request(&mut data).await.unwrap();
                        assert!(
                            !matches!(d, RequestDecision::Respond(_)),
                            "{} answered",
                            s.label
                        );
                    }
                    data.resp.status = 200;
                    for s in steps.iter().rev() {
                        s.on_response(&mut data).await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
}

criterion_group!(benches, bench, pipeline);
criterion_main!(benches);
