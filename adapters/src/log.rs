//! Where events go: stdout (audit), stderr (errors), and `/v1/log/*` streams.
//!
//! Nothing here blocks the server. stdout and stderr are written by threads
//! of their own ([`crate::logwriter`]); when the audit log cannot be written
//! the hub says so ([`LogHub::audit_stalled`]) and the core refuses requests
//! that need an audit record (503), instead of every request waiting on a
//! reader that stopped. Subscribers each have a bounded queue, and events
//! one cannot take are dropped for that subscriber alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kes_core::Event;

use crate::logwriter::{Stall, StreamWriter, Target};

/// Events a subscriber may fall behind before it skips some.
const QUEUE: usize = 1024;
/// Audit lines queued for stdout before the audit log counts as stalled
/// (~4 MiB); requests are refused from then on, so only lines of requests
/// already answered, and of the routes that report on the server, go past
/// it, up to the hard bound.
const AUDIT_SOFT: usize = 16 * 1024;
const AUDIT_HARD: usize = 64 * 1024;
/// Error lines queued for stderr; beyond, they are dropped and counted.
const ERROR_BOUND: usize = 8 * 1024;

/// Which stream.
pub use kes_core::api::wire::LogStream;

/// Fans events out to the process's streams and to subscribers.
pub struct LogHub {
    audit_out: Option<StreamWriter>,
    error_out: Option<StreamWriter>,
    audit_subs: Mutex<Vec<smol::channel::Sender<Arc<str>>>>,
    error_subs: Mutex<Vec<smol::channel::Sender<Arc<str>>>>,
    /// Live audit subscribers, readable without the lock (asked per request).
    audit_count: AtomicUsize,
    /// Since when the audit log is stalled (reported once at the start and
    /// once at the end).
    stalled_since: Mutex<Option<Instant>>,
}

impl LogHub {
    /// A hub writing audit events to stdout and errors to stderr as configured.
    pub fn new(audit_stdout: bool, error_stderr: bool) -> Self {
        Self::with_targets(
            audit_stdout.then_some(Target::Stdout),
            error_stderr.then_some(Target::Stderr),
        )
    }

    /// A hub writing to the given targets (tests give their own writers).
    pub fn with_targets(audit: Option<Target>, error: Option<Target>) -> Self {
        Self {
            audit_out: audit.map(|t| StreamWriter::new(t, AUDIT_SOFT, AUDIT_HARD)),
            error_out: error.map(|t| StreamWriter::new(t, ERROR_BOUND, ERROR_BOUND)),
            audit_subs: Mutex::new(Vec::new()),
            error_subs: Mutex::new(Vec::new()),
            audit_count: AtomicUsize::new(0),
            stalled_since: Mutex::new(None),
        }
    }

    /// Whether anybody wants audit events right now.
    pub fn wants_audit(&self) -> bool {
        self.audit_out.is_some() || self.audit_count.load(Ordering::Relaxed) > 0
    }

    /// Whether the audit log cannot be written (its reader stopped reading,
    /// or is gone): then requests that need an audit record are refused.
    /// The start and the end of a stall are written to the error log once
    /// each. Cheap enough to ask before every request.
    pub fn audit_stalled(&self) -> bool {
        let Some(out) = &self.audit_out else { return false };
        let stall = out.stall();
        let mut since = lock(&self.stalled_since);
        match (stall, *since) {
            (Some(why), None) => {
                *since = Some(Instant::now());
                drop(since);
                let why = match why {
                    Stall::NotRead => "stdout is not being read",
                    Stall::Closed => "stdout is closed",
                };
                self.error(&format!("audit log: {why}: requests that need an audit record are refused with 503 until it is written again"));
            }
            (None, Some(t)) => {
                *since = None;
                drop(since);
                let secs = t.elapsed().as_secs_f64();
                self.error(&format!(
                    "audit log: written again after {secs:.1}s; requests are served"
                ));
            }
            _ => {}
        }
        stall.is_some()
    }

    /// Subscribes to a stream; the receiver yields one JSON line per event.
    pub fn subscribe(&self, which: LogStream) -> smol::channel::Receiver<Arc<str>> {
        let (tx, rx) = smol::channel::bounded(QUEUE);
        match which {
            LogStream::Audit => {
                let mut subs = lock(&self.audit_subs);
                subs.push(tx);
                self.audit_count.store(subs.len(), Ordering::Relaxed);
            }
            LogStream::Error => lock(&self.error_subs).push(tx),
        }
        rx
    }

    /// Writes one event everywhere it belongs.
    pub fn publish(&self, event: &Event) {
        let (line, to_std, subs) = match event {
            Event::Audit(a) => (a.to_json(), self.audit_out.is_some(), &self.audit_subs),
            Event::Error(e) => (e.to_json(), self.error_out.is_some(), &self.error_subs),
        };
        if to_std {
            let out = match event {
                Event::Audit(_) => self.audit_out.as_ref(),
                Event::Error(_) => self.error_out.as_ref(),
            };
            if let Some(out) = out {
                out.push(&line);
            }
            if let (Event::Error(_), Some(e)) = (event, &self.error_out) {
                self.report_dropped(e);
            }
        }
        let mut subs = lock(subs);
        if subs.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(line);
        subs.retain(|s| match s.try_send(line.clone()) {
            Ok(()) | Err(smol::channel::TrySendError::Full(_)) => true,
            Err(smol::channel::TrySendError::Closed(_)) => false,
        });
        if matches!(event, Event::Audit(_)) {
            self.audit_count.store(subs.len(), Ordering::Relaxed);
        }
    }

    /// Waits, at most `within`, until every queued line is written (or its
    /// stream is closed): for a clean shutdown.
    pub fn flush(&self, within: std::time::Duration) {
        let until = Instant::now() + within;
        let busy = |w: &Option<StreamWriter>| {
            w.as_ref().is_some_and(|w| w.queued() > 0 && w.stall() != Some(Stall::Closed))
        };
        while (busy(&self.audit_out) || busy(&self.error_out)) && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Once stderr takes lines again, says how many error lines it lost.
    fn report_dropped(&self, out: &StreamWriter) {
        if out.stall().is_none() {
            let n = out.take_dropped();
            if n > 0 {
                let e = kes_core::event::ErrorEvent {
                    time: crate::clock::now().unix,
                    message: format!("error log: {n} lines were dropped while stderr was not read"),
                };
                out.push(&e.to_json());
            }
        }
    }

    /// Drops subscribers whose stream has ended, with whatever they had
    /// queued; called when a stream connection goes away so that its memory
    /// is freed at once, not at the next event (which may never come).
    pub fn release_closed(&self) {
        lock(&self.error_subs).retain(|s| !s.is_closed());
        let mut audit = lock(&self.audit_subs);
        audit.retain(|s| !s.is_closed());
        self.audit_count.store(audit.len(), Ordering::Relaxed);
    }

    /// Writes an operational message (not a request event) to stderr and
    /// error subscribers.
    pub fn error(&self, message: &str) {
        self.publish(&Event::Error(kes_core::event::ErrorEvent {
            time: crate::clock::now().unix,
            message: message.to_owned(),
        }));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::event::ErrorEvent;

    #[test]
    fn slow_subscribers_skip_events_and_nobody_waits() {
        let hub = LogHub::new(false, false);
        let slow = hub.subscribe(LogStream::Error);
        let fast = hub.subscribe(LogStream::Error);
        let mut got = 0;
        for i in 0..3 * QUEUE {
            hub.publish(&Event::Error(ErrorEvent {
                time: Default::default(),
                message: format!("e{i}"),
            }));
            while fast.try_recv().is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 3 * QUEUE, "a reader that keeps up sees everything");
        assert_eq!(slow.len(), QUEUE, "a stalled reader holds a bounded backlog");
        drop(slow);
        hub.publish(&Event::Error(ErrorEvent { time: Default::default(), message: "x".into() }));
        assert_eq!(lock(&hub.error_subs).len(), 1, "closed subscribers are dropped");
        let audit = hub.subscribe(LogStream::Audit);
        assert!(hub.wants_audit());
        drop((audit, fast));
        hub.release_closed();
        assert!(!hub.wants_audit(), "a gone audit subscriber stops audit work");
        assert!(lock(&hub.error_subs).is_empty());
    }
}
