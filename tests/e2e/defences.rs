//! Protocol defences (security battery rows 1, 2 and 11): HTTP/1.1 framing attacks over a raw
//! socket, `Upgrade: h2c`, hop-by-hop and X-Forwarded-* hygiene and request-head limits.
//! Slow clients (row 11) are in `slow_clients`.
//!
//! Every framing attack carries a second request (`GET /smuggled`) hidden where a parser that
//! disagreed with the gateway's reading would find it; the upstream must never see it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_tests::upstream::full;
use sluice_tests::{Gateway, RawReply, Upstream, get, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request the upstream must never see: hidden in every framing attack.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// How long any single socket read may wait before the test calls it a hang.
pub(super) const HANG: Duration = Duration::from_secs(5);

/// A gateway configuration: `gateway` goes into `[gateway]`, `rest` after the listener.
pub(super) fn cfg(gateway: &str, rest: &str) -> String {
    format!(
        "[gateway]\ndrain_timeout = \"5s\"\n{gateway}\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n{rest}"
    )
}

/// Like [`cfg`], with listener `main` accepting prior-knowledge h2c or not.
fn cfg_h2c(h2c: bool, rest: &str) -> String {
    format!(
        "[gateway]\ndrain_timeout = \"5s\"\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nh2c = {h2c}\n\n{rest}"
    )
}

/// Upstream `u` at `addr` with one catch-all route `r`, plus `extra` TOML (e.g. `[limits]`).
pub(super) fn proxy_to(addr: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}\n[upstreams.u]\ntargets = [{{ address = \"{addr}\" }}]\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n"
    )
}

/// A request the upstream received completely (or whose body failed).
#[derive(Debug, Clone)]
pub(super) struct Got {
    pub(super) uri: String,
    pub(super) body: Result<Vec<u8>, String>,
}

/// An upstream that reads every request body to the end before it answers (200 `ok`, or 400
/// when the body broke), and records what it read.
pub(super) async fn reading_upstream() -> (Upstream, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g = got.clone();
    let up = Upstream::with(move |req: Request<Incoming>| {
        let g = g.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .map_err(|e| e.to_string());
            let ok = body.is_ok();
            g.lock().unwrap().push(Got {
                uri: parts.uri.to_string(),
                body,
            });
            let mut r = Response::new(full(if ok { "ok" } else { "broken body" }));
            if !ok {
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
            }
            r
        }
    })
    .await;
    (up, got)
}

/// A gateway in front of a body-reading upstream, for the framing attacks.
struct Framing {
    gw: Gateway,
    up: Upstream,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Framing {
    async fn start() -> Self {
        let (up, got) = reading_upstream().await;
        let gw = Gateway::start(&cfg("", &proxy_to(up.addr, "")));
        Self { gw, up, got }
    }

    /// Sends `request` on a fresh connection and reads until the gateway closes it; fails
    /// the test if the gateway keeps it open (a hang, or a framing error left open), if the
    /// upstream saw more than one request from it, or saw a smuggled one.
    async fn send(&self, request: &str) -> RawReply {
        let before = self.up.hits();
        let reply = raw(self.gw.addr("main"), request.as_bytes()).await;
        assert!(
            reply.closed,
            "the gateway left the connection open after:\n{request:?}\nreply: {}",
            reply.text
        );
        assert!(
            self.up.hits() <= before + 1,
            "one client request became several upstream: {:?}",
            self.up.seen()
        );
        self.assert_never_smuggled();
        reply
    }

    /// The upstream never saw the hidden request, and every request it saw was framed in
    /// one unambiguous way.
    fn assert_never_smuggled(&self) {
        for s in self.up.seen() {
            assert!(
                !s.uri.contains("smuggled"),
                "smuggled request reached upstream: {s:?}"
            );
            let te = s.headers.get_all(http::header::TRANSFER_ENCODING);
            let te: Vec<_> = te.iter().collect();
            assert!(
                te.is_empty() || (te.len() == 1 && te[0] == "chunked"),
                "upstream got Transfer-Encoding {te:?}"
            );
            assert!(
                te.is_empty() || !s.headers.contains_key(http::header::CONTENT_LENGTH),
                "upstream got both Content-Length and Transfer-Encoding: {s:?}"
            );
        }
        for g in self.got.lock().unwrap().iter() {
            assert!(!g.uri.contains("smuggled"), "{g:?}");
        }
    }

    /// `request` is answered with exactly one `status`, the connection is closed, and
    /// nothing reached the upstream.
    async fn assert_refused(&self, request: &str, status: u16) {
        let reply = self.send(request).await;
        assert_eq!(
            reply.statuses(),
            vec![status],
            "for request {request:?}, reply:\n{}",
            reply.text
        );
        assert_eq!(self.up.hits(), 0, "the upstream saw {:?}", self.up.seen());
    }

    /// Requests the upstream read to the end, with their bodies.
    fn complete(&self) -> Vec<(String, Vec<u8>)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|g| Some((g.uri.clone(), g.body.clone().ok()?)))
            .collect()
    }
}

fn post(headers: &str, body: &str) -> String {
    format!("POST /a HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}")
}

/// The smuggled request as the data of one chunk, then the last chunk.
fn chunked_carrying_smuggled() -> String {
    format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len())
}

/// An empty chunked body followed by the smuggled request.
fn empty_chunked_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

// ---------------------------------------------------------------------------------------
// Row 1: HTTP/1.1 framing attacks.
// ---------------------------------------------------------------------------------------

/// Two identical Content-Length fields are one length (RFC 9112 §6.3 allows reading them
/// so); the upstream gets the body once, under a single Content-Length.
#[tokio::test(flavor = "multi_thread")]
async fn identical_duplicate_content_lengths_are_forwarded_as_one() {
    let f = Framing::start().await;
    let reply = f
        .send(&post(
            "Content-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n",
            "hello",
        ))
        .await;
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text);
    assert_eq!(f.complete(), vec![("/a".to_string(), b"hello".to_vec())]);
    let seen = f.up.seen();
    let lengths: Vec<_> = seen[0]
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    assert_eq!(lengths, ["5"], "{seen:?}");
}

/// CL.TE: Content-Length covers the smuggled request, chunked framing ends before it. hyper
/// follows RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped, and the
/// connection is closed after the response, so the trailing bytes are never parsed.
#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    let f = Framing::start().await;
    let body = empty_chunked_then_smuggled();
    let reply = f
        .send(&post(
            &format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            ),
            &body,
        ))
        .await;
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text);
    assert!(reply.text.contains("connection: close"), "{}", reply.text);
    assert_eq!(f.complete(), vec![("/a".to_string(), Vec::new())]);
}

/// TE.CL: a short Content-Length after Transfer-Encoding; the smuggled request is chunk data.
#[tokio::test(flavor = "multi_thread")]
async fn transfer_encoding_with_short_content_length_forwards_the_chunk_data_as_body() {
    let f = Framing::start().await;
    let reply = f
        .send(&post(
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            &chunked_carrying_smuggled(),
        ))
        .await;
    assert_eq!(reply.statuses(), vec![200], "{}", reply.text);
    assert_eq!(
        f.complete(),
        vec![("/a".to_string(), SMUGGLED.as_bytes().to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_conflicting_duplicate_content_length_with_400() {
    let f = Framing::start().await;
    let req = post(
        &format!(
            "Content-Length: 0\r\nContent-Length: {}\r\n",
            SMUGGLED.len()
        ),
        SMUGGLED,
    );
    f.assert_refused(&req, 400).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_content_length_with_a_plus_sign_with_400() {
    let f = Framing::start().await;
    f.assert_refused(
        &post("Content-Length: +5\r\n", &format!("abcde{SMUGGLED}")),
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_hexadecimal_content_length_with_400() {
    let f = Framing::start().await;
    let req = post(
        "Content-Length: 0x10\r\n",
        &format!("0123456789abcdef{SMUGGLED}"),
    );
    f.assert_refused(&req, 400).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_empty_content_length_with_400() {
    let f = Framing::start().await;
    f.assert_refused(&post("Content-Length: \r\n", SMUGGLED), 400)
        .await;
}

/// hyper reads `,chunked` as `chunked` (an empty list element); a parser that does not
/// would use Content-Length. The gateway refuses it (check_framing).
#[tokio::test(flavor = "multi_thread")]
async fn rejects_transfer_encoding_with_an_empty_list_element_with_501() {
    let f = Framing::start().await;
    let body = empty_chunked_then_smuggled();
    let req = post(
        &format!(
            "Transfer-Encoding: ,chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    f.assert_refused(&req, 501).await;
    let req = post(
        "Transfer-Encoding: ,chunked\r\n",
        &chunked_carrying_smuggled(),
    );
    f.assert_refused(&req, 501).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_transfer_encoding_not_ending_in_chunked_with_400() {
    let f = Framing::start().await;
    let req = post(
        "Transfer-Encoding: chunked, identity\r\n",
        &empty_chunked_then_smuggled(),
    );
    f.assert_refused(&req, 400).await;
    let req = post(
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        &empty_chunked_then_smuggled(),
    );
    f.assert_refused(&req, 400).await;
}

/// hyper reads `gzip, chunked` and `chunked, chunked` as one chunked body and would forward
/// the still-encoded data as if it were plain, and answer the bytes after the first chunked
/// terminator as a second request. The gateway refuses them (check_framing).
#[tokio::test(flavor = "multi_thread")]
async fn rejects_transfer_codings_other_than_a_single_chunked_with_501() {
    let f = Framing::start().await;
    for te in [
        "gzip, chunked",
        "chunked, chunked",
        "chunked\r\nTransfer-Encoding: chunked",
    ] {
        let req = post(
            &format!("Transfer-Encoding: {te}\r\n"),
            &empty_chunked_then_smuggled(),
        );
        f.assert_refused(&req, 501).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_http10_request_with_transfer_encoding_with_400() {
    let f = Framing::start().await;
    let req = format!(
        "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        empty_chunked_then_smuggled()
    );
    f.assert_refused(&req, 400).await;
}

/// A chunk size hyper cannot parse surfaces as an error of the request body while it is
/// streamed upstream. The gateway answers 400 (not 502: the upstream is not at fault), and
/// the upstream never receives a complete request.
async fn assert_bad_chunk_size_refused(chunk_size: &str) {
    let f = Framing::start().await;
    let req = post(
        "Transfer-Encoding: chunked\r\n",
        &format!("{chunk_size}\r\n{SMUGGLED}\r\n0\r\n\r\n"),
    );
    let reply = f.send(&req).await;
    assert_eq!(
        reply.statuses(),
        vec![400],
        "chunk size {chunk_size:?}: {}",
        reply.text
    );
    assert!(reply.text.contains("bad_request"), "{}", reply.text);
    assert!(f.up.hits() <= 1, "{:?}", f.up.seen());
    assert!(f.complete().is_empty(), "{:?}", f.got.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_chunk_size_with_an_underscore_with_400() {
    assert_bad_chunk_size_refused("0_2e").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_overflowing_chunk_size_with_400() {
    assert_bad_chunk_size_refused("1ffffffffffffffff").await;
}

/// Client-side body errors used to be reported as upstream failures (502), so a client could
/// get a healthy target ejected by passive health checking with a few malformed bodies.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_over_limit_bodies_do_not_eject_a_healthy_upstream() {
    // HTTP/2 to the upstream too: hyper's HTTP/2 client only resets the stream when the
    // body it forwards fails, so the failure must be known without the exchange's error.
    for protocol in ["http1", "h2"] {
        let (up, _got) = reading_upstream().await;
        let gw = Gateway::start(&cfg(
            "",
            &format!(
                "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\nprotocol = \"{protocol}\"\npassive = {{ consecutive_failures = 2, ejection_time = \"60s\" }}\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\nmax_body_bytes = 1000\n",
                up.addr
            ),
        ));
        let malformed = post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n");
        let chunk = "c".repeat(600);
        let too_large = post(
            "Transfer-Encoding: chunked\r\n",
            &format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"),
        );
        for (bad, status) in [(&malformed, 400), (&too_large, 413)] {
            for _ in 0..3 {
                let reply = raw(gw.addr("main"), bad.as_bytes()).await;
                assert_eq!(reply.statuses(), vec![status], "{protocol}: {}", reply.text);
            }
        }
        let r = get(&gw.url("main", "/after"), &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{protocol}");
    }
}

/// The host a request is routed by is the host it is forwarded with: a request whose host
/// is ambiguous (two `Host` lines, an invalid one, none in HTTP/1.1, userinfo in an
/// absolute-form target) is refused, not routed by one reading and forwarded with another.
#[tokio::test(flavor = "multi_thread")]
async fn rejects_ambiguous_hosts_with_400() {
    let f = Framing::start().await;
    for req in [
        "GET /a HTTP/1.1\r\nHost: x\r\nHost: admin.example.com\r\n\r\n",
        "GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x@admin.example.com\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x:80:80\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET http://x@admin.example.com/a HTTP/1.1\r\nHost: admin.example.com\r\n\r\n",
    ] {
        f.assert_refused(req, 400).await;
    }
    // HTTP/1.0 may leave the host out, and an empty one says "no authority".
    for (req, answer) in [
        ("GET /a HTTP/1.0\r\n\r\n", "HTTP/1.0 200 "),
        (
            "GET /a HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200 ",
        ),
    ] {
        let reply = f.send(req).await;
        assert!(reply.text.starts_with(answer), "{req:?}: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_bare_cr_in_a_header_value_with_400() {
    let f = Framing::start().await;
    let req = format!("GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n{SMUGGLED}");
    f.assert_refused(&req, 400).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_nul_in_a_header_value_with_400() {
    let f = Framing::start().await;
    let req = format!("GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n{SMUGGLED}");
    f.assert_refused(&req, 400).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_whitespace_before_the_header_colon_with_400() {
    let f = Framing::start().await;
    let body = empty_chunked_then_smuggled();
    let req = post(
        &format!(
            "Transfer-Encoding : chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    f.assert_refused(&req, 400).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_obs_fold_header_continuation_with_400() {
    let f = Framing::start().await;
    let body = empty_chunked_then_smuggled();
    let folded_te = post(
        &format!(
            "Transfer-Encoding: identity\r\n chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        &body,
    );
    f.assert_refused(&folded_te, 400).await;
    let folded_other = format!("GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n{SMUGGLED}");
    f.assert_refused(&folded_other, 400).await;
}

// ---------------------------------------------------------------------------------------
// Row 2: `Upgrade: h2c`; hop-by-hop headers; X-Forwarded-*.
// ---------------------------------------------------------------------------------------

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub(super) struct RawResponse {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: Vec<u8>,
}

/// A raw client connection that reads responses framed by Content-Length.
pub(super) struct RawConn {
    pub(super) s: TcpStream,
    pub(super) buf: Vec<u8>,
}

impl RawConn {
    pub(super) async fn open(addr: SocketAddr) -> Self {
        Self {
            s: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes into the buffer; false at end of stream. Cancel-safe.
    pub(super) async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response; panics if the connection ends first. Cancel-safe.
    pub(super) async fn response(&mut self) -> RawResponse {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    let status = head[9..12].parse().expect("status");
                    return RawResponse { status, head, body };
                }
            }
            assert!(
                self.fill().await,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads and discards until the peer closes; the time that took, or `None` if it did not
    /// close within `limit`.
    pub(super) async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        tokio::time::timeout(limit, async { while self.fill().await {} })
            .await
            .ok()
            .map(|_| start.elapsed())
    }
}

const H2C_UPGRADE: &str = "GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn h2c_upgrade_is_never_honoured_and_its_headers_never_reach_the_upstream() {
    // A plain listener, and one that accepts prior-knowledge h2c; the route allows
    // (WebSocket) upgrades.
    for h2c in [false, true] {
        let up = Upstream::named("up").await;
        let gw = Gateway::start(&format!(
            "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nh2c = {h2c}\n\n[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\nwebsocket = true\n",
            up.addr
        ));
        let mut c = RawConn::open(gw.addr("main")).await;
        c.send(H2C_UPGRADE.as_bytes()).await;
        let r = tokio::time::timeout(HANG, c.response())
            .await
            .expect("hang");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"up"[..]),
            "h2c = {h2c}: {}",
            r.head
        );
        // The connection still speaks HTTP/1.1.
        c.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let r = tokio::time::timeout(HANG, c.response())
            .await
            .expect("hang");
        assert_eq!(r.status, 200, "h2c = {h2c}: {}", r.head);
        let seen = up.seen();
        assert_eq!(seen.len(), 2, "h2c = {h2c}");
        for s in seen {
            for h in ["upgrade", "http2-settings", "connection"] {
                assert!(
                    !s.headers.contains_key(h),
                    "h2c = {h2c}: upstream saw {h}: {s:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&cfg("", &proxy_to(up.addr, "")));
    let r = get(
        &gw.url("main", "/a"),
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "s"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &up.seen()[0];
    for h in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(!seen.headers.contains_key(h), "upstream saw {h}: {seen:?}");
    }
    assert_eq!(seen.headers.get("x-kept").unwrap(), "yes");
}

#[tokio::test(flavor = "multi_thread")]
async fn te_trailers_is_forwarded() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&cfg("", &proxy_to(up.addr, "")));
    let r = get(&gw.url("main", "/a"), &[("te", "trailers")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.seen()[0].headers.get("te").unwrap(), "trailers");
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_response_headers_are_not_returned_to_the_client() {
    let up = Upstream::with(|_req| async {
        let mut r = Response::new(full("up"));
        let h = r.headers_mut();
        h.insert("connection", "x-up-secret".parse().unwrap());
        h.insert("x-up-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=99".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        r
    })
    .await;
    let gw = Gateway::start(&cfg("", &proxy_to(up.addr, "")));
    let mut c = RawConn::open(gw.addr("main")).await;
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("hang");
    assert_eq!(r.status, 200);
    let head = r.head.to_ascii_lowercase();
    for h in [
        "connection:",
        "x-up-secret:",
        "keep-alive:",
        "proxy-connection:",
        "upgrade:",
    ] {
        assert!(!head.contains(h), "client got {h}\n{head}");
    }
    assert!(head.contains("x-kept: yes"), "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced_by_the_real_peer() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&cfg("", &proxy_to(up.addr, "")));
    let r = get(
        &gw.url("main", "/a"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.7;proto=https"),
            ("x-real-ip", "203.0.113.7"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("true-client-ip", "203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &up.seen()[0].headers;
    for spoofable in [
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "true-client-ip",
    ] {
        assert!(!h.contains_key(spoofable), "{spoofable}: {h:?}");
    }
    assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    let host = gw.addr("main").to_string();
    assert_eq!(h.get("x-forwarded-host").unwrap(), host.as_str());
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert!(gw.wait_stdout(
        |l| l.contains("\"client\":\"127.0.0.1\""),
        Duration::from_secs(5)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_from_a_trusted_proxy_is_kept_and_the_peer_appended() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&cfg(
        "trusted_proxies = [\"127.0.0.0/8\"]",
        &proxy_to(up.addr, ""),
    ));
    let r = get(
        &gw.url("main", "/a"),
        &[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &up.seen()[0].headers;
    assert_eq!(
        h.get("x-forwarded-for").unwrap(),
        "203.0.113.7, 10.0.0.1, 127.0.0.1"
    );
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example");
    // The client is the right-most untrusted address.
    assert!(
        gw.wait_stdout(
            |l| l.contains("\"client\":\"10.0.0.1\""),
            Duration::from_secs(5)
        ),
        "{:?}",
        gw.stdout()
    );
}

// ---------------------------------------------------------------------------------------
// Request-head and body limits.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn request_head_over_max_header_bytes_gets_431_and_is_not_forwarded() {
    // On a plain listener and on one that also accepts prior-knowledge h2c.
    for h2c in [false, true] {
        let up = Upstream::named("up").await;
        let gw = Gateway::start(&cfg_h2c(
            h2c,
            &proxy_to(up.addr, "[limits]\nmax_header_bytes = 8192\n"),
        ));
        let mut req = "GET /a HTTP/1.1\r\nHost: x\r\n".to_string();
        for i in 0..10 {
            req.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(2000)));
        }
        req.push_str("\r\n");
        let reply = raw(gw.addr("main"), req.as_bytes()).await;
        assert!(reply.closed, "{}", reply.text);
        assert_eq!(reply.statuses(), vec![431], "{}", reply.text);
        assert_eq!(up.hits(), 0);
        // Just under the limit is fine.
        let r = get(&gw.url("main", "/a"), &[("x-pad", &"p".repeat(7000))]).await;
        assert_eq!(r.status, 200);
    }
}

/// A head that follows a body in the same read lands in a read buffer that has already
/// grown; bounded by `max_buf_size` alone, a 20 KB head then got through a 16 KiB limit.
#[tokio::test(flavor = "multi_thread")]
async fn request_head_over_max_header_bytes_is_refused_when_it_follows_a_body() {
    // On a plain listener and on one that also accepts prior-knowledge h2c.
    for h2c in [false, true] {
        let (up, _got) = reading_upstream().await;
        let gw = Gateway::start(&cfg_h2c(
            h2c,
            &proxy_to(up.addr, "[limits]\nmax_header_bytes = 16384\n"),
        ));
        let body = vec![b'b'; 10_000];
        let mut req = format!(
            "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(
            format!(
                "GET /a HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(20_000)
            )
            .as_bytes(),
        );
        let reply = raw(gw.addr("main"), &req).await;
        assert!(reply.closed, "{}", reply.text);
        assert_eq!(reply.statuses(), vec![200, 431], "{}", reply.text);
        let uris: Vec<_> = up.seen().into_iter().map(|s| s.uri).collect();
        assert_eq!(uris, vec!["/big"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_headers_than_max_headers_gets_431_and_is_not_forwarded() {
    // On a plain listener and on one that also accepts prior-knowledge h2c.
    for h2c in [false, true] {
        let up = Upstream::named("up").await;
        let gw = Gateway::start(&cfg_h2c(
            h2c,
            &proxy_to(up.addr, "[limits]\nmax_headers = 20\n"),
        ));
        let request = |n: usize| {
            let mut req = "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
            for i in 0..n - 2 {
                req.push_str(&format!("X-H{i}: v\r\n"));
            }
            req + "\r\n"
        };
        let reply = raw(gw.addr("main"), request(21).as_bytes()).await;
        assert!(reply.closed);
        assert_eq!(reply.statuses(), vec![431], "{}", reply.text);
        assert_eq!(up.hits(), 0);
        let reply = raw(gw.addr("main"), request(20).as_bytes()).await;
        assert_eq!(reply.statuses(), vec![200], "{}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overlong_request_line_is_refused_and_not_forwarded() {
    // On a plain listener and on one that also accepts prior-knowledge h2c.
    for h2c in [false, true] {
        let up = Upstream::named("up").await;
        let gw = Gateway::start(&cfg_h2c(
            h2c,
            &proxy_to(up.addr, "[limits]\nmax_header_bytes = 8192\n"),
        ));
        let req = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
        let reply = raw(gw.addr("main"), req.as_bytes()).await;
        assert!(reply.closed, "{}", reply.text);
        assert_eq!(reply.statuses(), vec![431], "{}", reply.text);
        assert_eq!(up.hits(), 0);
    }
}

/// A chunked body carries no Content-Length to check up front; going over the route's limit
/// mid-stream used to surface as a 502 blamed on the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_body_over_the_route_limit_gets_413() {
    let (up, got) = reading_upstream().await;
    let gw = Gateway::start(&cfg(
        "",
        &proxy_to(up.addr, "[limits]\nmax_body_bytes = 1000\n"),
    ));
    let chunk = "c".repeat(600);
    let req = post(
        "Transfer-Encoding: chunked\r\n",
        &format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"),
    );
    let mut c = RawConn::open(gw.addr("main")).await;
    c.send(req.as_bytes()).await;
    let r = tokio::time::timeout(HANG, c.response())
        .await
        .expect("hang");
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(
        String::from_utf8_lossy(&r.body).contains("body_too_large"),
        "{:?}",
        r.body
    );
    assert!(
        got.lock().unwrap().iter().all(|g| g.body.is_err()),
        "the upstream read a complete over-limit body"
    );
}
