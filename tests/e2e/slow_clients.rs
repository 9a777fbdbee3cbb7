//! Slow clients (security battery row 11): slowloris, slow body, slow read, idle keep-alive,
//! the connection cap, and each at the battery's scale of 1000 connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use sluice_tests::upstream::Body;
use sluice_tests::{Gateway, Upstream, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::defences::{HANG, RawConn, cfg, proxy_to, reading_upstream};
/// Asserts that the gateway closed `c` between `at_least` and `HANG` after `start`.
async fn assert_cut(c: &mut RawConn, start: Instant, at_least: Duration, what: &str) {
    let closed = c.closed_within(HANG).await;
    assert!(
        closed.is_some(),
        "{what}: the gateway kept the connection open"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= at_least,
        "{what}: closed after {elapsed:?}, before the {at_least:?} timeout"
    );
}

/// Writes one byte on `c` every `every` (the first after `every`) until the gateway closes
/// the connection, keeping what it sends in `c.buf`; false if `limit` passed first.
async fn trickle_until_closed(c: &mut RawConn, every: Duration, limit: Duration) -> bool {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    tokio::time::timeout(limit, async {
        loop {
            tokio::select! {
                more = c.fill() => if !more { return; },
                _ = tick.tick() => { let _ = c.s.write_all(b"a").await; }
            }
        }
    })
    .await
    .is_ok()
}

/// Raises this process's open-files limit for a test holding `connections` client sockets
/// (plus as many for in-process servers), or fails saying what it needs.
fn open_files_for(connections: usize) {
    let (files, _) = sluice::server::raise_open_files_limit().unwrap();
    let needed = 2 * connections as u64 + 256;
    assert!(
        files >= needed,
        "this test needs {needed} open files; the hard limit allows {files} (ulimit -Hn)"
    );
}

/// Makes `n` requests to `gw`, each from a new client (a new connection), `POST`ing `body`
/// when it is not empty; returns how many got 200 and a whole body.
async fn normal_clients(gw: &Gateway, n: usize, body: &'static [u8]) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = Request::builder()
            .method(method)
            .uri(gw.url("main", &format!("/n{i}")))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let resp = tokio::time::timeout(HANG, sluice_tests::client().request(req)).await;
        if let Ok(Ok(resp)) = resp
            && resp.status() == 200
            && resp.into_body().collect().await.is_ok()
        {
            ok += 1;
        }
    }
    ok
}

/// Asserts that every connection of an attack was open for `at_least` and closed by
/// `at_most`.
fn assert_cut_between(open_for: &[Duration], at_least: Duration, at_most: Duration) {
    let min = open_for.iter().min().unwrap();
    let max = open_for.iter().max().unwrap();
    assert!(*min >= at_least, "cut after {min:?}, before {at_least:?}");
    assert!(*max <= at_most, "cut only after {max:?}");
}

/// Asserts that the gateway holds no more descriptors than before an attack (a client sees
/// the end of its stream only after the gateway closed its side, so none may linger).
fn assert_descriptors_back(gw: &Gateway, baseline: usize) {
    let fds = gw.open_fds();
    assert!(
        fds <= baseline + 8,
        "{fds} descriptors open, {baseline} before the attack"
    );
}

fn slow_cfg(up: SocketAddr, header_read_timeout: &str, idle_timeout: &str) -> String {
    cfg(
        "",
        &proxy_to(
            up,
            &format!(
                "[limits]\nheader_read_timeout = \"{header_read_timeout}\"\nidle_timeout = \"{idle_timeout}\"\n"
            ),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_trickling_a_request_head_is_cut_after_header_read_timeout() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&slow_cfg(up.addr, "500ms", "30s"));
    let mut c = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    // One byte every 100 ms keeps the connection busy, so only the head deadline can end it.
    let closed = trickle_until_closed(&mut c, Duration::from_millis(100), HANG).await;
    assert!(closed, "a trickled head was never cut");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_partial_request_head_is_cut_after_header_read_timeout() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&slow_cfg(up.addr, "500ms", "30s"));
    let mut c = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n").await;
    assert_cut(&mut c, start, Duration::from_millis(300), "partial head").await;
    let mut silent = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    assert_cut(&mut silent, start, Duration::from_millis(300), "no bytes").await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&slow_cfg(up.addr, "20s", "500ms"));
    let mut c = RawConn::open(gw.addr("main")).await;
    // The connection goes idle after this instant (once its response is sent).
    let start = Instant::now();
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("hang");
    assert_eq!(r.status, 200);
    assert_cut(&mut c, start, Duration::from_millis(300), "idle keep-alive").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_body_is_cut_after_idle_timeout() {
    let (up, got) = reading_upstream().await;
    let gw = Gateway::start(&slow_cfg(up.addr, "20s", "500ms"));
    let mut c = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    c.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    // One body byte per second: slower than the idle timeout.
    let closed = trickle_until_closed(&mut c, Duration::from_secs(1), HANG).await;
    assert!(closed, "a trickled body was never cut");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert!(c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
    assert!(got.lock().unwrap().iter().all(|g| g.body.is_err()));
}

/// A client that stops reading a large response: the gateway's writes stall, nothing moves,
/// and the idle timeout ends the connection (the access-log line marks the moment).
#[tokio::test(flavor = "multi_thread")]
async fn client_that_stops_reading_is_cut_after_idle_timeout() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1024; // 64 MiB, far more than the socket buffers hold
    let up = Upstream::with(|_req| async {
        let chunks = futures_util::stream::iter((0..CHUNKS).map(|_| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'z'; CHUNK])))
        }));
        let body: Body = StreamBody::new(chunks).map_err(|n| match n {}).boxed();
        Response::new(body)
    })
    .await;
    let gw = Arc::new(Gateway::start(&slow_cfg(up.addr, "20s", "500ms")));
    let mut c = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let g = gw.clone();
    let logged = tokio::task::spawn_blocking(move || {
        g.wait_stdout(|l| l.contains("\"path\":\"/big\""), Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(logged, "the stalled response never ended");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    let received = tokio::time::timeout(HANG, async {
        let mut n = 0;
        let mut chunk = vec![0u8; 1 << 16];
        while let Ok(k @ 1..) = c.s.read(&mut chunk).await {
            n += k;
        }
        n
    })
    .await
    .expect("the connection stayed open after the response was abandoned");
    assert!(received < CHUNK * CHUNKS, "received all {received} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    const N: usize = 4;
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&cfg(
        "",
        &proxy_to(
            up.addr,
            &format!("[limits]\nmax_connections = {N}\nheader_read_timeout = \"20s\"\n"),
        ),
    ));
    let request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..N {
        let mut c = RawConn::open(gw.addr("main")).await;
        c.send(request).await;
        let r = tokio::time::timeout(HANG, c.response())
            .await
            .expect("hang");
        assert_eq!(r.status, 200);
        held.push(c);
    }
    // The kernel completes the handshake (backlog), but the gateway does not serve it.
    let mut waiting = RawConn::open(gw.addr("main")).await;
    waiting.send(request).await;
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.response()).await;
    assert!(early.is_err(), "served beyond max_connections: {early:?}");
    // Releasing one slot lets it through.
    drop(held.remove(0));
    let r = tokio::time::timeout(HANG, waiting.response())
        .await
        .expect("the waiting connection was never served");
    assert_eq!(r.status, 200);
    drop(waiting);
    drop(held);
    let r = get(&gw.url("main", "/a"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), N + 2);
}

/// Battery row 11 at its scale: 1000 slowloris connections trickling their heads while a
/// normal client makes 200 requests, each on a new connection: every normal request
/// succeeds, every slowloris connection is cut at the head deadline, and the gateway's open
/// descriptors return to where they were.
#[tokio::test(flavor = "multi_thread")]
async fn many_slowloris_connections_do_not_starve_normal_clients() {
    const SLOW: usize = 1000;
    const NORMAL: usize = 200;
    // Long enough for the normal client to finish on a loaded machine before any
    // slowloris connection is due to be cut.
    const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    // This process holds the 1000 sockets too (the gateway raises its own limit).
    open_files_for(SLOW);
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&slow_cfg(up.addr, "10s", "30s"));
    let addr = gw.addr("main");
    assert_eq!(get(&gw.url("main", "/warm"), &[]).await.status, 200);
    let baseline = gw.open_fds();

    let start = Instant::now();
    let cut = Arc::new(AtomicUsize::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..SLOW {
        let mut c = RawConn::open(addr).await;
        c.send(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        let cut = cut.clone();
        slow.spawn(async move {
            let opened = Instant::now();
            let every = Duration::from_millis(250);
            let closed = trickle_until_closed(&mut c, every, HEAD_TIMEOUT + HANG).await;
            cut.fetch_add(1, Ordering::SeqCst);
            closed.then(|| opened.elapsed())
        });
    }

    let ok = normal_clients(&gw, NORMAL, b"").await;
    let normal_done = start.elapsed();
    let cut_during_normal = cut.load(Ordering::SeqCst);
    assert_eq!(ok, NORMAL, "normal requests failed under slowloris");
    assert_eq!(
        cut_during_normal, 0,
        "slowloris connections were cut before the normal client finished ({normal_done:?}); \
         the overlap this test needs did not happen"
    );

    let mut open_for = Vec::new();
    while let Some(r) = slow.join_next().await {
        open_for.push(r.unwrap().expect("a slowloris connection was never cut"));
    }
    let latest = HEAD_TIMEOUT + Duration::from_secs(3);
    assert_cut_between(&open_for, HEAD_TIMEOUT.mul_f32(0.8), latest);
    assert_descriptors_back(&gw, baseline);
    assert_eq!(get(&gw.url("main", "/after"), &[]).await.status, 200);
}

/// `[limits]` checking request bodies at `rate` bytes/s after `grace`, proxying `/` to `up`
/// and answering `/echo` with the echo responder (which reads the whole body); `route` is
/// extra TOML for the proxied route.
fn body_rate_cfg(up: SocketAddr, rate: u64, grace: &str, route: &str) -> String {
    cfg(
        "",
        &format!(
            "[limits]\nmin_body_rate = {rate}\nrate_grace = \"{grace}\"\nidle_timeout = \"30s\"\n\n\
             [upstreams.u]\ntargets = [{{ address = \"{up}\" }}]\n\n\
             [[routes]]\nname = \"echo\"\npath = \"/echo\"\nrespond = \"echo\"\n\n\
             [[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n{route}\n"
        ),
    )
}

/// Sends a POST head announcing 100 body bytes and 10 of them on `c`, then one more byte
/// every `every` until the gateway closes the connection (or the test's patience ends).
async fn trickle_body(c: &mut RawConn, path: &str, every: Duration) {
    c.send(
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await;
    trickle_until_closed(c, every, HANG).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_trickled_below_min_body_rate_is_answered_408_and_the_connection_closed() {
    let (up, got) = reading_upstream().await;
    let gw = Gateway::start(&body_rate_cfg(up.addr, 1000, "300ms", ""));
    // Proxied (streamed to the upstream) and buffered by the echo responder.
    for path in ["/a", "/echo"] {
        let mut c = RawConn::open(gw.addr("main")).await;
        let start = Instant::now();
        trickle_body(&mut c, path, Duration::from_millis(100)).await;
        let r = tokio::time::timeout(HANG, c.response())
            .await
            .expect("no answer to a trickled body");
        assert_eq!(r.status, 408, "{path}: {}", r.head);
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("body_too_slow"), "{path}: {body}");
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{path}: cut after {:?}, within the grace period",
            start.elapsed()
        );
        assert!(
            c.closed_within(HANG).await.is_some(),
            "{path}: the connection stayed open after 408"
        );
    }
    assert!(
        got.lock().unwrap().iter().all(|g| g.body.is_err()),
        "the upstream read a complete trickled body"
    );
}

/// A body that stops sending data is cut at the rate too, not only one that is slow when it
/// sends: stalled outright, or kept busy with chunk sizes padded by zeros (bytes that make
/// no data), it is answered 408 once its data stops covering the rate, long before the
/// idle timeout (30 s here).
#[tokio::test(flavor = "multi_thread")]
async fn request_body_that_stops_sending_data_is_answered_408_at_the_rate() {
    let (up, _got) = reading_upstream().await;
    let gw = Gateway::start(&body_rate_cfg(up.addr, 1000, "300ms", ""));
    for path in ["/a", "/echo"] {
        for padded in [false, true] {
            let what = format!("{path}, padded: {padded}");
            let mut c = RawConn::open(gw.addr("main")).await;
            let start = Instant::now();
            c.send(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                )
                .as_bytes(),
            )
            .await;
            let answered = async {
                if !padded {
                    return c.response().await;
                }
                // One more `0` of the next chunk size every 50 ms (`response` is cancel-safe).
                loop {
                    if let Ok(r) =
                        tokio::time::timeout(Duration::from_millis(50), c.response()).await
                    {
                        return r;
                    }
                    c.send(b"0").await;
                }
            };
            let r = tokio::time::timeout(HANG, answered)
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer to a stalled body"));
            assert_eq!(r.status, 408, "{what}: {}", r.head);
            assert!(
                start.elapsed() >= Duration::from_millis(300),
                "{what}: cut after {:?}, within the grace period",
                start.elapsed()
            );
        }
    }
}

/// A body read whole (by the echo responder here) must arrive within the route's timeout,
/// however well its start covered the rate: 408 `body_timeout` after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_read_whole_must_arrive_within_the_routes_timeout() {
    let gw = Gateway::start(&cfg(
        "",
        "[limits]\nmin_body_rate = 1\nidle_timeout = \"30s\"\n\n\
         [[routes]]\nname = \"echo\"\nrespond = \"echo\"\ntimeout = \"500ms\"\n",
    ));
    let mut c = RawConn::open(gw.addr("main")).await;
    let start = Instant::now();
    // 50 bytes cover 50 s at 1 byte/s; the other 50 never come.
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
            "a".repeat(50)
        )
        .as_bytes(),
    )
    .await;
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("no answer to a body that never completes");
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("body_timeout"));
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        c.closed_within(HANG).await.is_some(),
        "the connection stayed open"
    );
}

/// A body sent well above the rate is forwarded whole, and a route with `min_body_rate = 0`
/// accepts even a trickled one.
#[tokio::test(flavor = "multi_thread")]
async fn request_body_at_or_above_the_rate_or_on_a_route_that_turns_it_off_is_forwarded_whole() {
    let (up, got) = reading_upstream().await;
    let gw = Gateway::start(&body_rate_cfg(up.addr, 100, "200ms", ""));
    // 100 bytes every 50 ms for 1 s: 2000 bytes/s, twenty times the rate.
    let mut c = RawConn::open(gw.addr("main")).await;
    c.send(b"POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .await;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..20 {
        tick.tick().await;
        c.send(&[b'x'; 100]).await;
    }
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("hang");
    assert_eq!(r.status, 200, "{}", r.head);

    let (up2, got2) = reading_upstream().await;
    let gw2 = Gateway::start(&body_rate_cfg(up2.addr, 1000, "300ms", "min_body_rate = 0"));
    let mut c = RawConn::open(gw2.addr("main")).await;
    c.send(b"POST /off HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        .await;
    for _ in 0..20 {
        tick.tick().await;
        c.send(b"y").await;
    }
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("hang");
    assert_eq!(r.status, 200, "{}", r.head);

    let bodies = |g: &Arc<std::sync::Mutex<Vec<super::defences::Got>>>| {
        g.lock()
            .unwrap()
            .iter()
            .map(|g| (g.uri.clone(), g.body.as_ref().map(Vec::len).ok()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bodies(&got), [("/steady".to_string(), Some(2000))]);
    assert_eq!(bodies(&got2), [("/off".to_string(), Some(20))]);
}

/// An upstream answering `n` chunks of `size` bytes, `pause` apart after the first
/// `burst` chunks.
async fn chunked_upstream(n: usize, size: usize, burst: usize, pause: Duration) -> Upstream {
    Upstream::with(move |_req| async move {
        let chunks = futures_util::stream::unfold(0usize, move |i| async move {
            if i == n {
                return None;
            }
            if i >= burst {
                tokio::time::sleep(pause).await;
            }
            let frame = Frame::data(Bytes::from(vec![b'z'; size]));
            Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
        });
        let body: Body = StreamBody::new(chunks).map_err(|n| match n {}).boxed();
        Response::new(body)
    })
    .await
}

/// A client reading a large response far below `min_response_rate` is cut once the grace
/// has passed, long before the response ends; a client reading at full speed gets it all.
#[tokio::test(flavor = "multi_thread")]
async fn client_reading_a_large_response_below_min_response_rate_is_cut() {
    const SIZE: usize = 64 * 1024;
    const CHUNKS: usize = 256; // 16 MiB
    let up = chunked_upstream(CHUNKS, SIZE, CHUNKS, Duration::ZERO).await;
    let gw = Gateway::start(&cfg(
        "",
        &proxy_to(
            up.addr,
            "[limits]\nmin_response_rate = 2000000\nrate_grace = \"300ms\"\nidle_timeout = \"30s\"\n",
        ),
    ));

    let r = get(&gw.url("main", "/fast"), &[]).await;
    assert_eq!((r.status, r.body.len()), (200, SIZE * CHUNKS));

    // 4 KiB every 20 ms: about 200 KB/s, a tenth of the rate.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tick.tick().await;
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a slow reader was never cut ({received} bytes read)"
    );
    assert!(
        received < SIZE * CHUNKS / 2,
        "read {received} bytes before the cut"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "cut after {:?}",
        start.elapsed()
    );
}

/// Time the gateway spends waiting for its upstream (a stream that pauses between chunks)
/// does not count against the client's read rate.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_a_slow_upstream_does_not_count_against_the_client_read_rate() {
    // 128 KiB at once (past the 64 KiB the rate starts after), then five more 64 KiB chunks
    // 200 ms apart: 448 KiB in about a second, a quarter of the rate.
    let up = chunked_upstream(7, 64 * 1024, 2, Duration::from_millis(200)).await;
    let gw = Gateway::start(&cfg(
        "",
        &proxy_to(
            up.addr,
            "[limits]\nmin_response_rate = 2000000\nrate_grace = \"300ms\"\nidle_timeout = \"30s\"\n",
        ),
    ));
    let r = get(&gw.url("main", "/stream"), &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 7 * 64 * 1024));
}

/// A bodiless request waiting on its upstream keeps its connection past `idle_timeout`: the
/// route's timeout governs that wait (504 when it passes), not the connection's idle timeout,
/// which would close the connection with no answer at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_waiting_on_its_upstream_is_answered_past_the_idle_timeout() {
    let up = Upstream::with(|req| async move {
        if req.uri().path() != "/late" {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
        Response::new(sluice_tests::upstream::full("late"))
    })
    .await;
    let gw = Gateway::start(&cfg(
        "",
        &format!(
            "{}timeout = \"1500ms\"\n",
            proxy_to(up.addr, "[limits]\nidle_timeout = \"300ms\"\n")
        ),
    ));
    let r = get(&gw.url("main", "/late"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "late"));
    let r = get(&gw.url("main", "/never"), &[]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.body.contains("upstream_timeout"), "{}", r.body);
}

/// The same for a request with a body: once the body is sent, the request waits on its
/// upstream alone, and the route's timeout governs that wait, not the idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_body_is_sent_is_answered_past_the_idle_timeout() {
    let up = Upstream::with(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        tokio::time::sleep(Duration::from_millis(900)).await;
        Response::new(sluice_tests::upstream::full(body))
    })
    .await;
    let gw = Gateway::start(&cfg(
        "",
        &format!(
            "{}timeout = \"5s\"\n",
            proxy_to(up.addr, "[limits]\nidle_timeout = \"300ms\"\n")
        ),
    ));
    let req = Request::post(gw.url("main", "/late"))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let r = sluice_tests::send(req).await;
    assert_eq!((r.status, r.body.as_str()), (200, "payload"), "{r:?}");
}

/// An HTTP/2 connection that goes quiet after a request is closed after `idle_timeout`, as
/// an HTTP/1 one is. (That the gateway sends no keep-alive pings, whose answers kept such a
/// connection busy, is not shown here: hyper's ping interval was 30 s, beyond this test.)
#[tokio::test(flavor = "multi_thread")]
async fn idle_http2_connection_is_closed_after_idle_timeout() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&format!(
        "[gateway]\ndrain_timeout = \"5s\"\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n{}",
        proxy_to(
            up.addr,
            "[limits]\nidle_timeout = \"500ms\"\nheader_read_timeout = \"20s\"\n"
        )
    ));
    let tcp = tokio::net::TcpStream::connect(gw.addr("main"))
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/a", gw.addr("main")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The connection's last activity (the response) is after this instant.
    let quiet = Instant::now();
    let resp = tokio::time::timeout(HANG, tx.send_request(req))
        .await
        .expect("hang")
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    tokio::time::timeout(HANG, conn)
        .await
        .expect("an idle HTTP/2 connection was never closed")
        .unwrap()
        .ok();
    assert!(
        quiet.elapsed() >= Duration::from_millis(300),
        "closed after {:?}, before the idle timeout",
        quiet.elapsed()
    );
}

/// Battery row 11's slow body at its scale, on the shipped `min_body_rate = 240` with a
/// 10 s grace (long enough for the normal client to finish on a loaded machine before any
/// cut is due): 1000 connections trickle request bodies at 2 bytes/s to a route
/// that reads bodies while a normal client makes 200 requests, each on a new connection.
/// Every normal request succeeds; every trickling connection gets 408 and is closed soon
/// after the grace period, and the gateway's open descriptors return to where they were.
#[tokio::test(flavor = "multi_thread")]
async fn many_slow_body_connections_are_cut_at_the_minimum_rate_without_starving_normal_clients() {
    const SLOW: usize = 1000;
    const NORMAL: usize = 200;
    const GRACE: Duration = Duration::from_secs(10);
    open_files_for(SLOW);
    let gw = Gateway::start(&cfg(
        "",
        "[limits]\nrate_grace = \"10s\"\n\n[[routes]]\nname = \"echo\"\nrespond = \"echo\"\n",
    ));
    let addr = gw.addr("main");
    assert_eq!(get(&gw.url("main", "/warm"), &[]).await.status, 200);
    let baseline = gw.open_fds();

    let cut = Arc::new(AtomicUsize::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..SLOW {
        let mut c = RawConn::open(addr).await;
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n0123456789")
            .await;
        let cut = cut.clone();
        slow.spawn(async move {
            let sent = Instant::now();
            let every = Duration::from_millis(500);
            let closed = trickle_until_closed(&mut c, every, GRACE + HANG).await;
            cut.fetch_add(1, Ordering::SeqCst);
            closed.then(|| (sent.elapsed(), c.buf))
        });
    }

    let ok = normal_clients(&gw, NORMAL, b"a normal body").await;
    let cut_during_normal = cut.load(Ordering::SeqCst);
    assert_eq!(
        ok, NORMAL,
        "normal requests failed under the slow-body attack"
    );
    assert_eq!(
        cut_during_normal, 0,
        "slow bodies were cut before the normal client finished; the overlap this test \
         needs did not happen"
    );

    let mut open_for = Vec::new();
    while let Some(r) = slow.join_next().await {
        let (took, reply) = r.unwrap().expect("a slow body was never cut");
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 408") && reply.contains("body_too_slow"),
            "{reply}"
        );
        open_for.push(took);
    }
    // Timed from after each head was sent: the gateway's clock may have started a little
    // before.
    assert_cut_between(
        &open_for,
        GRACE.mul_f32(0.8),
        GRACE + Duration::from_secs(3),
    );
    assert_descriptors_back(&gw, baseline);
}
