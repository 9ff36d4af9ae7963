//! Request metrics, rendered as Prometheus text with KES's metric names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Response-time buckets: KES's (10 ms and up, kept so that dashboards and
/// `histogram_quantile` queries written for KES still work) with finer ones
/// below, where this server answers (tens of microseconds to milliseconds):
/// with KES's alone every request fell into the first bucket.
const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5,
    3.0, 5.0, 10.0,
];
const STORE_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A fixed-bucket histogram in seconds.
#[derive(Clone, Debug)]
struct Histogram<const N: usize> {
    buckets: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self { buckets: [0; N], count: 0, sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], d: Duration) {
        let secs = d.as_secs_f64();
        for (n, b) in self.buckets.iter_mut().zip(bounds) {
            if secs <= *b {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, s: &mut String, name: &str, help: &str, bounds: &[f64; N]) {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, n) in bounds.iter().zip(self.buckets) {
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(s, "{name}_sum {}", self.sum);
        let _ = writeln!(s, "{name}_count {}", self.count);
    }
}

/// Counters the core keeps as it answers requests.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    by_code: BTreeMap<u16, u64>,
    response_time: Histogram<17>,
    store_latency: Histogram<10>,
    /// Key lookups answered from the cache.
    pub cache_hits: u64,
    /// Key lookups that went to the key store.
    pub cache_misses: u64,
    /// Audit events produced.
    pub audit_events: u64,
    /// Error events produced.
    pub error_events: u64,
    /// Whether the audit log cannot be written right now.
    pub audit_stalled: bool,
    /// Ciphertexts opened under a key version older than the key's newest.
    pub unseals_older_version: u64,
    /// Requests refused with 429 by the budget of a policy (by policy
    /// name; `(admin)` for the admin's): the label set is the configured
    /// policies, so it stays bounded.
    pub throttled: std::collections::BTreeMap<String, u64>,
    /// Key versions the rotation schedule created on this node.
    pub rotations_scheduled: u64,
    /// Scheduled rotation checks (or their listings) that failed.
    pub rotation_failures: u64,
}

/// Process facts the adapter supplies (the core cannot read them itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// Operating system name (`linux`).
    pub os: String,
    /// CPU architecture (`amd64` style names, as KES reports them).
    pub arch: String,
    /// Logical CPUs on the machine.
    pub num_cpu: u64,
    /// CPUs the process may use.
    pub num_cpu_used: u64,
    /// Heap bytes in use (resident memory where no heap figure exists).
    pub mem_heap_used: u64,
    /// Stack bytes.
    pub mem_stack_used: u64,
    /// Threads.
    pub num_threads: u64,
    /// Live heap allocations.
    pub mem_heap_objects: u64,
    /// Resident set size in bytes.
    pub mem_resident: u64,
    /// Open client connections.
    pub open_connections: u64,
    /// Requests received and not yet answered.
    pub active_requests: u64,
    /// Connections closed before their TLS handshake (over
    /// `tls.handshake_rate` for their address).
    pub handshakes_refused: u64,
}

impl Metrics {
    /// Records one response.
    pub fn observe(&mut self, code: u16, elapsed: Duration) {
        *self.by_code.entry(code).or_default() += 1;
        self.response_time.observe(&BUCKETS, elapsed);
    }

    /// Records how long one key-store command took.
    pub fn observe_store(&mut self, latency: Duration) {
        self.store_latency.observe(&STORE_BUCKETS, latency);
    }

    /// How many requests were answered with `code`.
    pub fn count(&self, code: u16) -> u64 {
        self.by_code.get(&code).copied().unwrap_or(0)
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, active: usize, uptime: Duration, sys: &SystemInfo) -> String {
        let mut s = String::with_capacity(2048);
        for (name, help, range) in [
            ("kes_http_request_success", "Number of requests that have been served successfully.", 200..300),
            ("kes_http_request_error", "Number of requests that failed due to some error. (HTTP 4xx status code)", 400..500),
            ("kes_http_request_failure", "Number of requests that failed due to some internal failure. (HTTP 5xx status code)", 500..600),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (code, n) in self.by_code.range(range) {
                let _ = writeln!(s, "{name}{{code=\"{code}\"}} {n}");
            }
        }
        let _ = writeln!(s, "# HELP kes_http_request_throttled Number of requests refused with 429 by a policy's limits.\n# TYPE kes_http_request_throttled counter");
        for (policy, n) in &self.throttled {
            let _ = writeln!(
                s,
                "kes_http_request_throttled{{policy=\"{}\"}} {n}",
                policy.replace(['\\', '"', '\n'], "_")
            );
        }
        let _ = writeln!(s, "# HELP kes_http_request_active Number of active requests that are not finished, yet.\n# TYPE kes_http_request_active gauge\nkes_http_request_active {}", sys.active_requests.max(active as u64));
        self.response_time.render(
            &mut s,
            "kes_http_response_time",
            "Histogram of request response times spawning from start to end of request.",
            &BUCKETS,
        );
        self.store_latency.render(
            &mut s,
            "kes_keystore_latency_seconds",
            "Histogram of key store command latencies.",
            &STORE_BUCKETS,
        );
        for (name, kind, help, value) in self.scalars(uptime, sys) {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        s
    }

    /// Every single-valued metric: name, type, help, value.
    fn scalars(&self, uptime: Duration, sys: &SystemInfo) -> [(&str, &str, &str, String); 18] {
        let uptime_10ms = uptime.as_millis() / 10;
        #[rustfmt::skip]
        let table = [
            ("kes_cache_hits", "counter", "Key lookups answered from the key cache.", self.cache_hits.to_string()),
            ("kes_cache_misses", "counter", "Key lookups that went to the key store.", self.cache_misses.to_string()),
            ("kes_http_connections_open", "gauge", "Open client connections.", sys.open_connections.to_string()),
            ("kes_tls_handshakes_refused", "counter", "Connections closed before the TLS handshake: their address was over tls.handshake_rate.", sys.handshakes_refused.to_string()),
            ("kes_system_mem_heap_objects", "gauge", "The number of allocated heap objects.", sys.mem_heap_objects.to_string()),
            ("kes_system_mem_resident", "gauge", "Resident memory of the process in bytes.", sys.mem_resident.to_string()),
            ("kes_log_error_events", "counter", "Number of error log events written.", self.error_events.to_string()),
            ("kes_log_audit_events", "counter", "Number of audit log events written.", self.audit_events.to_string()),
            ("kes_key_unseals_older_version", "counter", "Ciphertexts opened under a key version older than the key's newest (rotated keys).", self.unseals_older_version.to_string()),
            ("kes_key_rotations_scheduled", "counter", "Key versions created by the rotation schedule on this node.", self.rotations_scheduled.to_string()),
            ("kes_key_rotation_failures", "counter", "Scheduled rotation checks that failed (retried at the next check).", self.rotation_failures.to_string()),
            ("kes_log_audit_stalled", "gauge", "1 while the audit log cannot be written (requests that need it get 503).", u8::from(self.audit_stalled).to_string()),
            ("kes_system_up_time", "gauge", "The time the server has been up and running in seconds.", format!("{}.{:02}", uptime_10ms / 100, uptime_10ms % 100)),
            ("kes_system_num_cpu", "gauge", "The number of logical CPUs available on the system.", sys.num_cpu.to_string()),
            ("kes_system_num_cpu_used", "gauge", "The number of logical CPUs usable by the server.", sys.num_cpu_used.to_string()),
            ("kes_system_num_threads", "gauge", "The number of threads that currently exist.", sys.num_threads.to_string()),
            ("kes_system_mem_heap_used", "gauge", "The number of bytes that are currently allocated on the heap memory.", sys.mem_heap_used.to_string()),
            ("kes_system_mem_stack_used", "gauge", "The number of bytes that are currently used on the stack memory.", sys.mem_stack_used.to_string()),
        ];
        table
    }
}
