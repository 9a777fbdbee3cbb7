//! Connection idle tracking: an I/O wrapper that stamps the time of the last byte moved, and
//! a future that resolves once nothing has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
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

    /// A wait on the upstream that begins later: a request with a body waits on its client
    /// while the body arrives (the idle timeout's business) and on its upstream alone from
    /// the body's end, when [`LaterWait::begin`] is called, until the handle's
    /// [`LaterWait::end`].
    pub fn wait_later(&self) -> Arc<LaterWait> {
        Arc::new(LaterWait {
            activity: self.clone(),
            state: AtomicU8::new(NOT_BEGUN),
        })
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

/// A [`LaterWait`] not begun yet.
const NOT_BEGUN: u8 = 0;
/// A [`LaterWait`] counted as a wait.
const COUNTED: u8 = 1;
/// A [`LaterWait`] ended (a `begin` after it counts nothing).
const ENDED: u8 = 2;

/// A request's wait on its upstream that begins once its body is sent (see
/// [`Activity::wait_later`]).
pub struct LaterWait {
    activity: Activity,
    state: AtomicU8,
}

impl LaterWait {
    /// The request's body has been sent: until [`end`](Self::end), the connection is
    /// waiting on the upstream. Only the first call counts, and none after `end`.
    pub fn begin(&self) {
        let waiting = &self.activity.0.waiting;
        // Counted first, so that an `end` racing with it never takes the count below zero.
        waiting.fetch_add(1, Ordering::Relaxed);
        let begun = self
            .state
            .compare_exchange(NOT_BEGUN, COUNTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !begun {
            waiting.fetch_sub(1, Ordering::Release);
        }
    }

    /// The wait is over (the response head came, or the request failed or was dropped).
    pub fn end(&self) {
        if self.state.swap(ENDED, Ordering::AcqRel) == COUNTED {
            self.activity.touch();
            self.activity.0.waiting.fetch_sub(1, Ordering::Release);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(a: &Activity) -> usize {
        a.0.waiting.load(Ordering::Acquire)
    }

    #[test]
    fn a_later_wait_counts_from_its_first_begin_to_its_end() {
        let a = Activity::new();
        let w = a.wait_later();
        assert_eq!(
            waiting(&a),
            0,
            "not begun: the request may be waiting on its client"
        );
        w.begin();
        w.begin();
        assert_eq!(waiting(&a), 1);
        w.end();
        assert_eq!(waiting(&a), 0);
        w.end();
        assert_eq!(waiting(&a), 0);
    }

    #[test]
    fn a_later_wait_begun_after_its_end_counts_nothing() {
        // The upstream answered before the body's end was seen: the connection must not be
        // left counted as waiting (it would never idle out).
        let a = Activity::new();
        let w = a.wait_later();
        w.end();
        w.begin();
        assert_eq!(waiting(&a), 0);
    }
}
