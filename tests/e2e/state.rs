//! State through the real gateway: the `kv` capability on the embedded store and on a real
//! Redis (round trips, namespacing, caps, TTL), durability of acknowledged writes across
//! kill -9 (battery row 14), one global limit across two gateways sharing Redis, the hybrid
//! limiter's reconciliation, and Redis paused, killed and restarted under each
//! `on_backend_error` rule (battery row 10).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_tests::{Cluster, Gateway, RedisServer, Resp, Sentinel, client};

use crate::policies::{plugin, policy_settings, request, warm_cache};

/// Longest a request may take while Redis is paused or down: the command timeout these
/// tests configure is 100 ms; the rest is slack for a debug build on a loaded machine.
const DEGRADED_DEADLINE: Duration = Duration::from_secs(3);

/// The configuration: `[policy]` (shared compile cache plus `policy_extra`), then `body`.
fn gateway(policy_extra: &str, body: &str) -> Gateway {
    warm_cache();
    let policy = format!("{}\n{policy_extra}\n", policy_settings().trim_end());
    Gateway::start(&crate::config(&format!("{policy}{body}")))
}

/// `[redis]` for `server` with a `timeout` per command, quick reconnection and `extra`.
fn redis_section(server: &RedisServer, timeout: &str, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\ncommand_timeout = \"{timeout}\"\nreconnect_max_delay = \"100ms\"\n{extra}\n\n",
        server.url()
    )
}

/// A route `/NAME/…` answered by the kv probe `probe` on `backend`.
fn probe_route(name: &str, probe: &str, backend: &str, on_error: &str) -> String {
    format!(
        r#"[[routes]]
name = "{name}"
path_prefix = "/{name}/"
respond = "echo"
[[routes.policies]]
plugin = "{probe}"
kv_backend = "{backend}"
on_backend_error = "{on_error}"

"#
    )
}

/// A route `/NAME/` limited to `requests` per hour in total, on `backend`.
fn limited_route(name: &str, requests: u32, backend: &str, on_error: &str) -> String {
    format!(
        r#"[[routes]]
name = "{name}"
path_prefix = "/{name}/"
respond = "echo"
[[routes.policies]]
plugin = "rate-limit"
config = {{ requests = {requests}, window = "1h", key = "route" }}
rate_limit_backend = "{backend}"
on_backend_error = "{on_error}"

"#
    )
}

fn probes() -> String {
    let grants = "grants = [\"kv\"]";
    format!(
        "{}{}",
        plugin("probe-a", "kv_probe", grants),
        plugin("probe-b", "kv_probe", grants)
    )
}

fn rate_limit_plugin() -> String {
    plugin("rate-limit", "rate_limit", "grants = [\"rate-limit\"]")
}

async fn call(gw: &Gateway, method: &str, path: &str) -> Resp {
    request(method, &gw.url("main", path), &[]).await
}

/// Sends `method path` and returns `(status, body)`.
async fn status_body(gw: &Gateway, method: &str, path: &str) -> (u16, String) {
    let r = call(gw, method, path).await;
    (r.status, r.body)
}

async fn kv_round_trips(gw: &Gateway, b: &str) {
    let a = format!("/{b}-a/kv");
    let other = format!("/{b}-b/kv");
    assert_eq!(
        status_body(gw, "PUT", &format!("{a}/k?value=v1")).await.0,
        204
    );
    assert_eq!(
        status_body(gw, "GET", &format!("{a}/k")).await,
        (200, "v1".into())
    );
    // Another plugin's namespace does not see the key.
    assert_eq!(status_body(gw, "GET", &format!("{other}/k")).await.0, 404);

    assert_eq!(
        status_body(gw, "POST", &format!("{a}/n?incr=5")).await,
        (200, "5".into())
    );
    assert_eq!(
        status_body(gw, "POST", &format!("{a}/n?incr=-2")).await,
        (200, "3".into())
    );
    assert_eq!(
        status_body(gw, "POST", &format!("{a}/k?incr=1")).await.0,
        409
    );
    // Counters saturate instead of overflowing, on every backend.
    let max = i64::MAX.to_string();
    for delta in [max.as_str(), "1"] {
        assert_eq!(
            status_body(gw, "POST", &format!("{a}/n?incr={delta}")).await,
            (200, max.clone())
        );
    }

    let cas = |q: &str| format!("{a}/k?{q}");
    assert_eq!(
        status_body(gw, "POST", &cas("value=w&expect=v1")).await.1,
        "true"
    );
    assert_eq!(
        status_body(gw, "POST", &cas("value=x&expect=v1")).await.1,
        "false"
    );
    assert_eq!(status_body(gw, "GET", &format!("{a}/k")).await.1, "w");
    assert_eq!(
        status_body(gw, "POST", &format!("{a}/fresh?value=1"))
            .await
            .1,
        "true"
    );
    assert_eq!(
        status_body(gw, "POST", &format!("{a}/fresh?value=2"))
            .await
            .1,
        "false",
        "compare-and-set without `expect` requires an absent key"
    );

    assert_eq!(status_body(gw, "DELETE", &format!("{a}/k")).await.1, "true");
    assert_eq!(
        status_body(gw, "DELETE", &format!("{a}/k")).await.1,
        "false"
    );
    assert_eq!(status_body(gw, "GET", &format!("{a}/k")).await.0, 404);

    // Caps: value over 16 bytes, key over 512 bytes, a fifth key in a namespace of 4.
    let big_value = "v".repeat(17);
    assert_eq!(
        status_body(gw, "PUT", &format!("{a}/big?value={big_value}"))
            .await
            .0,
        413
    );
    let long_key = "k".repeat(513);
    assert_eq!(
        status_body(gw, "PUT", &format!("{a}/{long_key}?value=1"))
            .await
            .0,
        413
    );
    for i in 0..4 {
        let (s, body) = status_body(gw, "PUT", &format!("{other}/q{i}?value=1")).await;
        assert_eq!(s, 204, "{body}");
    }
    let (s, body) = status_body(gw, "PUT", &format!("{other}/q4?value=1")).await;
    assert_eq!(s, 507, "{body}");
    assert!(body.contains("quota"), "{body}");
    assert_eq!(
        status_body(gw, "PUT", &format!("{other}/q0?value=2"))
            .await
            .0,
        204,
        "overwriting a key is not a new key"
    );

    // TTL: the value disappears by itself.
    assert_eq!(
        status_body(gw, "PUT", &format!("{a}/t?value=x&ttl=100"))
            .await
            .0,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = status_body(gw, "GET", &format!("{a}/t")).await;
        if s == 404 {
            break;
        }
        assert_eq!(s, 200);
        assert!(Instant::now() < deadline, "a 100 ms TTL never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_round_trips_namespaces_caps_and_ttls_on_the_local_and_redis_backends() {
    let redis = RedisServer::start();
    let mut body = probes();
    body.push_str(&redis_section(&redis, "2s", ""));
    for backend in ["local", "redis"] {
        for probe in ["a", "b"] {
            body.push_str(&probe_route(
                &format!("{backend}-{probe}"),
                &format!("probe-{probe}"),
                backend,
                "closed",
            ));
        }
    }
    let gw = gateway("kv_max_keys = 4\nkv_max_value_bytes = 16", &body);
    kv_round_trips(&gw, "local").await;
    kv_round_trips(&gw, "redis").await;

    // The redis routes really wrote to Redis, under the plugin's namespace; the local ones
    // did not.
    assert_eq!(
        redis.command(&["EXISTS", "sluice:kv:{probe-a}:fresh"]),
        ":1\r\n"
    );
    assert_eq!(
        status_body(&gw, "PUT", "/local-a/kv/only-local?value=1")
            .await
            .0,
        204
    );
    assert_eq!(
        redis.command(&["EXISTS", "sluice:kv:{probe-a}:only-local"]),
        ":0\r\n"
    );
}

/// A request that may fail (the gateway is being killed): `Some(status)` or `None`.
async fn try_put(url: String) -> Option<u16> {
    let req = http::Request::put(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_kv_write_survives_kill_9_and_the_store_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}[state]\npath = \"{}\"\n\n{}",
        probes(),
        dir.path().join("store.redb").display(),
        probe_route("p", "probe-a", "local", "closed"),
    );
    let mut gw = gateway("", &body);
    let base = gw.url("main", "/p/kv");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(Mutex::new(Some(enough_tx)));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, base, enough_tx) = (acked.clone(), base.clone(), enough_tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    match try_put(format!("{base}/{key}?value=v-{key}")).await {
                        Some(204) => {
                            let mut a = acked.lock().unwrap();
                            a.push(key);
                            if a.len() >= 300
                                && let Some(tx) = enough_tx.lock().unwrap().take()
                            {
                                let _ = tx.send(());
                            }
                        }
                        Some(s) => panic!("write answered {s}"),
                        None => return,
                    }
                }
            })
        })
        .collect();
    enough_rx.await.unwrap();
    // Writes are still streaming in when the process dies.
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10)).expect("killed");
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let gw = gateway("", &body);
    for key in &acked {
        let (s, value) = status_body(&gw, "GET", &format!("/p/kv/{key}")).await;
        assert_eq!(
            (s, value.as_str()),
            (200, format!("v-{key}").as_str()),
            "{key}"
        );
    }
}

/// Sends `n` GETs spread over `gateways` from 8 concurrent clients; returns the statuses.
async fn spread(gateways: &[&Gateway], path: &str, n: usize) -> Vec<u16> {
    let urls: Vec<String> = gateways.iter().map(|g| g.url("main", path)).collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (urls, next) = (urls.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return out;
                    }
                    out.push(request("GET", &urls[i % urls.len()], &[]).await.status);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_enforce_one_global_limit_within_five_percent() {
    let redis = RedisServer::start();
    let body = format!(
        "{}{}{}{}",
        rate_limit_plugin(),
        redis_section(&redis, "2s", ""),
        limited_route("shared", 100, "redis", "closed"),
        limited_route("alone", 100, "local", "local"),
    );
    let (a, b) = (gateway("", &body), gateway("", &body));
    let statuses = spread(&[&a, &b], "/shared/", 300).await;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // 100 per hour with a burst of 100: the run (seconds) may refill at most a few more.
    assert!((95..=105).contains(&allowed), "allowed {allowed} of 300");

    // Counted per node, the same limit admits it on each gateway.
    let statuses = spread(&[&a, &b], "/alone/", 300).await;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!((190..=210).contains(&allowed), "allowed {allowed} of 300");
}

/// Polls Redis until `key` holds `value`.
fn wait_for_redis_value(redis: &RedisServer, key: &str, value: u64) {
    let want = format!("${}\r\n{value}\r\n", value.to_string().len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command(&["GET", key]) != want {
        assert!(
            Instant::now() < deadline,
            "{key} never reached {value}: {}",
            redis.command(&["GET", key])
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hybrid_limiter_counts_locally_and_learns_the_global_count_from_redis() {
    let redis = RedisServer::start();
    let body = format!(
        "{}{}{}",
        rate_limit_plugin(),
        redis_section(&redis, "2s", "hybrid_sync_interval = \"20ms\""),
        limited_route("h", 100, "hybrid", "closed"),
    );
    let (a, b) = (gateway("", &body), gateway("", &body));
    for _ in 0..60 {
        assert_eq!(call(&a, "GET", "/h/").await.status, 200);
    }
    let key = first_key(&redis, "sluice:rl:h/rate-limit#0:*");
    wait_for_redis_value(&redis, &key, 60);
    // B admits one request before it has ever reconciled, then learns the total (61).
    assert_eq!(call(&b, "GET", "/h/").await.status, 200);
    wait_for_redis_value(&redis, &key, 61);
    let mut allowed = 0;
    for _ in 0..60 {
        match call(&b, "GET", "/h/").await.status {
            200 => allowed += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    assert!(
        (39..=40).contains(&allowed),
        "B knew 61 of 100 were used, so it admits 39 (40 if its last reconciliation raced \
         the first of these requests), admitted {allowed}"
    );
}

/// The one Redis key matching `pattern`.
fn first_key(redis: &RedisServer, pattern: &str) -> String {
    let reply = redis.command(&["KEYS", pattern]);
    // *1\r\n$N\r\nKEY\r\n
    let mut lines = reply.split("\r\n");
    assert_eq!(lines.next(), Some("*1"), "{reply}");
    lines.nth(1).expect("a key").to_string()
}

/// Sends `n` requests to `/name/` and returns their statuses, checking each finished within
/// [`DEGRADED_DEADLINE`].
async fn statuses(gw: &Gateway, name: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        out.push(call(gw, "GET", &format!("/{name}/")).await.status);
        assert!(
            started.elapsed() < DEGRADED_DEADLINE,
            "a request on {name} waited {:?}",
            started.elapsed()
        );
    }
    out
}

/// Polls `/closed/` until it is answered by Redis again (anything but 503).
async fn wait_for_recovery(gw: &Gateway) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = call(gw, "GET", "/closed/").await.status;
        assert_ne!(s, 500);
        if s != 503 {
            return s;
        }
        assert!(Instant::now() < deadline, "redis never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_paused_killed_and_restarted_applies_each_rule_without_a_500_and_recovers() {
    let mut redis = RedisServer::start();
    let body = format!(
        "{}{}{}{}{}{}",
        rate_limit_plugin(),
        redis_section(&redis, "100ms", ""),
        limited_route("open", 3, "redis", "open"),
        limited_route("closed", 3, "redis", "closed"),
        limited_route("local", 3, "redis", "local"),
        limited_route("load", 1_000_000, "redis", "local"),
    );
    let gw = gateway("", &body);
    assert!(gw.wait_stderr(|l| l.contains("redis connected"), Duration::from_secs(10)));
    let ok_then_429 = vec![200, 200, 200, 429];
    let load = FixedRateLoad::start(gw.url("main", "/load/"), Duration::from_millis(20));

    // Healthy: every route is limited by Redis.
    for route in ["open", "closed", "local"] {
        assert_eq!(statuses(&gw, route, 4).await, ok_then_429, "{route}");
    }

    // Paused: each command times out after 100 ms and the rule applies.
    redis.pause(5_000);
    assert_eq!(statuses(&gw, "open", 4).await, vec![200; 4]);
    assert_eq!(statuses(&gw, "closed", 4).await, vec![503; 4]);
    assert_eq!(
        statuses(&gw, "local", 4).await,
        ok_then_429,
        "per-node limit"
    );
    // After the pause, Redis answers again: its count for /closed/ is exhausted.
    assert_eq!(wait_for_recovery(&gw).await, 429);

    // Killed: calls fail at once and the rule applies.
    redis.kill();
    assert_eq!(statuses(&gw, "open", 3).await, vec![200; 3]);
    assert_eq!(statuses(&gw, "closed", 3).await, vec![503; 3]);
    assert_eq!(statuses(&gw, "local", 2).await, vec![429; 2]);

    // Restarted empty: the gateway reconnects by itself and Redis counts afresh.
    redis.restart();
    assert_eq!(wait_for_recovery(&gw).await, 200);
    assert_eq!(statuses(&gw, "local", 1).await, vec![200]);

    assert!(gw.wait_stderr(
        |l| l.contains("state backend unavailable"),
        Duration::from_secs(1)
    ));
    assert!(gw.wait_stderr(
        |l| l.contains("state backend recovered"),
        Duration::from_secs(1)
    ));
    assert!(gw.wait_stderr(|l| l.contains("redis unavailable"), Duration::from_secs(1)));

    // The steady load through every phase: always served, never delayed past the deadline.
    let (statuses, slowest) = load.stop().await;
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(slowest < DEGRADED_DEADLINE, "slowest request {slowest:?}");
}

/// GET requests to one URL at a fixed rate (each on its own task, so a slow answer does not
/// delay the schedule), until stopped.
struct FixedRateLoad {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<(u16, Duration)>>>,
}

impl FixedRateLoad {
    fn start(url: String, every: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return sent,
                }
                let url = url.clone();
                sent.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let status = request("GET", &url, &[]).await.status;
                    (status, started.elapsed())
                }));
            }
        });
        Self { stop, task }
    }

    /// Stops sending; returns every status and the slowest latency.
    async fn stop(self) -> (Vec<u16>, Duration) {
        self.stop.send_replace(true);
        let mut statuses = Vec::new();
        let mut slowest = Duration::ZERO;
        for h in self.task.await.unwrap() {
            let (s, t) = h.await.unwrap();
            statuses.push(s);
            slowest = slowest.max(t);
        }
        (statuses, slowest)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_behind_sentinel_is_found_through_the_sentinel() {
    let master = RedisServer::start();
    let sentinel = Sentinel::start(&master);
    let body = format!(
        "{}[redis]\nurl = \"{}\"\ncommand_timeout = \"2s\"\n\n{}",
        probes(),
        sentinel.url(),
        probe_route("s", "probe-a", "redis", "closed"),
    );
    let gw = gateway("", &body);
    assert!(gw.wait_stderr(|l| l.contains("redis connected"), Duration::from_secs(10)));
    assert_eq!(
        status_body(&gw, "PUT", "/s/kv/via-sentinel?value=1")
            .await
            .0,
        204
    );
    assert_eq!(
        status_body(&gw, "GET", "/s/kv/via-sentinel").await,
        (200, "1".into())
    );
    // The write landed on the master the sentinel names.
    assert_eq!(
        master.command(&["GET", "sluice:kv:{probe-a}:via-sentinel"]),
        "$1\r\n1\r\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_and_limits_work_on_a_redis_cluster() {
    let cluster = Cluster::start();
    let body = format!(
        "{}{}[redis]\nurl = \"{}\"\ncommand_timeout = \"2s\"\n\n{}{}",
        probes(),
        rate_limit_plugin(),
        cluster.url(),
        probe_route("c", "probe-a", "redis", "closed"),
        limited_route("limited", 3, "redis", "closed"),
    );
    let gw = gateway("", &body);
    assert!(gw.wait_stderr(|l| l.contains("redis connected"), Duration::from_secs(10)));
    // Keys of one plugin share a slot (the plugin name is the hash tag), so the namespace
    // index and its values are updated atomically by one script on one node.
    for i in 0..5 {
        assert_eq!(
            status_body(&gw, "PUT", &format!("/c/kv/k{i}?value={i}"))
                .await
                .0,
            204
        );
    }
    for i in 0..5 {
        assert_eq!(
            status_body(&gw, "GET", &format!("/c/kv/k{i}")).await,
            (200, i.to_string())
        );
    }
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(call(&gw, "GET", "/limited/").await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_auth_is_used_and_never_logged() {
    let redis = RedisServer::start_with(&["--requirepass", "pa55-word-xyz"]);
    let body = |password: &str| {
        format!(
            "{}[redis]\nurl = \"redis://:{password}@127.0.0.1:{}\"\ncommand_timeout = \"2s\"\nconnect_timeout = \"500ms\"\n\n{}",
            probes(),
            redis.port,
            probe_route("a", "probe-a", "redis", "closed"),
        )
    };
    let gw = gateway("", &body("pa55-word-xyz"));
    assert!(gw.wait_stderr(|l| l.contains("redis connected"), Duration::from_secs(10)));
    assert_eq!(status_body(&gw, "PUT", "/a/kv/k?value=1").await.0, 204);
    assert_eq!(status_body(&gw, "GET", "/a/kv/k").await, (200, "1".into()));

    let wrong = gateway("", &body("not-the-password"));
    assert_eq!(status_body(&wrong, "GET", "/a/kv/k").await.0, 503);
    for g in [&gw, &wrong] {
        let logs = g.stderr().join("\n");
        assert!(
            !logs.contains("pa55-word-xyz") && !logs.contains("not-the-password"),
            "{logs}"
        );
        assert!(logs.contains("redis://***@127.0.0.1"), "{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_is_spoken_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sluice_tests::tls::Ca::new("redis-ca");
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "redis");
    let ca_file = ca.write(dir.path(), "ca");
    let redis = RedisServer::start_tls(&cert, &key);
    let body = format!(
        "{}[redis]\nurl = \"rediss://localhost:{}\"\ntls_ca = \"{}\"\ncommand_timeout = \"2s\"\n\n{}",
        probes(),
        redis.port,
        ca_file.display(),
        probe_route("t", "probe-a", "redis", "closed"),
    );
    let gw = gateway("", &body);
    assert!(gw.wait_stderr(|l| l.contains("redis connected"), Duration::from_secs(10)));
    assert_eq!(status_body(&gw, "PUT", "/t/kv/k?value=tls").await.0, 204);
    assert_eq!(
        status_body(&gw, "GET", "/t/kv/k").await,
        (200, "tls".into())
    );

    // Another CA: the handshake fails, and the `closed` rule answers.
    let other = sluice_tests::tls::Ca::new("other").write(dir.path(), "other");
    let gw = gateway(
        "",
        &body.replace(&ca_file.display().to_string(), &other.display().to_string()),
    );
    assert_eq!(status_body(&gw, "GET", "/t/kv/k").await.0, 503);
}
