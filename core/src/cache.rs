//! The key cache (keystore.md §7), driven entirely by the time passed in.
//!
//! Semantics are KES v0.24's: every `any` the cache is emptied; every
//! `unused / 2` keys not used since the last sweep are evicted; while the store
//! is unreachable and `offline` is set, both expiries pause so cached keys keep
//! serving, until `offline` after the outage began.
//!
//! One addition: KES learns of an outage only from its periodic probe, so a
//! key whose expiry falls between the store going down and the next probe
//! is lost, and its next request fails. Here, with `offline` set, expired
//! keys are kept aside as *stale* for up to `offline`: they are never served
//! while the store answers (a re-fetch replaces them, or drops them if the
//! key was deleted), only when the re-fetch finds the store unreachable, or
//! when it takes longer than `stale_wait` (stale-while-revalidate: a slow
//! or frozen store costs a request for a hot key at most that long).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::crypto::KeyRing;
use crate::name::KeyName;

/// How often the store is probed while offline caching is enabled.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

struct Entry {
    key: KeyRing,
    used: bool,
    /// When it was read from the store (`None`: unknown, counts as old).
    loaded: Option<Instant>,
}

/// An expired key kept for an outage, and when it expired.
struct Stale {
    key: KeyRing,
    since: Instant,
}

/// Decoded keys by name, with expiry state.
pub struct KeyCache {
    cfg: CacheConfig,
    entries: BTreeMap<KeyName, Entry>,
    stale: BTreeMap<KeyName, Stale>,
    offline: bool,
    next_any: Option<Instant>,
    next_unused: Option<Instant>,
    offline_deadline: Option<Instant>,
    next_probe: Option<Instant>,
}

/// What a timer tick asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do.
    Idle,
    /// Probe the store's status and report with [`KeyCache::set_offline`].
    Probe,
}

impl KeyCache {
    /// An empty cache whose timers start at `now`.
    pub fn new(cfg: CacheConfig, now: Instant) -> Self {
        let at = |d: Duration| (!d.is_zero()).then(|| now + d);
        Self {
            cfg,
            entries: BTreeMap::new(),
            stale: BTreeMap::new(),
            offline: false,
            next_any: at(cfg.any),
            next_unused: at(cfg.unused / 2),
            offline_deadline: None,
            next_probe: at(if cfg.offline.is_zero() { Duration::ZERO } else { PROBE_INTERVAL }),
        }
    }

    /// A cached key, marking it used.
    pub fn get(&mut self, name: &str) -> Option<&KeyRing> {
        let e = self.entries.get_mut(name)?;
        e.used = true;
        Some(&e.key)
    }

    /// Caches a key just read from the store (marked used).
    pub fn insert(&mut self, name: KeyName, key: KeyRing) {
        self.stale.remove(name.as_str());
        self.entries.insert(name, Entry { key, used: true, loaded: None });
    }

    /// Caches a key read from the store at `now`.
    pub fn insert_at(&mut self, name: KeyName, key: KeyRing, now: Instant) {
        self.stale.remove(name.as_str());
        self.entries.insert(name, Entry { key, used: true, loaded: Some(now) });
    }

    /// Replaces a cached key with the store's newer state (a rotation seen
    /// by the schedule); a key not cached stays out, and unused stays
    /// unused, so the schedule's reads never keep a key in memory.
    pub fn refresh(&mut self, name: &str, key: KeyRing, now: Instant) {
        if let Some(e) = self.entries.get_mut(name) {
            e.key = key;
            e.loaded = Some(now);
        }
    }

    /// A cached key (marking it used), and whether it was read from the
    /// store before `t` (so reading it again may find versions added
    /// elsewhere since); one lookup, for the request hot path.
    pub fn get_loaded_before(
        &mut self,
        name: &str,
        t: Option<Instant>,
    ) -> Option<(&KeyRing, bool)> {
        let e = self.entries.get_mut(name)?;
        e.used = true;
        let old = t.is_some_and(|t| e.loaded.is_none_or(|l| l < t));
        Some((&e.key, old))
    }

    /// Drops a key (after delete, or when the store says it is gone).
    pub fn evict(&mut self, name: &str) {
        self.entries.remove(name);
        self.stale.remove(name);
    }

    /// The store was unreachable when an expired key was fetched again: if
    /// it was kept aside (offline caching), it serves again. True if so.
    pub fn restore_stale(&mut self, name: &str, now: Instant) -> bool {
        let fresh = |s: &Stale| now.saturating_duration_since(s.since) < self.cfg.offline;
        match self.stale.remove_entry(name) {
            Some((name, s)) if fresh(&s) => {
                self.entries.insert(name, Entry { key: s.key, used: true, loaded: None });
                true
            }
            _ => false,
        }
    }

    /// The newest version of a cached (or kept) key, without marking it used.
    pub fn newest_version(&self, name: &str) -> Option<u32> {
        let ring =
            self.entries.get(name).map(|e| &e.key).or(self.stale.get(name).map(|s| &s.key))?;
        Some(ring.latest().number)
    }

    /// An expired key kept aside (offline caching), without restoring it:
    /// what answers while a re-read is slower than `stale_wait`.
    pub fn stale(&self, name: &str, now: Instant) -> Option<&KeyRing> {
        let s = self.stale.get(name)?;
        (now.saturating_duration_since(s.since) < self.cfg.offline).then_some(&s.key)
    }

    /// How long a request for a key with a stale copy waits for the store
    /// (zero: no stale-while-revalidate).
    pub fn stale_wait(&self) -> std::time::Duration {
        if self.cfg.offline.is_zero() {
            std::time::Duration::ZERO
        } else {
            self.cfg.stale_wait
        }
    }

    /// Expired entries: kept aside with offline caching, else dropped.
    fn expire(&mut self, now: Instant, keep: impl Fn(&mut Entry) -> bool) {
        let entries = std::mem::take(&mut self.entries);
        for (name, mut e) in entries {
            if keep(&mut e) {
                self.entries.insert(name, e);
            } else if !self.cfg.offline.is_zero() {
                self.stale.insert(name, Stale { key: e.key, since: now });
            }
        }
        let offline = self.cfg.offline;
        self.stale.retain(|_, s| now.saturating_duration_since(s.since) < offline);
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether, with the store unreachable, cached keys would still serve:
    /// offline caching is on and holds keys (fresh or kept aside).
    pub fn serves_offline(&self) -> bool {
        !self.cfg.offline.is_zero() && (!self.entries.is_empty() || !self.stale.is_empty())
    }

    /// Whether the store is currently considered unreachable.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Records the store's reachability.
    pub fn set_offline(&mut self, offline: bool, now: Instant) {
        if offline && !self.offline && !self.cfg.offline.is_zero() {
            self.offline_deadline = Some(now + self.cfg.offline);
        }
        if !offline {
            self.offline_deadline = None;
        }
        self.offline = offline;
    }

    fn holding(&self) -> bool {
        self.offline && !self.cfg.offline.is_zero()
    }

    /// The next instant [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_any, self.next_unused, self.offline_deadline, self.next_probe]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every expiry that is due. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Tick {
        if let Some(t) = self.next_any.filter(|t| *t <= now) {
            if !self.holding() {
                self.expire(now, |_| false);
            }
            self.next_any = Some(next_after(t, self.cfg.any, now));
        }
        if let Some(t) = self.next_unused.filter(|t| *t <= now) {
            if !self.holding() {
                self.expire(now, |e| std::mem::take(&mut e.used));
            }
            self.next_unused = Some(next_after(t, self.cfg.unused / 2, now));
        }
        if self.offline_deadline.is_some_and(|t| t <= now) {
            self.entries.clear();
            self.stale.clear();
            self.offline_deadline = None;
        }
        match self.next_probe.filter(|t| *t <= now) {
            Some(t) => {
                self.next_probe = Some(next_after(t, PROBE_INTERVAL, now));
                Tick::Probe
            }
            None => Tick::Idle,
        }
    }
}

fn next_after(mut t: Instant, period: Duration, now: Instant) -> Instant {
    while t <= now {
        t += period;
    }
    t
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests seed the simulated clock from the real one
mod tests {
    use super::*;

    fn ring(k: [u8; 32]) -> KeyRing {
        use crate::crypto::{SecretBytes, SecretKey};
        KeyRing::single(SecretKey::new(k, None, None, None, None), SecretBytes::new(Vec::new()))
    }

    fn key() -> KeyRing {
        ring([7; 32])
    }

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    #[test]
    fn any_expiry_empties_everything() {
        let t0 = Instant::now();
        let cfg = CacheConfig {
            any: Duration::from_secs(60),
            unused: Duration::ZERO,
            offline: Duration::ZERO,
            stale_wait: Duration::ZERO,
        };
        let mut c = KeyCache::new(cfg, t0);
        c.insert(name("a"), key());
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        c.handle_timeout(t0 + Duration::from_secs(59));
        assert!(c.get("a").is_some());
        c.handle_timeout(t0 + Duration::from_secs(60));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn unused_keys_go_used_keys_stay() {
        let t0 = Instant::now();
        let cfg = CacheConfig {
            any: Duration::ZERO,
            unused: Duration::from_secs(20),
            offline: Duration::ZERO,
            stale_wait: Duration::ZERO,
        };
        let mut c = KeyCache::new(cfg, t0);
        c.insert(name("busy"), key());
        c.insert(name("idle"), key());
        // First sweep at 10s clears the "used on insert" flags.
        c.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(c.len(), 2);
        assert!(c.get("busy").is_some());
        c.handle_timeout(t0 + Duration::from_secs(20));
        assert!(c.get("idle").is_none());
        assert!(c.get("busy").is_some());
    }

    #[test]
    fn offline_holds_keys_until_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cfg =
            CacheConfig { any: s(30), unused: s(10), offline: s(120), stale_wait: Duration::ZERO };
        let mut c = KeyCache::new(cfg, t0);
        c.insert(name("a"), key());
        assert_eq!(c.handle_timeout(t0 + s(5)), Tick::Idle);
        assert!(c.get("a").is_some()); // used, so the 10s sweep keeps it
        assert_eq!(c.handle_timeout(t0 + s(10)), Tick::Probe);
        c.set_offline(true, t0 + s(10));
        // any (30s) and unused (5s sweeps) are suspended while offline.
        for t in [15, 30, 60, 90, 129] {
            c.handle_timeout(t0 + s(t));
            assert!(c.get("a").is_some(), "at {t}s");
        }
        c.handle_timeout(t0 + s(130));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn recovery_resumes_normal_expiry() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cfg = CacheConfig {
            any: s(30),
            unused: Duration::ZERO,
            offline: s(600),
            stale_wait: Duration::ZERO,
        };
        let mut c = KeyCache::new(cfg, t0);
        c.insert(name("a"), key());
        c.set_offline(true, t0);
        c.handle_timeout(t0 + s(30));
        assert!(c.get("a").is_some());
        c.set_offline(false, t0 + s(40));
        c.handle_timeout(t0 + s(60));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn expired_keys_serve_only_when_the_store_is_down() {
        let t0 = Instant::now();
        let cfg = CacheConfig {
            any: Duration::from_secs(2),
            unused: Duration::from_secs(60),
            offline: Duration::from_secs(30),
            stale_wait: Duration::ZERO,
        };
        let mut c = KeyCache::new(cfg, t0);
        let name = KeyName::parse("k").unwrap();
        c.insert(name.clone(), ring([1; 32]));
        c.handle_timeout(t0 + Duration::from_secs(2));
        assert!(c.get("k").is_none(), "expired: the store is asked again");
        // The store answers NotFound: deleted meanwhile, gone for good.
        let mut gone = KeyCache::new(cfg, t0);
        gone.insert(name.clone(), ring([1; 32]));
        gone.handle_timeout(t0 + Duration::from_secs(2));
        gone.evict("k");
        assert!(!gone.restore_stale("k", t0 + Duration::from_secs(3)));
        // The store is unreachable: the expired key serves again.
        assert!(c.restore_stale("k", t0 + Duration::from_secs(3)));
        assert!(c.get("k").is_some());
        // Not after `offline` has passed since it expired.
        c.handle_timeout(t0 + Duration::from_secs(4));
        assert!(!c.restore_stale("k", t0 + Duration::from_secs(40)));
        // Without offline caching nothing is kept aside.
        let mut plain = KeyCache::new(CacheConfig { offline: Duration::ZERO, ..cfg }, t0);
        plain.insert(name, ring([1; 32]));
        plain.handle_timeout(t0 + Duration::from_secs(2));
        assert!(!plain.restore_stale("k", t0 + Duration::from_secs(3)));
    }
}
