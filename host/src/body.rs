//! Body types shared by the proxy and the upstream client.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used for every request and response the gateway produces or forwards.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body error behind a concrete type (lets generic adapters such as
/// [`http_body_util::Limited`] convert it without higher-ranked bounds).
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// `body` failing with [`http_body_util::LengthLimitError`] beyond `limit` bytes.
pub fn limited(body: BoxBody, limit: u64) -> BoxBody {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body.map_err(BodyError), limit).boxed_unsync()
}

/// The slowest a body may move: on average at least `bytes_per_sec` from when it is first
/// read (a request body, see [`min_rate`]) or counted (a response), checked once `grace` has
/// passed (the defence against slow-body and slow-read attacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Time before the rate is first checked.
    pub grace: Duration,
}

impl MinRate {
    /// The rate of a `bytes_per_sec` setting (`None` for 0, which turns the check off).
    pub fn new(bytes_per_sec: u64, grace: Duration) -> Option<Self> {
        (bytes_per_sec > 0).then_some(Self {
            bytes_per_sec,
            grace,
        })
    }

    /// Whether `bytes` received in `elapsed` fall below the rate (never within the grace).
    pub fn is_behind(&self, bytes: u64, elapsed: Duration) -> bool {
        elapsed > self.grace && (bytes as f64) < self.bytes_per_sec as f64 * elapsed.as_secs_f64()
    }
}

/// The error of a body that arrived slower than its [`MinRate`].
#[derive(Debug, Clone, Copy)]
pub struct TooSlow {
    /// The rate it fell below, in bytes per second.
    pub bytes_per_sec: u64,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes/s",
            self.bytes_per_sec
        )
    }
}

impl std::error::Error for TooSlow {}

/// The [`TooSlow`] somewhere in `e`'s chain of sources.
pub fn too_slow<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TooSlow> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<TooSlow>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// `body` failing with [`TooSlow`] when it arrives slower than `min`, timed from the first
/// time it is read. The rate is checked as data arrives and, while the reader waits, by a
/// timer set to when the data so far stops covering it: a body that stops sending data
/// while the connection stays busy otherwise (HTTP/2 pings or other streams, HTTP/1 chunk
/// sizes padded with zeros) is cut too, not only one that is slow when it sends.
pub fn min_rate(body: BoxBody, min: MinRate) -> BoxBody {
    MinRateBody {
        inner: body,
        min,
        start: None,
        bytes: 0,
        timer: None,
    }
    .boxed_unsync()
}

struct MinRateBody {
    inner: BoxBody,
    min: MinRate,
    /// When the body was first read (the tokio clock, which the timer uses too).
    start: Option<tokio::time::Instant>,
    bytes: u64,
    /// Set to when the data so far stops covering the rate; re-armed only when it fires
    /// (data since then moved the point later), not on every wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MinRateBody {
    fn too_slow(&self) -> BoxError {
        Box::new(TooSlow {
            bytes_per_sec: self.min.bytes_per_sec,
        })
    }

    /// When the data so far stops covering the rate (and the grace period is over).
    fn due(&self, since: tokio::time::Instant) -> tokio::time::Instant {
        let covered = Duration::from_secs_f64(self.bytes as f64 / self.min.bytes_per_sec as f64);
        // A millisecond past the boundary, where `is_behind` holds.
        since + covered.max(self.min.grace) + Duration::from_millis(1)
    }
}

impl Body for MinRateBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let since = *this.start.get_or_insert_with(tokio::time::Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if this.min.is_behind(this.bytes, since.elapsed()) {
                        return Poll::Ready(Some(Err(this.too_slow())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let due = this.due(since);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer fired: past the point the data covers now, the body is behind;
                // otherwise data since it was set moved that point, and it is set again
                // (polled once more to register the wake-up; firing again at once means due).
                if tokio::time::Instant::now() >= due {
                    return Poll::Ready(Some(Err(this.too_slow())));
                }
                timer.as_mut().reset(due);
                match timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Some(Err(this.too_slow()))),
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request body being forwarded stands, as seen by [`watch_upload`].
pub struct Upload(AtomicU8);

/// Not read yet, or its last piece handed on (any wait is the reader's).
const HANDED_ON: u8 = 0;
/// Its reader is waiting for the client to send more.
const WAITING: u8 = 1;
/// Read to its end.
const ENDED: u8 = 2;

impl Upload {
    /// Whether the body's reader is waiting for the client to send more of it: when a
    /// deadline passes now, the client is late, not the side reading the body.
    pub fn waiting_on_client(&self) -> bool {
        self.0.load(Ordering::Acquire) == WAITING
    }
}

/// `body` and its [`Upload`] state; `on_end` is called when the body's end is seen (perhaps
/// more than once).
pub fn watch_upload<F>(body: BoxBody, on_end: F) -> (BoxBody, Arc<Upload>)
where
    F: FnMut() + Send + Unpin + 'static,
{
    let first = if body.is_end_stream() {
        ENDED
    } else {
        HANDED_ON
    };
    let state = Arc::new(Upload(AtomicU8::new(first)));
    let watched = Watched {
        inner: body,
        state: state.clone(),
        on_end,
    };
    (watched.boxed_unsync(), state)
}

/// A body whose polls set its [`Upload`] state.
struct Watched<F> {
    inner: BoxBody,
    state: Arc<Upload>,
    on_end: F,
}

impl<F: FnMut()> Watched<F> {
    fn set(&mut self, now: u8) {
        if now == ENDED {
            (self.on_end)();
        }
        self.state.0.store(now, Ordering::Release);
    }
}

impl<F> Body for Watched<F>
where
    F: FnMut() + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // The end is seen either after the last frame or as the last poll.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.set(ENDED),
            Poll::Ready(Some(Ok(_))) => this.set(HANDED_ON),
            Poll::Ready(None) => this.set(ENDED),
            Poll::Pending => this.set(WAITING),
            Poll::Ready(Some(Err(_))) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that answers its polls from a script: `None` is a wait (`Pending`).
    struct Scripted(std::collections::VecDeque<Option<Option<&'static [u8]>>>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front().flatten() {
                None => Poll::Pending,
                Some(data) => Poll::Ready(data.map(|d| Ok(Frame::data(Bytes::from_static(d))))),
            }
        }
    }

    #[test]
    fn an_upload_waits_on_its_client_only_while_its_reader_waits_and_reports_its_end() {
        // A wait, a piece of data, the end.
        let script = [None, Some(Some(&b"x"[..])), Some(None)];
        let ends = Arc::new(AtomicU8::new(0));
        let seen = ends.clone();
        let (mut body, upload) = watch_upload(Scripted(script.into()).boxed_unsync(), move || {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || Pin::new(&mut body).poll_frame(&mut cx);
        // Not read yet: a wait is the reader's.
        assert!(!upload.waiting_on_client());
        assert!(poll().is_pending());
        assert!(upload.waiting_on_client());
        assert!(matches!(poll(), Poll::Ready(Some(Ok(_)))));
        // The piece is with the reader, which has not asked for more.
        assert!(!upload.waiting_on_client());
        assert_eq!(ends.load(Ordering::Relaxed), 0);
        assert!(matches!(poll(), Poll::Ready(None)));
        assert!(!upload.waiting_on_client());
        assert_eq!(ends.load(Ordering::Relaxed), 1, "the end is reported");
    }

    const MIN: MinRate = MinRate {
        bytes_per_sec: 240,
        grace: Duration::from_secs(5),
    };

    #[test]
    fn min_rate_is_never_behind_within_the_grace_period() {
        assert!(!MIN.is_behind(0, Duration::from_secs(5)));
        assert!(!MIN.is_behind(1, Duration::from_millis(4_999)));
    }

    #[test]
    fn min_rate_averages_over_the_whole_body_after_the_grace_period() {
        // 6 s at 240 B/s owes 1440 bytes.
        assert!(MIN.is_behind(1_439, Duration::from_secs(6)));
        assert!(!MIN.is_behind(1_440, Duration::from_secs(6)));
        // A fast start covers a later lull.
        assert!(!MIN.is_behind(100_000, Duration::from_secs(60)));
    }

    #[test]
    fn too_slow_is_found_through_wrapping_errors() {
        let inner: BoxError = Box::new(TooSlow { bytes_per_sec: 7 });
        let wrapped = BodyError(inner);
        assert_eq!(too_slow(&wrapped).map(|t| t.bytes_per_sec), Some(7));
        assert!(too_slow(&BodyError("other".into())).is_none());
    }
}
