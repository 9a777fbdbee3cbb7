//! Real upstream HTTP servers (hyper, HTTP/1.1 and prior-knowledge h2c) for tests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// The body type test upstreams answer with.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A running upstream server.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Upstream {
    /// An upstream answering 200 with body `name` to every request.
    pub async fn named(name: &'static str) -> Self {
        Self::with(move |_req| async move { Response::new(full(name)) }).await
    }

    /// An upstream answering every request with `status` and `body`.
    pub async fn failing(status: http::StatusCode, body: &'static str) -> Self {
        Self::with(move |_req| async move {
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r
        })
        .await
    }

    /// An upstream answering `name`, but holding each request until the test adds a permit
    /// to the returned gate (never, if it adds none); every request announces itself on the
    /// returned channel first.
    pub async fn held(name: &'static str) -> (Self, Arc<Semaphore>, mpsc::UnboundedReceiver<()>) {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let g = gate.clone();
        let up = Self::with(move |_req| {
            let (g, tx) = (g.clone(), tx.clone());
            async move {
                let _ = tx.send(());
                let _permit = g.acquire().await.expect("gate");
                Response::new(full(name))
            }
        })
        .await;
        (up, gate, rx)
    }

    /// An upstream answering with `handler`.
    pub async fn with<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(listener, Arc::new(move |r| Box::pin(handler(r)))).await
    }

    async fn serve(listener: TcpListener, handler: Handler) -> Self {
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let (s, h, t) = (seen.clone(), hits.clone(), tasks.clone());
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (s, h, handler) = (s.clone(), h.clone(), handler.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    s.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        uri: req.uri().to_string(),
                        version: req.version(),
                        headers: req.headers().clone(),
                    });
                    h.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                t.lock().unwrap().spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            hits,
            tasks,
        }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting and closes every open connection; the port then refuses connections.
    pub fn stop(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tasks.lock() {
            t.abort_all();
        }
    }
}
