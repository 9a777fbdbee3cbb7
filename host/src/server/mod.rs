//! Listeners: accept loops with a connection cap, TLS with ALPN, the HTTP/1.1 and HTTP/2
//! protocol settings and limits, idle timeouts and graceful draining.
//!
//! Protocol choice per connection: over TLS, ALPN `h2` gets HTTP/2 and everything else
//! HTTP/1.1; over cleartext, HTTP/1.1 only, unless the listener enables prior-knowledge h2c.
//! `Upgrade: h2c` is never honoured (the header is stripped like any hop-by-hop header).

mod idle;
mod preface;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub use idle::{Activity, IdleIo, LaterWait};

use crate::config::Limits;
use crate::proxy::{self, ConnInfo, Shared};

/// Handles that let the gateway stop accepting and wait for connections to finish.
#[derive(Clone)]
pub struct Lifecycle {
    /// Becomes `true` when the gateway starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every open connection; the drain completes when all clones are dropped.
    pub open: mpsc::Sender<()>,
    /// Caps open connections.
    pub slots: Arc<Semaphore>,
}

/// What keeps a client connection counted: its `max_connections` slot and the drain's
/// handle, released when the last holder (the connection, or a WebSocket tunnel that
/// outlives it) drops it.
pub struct Held {
    _slot: OwnedSemaphorePermit,
    _open: mpsc::Sender<()>,
}

/// Binds a listening socket (SO_REUSEADDR, backlog 1024).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on listener `index` until shutdown.
pub async fn accept_loop(
    index: usize,
    listener: TcpListener,
    shared: Arc<Shared>,
    life: Lifecycle,
) {
    let mut shutdown = life.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = life.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let life = life.clone();
        // An IPv4 client of a dual-stack (`[::]`) listener arrives as `::ffff:a.b.c.d`: it is
        // known by its IPv4 address, so that IPv4 trusted-proxy ranges, logs, hashing and
        // policies see the address it has.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        tokio::spawn(serve_connection(index, tcp, peer, shared, life, permit));
    }
}

async fn serve_connection(
    index: usize,
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    life: Lifecycle,
    slot: OwnedSemaphorePermit,
) {
    let snap = shared.snapshot.load_full();
    let listener = &snap.listeners[index];
    let limits = snap.config.limits.clone();
    let activity = Activity::new();
    let scheme = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let info = Arc::new(ConnInfo {
        listener: index,
        peer,
        scheme,
        activity: activity.clone(),
        idle_timeout: limits.idle_timeout.get(),
        held: Held {
            _slot: slot,
            _open: life.open.clone(),
        },
    });
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| proxy::handle(svc_shared.clone(), info.clone(), req));
    let shutdown = life.shutdown.clone();

    // Serves `$io` as HTTP/2 or as HTTP/1.1 (with upgrades), with the listener's limits.
    macro_rules! serve {
        ($io:expr, $h2:expr) => {{
            let io = TokioIo::new(IdleIo::new($io, activity.clone()));
            if $h2 {
                let conn = h2_builder(&limits).serve_connection(io, svc);
                drive(conn, |c| c.graceful_shutdown(), shutdown, activity, &limits).await;
            } else {
                let conn = h1_builder(&limits)
                    .serve_connection(io, svc)
                    .with_upgrades();
                drive(conn, |c| c.graceful_shutdown(), shutdown, activity, &limits).await;
            }
        }};
    }

    if let Some(cfg) = listener.tls.clone() {
        drop(snap);
        // The handshake is bounded by the head timeout and ends when the gateway drains.
        let handshake = TlsAcceptor::from(cfg).accept(tcp);
        let mut draining = shutdown.clone();
        let handshake = tokio::select! {
            h = tokio::time::timeout(limits.header_read_timeout.get(), handshake) => h,
            _ = draining.wait_for(|s| *s) => return,
        };
        let tls = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
        serve!(tls, h2);
    } else if listener.h2c {
        drop(snap);
        // The first bytes decide: the HTTP/2 preface, or HTTP/1.1. Both then get the same
        // builders and limits as everywhere else. The wait for them is bounded by the head
        // timeout and ends when the gateway drains; an HTTP/1.1 head then gets a head
        // timeout of its own (so a client trickling a near-preface gets up to two).
        let mut draining = shutdown.clone();
        let sniffed = tokio::select! {
            s = tokio::time::timeout(limits.header_read_timeout.get(), preface::sniff(tcp)) => s,
            _ = draining.wait_for(|s| *s) => return,
        };
        let (h2, io) = match sniffed {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before its first request");
                return;
            }
        };
        // The bytes just read were activity: the idle clock starts now.
        activity.touch();
        serve!(io, h2);
    } else {
        drop(snap);
        serve!(tcp, false);
    }
}

/// Raises this process's soft limit on open files to its hard limit, as servers do at
/// start (nginx's `worker_rlimit_nofile`, Go's runtime): every client connection takes a
/// descriptor, and a proxied one another upstream. Returns the (soft, hard) limits now in
/// force.
///
/// # Errors
/// The OS error of `getrlimit` or `setrlimit`.
#[allow(unsafe_code)]
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An unlimited hard limit is capped at Linux's default `fs.nr_open` (2^20): the kernel
    // refuses a soft limit above that.
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only raises the soft limit to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Polls a connection to completion, starting a graceful shutdown when the gateway drains
/// and dropping it when it has been idle for `limits.idle_timeout`.
async fn drive<C, E>(
    conn: C,
    graceful: fn(Pin<&mut C>),
    mut shutdown: watch::Receiver<bool>,
    activity: Activity,
    limits: &Limits,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let idle = activity.idle_for(limits.idle_timeout.get());
    let mut idle = std::pin::pin!(idle);
    let mut draining = *shutdown.borrow();
    if draining {
        graceful(conn.as_mut());
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                graceful(conn.as_mut());
            }
            _ = idle.as_mut() => {
                tracing::debug!("closing idle connection");
                return;
            }
        }
    }
}

fn h1_builder(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // `max_buf_size` alone lets a head larger than the limit through once the read buffer
    // has grown (for example when the head follows a body in the same read);
    // `max_header_size` checks the head itself.
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b
}

fn h2_builder(limits: &Limits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .max_header_list_size(limits.max_header_bytes as u32);
    // No keep-alive pings: hyper's server pings idle connections too, and the answers would
    // count as bytes moving, so an idle HTTP/2 connection would never reach `idle_timeout`
    // (a dead peer is found by that timeout instead).
    b
}
