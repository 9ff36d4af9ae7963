//! Process facts for `/v1/status` and `/v1/metrics`, read from /proc and the
//! heap counters.

use std::sync::atomic::{AtomicU64, Ordering};

use kes_core::metrics::SystemInfo;

/// Live connection and request counts, kept by the connection tasks.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Open client connections.
    pub connections: AtomicU64,
    /// Requests read and not yet answered.
    pub active: AtomicU64,
    /// Connections closed before their TLS handshake (`tls.handshake_rate`).
    pub handshakes_refused: AtomicU64,
}

/// A fresh snapshot.
pub fn read(live: &LiveCounters) -> SystemInfo {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rss = field("VmRSS:") * 1024;
    let (heap_bytes, heap_objects) = crate::heap::live();
    SystemInfo {
        os: std::env::consts::OS.to_owned(),
        arch: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
        .to_owned(),
        num_cpu: cpus,
        num_cpu_used: cpus,
        // Without the counting allocator (library use), RSS is the best figure.
        mem_heap_used: if heap_bytes > 0 { heap_bytes } else { rss },
        mem_stack_used: field("VmStk:") * 1024,
        num_threads: field("Threads:"),
        mem_heap_objects: heap_objects,
        mem_resident: rss,
        open_connections: live.connections.load(Ordering::Relaxed),
        active_requests: live.active.load(Ordering::Relaxed),
        handshakes_refused: live.handshakes_refused.load(Ordering::Relaxed),
    }
}
