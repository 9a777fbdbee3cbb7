//! Protocols: TLS listeners (SNI, ALPN, versions, mTLS), cleartext h2c, HTTP/2 and TLS
//! upstreams, trailers, WebSocket pass-through, and streaming without buffering.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ProtocolVersion;
use rustls::pki_types::CertificateDer;
use sluice_tests::tls::{self, ALL_VERSIONS, Ca, Leaf, TlsUpstream, Trust};
use sluice_tests::upstream::{Body, full};
use sluice_tests::{Gateway, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bound on any single network wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

const ECHO_ROUTE: &str = "[[routes]]\nname = \"echo\"\nrespond = \"echo\"\n";

/// A response read fully, with its trailers.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request over `io` with HTTP/2 (prior knowledge / ALPN already done) or HTTP/1.1
/// and reads the whole response.
async fn exchange<IO>(io: IO, h2: bool, req: Request<Body>) -> Result<Got, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let fut = async move {
        let resp = if h2 {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        };
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        Ok(Got {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            trailers: collected.trailers().cloned(),
            body: collected.to_bytes(),
        })
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("exchange timed out")
}

/// `GET path` for host `host`: absolute-form for HTTP/2 (`:authority`), origin-form plus
/// `Host` for HTTP/1.1.
fn get_req(h2: bool, scheme: &str, host: &str, path: &str) -> Request<Body> {
    let b = if h2 {
        Request::get(format!("{scheme}://{host}{path}"))
    } else {
        Request::get(path).header(header::HOST, host)
    };
    b.body(full("")).unwrap()
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// A gateway configuration with one TLS listener named `tls`.
fn tls_config(certs: &[&(PathBuf, PathBuf)], tls_extra: &str, rest: &str) -> String {
    let list = certs
        .iter()
        .map(|(c, k)| format!("{{ cert = '{}', key = '{}' }}", path_str(c), path_str(k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[gateway]\ndrain_timeout = \"5s\"\n\n[[listeners]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n\n[listeners.tls]\ncertificates = [{list}]\n{tls_extra}\n\n{rest}"
    )
}

/// A CA, two server certificates (`a.test`, `b.test`) written to a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    a: Leaf,
    b: Leaf,
    a_files: (PathBuf, PathBuf),
    b_files: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Sluice Test CA");
        let a = ca.leaf(&["a.test"]);
        let b = ca.leaf(&["b.test"]);
        let a_files = a.write(dir.path(), "a");
        let b_files = b.write(dir.path(), "b");
        Self {
            dir,
            ca,
            a,
            b,
            a_files,
            b_files,
        }
    }
}

/// A connection that never starts its TLS handshake does not hold up a drain: the gateway
/// exits long before the handshake's deadline (the head timeout) or the drain timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_silent_before_its_tls_handshake_does_not_delay_the_drain() {
    let pki = Pki::new();
    let toml = tls_config(
        &[&pki.a_files],
        "",
        "[limits]\nheader_read_timeout = \"30s\"\n\n[[routes]]\nname = \"e\"\nrespond = \"echo\"\n",
    )
    .replace("drain_timeout = \"5s\"", "drain_timeout = \"30s\"");
    let gw = Gateway::start(&toml);
    crate::lifecycle::assert_a_silent_connection_does_not_delay_the_drain(gw, "tls").await;
}

/// The certificate a TLS listener presents for `sni` (`None`: no SNI extension at all).
async fn presented_cert(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let mut cfg = (*tls::client_config(Trust::Anything, ALL_VERSIONS, None, &[])).clone();
    cfg.enable_sni = sni.is_some();
    let s = tls::connect(addr, Arc::new(cfg), sni.unwrap_or("b.test"))
        .await
        .expect("handshake");
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_picks_the_certificate_by_sni_and_defaults_to_the_first() {
    let pki = Pki::new();
    let gw = Gateway::start(&tls_config(&[&pki.a_files, &pki.b_files], "", ECHO_ROUTE));
    let addr = gw.addr("tls");

    // Verified against the CA for the name asked for: the right chain is served.
    for (name, leaf) in [("a.test", &pki.a), ("b.test", &pki.b)] {
        let cfg = tls::client_config(Trust::Ca(&pki.ca), ALL_VERSIONS, None, &[]);
        let s = tls::connect(addr, cfg, name)
            .await
            .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
        let served = &s.get_ref().1.peer_certificates().unwrap()[0];
        assert_eq!(served, &leaf.cert, "certificate served for SNI {name}");
    }
    assert_eq!(
        presented_cert(addr, Some("unknown.test")).await,
        pki.a.cert,
        "an unknown SNI name gets the first certificate"
    );
    assert_eq!(
        presented_cert(addr, None).await,
        pki.a.cert,
        "a client sending no SNI gets the first certificate"
    );
}

/// One echo request over TLS; returns the negotiated ALPN, TLS version and the echo.
async fn tls_echo(
    addr: SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
    ca: &Ca,
) -> (Option<Vec<u8>>, ProtocolVersion, Got) {
    let cfg = tls::client_config(Trust::Ca(ca), versions, None, alpn);
    let s = tls::connect(addr, cfg, "a.test").await.expect("handshake");
    let conn = s.get_ref().1;
    let negotiated = conn.alpn_protocol().map(<[u8]>::to_vec);
    let version = conn.protocol_version().expect("TLS version");
    let h2 = negotiated.as_deref() == Some(b"h2");
    let got = exchange(s, h2, get_req(h2, "https", "a.test", "/echo"))
        .await
        .expect("request over TLS");
    (negotiated, version, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn_gives_http2_to_h2_clients_and_http11_to_the_others() {
    let pki = Pki::new();
    let gw = Gateway::start(&tls_config(&[&pki.a_files], "", ECHO_ROUTE));
    let addr = gw.addr("tls");

    let (alpn, _, got) = tls_echo(addr, ALL_VERSIONS, &[b"h2", b"http/1.1"], &pki.ca).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(got.status, 200);
    assert_eq!(got.version, Version::HTTP_2);
    assert_eq!(got.json()["version"], "HTTP/2");
    assert_eq!(got.json()["scheme"], "https");

    let (alpn, _, got) = tls_echo(addr, ALL_VERSIONS, &[b"http/1.1"], &pki.ca).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["version"], "HTTP/1.1");

    let (alpn, _, got) = tls_echo(addr, ALL_VERSIONS, &[], &pki.ca).await;
    assert_eq!(alpn, None, "no ALPN offered, none negotiated");
    assert_eq!(got.json()["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_accepts_tls12_and_tls13_clients() {
    let pki = Pki::new();
    let gw = Gateway::start(&tls_config(&[&pki.a_files], "", ECHO_ROUTE));
    let addr = gw.addr("tls");
    for (v, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let (_, version, got) = tls_echo(addr, &[v], &[b"h2"], &pki.ca).await;
        assert_eq!(version, expected);
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["version"], "HTTP/2");
    }
}

/// A minimal, well-formed ClientHello record with `legacy_version` and no
/// `supported_versions` extension, i.e. a client that speaks at most that version. It offers
/// ECDHE suites for both TLS 1.2 (GCM) and TLS 1.0/1.1 (CBC-SHA).
fn client_hello(legacy_version: [u8; 2], sni: &str) -> Vec<u8> {
    fn len16(n: usize) -> [u8; 2] {
        u16::try_from(n).unwrap().to_be_bytes()
    }
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend(len16(data.len()));
        out.extend(data);
    }
    let mut exts = Vec::new();
    let mut entry = vec![0u8];
    entry.extend(len16(sni.len()));
    entry.extend(sni.as_bytes());
    let mut names = len16(entry.len()).to_vec();
    names.extend(entry);
    ext(&mut exts, 0x0000, &names); // server_name
    ext(&mut exts, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    ext(
        &mut exts,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ); // signature algorithms

    let mut hello = legacy_version.to_vec();
    hello.extend([0x5a; 32]); // random
    hello.push(0); // no session id
    // ECDHE-ECDSA/RSA-AES128-GCM-SHA256 (TLS 1.2), ECDHE-ECDSA/RSA-AES128-SHA (TLS 1.0+).
    hello.extend([0, 8, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x09, 0xc0, 0x13]);
    hello.extend([1, 0]); // compression: null
    hello.extend(len16(exts.len()));
    hello.extend(exts);

    let mut handshake = vec![1, 0]; // client_hello, 24-bit length
    handshake.extend(len16(hello.len()));
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 record version
    record.extend(len16(handshake.len()));
    record.extend(handshake);
    record
}

/// Sends a raw ClientHello and returns the first 11 bytes the server answers with (fewer if
/// it closes first).
async fn first_server_bytes(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(hello).await.expect("write hello");
    let mut out = Vec::new();
    let mut buf = [0u8; 11];
    tokio::time::timeout(WAIT, async {
        while out.len() < buf.len() {
            match s.read(&mut buf[out.len()..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[out.len()..out.len() + n]),
            }
        }
    })
    .await
    .expect("server answer timed out");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_refuses_a_tls11_client_with_a_protocol_version_alert() {
    let pki = Pki::new();
    let gw = Gateway::start(&tls_config(&[&pki.a_files], "", ECHO_ROUTE));
    let addr = gw.addr("tls");

    // Control: the same hello claiming TLS 1.2 gets a TLS 1.2 ServerHello.
    let reply = first_server_bytes(addr, &client_hello([3, 3], "a.test")).await;
    assert!(reply.len() >= 11, "short reply {reply:?}");
    assert_eq!(reply[0], 0x16, "handshake record expected: {reply:?}");
    assert_eq!(reply[5], 0x02, "ServerHello expected: {reply:?}");
    assert_eq!(&reply[9..11], &[3, 3], "TLS 1.2 expected: {reply:?}");

    // TLS 1.1: a fatal protocol_version alert.
    let reply = first_server_bytes(addr, &client_hello([3, 2], "a.test")).await;
    assert!(reply.len() >= 7, "short reply {reply:?}");
    assert_eq!(reply[0], 0x15, "alert record expected: {reply:?}");
    assert_eq!(
        &reply[5..7],
        &[2, 70],
        "fatal protocol_version expected: {reply:?}"
    );
}

/// A TLS listener with client-certificate verification against a fresh client CA.
struct Mtls {
    pki: Pki,
    client_ca: Ca,
    gw: Gateway,
}

impl Mtls {
    fn start() -> Self {
        let pki = Pki::new();
        let client_ca = Ca::new("Sluice Test Client CA");
        let ca_path = client_ca.write(pki.dir.path(), "client-ca");
        let gw = Gateway::start(&tls_config(
            &[&pki.a_files],
            &format!("client_ca = '{}'", path_str(&ca_path)),
            ECHO_ROUTE,
        ));
        Self { pki, client_ca, gw }
    }

    /// Handshakes with `identity` and sends one request.
    async fn request(&self, identity: Option<&Leaf>) -> Got {
        let cfg = tls::client_config(Trust::Ca(&self.pki.ca), ALL_VERSIONS, identity, &[]);
        let s = tls::connect(self.gw.addr("tls"), cfg, "a.test")
            .await
            .expect("handshake");
        exchange(s, false, get_req(false, "https", "a.test", "/echo"))
            .await
            .expect("request over mTLS")
    }

    /// Handshakes (TLS 1.3) with `identity`, sends nothing, and returns the TLS error that
    /// ends the connection. In TLS 1.3 the client finishes its side of the handshake before
    /// the server has checked the client certificate, so the server's verdict arrives as an
    /// alert on the first read.
    async fn rejection(&self, identity: Option<&Leaf>) -> rustls::Error {
        let cfg = tls::client_config(
            Trust::Ca(&self.pki.ca),
            &[&rustls::version::TLS13],
            identity,
            &[],
        );
        let e = match tls::connect(self.gw.addr("tls"), cfg, "a.test").await {
            Err(e) => e,
            Ok(mut s) => {
                let mut buf = Vec::new();
                match tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await {
                    Err(_) => panic!("the server kept the connection open"),
                    Ok(Ok(_)) => panic!("the server closed without an alert: {buf:?}"),
                    Ok(Err(e)) => e,
                }
            }
        };
        tls::rustls_error(&e)
            .unwrap_or_else(|| panic!("not a TLS error: {e}"))
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_admits_a_client_certificate_issued_by_client_ca() {
    let m = Mtls::start();
    let client = m.client_ca.leaf(&["client.test"]);
    let got = m.request(Some(&client)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["scheme"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_rejects_a_client_without_certificate_in_the_handshake() {
    let m = Mtls::start();
    assert_eq!(
        m.rejection(None).await,
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_rejects_a_client_certificate_from_another_ca_in_the_handshake() {
    let m = Mtls::start();
    let stranger = Ca::new("Somebody Else's CA").leaf(&["client.test"]);
    assert_eq!(
        m.rejection(Some(&stranger)).await,
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_mtls_admits_anonymous_clients_but_still_rejects_untrusted_certificates() {
    let pki = Pki::new();
    let client_ca = Ca::new("Sluice Test Client CA");
    let ca_path = client_ca.write(pki.dir.path(), "client-ca");
    let gw = Gateway::start(&tls_config(
        &[&pki.a_files],
        &format!(
            "client_ca = '{}'\nclient_cert_required = false",
            path_str(&ca_path)
        ),
        ECHO_ROUTE,
    ));
    let m = Mtls { pki, client_ca, gw };
    assert_eq!(m.request(None).await.status, 200);
    let trusted = m.client_ca.leaf(&["client.test"]);
    assert_eq!(m.request(Some(&trusted)).await.status, 200);
    let stranger = Ca::new("Somebody Else's CA").leaf(&["client.test"]);
    assert_eq!(
        m.rejection(Some(&stranger)).await,
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
    );
}

/// Two cleartext listeners with an echo route: `plain` (default settings) and `h2c`
/// (`h2c = true`).
const H2C_CONFIG: &str = "[gateway]\ndrain_timeout = \"5s\"\n\n[[listeners]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"h2c\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n[[routes]]\nname = \"echo\"\nrespond = \"echo\"\n";

async fn plain(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_listener_serves_prior_knowledge_http2_and_http11() {
    let gw = Gateway::start(H2C_CONFIG);
    let addr = gw.addr("h2c");
    let got = exchange(plain(addr).await, true, get_req(true, "http", "x", "/echo"))
        .await
        .expect("h2c request");
    assert_eq!(got.status, 200);
    assert_eq!(got.version, Version::HTTP_2);
    assert_eq!(got.json()["version"], "HTTP/2");
    let got = exchange(
        plain(addr).await,
        false,
        get_req(false, "http", "x", "/echo"),
    )
    .await
    .expect("HTTP/1.1 request");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn cleartext_listener_without_h2c_refuses_prior_knowledge_http2_but_serves_http11() {
    let gw = Gateway::start(H2C_CONFIG);
    let addr = gw.addr("plain");
    let r = exchange(plain(addr).await, true, get_req(true, "http", "x", "/echo")).await;
    assert!(r.is_err(), "HTTP/2 without h2c must fail, got {r:?}");
    let got = exchange(
        plain(addr).await,
        false,
        get_req(false, "http", "x", "/echo"),
    )
    .await
    .expect("HTTP/1.1 request");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["version"], "HTTP/1.1");
    // Control: the same HTTP/2 client succeeds on the sibling listener that enables h2c.
    let got = exchange(
        plain(gw.addr("h2c")).await,
        true,
        get_req(true, "http", "x", "/echo"),
    )
    .await
    .expect("h2c request");
    assert_eq!(got.json()["version"], "HTTP/2");
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_to_h2c_is_never_honoured_even_on_an_h2c_listener() {
    let gw = Gateway::start(H2C_CONFIG);
    for listener in ["plain", "h2c"] {
        let reply = sluice_tests::raw(
            gw.addr(listener),
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        )
        .await;
        assert!(reply.closed, "{listener}: {}", reply.text);
        assert_eq!(reply.statuses(), vec![200], "{listener}: {}", reply.text);
        assert!(
            reply.text.contains("\"version\":\"HTTP/1.1\""),
            "{listener}: {}",
            reply.text
        );
    }
}

/// The default cleartext listener `main` and one upstream `u` at `addr` with `upstream_extra`
/// settings, routed from everything.
fn proxy_config(addr: impl std::fmt::Display, upstream_extra: &str, route_extra: &str) -> String {
    crate::config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{addr}\" }}]\n{upstream_extra}\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n{route_extra}\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_upstream_receives_http2_from_an_http11_client() {
    let up = Upstream::with(|req: Request<Incoming>| async move {
        Response::new(full(format!("{:?}", req.version())))
    })
    .await;
    let gw = Gateway::start(&proxy_config(up.addr, "protocol = \"h2\"", ""));
    let r = sluice_tests::get(&gw.url("main", "/x"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "HTTP/2.0"));
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].uri, format!("http://{}/x", up.addr));
}

/// An HTTP/2 client's cookies, one field each, reach an HTTP/1.1 upstream as one `Cookie`
/// field (RFC 9113 §8.2.3).
#[tokio::test(flavor = "multi_thread")]
async fn http2_cookie_fields_reach_an_http11_upstream_as_one() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&format!(
        "{}\n[[listeners]]\nname = \"h2c\"\nbind = \"127.0.0.1:0\"\nh2c = true\n",
        proxy_config(up.addr, "", "")
    ));
    let req = Request::get(format!("http://{}/c", gw.addr("h2c")))
        .header(header::COOKIE, "a=1")
        .header(header::COOKIE, "b=2")
        .body(full(""))
        .unwrap();
    let got = exchange(plain(gw.addr("h2c")).await, true, req)
        .await
        .expect("h2c request");
    assert_eq!(got.status, 200);
    let seen = up.seen();
    let cookies: Vec<_> = seen[0].headers.get_all(header::COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

/// An h2c upstream echoing the request body, then (declared) trailers `grpc-status: 0` and
/// `grpc-message: all-good`, behind a gateway with an h2c listener `h2c` and `main`.
async fn grpc_upstream_and_gateway() -> (Upstream, Gateway) {
    let up = Upstream::with(|req: Request<Incoming>| async move {
        let body = req
            .into_body()
            .collect()
            .await
            .expect("request body")
            .to_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "all-good".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        // Declared so that an HTTP/1.1 hop may send them (chunked encoding needs that).
        h.insert(
            header::TRAILER,
            "grpc-status, grpc-message".parse().unwrap(),
        );
        resp
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}\n[[listeners]]\nname = \"h2c\"\nbind = \"127.0.0.1:0\"\nh2c = true\n",
        proxy_config(up.addr, "protocol = \"h2\"", "")
    ));
    (up, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_style_trailers_and_te_trailers_pass_through_over_http2() {
    let (up, gw) = grpc_upstream_and_gateway().await;
    let req = Request::post(format!("http://{}/pkg.Svc/Call", gw.addr("h2c")))
        .header(header::TE, "trailers")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(full("\0\0\0\0\x05hello"))
        .unwrap();
    let got = exchange(plain(gw.addr("h2c")).await, true, req)
        .await
        .expect("h2c request");
    assert_eq!(got.status, 200);
    assert_eq!(got.version, Version::HTTP_2);
    assert_eq!(got.headers["content-type"], "application/grpc");
    assert_eq!(&got.body[..], b"\0\0\0\0\x05hello");
    let trailers = got.trailers.expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all-good");
    let seen = up.seen();
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(
        seen[0].headers.get("te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_trailers_reach_an_http11_client_that_accepts_them() {
    let (up, gw) = grpc_upstream_and_gateway().await;
    let req = Request::post("/pkg.Svc/Call")
        .header(header::HOST, "grpc.test")
        .header(header::TE, "trailers")
        .body(full("ping"))
        .unwrap();
    let got = exchange(plain(gw.addr("main")).await, false, req)
        .await
        .expect("HTTP/1.1 request");
    assert_eq!(got.status, 200);
    assert_eq!(got.version, Version::HTTP_11);
    assert_eq!(&got.body[..], b"ping");
    assert_eq!(got.headers["transfer-encoding"], "chunked");
    let trailers = got.trailers.expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all-good");
    assert_eq!(up.seen()[0].headers["te"], "trailers");
}

/// A TLS upstream whose certificate is valid only for `backend.internal`, signed by a CA
/// written to a temp dir; returns (upstream, CA path, temp dir).
async fn tls_upstream(alpn: &[&[u8]]) -> (TlsUpstream, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Sluice Upstream CA");
    let ca_path = ca.write(dir.path(), "upstream-ca");
    let leaf = ca.leaf(&["backend.internal"]);
    let up = TlsUpstream::start(tls::server_config(&leaf, alpn)).await;
    (up, ca_path, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_with_custom_ca_and_sni_override_is_reached() {
    let (up, ca_path, _dir) = tls_upstream(&[b"http/1.1"]).await;
    let gw = Gateway::start(&proxy_config(
        up.addr,
        &format!(
            "[upstreams.u.tls]\nca = '{}'\nsni = \"backend.internal\"",
            path_str(&ca_path)
        ),
        "",
    ));
    let r = sluice_tests::get(&gw.url("main", "/x"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "tls upstream"));
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("backend.internal"));
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen[0].version, Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_without_sni_override_fails_with_502_when_the_certificate_does_not_cover_the_address()
 {
    let (up, ca_path, _dir) = tls_upstream(&[b"http/1.1"]).await;
    let gw = Gateway::start(&proxy_config(
        up.addr,
        &format!("[upstreams.u.tls]\nca = '{}'", path_str(&ca_path)),
        "",
    ));
    let r = sluice_tests::get(&gw.url("main", "/x"), &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_connect_failed");
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_speaks_http2_when_alpn_negotiates_h2() {
    let (up, ca_path, _dir) = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let gw = Gateway::start(&proxy_config(
        up.addr,
        &format!(
            "protocol = \"h2\"\n[upstreams.u.tls]\nca = '{}'\nsni = \"backend.internal\"",
            path_str(&ca_path)
        ),
        "",
    ));
    let r = sluice_tests::get(&gw.url("main", "/x"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "tls upstream"));
    let seen = up.seen();
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen[0].version, Version::HTTP_2);
}

/// An upstream that performs WebSocket handshakes and echoes every data message; requests
/// without `Upgrade: websocket` get 426.
async fn websocket_echo_upstream() -> Upstream {
    Upstream::with(|mut req: Request<Incoming>| async move {
        let wants = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let (true, Some(key)) = (wants, key) else {
            let mut r = Response::new(full("websocket upgrade required"));
            *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
            return r;
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(io) = on_upgrade.await else { return };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "upgrade".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()).parse().unwrap(),
        );
        r
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_route_tunnels_messages_to_the_upstream_and_back() {
    // On a plain listener and on one that also accepts prior-knowledge h2c (whose HTTP/1.1
    // connections start with the bytes read to look for the preface).
    for h2c in [false, true] {
        let up = websocket_echo_upstream().await;
        let cfg = proxy_config(up.addr, "", "websocket = true").replace(
            "bind = \"127.0.0.1:0\"\n",
            &format!("bind = \"127.0.0.1:0\"\nh2c = {h2c}\n"),
        );
        assert!(cfg.contains(&format!("h2c = {h2c}")), "{cfg}");
        let gw = Gateway::start(&cfg);
        let (mut ws, resp) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr("main"))),
        )
        .await
        .expect("websocket connect timed out")
        .expect("websocket handshake through the gateway");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        for msg in [
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text("again"),
        ] {
            ws.send(msg.clone()).await.expect("send");
            let back = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("echo timed out")
                .expect("stream ended")
                .expect("receive");
            assert_eq!(back, msg, "h2c = {h2c}");
        }
        ws.close(None).await.expect("close");
        let seen = up.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers["upgrade"], "websocket");
    }
}

/// A WebSocket tunnel outlives its HTTP exchange but stays a counted connection: it holds
/// its `max_connections` slot while open, and it is closed after `idle_timeout` of silence,
/// which frees the slot for the connection waiting behind it.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_tunnel_holds_its_connection_slot_and_closes_when_idle() {
    let up = websocket_echo_upstream().await;
    let gw = Gateway::start(&crate::config(&format!(
        "[limits]\nmax_connections = 1\nidle_timeout = \"2s\"\n\n\
         [upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n\
         [[routes]]\nname = \"r\"\nupstream = \"u\"\nwebsocket = true\n",
        up.addr
    )));
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr("main"))),
    )
    .await
    .expect("websocket connect timed out")
    .expect("websocket handshake through the gateway");
    // The tunnel's last activity (the echo coming back) is after this instant.
    let quiet = Instant::now();
    ws.send(Message::text("hi")).await.expect("send");
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out");
    assert_eq!(
        back.expect("stream ended").expect("receive"),
        Message::text("hi")
    );

    let mut waiting = crate::defences::RawConn::open(gw.addr("main")).await;
    waiting
        .send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.response()).await;
    assert!(early.is_err(), "served while the tunnel held the only slot");

    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("an idle tunnel was never closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(1500),
        "closed after {:?} of silence",
        quiet.elapsed()
    );
    let r = tokio::time::timeout(WAIT, waiting.response())
        .await
        .expect("the waiting connection was never served");
    assert_eq!(
        r.status, 426,
        "the echo upstream wants an upgrade: {}",
        r.head
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_pass_through_works_on_a_tls_listener() {
    let up = websocket_echo_upstream().await;
    let pki = Pki::new();
    let gw = Gateway::start(&tls_config(
        &[&pki.a_files],
        "",
        &format!(
            "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"ws\"\nupstream = \"u\"\nwebsocket = true\n",
            up.addr
        ),
    ));
    // A WebSocket client offers only http/1.1: the upgrade is an HTTP/1.1 mechanism.
    let cfg = tls::client_config(Trust::Ca(&pki.ca), ALL_VERSIONS, None, &[b"http/1.1"]);
    let stream = tls::connect(gw.addr("tls"), cfg, "a.test")
        .await
        .expect("handshake");
    let (mut ws, resp) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async("wss://a.test/ws", stream),
    )
    .await
    .expect("websocket connect timed out")
    .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("over tls")).await.expect("send");
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo timed out")
        .expect("stream ended")
        .expect("receive");
    assert_eq!(back, Message::text("over tls"));
    assert_eq!(up.seen()[0].headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_without_websocket_does_not_upgrade_and_hides_the_upgrade_header() {
    let up = websocket_echo_upstream().await;
    let gw = Gateway::start(&proxy_config(up.addr, "", ""));
    let r = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr("main"))),
    )
    .await
    .expect("websocket connect timed out");
    match r {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED)
        }
        Err(e) => panic!("expected the upstream's 426, got {e}"),
        Ok((_, resp)) => panic!("upgrade performed: {}", resp.status()),
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.get("upgrade").is_none(),
        "{:?}",
        seen[0].headers
    );
    assert!(
        seen[0].headers.get("connection").is_none(),
        "{:?}",
        seen[0].headers
    );
}

/// Reads body frames until the data read so far satisfies `done`; panics on timeout/error.
async fn read_until(body: &mut Incoming, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    while !done(got) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no more data within {WAIT:?}; got {:?}",
                    String::from_utf8_lossy(got)
                )
            });
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    got.extend_from_slice(d);
                }
            }
            Some(Err(e)) => panic!("body error: {e}"),
            None => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_reach_the_client_as_they_are_produced() {
    let release = Arc::new(Notify::new());
    let r = release.clone();
    let up = Upstream::with(move |_req: Request<Incoming>| {
        let release = r.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: first\n\n"))))
                    .await;
                release.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: second\n\n"))))
                    .await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
            resp
        }
    })
    .await;
    let gw = Gateway::start(&proxy_config(up.addr, "", ""));
    let req = Request::get(gw.url("main", "/events"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, sluice_tests::client().request(req))
        .await
        .expect("response head timed out")
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    // The upstream holds the second event back until this client has the first one.
    read_until(&mut body, &mut got, |d| d.ends_with(b"\n\n")).await;
    assert_eq!(got, b"data: first\n\n");
    release.notify_one();
    read_until(&mut body, &mut got, |_| false).await;
    assert_eq!(got, b"data: first\n\ndata: second\n\n");
}

/// Size of the bodies streamed through the gateway: far above any buffer it has.
const BIG: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
/// How much the gateway's peak RSS may grow while streaming `BIG` bytes.
const RSS_GROWTH_KIB: u64 = 64 * 1024;

/// `BIG` bytes as a stream of shared chunks: no allocation per chunk, nothing buffered.
fn big_body() -> Body {
    let chunk = Bytes::from(vec![0xa5u8; CHUNK]);
    let n = BIG / CHUNK as u64;
    let frames = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    BodyExt::boxed(StreamBody::new(frames))
}

/// The gateway's peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(gw: &Gateway) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
        .expect("proc status")
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Counts the bytes of a body without keeping them.
async fn count(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Some(d) = f?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// A gateway in front of `up` whose route takes bodies of `BIG` bytes; returns it with its
/// RSS (KiB) after one warm-up request has set up the connection pool.
async fn streaming_gateway(up: &Upstream) -> (Gateway, u64) {
    let gw = Gateway::start(&proxy_config(
        up.addr,
        "",
        &format!("max_body_bytes = {}", BIG * 2),
    ));
    let warm = Request::post(gw.url("main", "/warm-up"))
        .body(http_body_util::Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(sluice_tests::send(warm).await.status, 200);
    let rss = gw.rss_kib();
    (gw, rss)
}

#[tokio::test(flavor = "multi_thread")]
async fn large_request_body_streams_through_without_buffering() {
    let up = Upstream::with(|req: Request<Incoming>| async move {
        match count(req.into_body()).await {
            Ok(n) => Response::new(full(n.to_string())),
            Err(e) => {
                let mut r = Response::new(full(e.to_string()));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }
    })
    .await;
    let (gw, rss_before) = streaming_gateway(&up).await;
    let started = Instant::now();
    let req = Request::post("/upload")
        .header(header::HOST, "upload.test")
        .body(big_body())
        .unwrap();
    let io = plain(gw.addr("main")).await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(60), tx.send_request(req))
        .await
        .expect("upload timed out")
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        BIG.to_string(),
        "bytes received upstream"
    );
    let growth = peak_rss_kib(&gw).saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_KIB,
        "gateway peak RSS grew by {growth} KiB while streaming {BIG} bytes (in {:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_response_body_streams_through_without_buffering() {
    let up = Upstream::with(|_req: Request<Incoming>| async move {
        let mut r = Response::new(big_body());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, BIG.to_string().parse().unwrap());
        r
    })
    .await;
    let (gw, rss_before) = streaming_gateway(&up).await;
    let started = Instant::now();
    let req = Request::get(gw.url("main", "/download"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, sluice_tests::client().request(req))
        .await
        .expect("response head timed out")
        .expect("download");
    assert_eq!(resp.status(), 200);
    let n = tokio::time::timeout(Duration::from_secs(60), count(resp.into_body()))
        .await
        .expect("download timed out")
        .expect("download body");
    assert_eq!(n, BIG, "bytes received by the client");
    let growth = peak_rss_kib(&gw).saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_KIB,
        "gateway peak RSS grew by {growth} KiB while streaming {BIG} bytes (in {:?})",
        started.elapsed()
    );
}
