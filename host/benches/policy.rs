//! Per-policy dispatch cost: a no-op policy (`plugins/fixtures/noop`) called with a
//! realistic request (10 headers), pooled and isolated; and the demo pipeline of
//! `bench/proxy.sh` (analytics, key-auth, rate-limit; request phases in order, response
//! phases in reverse), pooled, per request. Build the plugins first (`just plugins`).
//! Run: `cargo bench -p sluice --bench policy`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator the `sluice` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use http::{HeaderMap, HeaderValue, Method};
use sluice::config::KeyPath;
use sluice::policy::{CallData, PolicyEnv, PolicyInstance, RequestDecision, RequestView};
use sluice::snapshot::pipeline::{compile_pipeline, compile_plugins};

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

/// The bench configuration: the demo pipeline's plugins with the grants `gateway.toml`
/// gives them (and the no-op, granted nothing), and one route per case. Pooled instances
/// are never recycled during a measurement.
fn config() -> sluice::config::Config {
    let plugin = |name: &str, file: &str, grants: &str| {
        format!(
            "[plugins.{name}]\npath = {:?}\ngrants = {grants}\nrecycle_after = 4294967295\n\n",
            plugin_path(file).display().to_string()
        )
    };
    let route = |name: &str, policies: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/\"\nrespond = \"echo\"\n{policies}\n"
        )
    };
    let src = [
        plugin("noop", "noop", "[]"),
        plugin("analytics", "analytics", r#"["analytics", "clock"]"#),
        plugin("key-auth", "key_auth", r#"["kv", "log"]"#),
        plugin("rate-limit", "rate_limit", r#"["rate-limit"]"#),
        route("noop_pooled", "[[routes.policies]]\nplugin = \"noop\"\n"),
        route(
            "noop_isolated",
            "[[routes.policies]]\nplugin = \"noop\"\nmode = \"isolated\"\n",
        ),
        route(
            "demo_pipeline_pooled",
            &format!(
                "[[routes.policies]]\nplugin = \"analytics\"\n\
                 [[routes.policies]]\nplugin = \"key-auth\"\n\
                 config = {{ header = \"x-api-key\", consumers = [{{ name = \"bench\", key_sha256 = \"{KEY_SHA256}\" }}] }}\n\
                 [[routes.policies]]\nplugin = \"rate-limit\"\n\
                 config = {{ requests = 10000000, window = \"1s\", key = \"consumer\" }}\n"
            ),
        ),
    ]
    .concat();
    sluice::config::load_str(&src, "bench.toml".into(), ".".into())
        .expect("bench configuration")
        .config
}

/// The policies of each route of [`config`], built by the gateway's pipeline compiler on
/// an in-memory embedded store, by route name.
fn pipelines(rt: &tokio::runtime::Runtime) -> HashMap<String, Vec<Arc<PolicyInstance>>> {
    let config = config();
    let store = sluice::state::Store::in_memory(None, None, Default::default()).unwrap();
    let env = PolicyEnv::new(&config.policy, Arc::new(store), None).unwrap();
    let mut issues = Vec::new();
    let plugins = compile_plugins(&config, &env, &mut issues);
    let mut out = HashMap::new();
    for r in &config.routes {
        let steps = rt.block_on(compile_pipeline(
            &config,
            r,
            &KeyPath::default(),
            &plugins,
            &env,
            &mut issues,
        ));
        out.insert(
            r.name.clone(),
            steps.into_iter().map(|s| s.policy).collect(),
        );
    }
    assert!(
        issues.is_empty(),
        "build the plugins first (just plugins): {issues:?}"
    );
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pipelines = pipelines(&rt);
    for name in ["noop_pooled", "noop_isolated"] {
        let inst = pipelines.remove(name).unwrap().remove(0);
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
    let steps = pipelines.remove("demo_pipeline_pooled").unwrap();
    pipeline(c, &rt, &steps);
}

/// The demo pipeline, per request: three request phases, then three response phases in
/// reverse order, with the attributes of each request starting empty.
fn pipeline(c: &mut Criterion, rt: &tokio::runtime::Runtime, steps: &[Arc<PolicyInstance>]) {
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
                    for s in steps {
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

criterion_group!(benches, bench);
criterion_main!(benches);
