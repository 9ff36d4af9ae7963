//! One process stream (stdout for audit, stderr for errors) written by a
//! thread of its own from a queue, so that a reader that stops reading (a
//! stalled log shipper, a hung container log driver) never blocks the
//! thread that serves requests: a write to a full pipe blocks, and before
//! this every request waited behind it.
//!
//! The writer tells how it is doing instead: [`StreamWriter::stall`] says
//! when lines cannot get out (the queue is full, one write has been blocked
//! for [`STALL_AFTER`], or the stream is closed). The audit log turns that
//! into "not served" (the core answers 503); the error log drops lines
//! beyond its bound and counts them. Nothing here panics on a write error.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One write blocked this long means the reader has stopped.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// Why lines are not getting out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// The reader stopped reading (a write has blocked, or the queue is full).
    NotRead,
    /// The stream is closed (its reader is gone); nothing will be written.
    Closed,
}

/// Where the lines go.
pub enum Target {
    Stdout,
    Stderr,
    /// Any writer (tests).
    Other(Box<dyn Write + Send>),
}

/// A stream and its writer thread; cheap to share.
pub struct StreamWriter {
    shared: Arc<Shared>,
    /// Lines queued beyond which the stream counts as stalled.
    soft: usize,
    /// Lines queued beyond which new lines are dropped (and counted).
    hard: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// When the write in progress began (ms since `epoch`, plus one); 0: none.
    writing_since: AtomicU64,
    epoch: Instant,
    closed: AtomicBool,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    lines: usize,
    dropped: u64,
    /// The writer waits on the condition variable (only then is a wake-up
    /// needed).
    waiting: bool,
}

/// After each write the writer lets lines gather this long, so that a busy
/// server's audit lines go out in batches (a few writes and wake-ups per
/// millisecond, not one per request). Lines wait at most this much longer.
const GATHER: Duration = Duration::from_millis(1);

impl StreamWriter {
    /// A writer for `target`: stalled past `soft` queued lines, dropping
    /// past `hard` (the audit log's callers stop producing once it stalls,
    /// so only lines already promised go beyond `soft`).
    pub fn new(target: Target, soft: usize, hard: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            writing_since: AtomicU64::new(0),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
        });
        let s = shared.clone();
        let name = match target {
            Target::Stdout => "kes-stdout",
            Target::Stderr => "kes-stderr",
            Target::Other(_) => "kes-log",
        };
        let spawned =
            std::thread::Builder::new().name(name.into()).spawn(move || write_loop(&s, target));
        if spawned.is_err() {
            shared.closed.store(true, Ordering::Relaxed);
        }
        Self { shared, soft, hard }
    }

    /// Queues one line (a newline is added). False when it was dropped:
    /// the queue is past its hard bound or the stream is closed.
    pub fn push(&self, line: &str) -> bool {
        if self.shared.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut q = lock(&self.shared.queue);
        if q.lines >= self.hard {
            q.dropped += 1;
            return false;
        }
        q.bytes.extend_from_slice(line.as_bytes());
        q.bytes.push(b'\n');
        q.lines += 1;
        let wake = std::mem::take(&mut q.waiting);
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Whether lines are not getting out, and why.
    pub fn stall(&self) -> Option<Stall> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Some(Stall::Closed);
        }
        let since = self.shared.writing_since.load(Ordering::Relaxed);
        let blocked = since != 0 && {
            let now = self.shared.epoch.elapsed().as_millis() as u64 + 1;
            now.saturating_sub(since) >= STALL_AFTER.as_millis() as u64
        };
        (blocked || lock(&self.shared.queue).lines >= self.soft).then_some(Stall::NotRead)
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut lock(&self.shared.queue).dropped)
    }

    /// Lines waiting to be written.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).lines
    }
}

/// Takes everything queued, writes it in one go, and again. A write error
/// means the stream is closed for good (stdout cannot be reopened): it is
/// marked so, and queued lines are discarded from then on.
fn write_loop(s: &Shared, target: Target) {
    let mut out: Box<dyn Write> = match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::Stderr => Box::new(std::io::stderr()),
        Target::Other(w) => w,
    };
    let mut batch = Vec::new();
    loop {
        {
            let mut q = lock(&s.queue);
            while q.bytes.is_empty() {
                q.waiting = true;
                q = s.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.waiting = false;
            std::mem::swap(&mut batch, &mut q.bytes);
            // The lines count falls only once they are written, so a queue
            // blocked on its writer still reads as full.
        }
        let n = batch.iter().filter(|b| **b == b'\n').count();
        s.writing_since.store(s.epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let ok = out.write_all(&batch).and_then(|()| out.flush()).is_ok();
        s.writing_since.store(0, Ordering::Relaxed);
        batch.clear();
        let mut q = lock(&s.queue);
        q.lines = q.lines.saturating_sub(n);
        if !ok {
            s.closed.store(true, Ordering::Relaxed);
            q.bytes.clear();
            q.lines = 0;
        }
        drop(q);
        std::thread::sleep(GATHER);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer whose reader can be stopped and resumed: writes block while
    /// it is stopped, as a pipe nobody reads does once its buffer is full.
    struct Gate {
        open: mpsc::Receiver<()>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.open.recv(); // one permit per write
            lock(&self.seen).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stopped_reader_stalls_the_stream_without_blocking_and_loses_nothing() {
        let (permit, open) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let w = StreamWriter::new(Target::Other(Box::new(Gate { open, seen: seen.clone() })), 4, 6);
        let started = Instant::now();
        for i in 0..6 {
            assert!(w.push(&format!("line {i}")));
        }
        assert!(!w.push("line 6"), "past the hard bound: dropped");
        assert!(started.elapsed() < Duration::from_millis(500), "pushing never waits");
        assert_eq!(w.stall(), Some(Stall::NotRead), "queue past its soft bound");
        assert_eq!(w.take_dropped(), 1);
        // The reader resumes: everything queued comes out, once, in order.
        for _ in 0..16 {
            let _ = permit.send(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.queued() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.stall(), None);
        let text = String::from_utf8(lock(&seen).clone()).unwrap();
        let want: String = (0..6).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn one_blocked_write_is_a_stall_after_a_second() {
        let (permit, open) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let w = StreamWriter::new(Target::Other(Box::new(Gate { open, seen })), 1000, 2000);
        assert!(w.push("x"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(w.stall(), None, "a short wait is not a stall");
        std::thread::sleep(STALL_AFTER);
        assert_eq!(w.stall(), Some(Stall::NotRead));
        let _ = permit.send(());
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.stall().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.stall(), None);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stream_is_reported_not_a_panic() {
        let w = StreamWriter::new(Target::Other(Box::new(Broken)), 10, 20);
        assert!(w.push("x"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.stall().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.stall(), Some(Stall::Closed));
        assert!(!w.push("y"));
    }
}
