//! How the gateway calls a policy: on the caller's stack when nothing the component
//! imports can wait on I/O (the embedded kv store's `get`, the in-memory rate limiters),
//! on a fiber otherwise (kv writes, anything on Redis, outbound HTTP, WASI). Driven through
//! the library with the real first-party components, the embedded store and a real Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use sluice::config::{PolicyRef, PolicySettings, RedisSettings};
use sluice::policy::{
    CallData, CallLimits, Capabilities, Capability, Grants, InstanceMode, Outbound, PolicyEnv,
    PolicyInstance, RequestDecision, ResponseDecision,
};
use sluice::state::Store;
use sluice_tests::{RedisServer, plugin_path};

/// A policy environment on an in-memory embedded store, with Redis at `redis` when given.
fn env(redis: Option<&str>) -> Arc<PolicyEnv> {
    let redis: Option<RedisSettings> =
        redis.map(|url| toml::from_str(&format!("url = \"{url}\"")).unwrap());
    let store = Store::in_memory(redis.as_ref(), None, Default::default()).unwrap();
    PolicyEnv::new(&PolicySettings::default(), Arc::new(store), None).unwrap()
}

/// One pooled policy of component `file` as `[[routes.policies]]` TOML `policy` declares it
/// (its `plugin` is also the kv namespace), granted `grants`, configured by JSON `config`.
async fn policy(
    env: &PolicyEnv,
    file: &str,
    policy: &str,
    grants: &[Capability],
    config: &str,
) -> PolicyInstance {
    let policy: PolicyRef = toml::from_str(policy).unwrap();
    let runtime = env.runtime().unwrap();
    let (component, _) = runtime
        .compile(&std::fs::read(plugin_path(file)).unwrap())
        .unwrap();
    let caps = Arc::new(Capabilities {
        plugin: policy.plugin.clone(),
        epoch: Instant::now(),
        kv: env.kv(&policy.plugin, &policy).expect("kv backend"),
        limiter: env.limiter(file, &policy).expect("rate-limit backend"),
        analytics: env.analytics.clone(),
        outbound: Outbound::new(Vec::new(), None),
    });
    let limits = CallLimits {
        max_memory: 16 << 20,
        cpu: Duration::from_millis(500),
        wall: Duration::from_secs(5),
        recycle_after: 1000,
    };
    PolicyInstance::new(
        &runtime,
        file.into(),
        policy.plugin.clone(),
        &component,
        Grants::of(grants),
        config.into(),
        caps,
        InstanceMode::Pooled,
        limits,
    )
    .await
    .unwrap()
}

const KEY_AUTH_FROM_KV: &str = r#"{"header":"x-api-key","kv_lookup":true}"#;
const ROUTE_LIMIT: &str = r#"{"requests":2,"window":"1h","key":"route"}"#;

/// `printf %s kv-key | sha256sum`.
const KV_KEY_SHA256: &str = "5cddf287764dc86719ceb313e7df6ff9260e5010592cb2257bd243a554522211";

#[tokio::test(flavor = "multi_thread")]
async fn policies_whose_imports_never_wait_on_io_are_called_without_a_fiber() {
    let env = env(None);
    let ka = policy(
        &env,
        "key_auth",
        "plugin = \"key-auth\"",
        &[Capability::Kv, Capability::Log],
        KEY_AUTH_FROM_KV,
    )
    .await;
    let rl = policy(
        &env,
        "rate_limit",
        "plugin = \"rate-limit\"",
        &[Capability::RateLimit],
        ROUTE_LIMIT,
    )
    .await;
    let an = policy(
        &env,
        "analytics",
        "plugin = \"analytics\"",
        &[Capability::Analytics, Capability::Clock],
        "{}",
    )
    .await;
    assert!(!ka.uses_fiber(), "key-auth imports only kv.get");
    assert!(!rl.uses_fiber(), "rate-limit on the local limiter");
    assert!(!an.uses_fiber(), "analytics imports nothing that waits");
    // key-auth targets the `request-policy` world: it is skipped on the way back.
    assert!(!ka.has_response_phase());
    assert!(rl.has_response_phase() && an.has_response_phase());
    // kv-probe writes: kv.set waits on the store's writer thread.
    let probe = policy(
        &env,
        "kv_probe",
        "plugin = \"probe\"",
        &[Capability::Kv],
        "{}",
    )
    .await;
    assert!(probe.uses_fiber());

    // The synchronous kv.get reads what an asynchronous write stored.
    let ns: PolicyRef = toml::from_str("plugin = \"key-auth\"").unwrap();
    let kv = env.kv("key-auth", &ns).unwrap();
    kv.set(&format!("key:{KV_KEY_SHA256}"), b"carol".to_vec(), None)
        .await
        .unwrap();
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
    let env = env(Some(&redis.url()));
    let ka = policy(
        &env,
        "key_auth",
        "plugin = \"key-auth\"\nkv_backend = \"redis\"",
        &[Capability::Kv, Capability::Log],
        KEY_AUTH_FROM_KV,
    )
    .await;
    let rl = policy(
        &env,
        "rate_limit",
        "plugin = \"rate-limit\"\nrate_limit_backend = \"redis\"",
        &[Capability::RateLimit],
        ROUTE_LIMIT,
    )
    .await;
    let hybrid = policy(
        &env,
        "rate_limit",
        "plugin = \"rate-limit\"\nrate_limit_backend = \"hybrid\"",
        &[Capability::RateLimit],
        ROUTE_LIMIT,
    )
    .await;
    assert!(ka.uses_fiber(), "kv.get on Redis is a round trip");
    assert!(rl.uses_fiber(), "each check on Redis is a round trip");
    assert!(!hybrid.uses_fiber(), "the hybrid limiter counts in memory");
    // And they work there: a key stored in Redis is found.
    let ns: PolicyRef = toml::from_str("plugin = \"key-auth\"\nkv_backend = \"redis\"").unwrap();
    let kv = env.kv("key-auth", &ns).unwrap();
    kv.set(&format!("key:{KV_KEY_SHA256}"), b"dave".to_vec(), None)
        .await
        .unwrap();
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
