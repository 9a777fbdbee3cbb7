//! A response body wrapper that counts bytes, holds per-request guards (circuit-breaker slot,
//! in-flight counter) until the body ends, writes the access-log record when it is done, and
//! aborts a large response its client reads slower than the minimum rate (slow read).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxBody, BoxError, MinRate};
use crate::telemetry::{AccessLog, Record};
use crate::upstream::UpstreamGroup;

/// Counts a request in flight to one target until dropped.
pub struct InFlight {
    group: Arc<UpstreamGroup>,
    idx: usize,
}

impl InFlight {
    /// Increments target `idx`'s in-flight count now; decrements it on drop.
    pub fn enter(group: Arc<UpstreamGroup>, idx: usize) -> Self {
        group.targets[idx].in_flight.fetch_add(1, Ordering::Relaxed);
        Self { group, idx }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.group.targets[self.idx]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Things kept alive until the response body is finished.
#[derive(Default)]
pub struct Guards {
    /// Circuit-breaker slot.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// In-flight counter of the chosen target.
    pub in_flight: Option<InFlight>,
}

/// The pending access-log record.
pub struct LogCtx {
    /// Where to write it.
    pub log: AccessLog,
    /// The record, completed at the end.
    pub record: Record,
    /// When the request arrived.
    pub start: Instant,
}

/// Bytes a response sends before its client's read rate is measured: smaller responses fit
/// in the socket buffers, and a client that then stops reading is the idle timeout's.
pub const RATE_AFTER_BYTES: u64 = 64 * 1024;

/// The error that aborts a response read slower than its [`MinRate`].
#[derive(Debug, thiserror::Error)]
#[error("the client read the response slower than {bytes_per_sec} bytes/s")]
pub struct SlowReader {
    /// The rate it fell below.
    pub bytes_per_sec: u64,
}

/// The client's read rate: bytes handed to the connection and the time spent waiting for it
/// to ask for more (time waiting on the upstream is not counted).
struct ReadRate {
    min: MinRate,
    bytes: u64,
    waited: Duration,
    handed_at: Option<Instant>,
}

/// The wrapped body.
pub struct Tracked {
    inner: BoxBody,
    bytes: u64,
    _guards: Guards,
    log: Option<Box<LogCtx>>,
    rate: Option<ReadRate>,
}

impl Tracked {
    /// Wraps `inner`; `min_read_rate` is the slowest its client may read it.
    pub fn new(
        inner: BoxBody,
        guards: Guards,
        log: Option<Box<LogCtx>>,
        min_read_rate: Option<MinRate>,
    ) -> Self {
        Self {
            inner,
            bytes: 0,
            _guards: guards,
            log,
            rate: min_read_rate.map(|min| ReadRate {
                min,
                bytes: 0,
                waited: Duration::ZERO,
                handed_at: None,
            }),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.log.take() {
            ctx.record.bytes = self.bytes;
            ctx.record.duration_us = ctx.start.elapsed().as_micros() as u64;
            ctx.log.write(&ctx.record);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Asked for more: the wait since the last frame was the client's.
        if let Some(rate) = &mut this.rate
            && let Some(at) = rate.handed_at.take()
        {
            rate.waited += at.elapsed();
            if rate.min.is_behind(rate.bytes, rate.waited) {
                let bytes_per_sec = rate.min.bytes_per_sec;
                return Poll::Ready(Some(Err(Box::new(SlowReader { bytes_per_sec }))));
            }
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            let n = d.len() as u64;
            this.bytes += n;
            if let Some(rate) = &mut this.rate
                && this.bytes > RATE_AFTER_BYTES
            {
                rate.bytes += n;
                rate.handed_at = Some(Instant::now());
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
