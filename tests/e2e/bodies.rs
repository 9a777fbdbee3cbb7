//! Request bodies and policies: a body policy (the `body-check` fixture, which exports
//! `on-request-body`) sees the whole body and the upstream receives it buffered with a
//! `content-length`; the route's body limit holds while buffering; a header-only pipeline
//! keeps streaming the body to the upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_tests::gateway::validate;
use sluice_tests::upstream::full;
use sluice_tests::{Gateway, Resp, Upstream, plugin_path, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config;

/// Upper bound on any one wait of these tests (a debug build on a loaded machine).
const WAIT: Duration = Duration::from_secs(20);

/// What `body-check` refuses with 403.
const DENY: &str = "DROP TABLE";

/// A compiled-artifact cache shared by the gateways of this module: compiling a component
/// in a debug build takes seconds, deserializing the artifact milliseconds.
fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-bodies-cache")
}

/// `[plugins.NAME]` for the component `file`, granted `grants`.
fn plugin(name: &str, file: &str, grants: &str) -> String {
    format!(
        "[plugins.{name}]\npath = \"{}\"\ngrants = [{grants}]\n\n",
        plugin_path(file).display()
    )
}

/// The configuration: the `main` listener, the shared cache, both plugins and `body`.
fn full_config(body: &str) -> String {
    config(&format!(
        "[policy]\ncache_dir = \"{}\"\n\n{}{}{body}",
        cache_dir().display(),
        plugin("noop", "noop", ""),
        // body-check logs its refusals.
        plugin("body-check", "body_check", "\"log\""),
    ))
}

/// Compiles both components once into the shared cache (with `sluice validate`, which has
/// no start-up deadline), so that the gateways of the tests come up quickly.
fn warm_cache() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let (code, out) = validate(&full_config(""));
        assert_eq!(code, 0, "{out}");
    });
}

/// Starts a gateway whose route `r` forwards to `up`, with `route` extra TOML lines
/// (limits, policies) appended to the route.
fn start(up: &Upstream, route: &str) -> Gateway {
    warm_cache();
    Gateway::start(&full_config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n{route}",
        up.addr
    )))
}

/// The `body-check` policy on the route, allowing bodies up to `max_bytes`.
fn body_check(max_bytes: u64) -> String {
    format!(
        "[[routes.policies]]\nplugin = \"body-check\"\nconfig = {{ max_bytes = {max_bytes}, deny_substring = \"{DENY}\" }}\n"
    )
}

/// An upstream answering `ok` that records every request body it reads in full, and
/// reports on the returned channel each request head as it arrives (before its body).
async fn recording_upstream() -> (
    Upstream,
    Arc<Mutex<Vec<Bytes>>>,
    mpsc::UnboundedReceiver<()>,
) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let (heads, head_rx) = mpsc::unbounded_channel();
    let b = bodies.clone();
    let up = Upstream::with(move |req| {
        let (b, heads) = (b.clone(), heads.clone());
        async move {
            let _ = heads.send(());
            let body = req.into_body().collect().await.expect("request body");
            b.lock().unwrap().push(body.to_bytes());
            http::Response::new(full("ok"))
        }
    })
    .await;
    (up, bodies, head_rx)
}

/// `POST url` with `body` sent with a `content-length`, plus `headers`.
async fn post(url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Resp {
    let mut b = http::Request::post(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(body.into())).unwrap()).await
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A raw HTTP/1.1 connection sending one `POST` with a chunked body, piece by piece.
struct ChunkedUpload {
    stream: TcpStream,
}

impl ChunkedUpload {
    /// Connects and sends the request head (`transfer-encoding: chunked`,
    /// `connection: close`).
    async fn start(addr: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        Self { stream }
    }

    /// Sends one chunk.
    async fn send(&mut self, data: &[u8]) {
        self.stream
            .write_all(&chunk(data))
            .await
            .expect("write chunk");
        self.stream.flush().await.expect("flush");
    }

    /// Ends the body and reads the whole response (the gateway closes the connection
    /// after it): (status, raw response text).
    async fn finish(mut self) -> (u16, String) {
        self.stream
            .write_all(b"0\r\n\r\n")
            .await
            .expect("write last chunk");
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut out))
            .await
            .expect("the gateway did not answer and close in time")
            .expect("read response");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|t| t.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
        (status, text)
    }
}

/// A header of the `i`-th request the upstream saw.
fn seen_header(up: &Upstream, i: usize, name: &str) -> Option<String> {
    up.seen()[i]
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_policy_sees_the_body_and_the_upstream_receives_it_unchanged() {
    let (up, bodies, _heads) = recording_upstream().await;
    let gw = start(&up, &body_check(1024));
    let url = gw.url("main", "/orders");

    // Every byte value, so that nothing on the way may treat the body as text.
    let binary: Vec<u8> = (0..=255u8).collect();
    // The policy sets the header: a value sent by the client is replaced.
    let r = post(&url, binary.clone(), &[("x-body-bytes", "999")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(bodies.lock().unwrap()[0], binary);
    assert_eq!(seen_header(&up, 0, "x-body-bytes").as_deref(), Some("256"));
    assert_eq!(
        seen_header(&up, 0, "content-length").as_deref(),
        Some("256")
    );

    let r = post(&url, "{\"q\": \"hello\"}", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(bodies.lock().unwrap()[1], "{\"q\": \"hello\"}");
    assert_eq!(seen_header(&up, 1, "x-body-bytes").as_deref(), Some("14"));

    // An empty body is still a body: the policy runs and counts zero bytes.
    let r = post(&url, Bytes::new(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen_header(&up, 2, "x-body-bytes").as_deref(), Some("0"));
    assert_eq!(up.hits(), 3);

    // The deny substring, anywhere in the body, is refused before the upstream.
    for body in [format!("{DENY} users;"), format!("select 1; {DENY} users")] {
        let r = post(&url, body, &[]).await;
        assert_eq!((r.status, r.body.as_str()), (403, "body refused\n"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    assert_eq!(up.hits(), 3, "a refused request reached the upstream");
    // Its log line, written through the `log` import of the body policy.
    assert!(
        gw.wait_stderr_count(|l| l.contains("refused a body of"), 2, WAIT),
        "{:#?}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_route_limit_gets_413_and_never_reaches_the_policy_or_upstream() {
    let (up, _bodies, _heads) = recording_upstream().await;
    // The policy would accept 1024 bytes (and answer its own 413 in plain text beyond):
    // the route's limit of 64 bytes applies first.
    let gw = start(&up, &format!("max_body_bytes = 64\n{}", body_check(1024)));
    let url = gw.url("main", "/");

    // Declared too long.
    let r = post(&url, vec![b'x'; 65], &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");

    // Chunked, so that only reading (buffering for the policy) finds it too long.
    let mut upload = ChunkedUpload::start(gw.addr("main"), "/").await;
    upload.send(&[b'x'; 40]).await;
    upload.send(&[b'y'; 25]).await;
    let (status, text) = upload.finish().await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    assert_eq!(up.hits(), 0);

    // At the limit, chunked or not, the body goes through.
    let r = post(&url, vec![b'x'; 64], &[]).await;
    assert_eq!(r.status, 200);
    let mut upload = ChunkedUpload::start(gw.addr("main"), "/").await;
    upload.send(&[b'x'; 40]).await;
    upload.send(&[b'y'; 24]).await;
    assert_eq!(upload.finish().await.0, 200);
    assert_eq!(up.hits(), 2);
    assert_eq!(seen_header(&up, 1, "x-body-bytes").as_deref(), Some("64"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_policy_refuses_a_long_body_from_its_head_or_once_buffered() {
    let (up, _bodies, _heads) = recording_upstream().await;
    let gw = start(&up, &format!("max_body_bytes = 4096\n{}", body_check(16)));

    // A declared length over the policy's limit: refused by `on-request`.
    let r = post(&gw.url("main", "/"), vec![b'x'; 17], &[]).await;
    assert_eq!((r.status, r.body.as_str()), (413, "body over 16 bytes\n"));

    // A chunked body declares nothing: refused by `on-request-body`.
    let mut upload = ChunkedUpload::start(gw.addr("main"), "/").await;
    upload.send(&[b'x'; 10]).await;
    upload.send(&[b'x'; 7]).await;
    let (status, text) = upload.finish().await;
    assert_eq!(status, 413, "{text}");
    assert!(text.ends_with("body over 16 bytes\n"), "{text}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_only_pipeline_streams_the_body_to_the_upstream() {
    let (up, bodies, mut heads) = recording_upstream().await;
    let gw = start(
        &up,
        "max_body_bytes = 4096\n[[routes.policies]]\nplugin = \"noop\"\n",
    );

    let mut upload = ChunkedUpload::start(gw.addr("main"), "/upload").await;
    upload.send(b"first part, ").await;
    // The upstream gets the request head while the client is still sending the body: the
    // gateway did not buffer it (a buffering gateway would wait for the last chunk).
    tokio::time::timeout(WAIT, heads.recv())
        .await
        .expect("the upstream did not see the request before its body ended: buffered?")
        .expect("upstream handler");
    upload.send(b"second part").await;
    let (status, text) = upload.finish().await;
    assert_eq!(status, 200, "{text}");

    assert_eq!(bodies.lock().unwrap()[0], "first part, second part");
    assert_eq!(
        seen_header(&up, 0, "transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(seen_header(&up, 0, "content-length"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_policy_forwards_a_chunked_upload_with_a_content_length() {
    let (up, bodies, _heads) = recording_upstream().await;
    let gw = start(
        &up,
        &format!(
            "max_body_bytes = 4096\n[[routes.policies]]\nplugin = \"noop\"\n{}",
            body_check(1024)
        ),
    );

    let mut upload = ChunkedUpload::start(gw.addr("main"), "/upload").await;
    upload.send(b"first part, ").await;
    upload.send(b"second part").await;
    let (status, text) = upload.finish().await;
    assert_eq!(status, 200, "{text}");

    assert_eq!(bodies.lock().unwrap()[0], "first part, second part");
    assert_eq!(seen_header(&up, 0, "transfer-encoding"), None);
    assert_eq!(seen_header(&up, 0, "content-length").as_deref(), Some("23"));
    assert_eq!(seen_header(&up, 0, "x-body-bytes").as_deref(), Some("23"));
}

/// Bodies read whole share one budget (`limits.max_buffered_body_bytes`): a request whose
/// body would take it past the total gets 503 `buffers_full` (and its connection closed),
/// and what a request held is given back when it is done.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_read_whole_share_the_gateways_buffer_budget() {
    let gw = Gateway::start(&config(
        "[limits]\nmax_buffered_body_bytes = 100000\nmax_body_bytes = 100000\nmin_body_rate = 0\n\n\
         [[routes]]\nname = \"echo\"\nrespond = \"echo\"\n",
    ));
    let addr = gw.addr("main");
    let post = |len: usize, sent: usize, close: bool| {
        let mut r = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        r.extend(std::iter::repeat_n(b'a', sent));
        r
    };
    // 60 000 bytes of a 70 000-byte body, held by the echo responder while it waits for
    // the rest.
    let hold = || async {
        let mut holder = TcpStream::connect(addr).await.unwrap();
        holder.write_all(&post(70_000, 60_000, true)).await.unwrap();
        holder
    };
    let mut holder = hold().await;
    // Another 60 000 bytes do not fit beside them, once the gateway has read the first. (On
    // a loaded machine it may read another request's body first: then that one fits, and
    // the holder, over the budget, is answered 503 and held again.)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = sluice_tests::raw(addr, &post(60_000, 60_000, true)).await;
        if reply.statuses() == [503] {
            assert!(reply.text.contains("buffers_full"), "{}", reply.text);
            assert!(reply.closed, "the connection stayed open after 503");
            break;
        }
        assert_eq!(reply.statuses(), [200], "{}", reply.text);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held body never filled the budget"
        );
        let mut answered = [0u8; 64];
        if !matches!(holder.try_read(&mut answered), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            holder = hold().await;
        }
    }
    // The rest of the held body: it is answered, and its share given back.
    holder.write_all(&[b'a'; 10_000]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, holder.read_to_end(&mut answer))
        .await
        .expect("the held request was never answered")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{:?}", &answer[..40]);
    let reply = sluice_tests::raw(addr, &post(60_000, 60_000, true)).await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text);
}
