//! Upstream groups end to end: load-balancing distributions, passive ejection and active
//! health checks, the gateway's own error answers (502/503/504), safe retries and pooled
//! keep-alive connections.
//!
//! Upstream targets are identified by their response body. Slow upstreams are held by a
//! semaphore the test releases, never by timing; where a configured duration has to pass
//! (ejection, health-check intervals) the test waits for an observable event (a log line, a
//! response) under an overall deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::upstream::{Body, full};
use sluice_tests::{Gateway, Resp, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::config;

/// Overall bound for waiting on something a configured duration makes happen.
const DEADLINE: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A gateway with one upstream group `u` over `targets` (TOML inline tables), `upstream`
/// extra keys for the group, and one catch-all route `r` with `route` extra keys.
fn gateway(targets: &[String], upstream: &str, route: &str) -> Gateway {
    Gateway::start(&config(&format!(
        "[upstreams.u]\ntargets = [{}]\n{upstream}\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n{route}\n",
        targets.join(", ")
    )))
}

/// A target entry of weight 1.
fn target(addr: SocketAddr) -> String {
    weighted(addr, 1)
}

fn weighted(addr: SocketAddr, weight: u32) -> String {
    format!("{{ address = \"{addr}\", weight = {weight} }}")
}

/// An address that refuses connections: a socket bound to it that never listens. Keep it
/// alive for the test: while it is bound, no other test can be handed the port.
pub(crate) struct Refusing {
    pub(crate) addr: SocketAddr,
    _socket: TcpSocket,
}

pub(crate) async fn refused_addr() -> Refusing {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    Refusing {
        addr: socket.local_addr().expect("addr"),
        _socket: socket,
    }
}

/// Sends `req` on `client` (bounded in time) and reads the whole response.
async fn send_on(client: &HttpClient, req: Request<Full<Bytes>>) -> Resp {
    let resp = tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("response body timed out")
        .expect("response body")
        .to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET url` with extra headers on `client`.
async fn get_on(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send_on(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends `n` sequential GETs and counts the response bodies (each target answers its name).
async fn tally(client: &HttpClient, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = get_on(client, url, &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        *counts.entry(r.body).or_insert(0) += 1;
    }
    counts
}

/// Asserts the JSON error body the gateway answers with itself.
fn assert_gateway_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let j = r.json();
    assert_eq!(j["error"], code, "{r:?}");
    assert_eq!(j["route"], "r", "{r:?}");
    assert!(
        j["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
}

/// An upstream answering `name` to requests, and 200 or 500 to `/healthz` as `healthy` says.
async fn checked(name: &'static str, healthy: Arc<AtomicBool>) -> Upstream {
    Upstream::with(move |req: Request<Incoming>| {
        let healthy = healthy.clone();
        async move {
            if req.uri().path() == "/healthz" {
                let mut r = Response::new(full("health"));
                if !healthy.load(Ordering::SeqCst) {
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                r
            } else {
                Response::new(full(name))
            }
        }
    })
    .await
}

/// Requests an upstream served other than health probes.
fn traffic(up: &Upstream) -> usize {
    up.seen().iter().filter(|s| s.uri != "/healthz").count()
}

// ---------------------------------------------------------------------------------------
// Load balancing
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_splits_sequential_requests_exactly_by_weight() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[weighted(a.addr, 1), weighted(b.addr, 3)],
        "balance = \"round_robin\"",
        "",
    );
    let c = sluice_tests::client();
    let counts = tally(&c, &gw.url("main", "/"), 400).await;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&300), "{counts:?}");
    assert_eq!((a.hits(), b.hits()), (100, 300));
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_random_splits_requests_close_to_the_weights() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[weighted(a.addr, 1), weighted(b.addr, 3)],
        "balance = \"weighted\"",
        "",
    );
    let c = sluice_tests::client();
    let n = 400;
    let counts = tally(&c, &gw.url("main", "/"), n).await;
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 / n as f64;
    // Expected 0.75, standard deviation ~0.022: this band is more than 5 deviations wide.
    assert!((0.63..=0.87).contains(&share_b), "{counts:?}");
    assert_eq!(a.hits() + b.hits(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_sends_new_requests_away_from_a_busy_target() {
    let (a, release_a, mut entered_a) = Upstream::held("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "balance = \"least_request\"",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();

    // Both targets idle: each request lands on either. Send until one is held at `a`.
    let mut busy: Option<JoinHandle<Resp>> = None;
    for _ in 0..64 {
        let (c2, u2) = (c.clone(), url.clone());
        let mut req = tokio::spawn(async move { get_on(&c2, &u2, &[]).await });
        tokio::select! {
            _ = entered_a.recv() => {
                busy = Some(req);
                break;
            }
            r = &mut req => {
                let r = r.expect("request task");
                assert_eq!((r.status, r.body.as_str()), (200, "b"));
            }
        }
    }
    let busy = busy.expect("least_request never chose target a in 64 tries");
    assert_eq!(a.hits(), 1);

    // `a` has one request in flight, `b` none: every new request must go to `b`.
    let before = b.hits();
    let counts = tally(&c, &url, 50).await;
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), before + 50);

    release_a.add_permits(1);
    let r = busy.await.expect("held request");
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
}

/// Sends 3 requests for each of 40 keys, with `header: value(key, round)`, asserts each key
/// always lands on the same target, and returns how many keys each target got.
async fn assert_sticky<F>(
    c: &HttpClient,
    url: &str,
    header: &str,
    value: F,
) -> BTreeMap<String, usize>
where
    F: Fn(usize, usize) -> String,
{
    let mut per_target = BTreeMap::new();
    for key in 0..40 {
        let mut first: Option<String> = None;
        for round in 0..3 {
            let v = value(key, round);
            let r = get_on(c, url, &[(header, v.as_str())]).await;
            assert_eq!(r.status, 200, "{r:?}");
            match &first {
                None => first = Some(r.body),
                Some(f) => assert_eq!(&r.body, f, "key {key} moved ({header}: {v})"),
            }
        }
        *per_target.entry(first.unwrap()).or_insert(0) += 1;
    }
    per_target
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_on_header_keeps_each_value_on_one_target_and_spreads_values() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "balance = \"hash\"\nhash_on = { header = \"x-user\" }",
        "",
    );
    let c = sluice_tests::client();
    let spread = assert_sticky(&c, &gw.url("main", "/"), "x-user", |k, _| {
        format!("user-{k}")
    })
    .await;
    assert_eq!(spread.len(), 2, "40 keys all on one target: {spread:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_on_cookie_keeps_each_value_on_one_target_and_spreads_values() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "balance = \"hash\"\nhash_on = { cookie = \"sid\" }",
        "",
    );
    let c = sluice_tests::client();
    // Other cookies change between rounds; only `sid` decides.
    let spread = assert_sticky(&c, &gw.url("main", "/"), "cookie", |k, round| {
        format!("theme=t{round}; sid=session-{k}; n={round}")
    })
    .await;
    assert_eq!(spread.len(), 2, "40 keys all on one target: {spread:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_on_client_ip_keeps_each_client_on_one_target() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "balance = \"hash\"\nhash_on = { client_ip = true }",
        "",
    );
    let url = gw.url("main", "/");
    let mut per_target = BTreeMap::new();
    let mut clients = BTreeSet::new();
    for host in 2..42u8 {
        // Each client connects from its own loopback address (all of 127/8 is local).
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        let mut conn = HttpConnector::new();
        conn.set_local_address(Some(ip));
        let c: HttpClient = Client::builder(TokioExecutor::new()).build(conn);
        let mut first: Option<String> = None;
        for _ in 0..3 {
            let r = get_on(&c, &url, &[]).await;
            assert_eq!(r.status, 200, "{r:?}");
            match &first {
                None => first = Some(r.body),
                Some(f) => assert_eq!(&r.body, f, "client {ip} moved"),
            }
        }
        *per_target.entry(first.unwrap()).or_insert(0) += 1;
        clients.insert(ip.to_string());
    }
    assert_eq!(
        per_target.len(),
        2,
        "40 clients all on one target: {per_target:?}"
    );
    // The gateway saw the distinct client addresses (and said so upstream).
    let forwarded: BTreeSet<String> = a
        .seen()
        .into_iter()
        .chain(b.seen())
        .filter_map(|s| Some(s.headers.get("x-forwarded-for")?.to_str().ok()?.to_string()))
        .collect();
    assert_eq!(forwarded, clients);
}

// ---------------------------------------------------------------------------------------
// Passive and active health
// ---------------------------------------------------------------------------------------

/// A timeout while the client is still sending its body is the client's: slow uploads that
/// outlast the route's timeout get 408 `body_timeout` and a closed connection, and never
/// eject a healthy target.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_during_a_slow_client_upload_answer_408_and_do_not_eject_the_target() {
    let (up, _got) = crate::defences::reading_upstream().await;
    let gw = gateway(
        &[target(up.addr)],
        "passive = { consecutive_failures = 2, ejection_time = \"60s\" }",
        "timeout = \"300ms\"",
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
        // 10 of the 100 announced bytes, then nothing: the upstream waits for the rest.
        s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // The answer, then the end of the connection.
        let mut reply = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut reply))
            .await
            .expect("no answer, or the connection stayed open")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"error\":\"body_timeout\""), "{reply}");
        held.push(s);
    }
    let r = sluice_tests::get(&gw.url("main", "/after"), &[]).await;
    assert_eq!(r.status, 200, "the target was ejected: {}", r.body);
    assert!(
        !gw.stderr()
            .iter()
            .any(|l| l.contains("target ejected after consecutive failures")),
        "{:#?}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_ejection_moves_traffic_away_and_recovers() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let a = Upstream::with(move |_req| {
        let failing = f.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(full("a"));
            if failing {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let b = Upstream::named("b").await;
    let ejection = Duration::from_millis(500);
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "passive = { consecutive_failures = 2, ejection_time = \"500ms\" }",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();

    // Round robin starts with `a`: a (fail 1), b, a (fail 2: ejected).
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "a"));
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "b"));
    let ejecting_sent = Instant::now();
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "a"));
    assert!(
        gw.wait_stderr(
            |l| l.contains("target ejected after consecutive failures"),
            DEADLINE
        ),
        "{:#?}",
        gw.stderr()
    );
    failing.store(false, Ordering::SeqCst);

    // While ejected everything goes to `b`; after the ejection time `a` serves again.
    let mut served_by_b = 0;
    loop {
        assert!(
            ejecting_sent.elapsed() < DEADLINE,
            "target a never came back"
        );
        let r = get_on(&c, &url, &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.body == "a" {
            break;
        }
        served_by_b += 1;
    }
    let back_after = ejecting_sent.elapsed();
    assert!(
        back_after >= ejection,
        "a served again after {back_after:?}, before its ejection time"
    );
    assert!(served_by_b >= 1);
    assert_eq!(b.hits(), 1 + served_by_b);
}

#[tokio::test(flavor = "multi_thread")]
async fn active_health_check_removes_a_failing_target_and_restores_it() {
    let healthy = Arc::new(AtomicBool::new(true));
    let a = checked("a", healthy.clone()).await;
    let b = checked("b", Arc::new(AtomicBool::new(true))).await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"2s\", healthy_threshold = 1, unhealthy_threshold = 2 }",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    let counts = tally(&c, &url, 4).await;
    assert_eq!(counts.get("a"), Some(&2), "{counts:?}");

    healthy.store(false, Ordering::SeqCst);
    assert!(
        gw.wait_stderr(|l| l.contains("target failed health checks"), DEADLINE),
        "{:#?}",
        gw.stderr()
    );
    let before = traffic(&a);
    let counts = tally(&c, &url, 20).await;
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
    assert_eq!(traffic(&a), before);

    healthy.store(true, Ordering::SeqCst);
    assert!(
        gw.wait_stderr(|l| l.contains("target healthy again"), DEADLINE),
        "{:#?}",
        gw.stderr()
    );
    let counts = tally(&c, &url, 20).await;
    assert!(counts.get("a").is_some_and(|n| *n >= 1), "{counts:?}");
    assert!(b.seen().iter().any(|s| s.uri == "/healthz"));
}

/// A reload keeps what the gateway learned about its targets: a target ejected before
/// SIGHUP stays ejected after it (a fresh snapshot does not re-admit it).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_a_targets_ejection() {
    let a = Upstream::failing(StatusCode::SERVICE_UNAVAILABLE, "a down").await;
    let b = Upstream::named("b").await;
    let file = |extra: &str| {
        config(&format!(
            "[upstreams.u]\ntargets = [{}, {}]\npassive = {{ consecutive_failures = 1, ejection_time = \"60s\" }}\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n{extra}",
            target(a.addr),
            target(b.addr)
        ))
    };
    let gw = Gateway::start(&file(""));
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    // Round robin starts with `a`: one failure ejects it.
    assert_eq!(get_on(&c, &url, &[]).await.status, 503);
    std::fs::write(
        gw.config_path(),
        file("\n[[routes]]\nname = \"new\"\npath = \"/new\"\nrespond = \"echo\"\n"),
    )
    .unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(|l| l.contains("configuration reloaded"), DEADLINE));
    assert_eq!(get_on(&c, &gw.url("main", "/new"), &[]).await.status, 200);
    for _ in 0..4 {
        let r = get_on(&c, &url, &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "b"),
            "the reload re-admitted a"
        );
    }
    assert_eq!(a.hits(), 1);
}

/// Health-check thresholds count probes an interval apart, even across a burst of reloads:
/// a checker that took over its targets' probe streaks waits an interval before it probes,
/// so five quick reloads are not five failed probes that eject a target at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_reloads_does_not_count_as_health_probes() {
    let a = Upstream::with(|req| async move {
        let status = if req.uri().path() == "/healthz" {
            503
        } else {
            200
        };
        let mut r = Response::new(full("a"));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    })
    .await;
    let file = |n: usize| {
        config(&format!(
            "[upstreams.u]\ntargets = [{}]\nhealth_check = {{ path = \"/healthz\", interval = \"30s\", unhealthy_threshold = 3 }}\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n\n[[routes]]\nname = \"n{n}\"\npath = \"/n{n}\"\nrespond = \"echo\"\n",
            target(a.addr)
        ))
    };
    let gw = Gateway::start(&file(0));
    for n in 1..=5 {
        std::fs::write(gw.config_path(), file(n)).unwrap();
        gw.signal("HUP");
        assert!(gw.wait_stderr_count(|l| l.contains("configuration reloaded"), n, DEADLINE));
    }
    // One probe so far (the first checker's), under the threshold: `a` still serves.
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    assert_eq!(a.hits(), 2, "one probe and the request");
}

/// Passive ejection cannot take a whole upstream out: with every target ejected, requests
/// still reach them instead of getting 503.
#[tokio::test(flavor = "multi_thread")]
async fn with_every_target_ejected_requests_still_reach_the_targets() {
    let a = Upstream::failing(StatusCode::SERVICE_UNAVAILABLE, "a down").await;
    let b = Upstream::failing(StatusCode::BAD_GATEWAY, "b down").await;
    let gw = gateway(
        &[target(a.addr), target(b.addr)],
        "passive = { consecutive_failures = 1, ejection_time = \"60s\" }",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "a down"));
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (502, "b down"));
    assert!(
        gw.wait_stderr(
            |l| l
                .matches("target ejected after consecutive failures")
                .count()
                > 0
                && l.contains(&b.addr.to_string()),
            DEADLINE
        ),
        "{:#?}",
        gw.stderr()
    );
    let r = get_on(&c, &url, &[]).await;
    assert!(
        matches!(r.body.as_str(), "a down" | "b down"),
        "{} {}",
        r.status,
        r.body
    );
    assert_eq!(a.hits() + b.hits(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_failing_health_checks_answers_503_no_healthy_upstream() {
    let a = checked("a", Arc::new(AtomicBool::new(false))).await;
    let gw = gateway(
        &[target(a.addr)],
        "health_check = { interval = \"100ms\", unhealthy_threshold = 1 }",
        "",
    );
    assert!(
        gw.wait_stderr(|l| l.contains("target failed health checks"), DEADLINE),
        "{:#?}",
        gw.stderr()
    );
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_gateway_error(&r, 503, "no_healthy_upstream");
    assert_eq!(traffic(&a), 0);
}

// ---------------------------------------------------------------------------------------
// The gateway's own error answers
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_answers_502_upstream_connect_failed() {
    let refused = refused_addr().await;
    let gw = gateway(&[target(refused.addr)], "", "");
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_gateway_error(&r, 502, "upstream_connect_failed");
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&refused.addr.to_string()), "{msg}");
}

/// A target that refuses connections is ejected after consecutive failures like one that
/// answers 5xx (retries off, so that every failure reaches the client).
#[tokio::test(flavor = "multi_thread")]
async fn passive_ejection_takes_out_a_target_that_refuses_connections() {
    let refused = refused_addr().await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(refused.addr), target(b.addr)],
        "retry = { attempts = 0 }\npassive = { consecutive_failures = 2, ejection_time = \"60s\" }",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    // Round robin: refused (failure 1), b, refused (failure 2: ejected).
    let statuses = [
        get_on(&c, &url, &[]).await.status,
        get_on(&c, &url, &[]).await.status,
        get_on(&c, &url, &[]).await.status,
    ];
    assert_eq!(statuses, [502, 200, 502]);
    assert!(
        gw.wait_stderr(
            |l| l.contains("target ejected after consecutive failures"),
            DEADLINE
        ),
        "{:#?}",
        gw.stderr()
    );
    // Now every request goes to `b`.
    for _ in 0..4 {
        let r = get_on(&c, &url, &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "b"));
    }
    assert_eq!(b.hits(), 5);
}

/// The route's `timeout`, or without one the upstream group's `request_timeout`, bounds the
/// time to the response head: 504 `upstream_timeout`, not retried.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_slower_than_the_route_or_upstream_timeout_answers_504_upstream_timeout() {
    for (upstream, route, ms) in [
        ("", "timeout = \"200ms\"", 200),
        ("request_timeout = \"250ms\"", "", 250),
    ] {
        let a = Upstream::with(|_req| async {
            std::future::pending::<()>().await;
            Response::new(full("never"))
        })
        .await;
        let gw = gateway(&[target(a.addr)], upstream, route);
        let sent = Instant::now();
        let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
        assert!(sent.elapsed() >= Duration::from_millis(ms));
        assert_gateway_error(&r, 504, "upstream_timeout");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(&format!("{ms} ms")), "{msg}");
        assert_eq!(a.hits(), 1, "a timed-out request is not retried");
    }
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
/// hangs until the client gives up. Returns the listener, the connections filling the queue
/// and the address.
async fn saturated_listener() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = sock.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut filling = Vec::new();
    for _ in 0..64 {
        // A loopback handshake completes in well under a millisecond unless the queue is
        // full; a connect pending for a whole second means the SYN was dropped.
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => filling.push(s),
            Ok(Err(e)) => panic!("connect to the backlog-0 listener failed: {e}"),
            Err(_) => return (listener, filling, addr),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_connect_answers_504_upstream_connect_timeout() {
    let (_listener, _filling, addr) = saturated_listener().await;
    let gw = gateway(
        &[target(addr)],
        "connect_timeout = \"300ms\"\nretry = { attempts = 0 }",
        "",
    );
    let sent = Instant::now();
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert!(sent.elapsed() >= Duration::from_millis(300));
    assert_gateway_error(&r, 504, "upstream_connect_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_answers_503_circuit_open_beyond_its_limits() {
    let (a, release, mut entered) = Upstream::held("a").await;
    let gw = gateway(
        &[target(a.addr)],
        "circuit_breaker = { max_concurrent = 1, max_pending = 0 }",
        "",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    let (c2, u2) = (c.clone(), url.clone());
    let slow = tokio::spawn(async move { get_on(&c2, &u2, &[]).await });
    tokio::time::timeout(DEADLINE, entered.recv())
        .await
        .expect("the first request never reached the upstream");

    let r = get_on(&c, &url, &[]).await;
    assert_gateway_error(&r, 503, "circuit_open");
    assert_eq!(a.hits(), 1);

    release.add_permits(2);
    let r = slow.await.expect("slow request");
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    // The slot is free again.
    let r = get_on(&c, &url, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    assert_eq!(a.hits(), 2);
}

/// A request queued behind the breaker waits on the gateway, not on its client: it is
/// answered when a slot frees up, even past the connection's idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_queued_behind_the_breaker_outlives_the_idle_timeout() {
    let (a, release, mut entered) = Upstream::held("a").await;
    let gw = gateway(
        &[target(a.addr)],
        "circuit_breaker = { max_concurrent = 1, max_pending = 1 }",
        "timeout = \"10s\"\n\n[limits]\nidle_timeout = \"300ms\"",
    );
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    let (c1, u1) = (c.clone(), url.clone());
    let first = tokio::spawn(async move { get_on(&c1, &u1, &[]).await });
    tokio::time::timeout(DEADLINE, entered.recv())
        .await
        .expect("the first request never reached the upstream");
    let queued = tokio::spawn(async move { get_on(&c, &url, &[]).await });
    // Longer than the idle timeout, with the second request queued (it cannot reach the
    // upstream while the first holds the only slot).
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(a.hits(), 1);
    release.add_permits(2);
    for r in [first, queued] {
        let r = r.await.expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
    }
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

/// A raw upstream that reads one whole HTTP/1.1 request per connection, counts it, and
/// resets the connection (RST) without answering.
struct ResettingUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ResettingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let n = n.clone();
                tokio::spawn(async move {
                    if read_request(&mut tcp).await {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = tcp.set_zero_linger();
                    drop(tcp);
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for ResettingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a request head and its `Content-Length` body; false if the peer closed first.
async fn read_request(tcp: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_is_retried_on_the_other_target_when_the_first_refuses_connections() {
    let refused = refused_addr().await;
    let b = Upstream::named("b").await;
    // Round robin tries the first target first.
    let gw = gateway(&[target(refused.addr), target(b.addr)], "", "");
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "b"));
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_attempts_zero_disables_retries() {
    let refused = refused_addr().await;
    let b = Upstream::named("b").await;
    let gw = gateway(
        &[target(refused.addr), target(b.addr)],
        "retry = { attempts = 0 }",
        "",
    );
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_gateway_error(&r, 502, "upstream_connect_failed");
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_stop_after_the_configured_attempts() {
    let resets = [
        ResettingUpstream::start().await,
        ResettingUpstream::start().await,
        ResettingUpstream::start().await,
    ];
    let targets: Vec<String> = resets.iter().map(|r| target(r.addr)).collect();
    let gw = gateway(&targets, "retry = { attempts = 1 }", "");
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_gateway_error(&r, 502, "upstream_failed");
    let seen: Vec<usize> = resets.iter().map(ResettingUpstream::requests).collect();
    // The first attempt and one retry, on two different targets.
    assert_eq!(seen.iter().sum::<usize>(), 2, "{seen:?}");
    assert_eq!(seen[0], 1, "{seen:?}");
    assert!(seen.iter().all(|n| *n <= 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_is_retried_on_the_other_target_after_a_connection_reset() {
    let reset = ResettingUpstream::start().await;
    let b = Upstream::named("b").await;
    let gw = gateway(&[target(reset.addr), target(b.addr)], "", "");
    let r = get_on(&sluice_tests::client(), &gw.url("main", "/"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "b"));
    assert_eq!((reset.requests(), b.hits()), (1, 1));
}

/// A request that reached a target which then reset the connection is sent again only if it
/// is both replayable (no body: bodies are streamed, never kept for a replay) and
/// idempotent: not a POST even without a body, not a PUT with one.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_reached_a_resetting_upstream_are_not_retried_unless_bodiless_and_idempotent()
{
    for (method, body) in [
        ("POST", &b"{\"item\":1}"[..]),
        ("POST", b""),
        ("PUT", b"{\"item\":1}"),
    ] {
        let reset = ResettingUpstream::start().await;
        let b = Upstream::named("b").await;
        let gw = gateway(&[target(reset.addr), target(b.addr)], "", "");
        let req = Request::builder()
            .method(method)
            .uri(gw.url("main", "/orders/1"))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let r = send_on(&sluice_tests::client(), req).await;
        assert_gateway_error(&r, 502, "upstream_failed");
        assert_eq!(
            (reset.requests(), b.hits()),
            (1, 0),
            "{method} with {} body bytes",
            body.len()
        );
    }
}

/// A POST whose connection was refused never left the gateway: it is retried elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn post_without_body_is_retried_on_the_other_target_when_the_first_refuses_connections() {
    let refused = refused_addr().await;
    let b = Upstream::named("b").await;
    let gw = gateway(&[target(refused.addr), target(b.addr)], "", "");
    let req = Request::post(gw.url("main", "/orders"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send_on(&sluice_tests::client(), req).await;
    assert_eq!((r.status, r.body.as_str()), (200, "b"));
    assert_eq!(b.hits(), 1);
}

/// The retry budget: each request deposits `budget_ratio` tokens and a retry spends one
/// (`min_per_second = 0`: no time-based tokens). Round robin alternates the refused target
/// and `b`, so requests 1 and 3 need a retry.
#[tokio::test(flavor = "multi_thread")]
async fn retries_are_limited_by_the_retry_budget() {
    for (ratio, expected) in [(0.5, [502, 200, 200]), (0.0, [502, 200, 502])] {
        let refused = refused_addr().await;
        let b = Upstream::named("b").await;
        let gw = gateway(
            &[target(refused.addr), target(b.addr)],
            &format!("retry = {{ attempts = 1, budget_ratio = {ratio:?}, min_per_second = 0 }}"),
            "",
        );
        let client = sluice_tests::client();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(get_on(&client, &gw.url("main", "/"), &[]).await.status);
        }
        assert_eq!(statuses, expected, "budget_ratio = {ratio}");
    }
}

// ---------------------------------------------------------------------------------------
// Pooled keep-alive
// ---------------------------------------------------------------------------------------

/// A hyper HTTP/1.1 upstream that counts the connections it accepts.
struct CountingUpstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Connections that ended (the gateway closed them).
    closed: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl CountingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (acc, req, done) = (accepts.clone(), requests.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let req = req.clone();
                let done = done.clone();
                let svc = hyper::service::service_fn(move |_r: Request<Incoming>| {
                    req.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<Response<Body>, std::convert::Infallible>(Response::new(full("ok")))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepts,
            requests,
            closed,
            task,
        }
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_reuse_pooled_upstream_connections() {
    let up = CountingUpstream::start().await;
    let gw = gateway(&[target(up.addr)], "", "");
    let url = gw.url("main", "/");
    let n = 100;
    for _ in 0..n {
        // A fresh client connection each time: only the gateway's pool can reuse anything.
        let r = get_on(&sluice_tests::client(), &url, &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), n);
    let accepts = up.accepts.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&accepts),
        "{n} sequential requests opened {accepts} upstream connections"
    );
}

/// A pooled upstream connection idle for longer than the group's `idle_timeout` is closed;
/// the next request opens a new one.
#[tokio::test(flavor = "multi_thread")]
async fn pooled_upstream_connections_are_closed_after_idle_timeout() {
    let up = CountingUpstream::start().await;
    let gw = gateway(&[target(up.addr)], "idle_timeout = \"200ms\"", "");
    let url = gw.url("main", "/");
    let c = sluice_tests::client();
    // The connection goes idle after this instant (once its response is back), so it must
    // outlive it by the idle timeout.
    let sent = Instant::now();
    assert_eq!(get_on(&c, &url, &[]).await.status, 200);
    while up.closed.load(Ordering::SeqCst) == 0 {
        assert!(
            sent.elapsed() < DEADLINE,
            "the idle pooled connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent.elapsed() >= Duration::from_millis(200));
    assert_eq!(get_on(&c, &url, &[]).await.status, 200);
    assert_eq!(up.accepts.load(Ordering::SeqCst), 2);
}
