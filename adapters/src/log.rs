//! Where events go: stdout (audit), stderr (errors), and `/v1/log/*` streams.
//!
//! Streams never slow the server: each subscriber has a bounded queue and
//! events it cannot take are dropped for that subscriber alone.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kes_core::Event;

/// Events a subscriber may fall behind before it skips some.
const QUEUE: usize = 1024;

/// Which stream.
pub use kes_core::api::wire::LogStream;

/// Fans events out to the process's streams and to subscribers.
pub struct LogHub {
    audit_stdout: bool,
    error_stderr: bool,
    audit_subs: Mutex<Vec<smol::channel::Sender<Arc<str>>>>,
    error_subs: Mutex<Vec<smol::channel::Sender<Arc<str>>>>,
    /// Live audit subscribers, readable without the lock (asked per request).
    audit_count: AtomicUsize,
}

impl LogHub {
    /// A hub writing audit events to stdout and errors to stderr as configured.
    pub fn new(audit_stdout: bool, error_stderr: bool) -> Self {
        Self {
            audit_stdout,
            error_stderr,
            audit_subs: Mutex::new(Vec::new()),
            error_subs: Mutex::new(Vec::new()),
            audit_count: AtomicUsize::new(0),
        }
    }

    /// Whether anybody wants audit events right now.
    pub fn wants_audit(&self) -> bool {
        self.audit_stdout || self.audit_count.load(Ordering::Relaxed) > 0
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
            Event::Audit(a) => (a.to_json(), self.audit_stdout, &self.audit_subs),
            Event::Error(e) => (e.to_json(), self.error_stderr, &self.error_subs),
        };
        if to_std {
            let res = match event {
                Event::Audit(_) => writeln!(std::io::stdout().lock(), "{line}"),
                Event::Error(_) => writeln!(std::io::stderr().lock(), "{line}"),
            };
            let _ = res; // a closed stdout must not take the server down
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
