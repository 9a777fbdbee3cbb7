//! The access log: one JSON line per request, written by a dedicated thread so that request
//! tasks never block on I/O. When the writer falls behind by more than the queue, lines are
//! dropped and counted rather than slowing requests down.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// One access-log record.
#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Listener name.
    pub listener: String,
    /// Matched route, if any (the route's own name, shared).
    pub route: Option<std::sync::Arc<str>>,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Protocol version.
    pub version: &'static str,
    /// Status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Microseconds from request head to end of response body.
    pub duration_us: u64,
    /// Upstream target that answered, if proxied.
    pub upstream: Option<String>,
    /// Client address (after trusted-proxy resolution).
    pub client: String,
}

/// A cheap handle to the writer thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Option<String>>>,
    dropped: Arc<AtomicU64>,
    /// Lines queued and not yet written.
    pending: Arc<AtomicU64>,
    /// Set to have the writer reopen its file.
    reopen: Arc<AtomicBool>,
}

/// Opens the destination: standard output, or `path` for appending (created if missing).
fn open(path: &str) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(if path == "stdout" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )
    })
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            pending: Arc::new(AtomicU64::new(0)),
            reopen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the writer for `"stdout"` or a file path (appended).
    pub fn start(path: &str) -> std::io::Result<Self> {
        let mut out = open(path)?;
        let (tx, rx) = sync_channel::<Option<String>>(QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let (written, reopen_requested, path) = (pending.clone(), reopen.clone(), path.to_owned());
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                let mut lines = 0;
                // `None` only wakes the thread up (to reopen the file).
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(line) = next {
                        if let Some(line) = line {
                            buf.extend_from_slice(line.as_bytes());
                            buf.push(b'\n');
                            lines += 1;
                        }
                        next = if buf.len() > 60 * 1024 {
                            None
                        } else {
                            rx.try_recv().ok()
                        };
                    }
                    // The batch read so far goes to the file open until now.
                    if !buf.is_empty() {
                        let _ = out.write_all(&buf).and_then(|_| out.flush());
                        written.fetch_sub(lines, Ordering::Release);
                        buf.clear();
                        lines = 0;
                    }
                    if reopen_requested.swap(false, Ordering::AcqRel) {
                        match open(&path) {
                            Ok(file) => out = file,
                            Err(e) => tracing::warn!(%path, error = %e, "cannot reopen; still writing to the file open before"),
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            pending,
            reopen,
        })
    }

    /// Reopens the file (after log rotation moved it away): lines queued from now on go to
    /// a file at the configured path, created if missing (for `stdout`, nothing changes).
    pub fn reopen(&self) {
        let Some(tx) = &self.tx else { return };
        self.reopen.store(true, Ordering::Release);
        // A full queue means the writer is busy and sees the flag after its current batch.
        let _ = tx.try_send(None);
    }

    /// Whether records are written.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record.
    pub fn write(&self, record: &Record) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        self.queue(tx, line);
    }

    /// Queues any serialisable value as one line.
    pub fn write_value<T: Serialize>(&self, value: &T) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(value) else {
            return;
        };
        self.queue(tx, line);
    }

    fn queue(&self, tx: &SyncSender<Option<String>>, line: String) {
        // Counted before sending, so that the writer never counts a line out first.
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = tx.try_send(Some(line)) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            if matches!(e, TrySendError::Full(_)) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (blocking the calling thread, up to `limit`) until every line queued so far
    /// has been written: at exit, so that the lines of the last requests are not lost.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The current time in RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
