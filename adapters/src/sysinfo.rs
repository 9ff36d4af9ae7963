//! Process facts for `/v1/status` and `/v1/metrics`, read from /proc.

use kes_core::metrics::SystemInfo;

/// A fresh snapshot.
pub fn read() -> SystemInfo {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
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
        mem_heap_used: field("VmRSS:") * 1024,
        mem_stack_used: field("VmStk:") * 1024,
        num_threads: field("Threads:"),
    }
}
