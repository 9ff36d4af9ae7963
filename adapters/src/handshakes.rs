//! Full TLS handshakes per client IP (`tls.handshake_rate`): a handshake
//! costs ~25 times the CPU of a keep-alive request, so one address opening
//! connections in a loop could keep a core busy before any policy applies.
//! Over its rate, an address's new connections are closed before the
//! handshake. The table is bounded: idle addresses (full bucket) are
//! dropped, and past [`MAX_ADDRESSES`] the idlest half goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kes_core::limits::Bucket;

/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 65_536;
/// How often idle addresses are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The per-address buckets.
pub struct Handshakes {
    /// Handshakes per second per address; 0: unlimited.
    rate: AtomicU32,
    table: Mutex<Table>,
}

struct Table {
    buckets: HashMap<IpAddr, (Bucket, Instant)>,
    next_prune: Instant,
}

impl Handshakes {
    pub fn new(rate: u32) -> Self {
        let table = Table { buckets: HashMap::new(), next_prune: Instant::now() + PRUNE_EVERY };
        Self { rate: AtomicU32::new(rate), table: Mutex::new(table) }
    }

    /// A reload's new rate (budgets start over).
    pub fn set_rate(&self, rate: u32) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            self.table.lock().unwrap_or_else(|p| p.into_inner()).buckets.clear();
        }
    }

    /// Whether a new connection from `ip` may start its handshake.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return true;
        }
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if now >= t.next_prune || t.buckets.len() >= MAX_ADDRESSES {
            t.buckets.retain(|_, (b, _)| !b.is_full(rate, rate, now));
            if t.buckets.len() >= MAX_ADDRESSES {
                // Everyone is busy: drop the least recently seen half.
                let mut seen: Vec<(Instant, IpAddr)> =
                    t.buckets.iter().map(|(ip, (_, s))| (*s, *ip)).collect();
                seen.sort_unstable();
                for (_, ip) in &seen[..seen.len() / 2] {
                    t.buckets.remove(ip);
                }
            }
            t.next_prune = now + PRUNE_EVERY;
        }
        let (bucket, seen) = t.buckets.entry(ip).or_insert_with(|| (Bucket::full(rate, now), now));
        *seen = now;
        bucket.take(rate, rate, now).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_over_its_rate_does_not_touch_another() {
        let h = Handshakes::new(5);
        let t = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let admitted = (0..50).filter(|_| h.admit(a, t)).count();
        assert_eq!(admitted, 5);
        assert!(h.admit(b, t));
        assert!(h.admit(a, t + Duration::from_millis(200)));
        assert!(Handshakes::new(0).admit(a, t), "0: unlimited");
    }

    #[test]
    fn the_table_stays_bounded() {
        let h = Handshakes::new(1);
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            let ip = IpAddr::from(i.to_be_bytes());
            h.admit(ip, t);
        }
        assert!(h.table.lock().unwrap().buckets.len() <= MAX_ADDRESSES);
    }
}
