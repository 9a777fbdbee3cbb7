//! Test fixtures shared by the end-to-end tests: the real `sluice` binary started on a
//! generated configuration, small real upstream servers, and raw-socket and HTTP clients.
//!
//! Every socket is bound on 127.0.0.1 port 0 and handed over bound (upstreams), or reported
//! back by the gateway itself (listeners bind port 0 and log the address they got), so tests
//! run in parallel without port races. Synchronisation is by events (log lines, sockets),
//! never by sleeping.

#![allow(missing_docs)]

pub mod gateway;
pub mod redis;
pub mod tls;
pub mod upstream;

pub use gateway::Gateway;
pub use redis::{Cluster, RedisServer, Sentinel};
pub use upstream::{Seen, Upstream};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `f`, bounded by `limit`: a test waiting for an event that never comes fails (naming the
/// wait) instead of hanging.
pub async fn within<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("waited {limit:?} for an event that did not come"))
}

/// Absolute path of a policy component built by `just plugins` (`name` as the crate's file
/// stem, e.g. `key_auth`).
pub fn plugin_path(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} not found: run `just plugins` first",
        p.display()
    );
    p.canonicalize().expect("plugin path")
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read fully.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request built by `build` and reads the whole response.
pub async fn send(req: http::Request<Full<Bytes>>) -> Resp {
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET url` with optional extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Writes raw bytes on a new connection and reads until the server closes it (or 5 s pass,
/// which the caller can detect with `closed == false`).
pub async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> RawReply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .is_ok();
    RawReply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// What a raw exchange produced.
#[derive(Debug)]
pub struct RawReply {
    /// Everything the server sent.
    pub text: String,
    /// Whether the server closed the connection within the wait.
    pub closed: bool,
}

impl RawReply {
    /// Status codes of every response in the reply, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| self.text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }
}
