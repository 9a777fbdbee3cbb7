//! HTTP/2 stream limits, over a raw socket so that the frames are exactly those written
//! here: the advertised and enforced `h2_max_concurrent_streams`, and the guard against
//! rapid-reset floods (CVE-2023-44487).

use std::time::Duration;

use http::Response;
use sluice_tests::upstream::full;
use sluice_tests::{Gateway, Upstream, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single socket read may wait before the test calls it a hang.
const HANG: Duration = Duration::from_secs(5);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An h2c gateway proxying everything to `up`, with `limits` in `[limits]`.
fn gateway(up: &Upstream, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "[gateway]\ndrain_timeout = \"5s\"\n\n[limits]\n{limits}\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n",
        up.addr
    ))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` on `stream` with no body: `:method GET`, `:scheme http`, `:path /` from HPACK's
/// static table, and a literal `:authority: x`.
fn get(stream: u32) -> Vec<u8> {
    frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b'x'],
    )
}

/// One frame read from the server: (type, flags, stream, payload).
struct Frame(u8, u8, u32, Vec<u8>);

/// A client speaking HTTP/2 frames by hand.
struct RawH2 {
    tcp: TcpStream,
}

impl RawH2 {
    /// Connects, sends the preface and empty settings, and acknowledges the server's.
    /// Returns the client and the server's settings as (identifier, value) pairs.
    async fn connect(gw: &Gateway) -> (Self, Vec<(u16, u32)>) {
        let tcp = TcpStream::connect(gw.addr("main")).await.expect("connect");
        let mut c = Self { tcp };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        c.send(&hello).await;
        let settings = loop {
            let f = c
                .next()
                .await
                .expect("the server closed before its SETTINGS");
            if f.0 == SETTINGS && f.1 & ACK == 0 {
                break f.3;
            }
        };
        c.send(&frame(SETTINGS, ACK, 0, &[])).await;
        let settings = settings
            .chunks(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect();
        (c, settings)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` once the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        within(HANG, self.tcp.read_exact(&mut head)).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        within(HANG, self.tcp.read_exact(&mut payload)).await.ok()?;
        Some(Frame(head[3], head[4], stream, payload))
    }

    /// Reads frames until `stop` returns true for one (returned) or the connection closes.
    async fn until(&mut self, stop: impl Fn(&Frame) -> bool) -> Option<Frame> {
        while let Some(f) = self.next().await {
            if stop(&f) {
                return Some(f);
            }
        }
        None
    }
}

fn error_code(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_max_concurrent_streams_is_advertised_and_a_stream_beyond_it_is_refused() {
    // The upstream holds every request, so the first two streams stay open.
    let held = Upstream::with(|_req| async {
        std::future::pending::<()>().await;
        Response::new(full("never"))
    })
    .await;
    let gw = gateway(&held, "h2_max_concurrent_streams = 2");
    let (mut c, settings) = RawH2::connect(&gw).await;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 2)),
        "{settings:?}"
    );
    let mut burst = get(1);
    burst.extend(get(3));
    burst.extend(get(5));
    c.send(&burst).await;
    let refused = c
        .until(|f| f.0 == RST_STREAM || f.0 == GOAWAY)
        .await
        .expect("the connection closed without refusing the third stream");
    assert_eq!((refused.0, refused.2), (RST_STREAM, 5));
    assert_eq!(error_code(&refused.3, 0), REFUSED_STREAM);
}

/// `n` streams opened and at once cancelled (stream ids 1, 3, …), in one buffer.
fn opened_and_cancelled(n: u32) -> Vec<u8> {
    let mut flood = Vec::new();
    for i in 0..n {
        let stream = 2 * i + 1;
        flood.extend(get(stream));
        flood.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    flood
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_rapid_reset_flood_is_answered_with_goaway_enhance_your_calm() {
    let up = Upstream::named("ok").await;
    let gw = gateway(&up, "");
    // 30 cancelled streams stay under the gateway's guard (32 pending resets; h2's own
    // default is 20): the connection goes on serving.
    let (mut c, _) = RawH2::connect(&gw).await;
    let mut some = opened_and_cancelled(30);
    some.extend(get(61));
    c.send(&some).await;
    let answer = c
        .until(|f| (f.0 == DATA && f.2 == 61) || f.0 == GOAWAY)
        .await
        .expect("the connection closed");
    assert_eq!((answer.0, answer.3.as_slice()), (DATA, &b"ok"[..]));
    // A flood of 500 gets a GOAWAY.
    let (mut c, _) = RawH2::connect(&gw).await;
    c.send(&opened_and_cancelled(500)).await;
    let goaway = c
        .until(|f| f.0 == GOAWAY)
        .await
        .expect("the connection closed without a GOAWAY");
    // GOAWAY payload: last stream id (4 bytes), then the error code.
    assert_eq!(error_code(&goaway.3, 4), ENHANCE_YOUR_CALM);
    // The flood did not take the gateway down: a new connection is served.
    let (mut c, _) = RawH2::connect(&gw).await;
    c.send(&get(1)).await;
    let data = c
        .until(|f| f.0 == DATA && f.2 == 1)
        .await
        .expect("no response on a fresh connection");
    assert_eq!(data.3, b"ok");
}
