//! Upstream connections that die without a word: a middlebox drops the flow and no reset
//! ever arrives. The gateway must find them rather than send every request into them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use sluice_tests::upstream::full;
use sluice_tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to an upstream. [`Relay::cut`] makes the connections open at that moment go
/// silent — both sockets stay open and nothing more is forwarded either way, as when a NAT
/// forgets the flows — while connections accepted later are relayed normally.
struct Relay {
    addr: SocketAddr,
    generation: Arc<AtomicU64>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let born = current.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, born, current.clone()));
                tokio::spawn(pipe(sr, cw, born, current.clone()));
            }
        });
        Self { addr, generation }
    }

    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while the relay's generation is still `born`; afterwards reads and
/// drops what arrives, keeping `to` open, until `from` ends.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, born: u64, now: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if now.load(Ordering::SeqCst) == born && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An HTTP/2 upstream connection carries every request to its target; when it goes silent,
/// PINGs find it and it is replaced, and requests succeed again on a new one (without them,
/// every request timed out on it until the kernel gave up on the socket, minutes later).
#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dead_h2_upstream_connection_is_found_by_pings_and_replaced() {
    let up =
        Upstream::with(|_req: Request<Incoming>| async move { Response::new(full("ok")) }).await;
    let relay = Relay::start(up.addr).await;
    let gw = Gateway::start(&crate::config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\nprotocol = \"h2\"\nrequest_timeout = \"1s\"\nh2_ping_interval = \"200ms\"\nh2_ping_timeout = \"300ms\"\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        relay.addr
    )));
    let url = gw.url("main", "/x");
    assert_eq!(sluice_tests::get(&url, &[]).await.status, 200);
    relay.cut();
    // Bounded: each request ends within its 1 s timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    loop {
        let status = sluice_tests::get(&url, &[]).await.status;
        statuses.push(status);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead connection was kept: {statuses:?}"
        );
    }
}
