//! Connection idle tracking: an I/O wrapper that stamps the time of the last byte moved, and
//! a future that resolves once nothing has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// The last-activity stamp shared by the wrapper and the watchdog, and how many requests on
/// the connection are waiting on their upstream.
#[derive(Clone)]
pub struct Activity(Arc<Stamps>);

struct Stamps {
    last: AtomicU64,
    waiting: AtomicUsize,
}

impl Activity {
    /// A stamp set to now.
    pub fn new() -> Self {
        Self(Arc::new(Stamps {
            last: AtomicU64::new(now_ms()),
            waiting: AtomicUsize::new(0),
        }))
    }

    /// Sets the stamp to now.
    pub fn touch(&self) {
        self.0.last.store(now_ms(), Ordering::Relaxed);
    }

    /// Marks a request as waiting on its upstream (and on nothing from the client) until the
    /// guard is dropped: meanwhile the connection is not idle. That wait has its own deadline
    /// (the route's timeout, a 504 when it passes); an idle timeout shorter than it would
    /// close the connection with no answer instead.
    pub fn waiting(&self) -> Waiting<'_> {
        self.0.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    /// Resolves once no byte has moved for `timeout` and no request is waiting on its
    /// upstream.
    pub async fn idle_for(&self, timeout: Duration) {
        let limit = timeout.as_millis() as u64;
        loop {
            // Acquire pairs with the guard's Release: a wait seen over has its stamp seen.
            if self.0.waiting.load(Ordering::Acquire) > 0 {
                // The guard's drop stamps the end of the wait: idle time counts from there.
                tokio::time::sleep(timeout).await;
                continue;
            }
            let idle = now_ms().saturating_sub(self.0.last.load(Ordering::Relaxed));
            if idle >= limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(limit - idle)).await;
        }
    }
}

/// A request waiting on its upstream (see [`Activity::waiting`]).
pub struct Waiting<'a>(&'a Activity);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.waiting.fetch_sub(1, Ordering::Release);
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// An I/O object that records activity on every successful read or write.
pub struct IdleIo<T> {
    inner: T,
    activity: Activity,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
