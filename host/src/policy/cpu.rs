//! The CPU deadline of a guest call.
//!
//! The engine's epoch ticks in wall time: cheap for guest code to check, but it also counts
//! time in which the call did not run — waits in host I/O (a Redis round trip, an outbound
//! request) and time its thread spent preempted on a busy machine. Reading a thread's CPU
//! clock is a system call (~0.2 µs here), too dear for every call, so a call starts on wall
//! time alone and meets its first deadline at half its CPU budget. Only a call that gets
//! there (a long one, or a starved one) reads its thread's CPU clock, at that deadline and
//! at each one after. Between two checks a call is charged its thread's CPU time when it
//! stayed on that thread and did not wait (the thread then ran nothing else); otherwise its
//! wall time less its I/O waits, but never more than the time it was granted (plus a tick):
//! guest code checks the epoch all the time, so a guest that had run longer would have met
//! its deadline sooner. A guest spinning on an idle machine is stopped at its budget; a
//! short call preempted for longer than its budget is not interrupted for it. The wall
//! deadline bounds every call whatever the machine's load.

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::engine::EPOCH_TICK;

/// The CPU time the calling thread has used (`None` if the clock cannot be read).
#[allow(unsafe_code)]
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The clocks as read at one deadline check.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall time.
    pub now: Instant,
    /// The thread the call is running on.
    pub thread: ThreadId,
    /// That thread's CPU time.
    pub cpu: Option<Duration>,
}

impl Sample {
    /// Reads the clocks of the calling thread.
    pub fn take() -> Self {
        Self {
            now: Instant::now(),
            thread: std::thread::current().id(),
            cpu: thread_cpu(),
        }
    }
}

/// What a deadline check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The budget is spent: interrupt the call.
    Interrupt,
    /// Check again after this much more time.
    Continue(Duration),
}

/// The budgets of one call.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// CPU time.
    pub cpu: Duration,
    /// Wall time, host I/O waits included.
    pub wall: Duration,
}

impl Budget {
    /// When the first check of a call comes: half its CPU budget (never beyond its wall
    /// budget).
    pub fn first_check(&self) -> Duration {
        (self.cpu / 2).min(self.wall)
    }
}

/// The clocks at a call's last check.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    thread: ThreadId,
    cpu: Option<Duration>,
    io_wait: Duration,
    wall_used: Duration,
    charged: Duration,
    /// The time the check granted until the next one.
    granted: Duration,
}

/// The CPU time of a call (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuClock {
    /// When the call started; a call that cannot wait on I/O reads no clock at its start,
    /// and its first check infers it from the first deadline.
    started: Option<Instant>,
    /// Time spent waiting in host I/O.
    io_wait: Duration,
    /// The clocks at the last check (none before the first).
    baseline: Option<Baseline>,
}

impl CpuClock {
    /// Starts counting a call that may wait on host I/O, from now.
    pub fn start(&mut self) {
        *self = Self {
            started: Some(Instant::now()),
            ..Self::default()
        };
    }

    /// Starts counting a call that cannot wait (a fiber-less one), reading no clock: its
    /// wall time is the epoch's until its first check.
    pub fn start_unclocked(&mut self) {
        *self = Self::default();
    }

    /// Adds time the call spent waiting in host I/O.
    pub fn add_io_wait(&mut self, wait: Duration) {
        self.io_wait += wait;
    }

    /// A deadline check: charges the call what it used since the last one and decides.
    pub fn check(&mut self, budget: Budget, s: Sample) -> Verdict {
        let started = *self
            .started
            .get_or_insert_with(|| s.now.checked_sub(budget.first_check()).unwrap_or(s.now));
        let elapsed = s.now.saturating_duration_since(started);
        let wall_used = elapsed.saturating_sub(self.io_wait);
        // Before the first check: nothing charged, and the first deadline granted.
        let (last_wall, last_charged, granted) = self.baseline.map_or(
            (Duration::ZERO, Duration::ZERO, budget.first_check()),
            |b| (b.wall_used, b.charged, b.granted),
        );
        let since = match self.baseline {
            // Still on the same thread with no I/O wait since the last check: the thread
            // ran nothing else, and its CPU clock is the call's.
            Some(b) if b.thread == s.thread && b.io_wait == self.io_wait => {
                b.cpu.zip(s.cpu).map(|(then, now)| now.saturating_sub(then))
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            wall_used
                .saturating_sub(last_wall)
                .min(granted + EPOCH_TICK)
        });
        let charged = last_charged + since;
        let verdict = if charged >= budget.cpu || elapsed >= budget.wall {
            Verdict::Interrupt
        } else {
            Verdict::Continue((budget.cpu - charged).min(budget.wall - elapsed))
        };
        self.baseline = Some(Baseline {
            thread: s.thread,
            cpu: s.cpu,
            io_wait: self.io_wait,
            wall_used,
            charged,
            granted: match verdict {
                Verdict::Continue(next) => next,
                Verdict::Interrupt => Duration::ZERO,
            },
        });
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const BUDGET: Budget = Budget {
        cpu: Duration::from_millis(50),
        wall: Duration::from_millis(2000),
    };

    fn sample(start: Instant, wall_ms: u64, cpu_ms: u64) -> Sample {
        Sample {
            now: start + Duration::from_millis(wall_ms),
            thread: std::thread::current().id(),
            cpu: Some(Duration::from_secs(100) + Duration::from_millis(cpu_ms)),
        }
    }

    fn clocked(start: Instant) -> CpuClock {
        CpuClock {
            started: Some(start),
            ..CpuClock::default()
        }
    }

    /// Checks `c` at each (wall ms, thread CPU ms) in turn, expecting the verdicts given
    /// (`Some(ms)`: check again in that long; `None`: interrupt).
    fn expect(c: &mut CpuClock, t0: Instant, steps: &[(u64, u64, Option<u64>)]) {
        for &(wall, cpu, want) in steps {
            let want = want.map_or(Verdict::Interrupt, |ms| {
                Verdict::Continue(Duration::from_millis(ms))
            });
            assert_eq!(c.check(BUDGET, sample(t0, wall, cpu)), want, "at {wall} ms");
        }
    }

    #[test]
    fn a_guest_running_all_the_time_is_interrupted_at_its_budget() {
        let t0 = Instant::now();
        expect(&mut clocked(t0), t0, &[(25, 25, Some(25)), (50, 50, None)]);
    }

    #[test]
    fn a_preempted_call_is_charged_only_the_cpu_it_used_and_is_bounded_by_its_wall_budget() {
        let t0 = Instant::now();
        // Starved: the first half is charged in wall time, then only what the thread ran,
        // until the wall budget ends it.
        let steps = [
            (25, 0, Some(25)),
            (50, 2, Some(23)),
            (1000, 12, Some(13)),
            (2000, 13, None),
        ];
        expect(&mut clocked(t0), t0, &steps);
    }

    #[test]
    fn a_call_starved_before_its_first_deadline_is_charged_at_most_the_time_it_was_granted() {
        let t0 = Instant::now();
        // Preempted for 80 ms before its first check: it cannot have run more than the
        // 25 ms it was granted (and a tick), or it would have met the deadline sooner.
        expect(
            &mut clocked(t0),
            t0,
            &[(80, 0, Some(24)), (120, 5, Some(19))],
        );
    }

    #[test]
    fn time_waiting_in_host_io_is_not_charged() {
        let t0 = Instant::now();
        let mut c = clocked(t0);
        c.add_io_wait(500 * MS);
        // 520 ms of wall time, 500 of them waiting: 20 charged.
        expect(&mut c, t0, &[(520, 20, Some(30))]);
        // Another wait before the next check: the thread's clock ran other tasks meanwhile,
        // so that stretch is charged in wall time less the wait.
        c.add_io_wait(100 * MS);
        expect(&mut c, t0, &[(640, 400, Some(10)), (650, 410, None)]);
    }

    #[test]
    fn a_call_that_moved_threads_is_charged_in_wall_time() {
        let t0 = Instant::now();
        let mut c = clocked(t0);
        assert_eq!(
            c.check(BUDGET, sample(t0, 25, 0)),
            Verdict::Continue(25 * MS)
        );
        let other = std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap();
        let moved = Sample {
            thread: other,
            ..sample(t0, 40, 0)
        };
        assert_eq!(c.check(BUDGET, moved), Verdict::Continue(10 * MS));
    }

    #[test]
    fn an_unclocked_call_takes_its_start_from_the_first_deadline() {
        let t0 = Instant::now();
        let mut c = CpuClock::default();
        c.start_unclocked();
        let first = BUDGET.first_check();
        let s = Sample {
            now: t0 + first,
            ..sample(t0, 0, 0)
        };
        assert_eq!(c.check(BUDGET, s), Verdict::Continue(BUDGET.cpu - first));
        assert_eq!(c.check(BUDGET, sample(t0, 50, 25)), Verdict::Interrupt);
    }

    #[test]
    fn the_thread_cpu_clock_advances_with_work() {
        let a = thread_cpu().expect("thread CPU clock");
        let mut x = 0u64;
        while thread_cpu().expect("thread CPU clock") < a + MS {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(x > 0);
    }
}
