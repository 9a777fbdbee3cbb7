//! A response body wrapper that counts bytes, holds per-request guards (circuit-breaker slot,
//! in-flight counter) until the body ends, and writes the access-log record when it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxBody, BoxError};
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

/// The wrapped body.
pub struct Tracked {
    inner: BoxBody,
    bytes: u64,
    _guards: Guards,
    log: Option<Box<LogCtx>>,
}

impl Tracked {
    /// Wraps `inner`.
    pub fn new(inner: BoxBody, guards: Guards, log: Option<Box<LogCtx>>) -> Self {
        Self {
            inner,
            bytes: 0,
            _guards: guards,
            log,
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
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            self.bytes += d.len() as u64;
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
