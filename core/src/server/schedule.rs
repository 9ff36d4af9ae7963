//! Scheduled key rotation (`rotation:` in the config, an extension of KES).
//!
//! Every node of a fleet runs the same schedule, and no node keeps a timer
//! of its own per key: whether a key is due is decided from the stored
//! ring's newest `created_at` (the store's truth), and the new version is
//! written through the crash-safe protocol of [`super::rotation`], whose
//! staging lock and re-read make concurrent decisions end in one write. A
//! node that loses the race reads again, finds the fresh version and is not
//! due any more; one that crashes mid-write leaves a staged copy the next
//! writer finishes or discards.
//!
//! A sweep lists the store about every `every / 8` (1 s to 15 min, the
//! shortest `every` of the rules); each matching key whose due time is
//! unknown or past is checked, at most [`PARALLEL`] at once: read, decided,
//! rotated if due. The due time learnt from a read spares reading the key
//! again before then. Sweeps wait while the audit log cannot be written:
//! a rotation is audited like the request it stands for.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::rotation::{Outcome, RingOp};
use super::{Pending, Server};
use crate::api::ApiError;
use crate::config::RotationRule;
use crate::event::{AuditEvent, Event};
use crate::keystore::{StoreError, StoreReply};
use crate::name::KeyName;
use crate::policy::Pattern;
use crate::time::{Now, UnixTime};

/// Checks in flight at once (each is a few store round trips).
const PARALLEL: usize = 4;
/// A check that has not ended by then is given up (a frozen store); its
/// late results are ignored and the key is checked at the next sweep.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds of the time between sweeps.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// The first sweep after start or reload comes at most this soon.
const FIRST_SWEEP: Duration = Duration::from_secs(5);

/// The schedule's state on one node.
#[derive(Default)]
pub(super) struct Schedule {
    rules: Vec<Rule>,
    interval: Duration,
    /// When the next listing is sent (`None` while one is out, or no rules).
    next_sweep: Option<Instant>,
    /// Keys to check, with their rule's index.
    queue: VecDeque<(KeyName, usize)>,
    /// When each listed key is next due, as far as this node has read.
    due: BTreeMap<KeyName, UnixTime>,
    /// Checks in flight and when they are given up.
    running: BTreeMap<KeyName, Instant>,
    /// Whether the last check or listing failed for the store's sake
    /// (logged once per run of such failures, whichever keys they hit).
    failing: bool,
    /// Keys that cannot be rotated for their own sake (too many active
    /// versions, malformed): logged once per key until it rotates.
    stuck: std::collections::BTreeSet<KeyName>,
}

struct Rule {
    pattern: Pattern,
    every: Duration,
}

impl Schedule {
    /// The rule a key falls under: the first that matches.
    fn rule_for(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.pattern.matches(name))
    }

    /// The next time the schedule has work.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let give_up = self.running.values().min().copied();
        [self.next_sweep, give_up].into_iter().flatten().min()
    }
}

impl Server {
    /// Installs the `rotation:` rules (start and SIGHUP). Due times learnt
    /// under the same rules are kept; checks in flight finish.
    pub(super) fn set_rotation(&mut self, rules: &[RotationRule], now: Now) {
        let s = &mut self.schedule;
        let same = s.rules.len() == rules.len()
            && s.rules
                .iter()
                .zip(rules)
                .all(|(a, b)| a.pattern.as_str() == b.key && a.every == b.every);
        if same {
            return;
        }
        s.rules =
            rules.iter().map(|r| Rule { pattern: Pattern::new(&r.key), every: r.every }).collect();
        s.due.clear();
        s.queue.clear();
        let shortest = s.rules.iter().map(|r| r.every).min();
        s.interval = shortest.map_or(MAX_INTERVAL, |e| (e / 8).clamp(MIN_INTERVAL, MAX_INTERVAL));
        s.next_sweep = shortest.map(|_| now.instant + s.interval.min(FIRST_SWEEP));
    }

    /// Runs the schedule's timers: a due sweep, checks to give up.
    pub(super) fn schedule_timeout(&mut self, now: Now) {
        let late: Vec<KeyName> = self
            .schedule
            .running
            .iter()
            .filter(|(_, t)| **t <= now.instant)
            .map(|(n, _)| n.clone())
            .collect();
        for name in late {
            self.schedule.running.remove(&name);
            self.pending.retain(
                |_, p| !matches!(p, Pending::Ring(w) if w.is_scheduled() && w.name == name),
            );
            let message =
                format!("the key store did not answer within {}s", CHECK_TIMEOUT.as_secs());
            self.schedule_failed(&name, Some(message), now);
        }
        if self.schedule.next_sweep.is_some_and(|t| t <= now.instant) {
            if self.metrics.audit_stalled {
                self.schedule.next_sweep = Some(now.instant + self.schedule.interval);
            } else {
                self.schedule.next_sweep = None;
                let id = self.command(crate::keystore::Command::List, now);
                self.pending.insert(id, Pending::Sweep);
            }
        }
        self.pump_checks(now);
    }

    /// A sweep's listing: queue the matching keys that may be due.
    pub(super) fn sweep_listed(&mut self, result: Result<StoreReply, StoreError>, now: Now) {
        let s = &mut self.schedule;
        if s.rules.is_empty() {
            return; // rules removed by a reload while the listing was out
        }
        s.next_sweep = Some(now.instant + s.interval);
        let names = match result {
            Ok(StoreReply::Names(names)) => names,
            Ok(_) => return self.schedule_failed_listing("unexpected answer".into(), now),
            Err(e) => return self.schedule_failed_listing(e.to_string(), now),
        };
        let s = &mut self.schedule;
        let mut listed = BTreeMap::new();
        for n in names {
            // A staged copy alone: a writer died between deleting the entry
            // and creating it again; the check finishes its change.
            let name = match KeyName::parse(&n) {
                Ok(name) => name,
                Err(_) => match KeyName::of_staging(&n) {
                    Some(name) => {
                        s.due.remove(&name);
                        name
                    }
                    None => continue,
                },
            };
            let Some(rule) = s.rule_for(name.as_str()) else { continue };
            let due = s.due.get(&name).copied();
            if due.is_none_or(|d| d <= now.unix)
                && !s.running.contains_key(&name)
                && !s.queue.iter().any(|(q, _)| *q == name)
            {
                s.queue.push_back((name.clone(), rule));
            }
            if let Some(d) = due {
                listed.insert(name, d);
            }
        }
        // Keys gone from the store are forgotten.
        s.due = listed;
        self.pump_checks(now);
    }

    /// Starts queued checks up to [`PARALLEL`].
    fn pump_checks(&mut self, now: Now) {
        while self.schedule.running.len() < PARALLEL {
            let Some((name, rule)) = self.schedule.queue.pop_front() else { return };
            let Some(r) = self.schedule.rules.get(rule) else { continue };
            let op = RingOp::Scheduled {
                every: r.every,
                created_by: format!(
                    "rotation: {} every {}",
                    r.pattern.as_str(),
                    go_duration(r.every)
                ),
            };
            self.schedule.running.insert(name.clone(), now.instant + CHECK_TIMEOUT);
            self.start_scheduled_write(name, op, now);
        }
    }

    /// A check ended (see [`super::rotation`]).
    pub(super) fn scheduled_done(&mut self, name: KeyName, outcome: Outcome, now: Now) {
        if self.schedule.running.remove(&name).is_none() {
            return; // given up already
        }
        match outcome {
            Outcome::Rotated { ring } => {
                self.schedule.failing = false;
                self.schedule.stuck.remove(&name);
                let version = ring.latest().number;
                let due = ring.latest().key.created_at.unwrap_or(now.unix);
                let every =
                    self.schedule.rule_for(name.as_str()).map(|i| self.schedule.rules[i].every);
                if let Some(every) = every {
                    self.schedule.due.insert(name.clone(), plus(due, every));
                }
                self.metrics.rotations_scheduled += 1;
                self.audit_rotation(&name, version, now);
                self.cache.refresh(name.as_str(), ring, now.instant);
            }
            Outcome::NotDue { ring, due } => {
                self.schedule.failing = false;
                self.schedule.stuck.remove(&name);
                self.schedule.due.insert(name.clone(), due);
                // Another node may have rotated it: seal with the new version.
                self.cache.refresh(name.as_str(), ring, now.instant);
            }
            // Another writer holds the key: it is read again next sweep.
            Outcome::Failed { error: ApiError::KeyBusy, .. } => {
                self.schedule.due.remove(&name);
            }
            Outcome::Failed { error: ApiError::KeyNotFound, .. } => {
                self.schedule.due.remove(&name);
                self.schedule.stuck.remove(&name);
            }
            // The key itself is in the way: say so once per key, and look
            // again each sweep (retiring versions unblocks it).
            Outcome::Failed {
                error: e @ (ApiError::TooManyVersions | ApiError::KeyMalformed),
                ..
            } => {
                self.schedule.due.remove(&name);
                self.metrics.rotation_failures += 1;
                if self.schedule.stuck.insert(name.clone()) {
                    let why = e.status_and_message().1;
                    self.error_event(
                        format!("scheduled rotation of key '{name}' failed: {why}; retried at each check"),
                        now,
                    );
                }
            }
            Outcome::Failed { error, message } => {
                let message = message.unwrap_or_else(|| error.status_and_message().1);
                self.schedule_failed(&name, Some(message), now);
            }
        }
        self.pump_checks(now);
    }

    fn schedule_failed(&mut self, name: &KeyName, message: Option<String>, now: Now) {
        self.schedule.due.remove(name);
        self.metrics.rotation_failures += 1;
        if !std::mem::replace(&mut self.schedule.failing, true) {
            let why = message.unwrap_or_default();
            self.error_event(
                format!("scheduled rotation of key '{name}' failed: {why}; retried at the next check (further failures are not logged until one succeeds)"),
                now,
            );
        }
    }

    fn schedule_failed_listing(&mut self, why: String, now: Now) {
        self.metrics.rotation_failures += 1;
        if !std::mem::replace(&mut self.schedule.failing, true) {
            self.error_event(
                format!("scheduled rotation: listing the keys failed: {why}; retried at the next check (further failures are not logged until one succeeds)"),
                now,
            );
        }
    }

    /// A rotation is audited as the rotate request it stands for, without
    /// a caller (`identity` empty) and naming the new version.
    fn audit_rotation(&mut self, name: &KeyName, version: u32, now: Now) {
        if !self.audit_all {
            return;
        }
        self.metrics.audit_events += 1;
        self.events.push_back(Event::Audit(AuditEvent {
            time: now.unix,
            ip: None,
            path: format!("/v1/key/rotate/{name}"),
            identity: None,
            code: 200,
            elapsed: Duration::ZERO,
            key_version: Some(version),
        }));
    }
}

fn plus(t: UnixTime, d: Duration) -> UnixTime {
    UnixTime::from_nanos(t.as_nanos().saturating_add(d.as_nanos() as i128))
}

/// A period as the config writes it (`720h`, `4s`, `90m`).
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_written_as_in_the_config() {
        assert_eq!(go_duration(Duration::from_secs(720 * 3600)), "720h");
        assert_eq!(go_duration(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(go_duration(Duration::from_secs(4)), "4s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
