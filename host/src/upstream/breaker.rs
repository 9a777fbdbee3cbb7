//! Per-upstream admission: the circuit breaker (concurrency and pending limits) and the
//! retry budget.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits the requests in flight to one upstream; beyond `max_pending` waiters it is open.
pub struct Breaker {
    slots: Arc<Semaphore>,
    pending: AtomicUsize,
    max_pending: usize,
}

/// Why admission was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too many requests in flight and waiting.
    Open,
    /// Waited for a slot until the deadline.
    Timeout,
}

impl Breaker {
    /// A breaker with `max_concurrent` slots and `max_pending` waiters.
    pub fn new(max_concurrent: usize, max_pending: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            pending: AtomicUsize::new(0),
            max_pending,
        }
    }

    /// Takes a free slot, without waiting.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Takes a slot, waiting up to `wait` if the pending queue has room.
    pub async fn admit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Refused> {
        if let Some(p) = self.try_admit() {
            return Ok(p);
        }
        let waiting = Waiting(&self.pending);
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            return Err(Refused::Open);
        }
        // Counted out when the wait ends or when the request is cancelled while waiting.
        let r = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        drop(waiting);
        match r {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Refused::Open),
            Err(_) => Err(Refused::Timeout),
        }
    }
}

/// One waiter of the pending queue, counted out when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket of retries: each request deposits `ratio` tokens, each retry spends one,
/// and `min_per_second` tokens are always available per second.
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let min = f64::from(min_per_second);
        Self {
            ratio,
            min_per_second: min,
            state: Mutex::new((min, Instant::now())),
        }
    }

    fn cap(&self) -> f64 {
        self.min_per_second.max(1.0) * 10.0
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = (s.0 + self.ratio).min(self.cap());
    }

    /// Takes one retry token if available.
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.min_per_second;
        s.0 = (s.0 + refill).min(self.cap());
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn breaker_opens_when_slots_and_queue_are_full() {
        let b = Breaker::new(1, 0);
        let held = b.admit(Duration::from_millis(10)).await.unwrap();
        assert_eq!(
            b.admit(Duration::from_millis(10)).await.err(),
            Some(Refused::Open)
        );
        drop(held);
        assert!(b.admit(Duration::from_millis(10)).await.is_ok());
    }

    #[tokio::test]
    async fn pending_requests_time_out_waiting() {
        let b = Breaker::new(1, 1);
        let _held = b.admit(Duration::from_millis(10)).await.unwrap();
        assert_eq!(
            b.admit(Duration::from_millis(20)).await.err(),
            Some(Refused::Timeout)
        );
    }

    #[tokio::test]
    async fn a_waiter_cancelled_while_pending_leaves_the_queue() {
        let b = Breaker::new(1, 1);
        let _held = b.admit(Duration::from_millis(10)).await.unwrap();
        // The client goes away while its request waits for a slot.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), b.admit(Duration::from_secs(60)));
        assert!(cancelled.await.is_err());
        assert_eq!(b.pending.load(Ordering::Acquire), 0);
        // The queue's one place is free again: the next request waits rather than bounces.
        assert_eq!(
            b.admit(Duration::from_millis(20)).await.err(),
            Some(Refused::Timeout)
        );
    }

    #[test]
    fn retry_budget_is_bounded_by_ratio() {
        let b = RetryBudget::new(0.5, 0);
        assert!(!b.withdraw());
        b.deposit();
        assert!(!b.withdraw());
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }
}
