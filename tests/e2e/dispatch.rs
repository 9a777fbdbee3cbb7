//! How the gateway calls a policy: on the caller's stack when nothing the component
//! imports can wait on I/O (the embedded kv store's `get`, the in-memory rate limiters),
//! on a fiber otherwise (kv writes, anything on Redis, outbound HTTP, WASI). Driven through
//! the library with the real first-party components, the embedded store and a real Redis;
//! the policies are built by the gateway's own pipeline compiler from a configuration.

use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use sluice::config::{self, Config, KeyPath};
use sluice::policy::{CallData, PolicyEnv, PolicyInstance, RequestDecision, ResponseDecision};
use sluice::snapshot::pipeline::{compile_pipeline, compile_plugins};
use sluice::state::Store;
use sluice_tests::{RedisServer, plugin_path};

/// The plugins the tests use, with the grants `gateway.toml` gives them.
fn plugins() -> String {
    [
        ("key-auth", "key_auth", r#"["kv", "log"]"#),
        ("rate-limit", "rate_limit", r#"["rate-limit"]"#),
        ("analytics", "analytics", r#"["analytics", "clock"]"#),
        ("kv-probe", "kv_probe", r#"["kv"]"#),
    ]
    .map(|(name, file, grants)| {
        format!(
            "[plugins.{name}]\npath = {:?}\ngrants = {grants}\n\n",
            plugin_path(file).display().to_string()
        )
    })
    .concat()
}

/// The policies of route `policies` (a `[[routes.policies]]` list) as the gateway builds
/// them, in an environment on an in-memory embedded store (and the Redis of `extra`, a
/// `[redis]` section, when given); also the configuration, for the kv handles.
async fn build(extra: &str, policies: &str) -> (Arc<PolicyEnv>, Config, Vec<Arc<PolicyInstance>>) {
    let src = format!(
        "{extra}\n{}[[routes]]\nname = \"dispatch\"\npath_prefix = \"/\"\nrespond = \"echo\"\n{policies}",
        plugins()
    );
    let config = config::load_str(&src, "dispatch.toml".into(), PathBuf::from("."))
        .unwrap()
        .config;
    let store = Store::in_memory(config.redis.as_ref(), None, Default::default()).unwrap();
    let env = PolicyEnv::new(&config.policy, Arc::new(store), None).unwrap();
    let mut issues = Vec::new();
    let compiled = compile_plugins(&config, &env, &mut issues);
    let steps = compile_pipeline(
        &config,
        &config.routes[0],
        &KeyPath::default(),
        &compiled,
        &env,
        &mut issues,
    )
    .await;
    assert!(issues.is_empty(), "{issues:?}");
    let steps = steps.into_iter().map(|s| s.policy).collect();
    (env, config, steps)
}

/// One `[[routes.policies]]` entry of `plugin` with the TOML inline table `config` and
/// `extra` keys.
fn step(plugin: &str, config: &str, extra: &str) -> String {
    format!("[[routes.policies]]\nplugin = \"{plugin}\"\nconfig = {config}\n{extra}\n")
}

const KEY_AUTH_FROM_KV: &str = r#"{ header = "x-api-key", kv_lookup = true }"#;
const ROUTE_LIMIT: &str = r#"{ requests = 2, window = "1h", key = "route" }"#;

/// `printf %s kv-key | sha256sum`.
const KV_KEY_SHA256: &str = "5cddf287764dc86719ceb313e7df6ff9260e5010592cb2257bd243a554522211";

/// Stores the consumer `name` for the key `kv-key` in the kv namespace of the route's
/// first policy (key-auth).
async fn store_kv_key(env: &PolicyEnv, config: &Config, name: &str) {
    let kv = env.kv("key-auth", &config.routes[0].policies[0]).unwrap();
    kv.set(
        &format!("key:{KV_KEY_SHA256}"),
        name.as_bytes().to_vec(),
        None,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_whose_imports_never_wait_on_io_are_called_without_a_fiber() {
    let policies = [
        step("key-auth", KEY_AUTH_FROM_KV, ""),
        step("rate-limit", ROUTE_LIMIT, ""),
        step("analytics", "{}", ""),
        step("kv-probe", "{}", ""),
    ]
    .concat();
    let (env, config, steps) = build("", &policies).await;
    let [ka, rl, an, probe] = &steps[..] else {
        panic!("{} policies built", steps.len());
    };
    assert!(!ka.uses_fiber(), "key-auth imports only kv.get");
    assert!(!rl.uses_fiber(), "rate-limit on the local limiter");
    assert!(!an.uses_fiber(), "analytics imports nothing that waits");
    // kv-probe writes: kv.set waits on the store's writer thread.
    assert!(probe.uses_fiber());
    // key-auth targets the `request-policy` world: it is skipped on the way back.
    assert!(!ka.has_response_phase());
    assert!(rl.has_response_phase() && an.has_response_phase());

    // The synchronous kv.get reads what an asynchronous write stored.
    store_kv_key(&env, &config, "carol").await;
    let mut data = request("kv-key");
    let d = ka.on_request(&mut data).await.unwrap();
    assert!(
        !matches!(d, RequestDecision::Respond(_)),
        "refused a stored key"
    );
    assert_eq!(
        data.attrs.get("consumer").map(String::as_str),
        Some("carol")
    );
    assert!(matches!(
        ka.on_response(&mut data).await.unwrap(),
        ResponseDecision::Continue
    ));
    let mut data = request("not-stored");
    match ka.on_request(&mut data).await.unwrap() {
        RequestDecision::Respond(r) => assert_eq!(r.status, 401),
        _ => panic!("accepted a key that is not stored"),
    }

    // The synchronous rate-limit check counts: two allowed, the third refused.
    for expected in [None, None, Some(429)] {
        let mut data = request("kv-key");
        let status = match rl.on_request(&mut data).await.unwrap() {
            RequestDecision::Respond(r) => Some(r.status),
            _ => None,
        };
        assert_eq!(status, expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_reading_redis_are_called_on_a_fiber() {
    let redis = RedisServer::start();
    let policies = [
        step("key-auth", KEY_AUTH_FROM_KV, "kv_backend = \"redis\""),
        step("rate-limit", ROUTE_LIMIT, "rate_limit_backend = \"redis\""),
        step("rate-limit", ROUTE_LIMIT, "rate_limit_backend = \"hybrid\""),
    ]
    .concat();
    let redis_section = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let (env, config, steps) = build(&redis_section, &policies).await;
    let [ka, rl, hybrid] = &steps[..] else {
        panic!("{} policies built", steps.len());
    };
    assert!(ka.uses_fiber(), "kv.get on Redis is a round trip");
    assert!(rl.uses_fiber(), "each check on Redis is a round trip");
    assert!(!hybrid.uses_fiber(), "the hybrid limiter counts in memory");
    // And they work there: a key stored in Redis is found.
    store_kv_key(&env, &config, "dave").await;
    let mut data = request("kv-key");
    ka.on_request(&mut data).await.unwrap();
    assert_eq!(data.attrs.get("consumer").map(String::as_str), Some("dave"));
}

/// A request carrying `key` in `x-api-key`.
fn request(key: &str) -> CallData {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
    let mut data = CallData::default();
    data.req.headers = headers;
    data.req.route = Arc::from("dispatch");
    data
}
