//! Changing a key's versions (rotate, retire, purge): an extension of KES.
//!
//! Stores only create-if-absent, read and delete, so replacing a key's
//! stored value takes a protocol that survives a crash at any step and
//! concurrent writers on other nodes:
//!
//! 1. read the key's entry and compute its new state;
//! 2. stage the new state under the key's staging name (create-if-absent:
//!    the staged copy is the lock; a second writer finds it taken and is
//!    told to retry);
//! 3. read the entry again: if another writer changed it between 1 and 2,
//!    drop the staged copy and start over (no lost update);
//! 4. delete the key's entry, 5. create it with the new state;
//! 6. delete the staged copy.
//!
//! Between 4 and 5 the key has no entry: readers then use the staged copy
//! (`keyops`), but only after reading the entry once more and finding it
//! still missing (a copy read after one look may be another writer's that
//! is about to be abandoned). A writer that finds the entry gone puts the
//! staged copy back as the entry (same double read), and leaves the copy:
//! it may be a live writer's lock. A lock older than [`STALE`] belongs to
//! a writer that died: the next writer breaks it through a claim (see
//! `Step::ClaimBreak`), since the entry is the last completed state.
//!
//! A recovering writer may act on a staged copy it read long before (its
//! messages can be slow): its create can land in the window between
//! another writer's steps 4 and 5 and put back an older state. So step 5
//! finding the entry taken is not taken as success: the entry is read, and
//! unless it is the new state, and the staged copy is still this writer's,
//! it is replaced again (the staged copy is the lock: whoever holds it owns
//! the entry).
//!
//! The double read and the claim fix lost versions that the fleet
//! simulation (`core/tests/rotation_fleet.rs`, store messages delivered in
//! random order, crashes in between) found; keep it passing when changing
//! any step here.
//!
//! The same protocol serves the rotation schedule ([`super::schedule`]): its
//! change is decided on the value read in step 1, so when a start-over finds
//! that another node rotated meanwhile, the key is no longer due and
//! nothing is written.

use std::time::Duration;

use serde_json::json;

use super::{Pending, RequestId, Server};
use crate::api::{ApiError, Response};
use crate::crypto::{KeyRing, SecretBytes, SecretKey};
use crate::keystore::{Command, StoreError, StoreReply};
use crate::name::KeyName;
use crate::time::{Now, UnixTime};

/// A staged copy this old belongs to a writer that died.
const STALE: Duration = Duration::from_secs(60);
/// Restarts after recovering a crashed write, before giving up.
const MAX_RESTARTS: u8 = 3;

/// What is changed.
pub(super) enum RingOp {
    /// A new newest version (`created_by` is the caller).
    Rotate { created_by: Option<String> },
    /// Versions below this are retired.
    Retire(u32),
    /// Retired versions' material is removed.
    Purge,
    /// A new newest version if the newest is at least `every` old (by the
    /// stored `created_at`; unknown counts as old). `created_by` names the
    /// schedule's rule.
    Scheduled { every: Duration, created_by: String },
}

/// Who waits for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A client request, answered when the change ends.
    Request(RequestId),
    /// The rotation schedule (no client waits).
    Schedule,
}

/// How a scheduled change ended.
pub(super) enum Outcome {
    /// A new version was written.
    Rotated { ring: KeyRing },
    /// Not due: the stored ring (written elsewhere, perhaps) and when it is.
    NotDue { ring: KeyRing, due: UnixTime },
    /// Failed; `message` is the store's, for the error log.
    Failed { error: ApiError, message: Option<String> },
}

/// One change of a key's versions, between store results.
pub(super) struct RingWrite {
    origin: Origin,
    pub(super) name: KeyName,
    op: RingOp,
    step: Step,
    restarts: u8,
    /// The stored value the new state was computed from.
    base: Option<SecretBytes>,
    /// The new state and its stored form, once computed.
    new: Option<(KeyRing, SecretBytes)>,
    /// What the answer says.
    answer: serde_json::Value,
    /// The staged copy read when the entry was missing.
    recovering: Option<SecretBytes>,
    /// The stale staged copy this writer is breaking.
    breaking: Option<SecretBytes>,
    /// A scheduled change that was not due: the ring read and its due time.
    not_due: Option<(KeyRing, UnixTime)>,
    /// The store's message of a scheduled change's failure (the schedule
    /// logs once per run of failures, not per key).
    failure: Option<String>,
}

enum Step {
    ReadKey,
    ReadStaged,
    ReadLast,
    RecheckKey,
    RecoverCreate,
    Stage,
    Verify,
    Abandon,
    CheckStaged,
    /// A stale lock is broken by one writer at a time: deleting the
    /// staged copy is not conditional in any store, so two writers that
    /// both found it stale could otherwise delete it and then, late, the
    /// lock a third writer took meanwhile (two writers in steps 4-5 lose
    /// one's versions; the fleet simulation found it). The breaker first
    /// creates a claim named after the stale copy's hash (create-if-absent:
    /// one claim per stale copy), reads the staged copy again, deletes it
    /// only if unchanged, then drops the claim. A claim whose breaker died
    /// goes stale like a lock.
    ClaimBreak,
    CheckBreak,
    DropBreak,
    ConfirmStale,
    DropStale,
    ReleaseBreak,
    DeleteKey,
    CreateKey,
    CheckCreated,
    Reclaim,
    DeleteStaged,
}

type StoreResult = Result<StoreReply, StoreError>;

impl Server {
    /// Starts a change: the request is parked until the protocol ends.
    pub(super) fn start_ring_write(
        &mut self,
        parked: super::Parked<'_>,
        name: KeyName,
        op: RingOp,
    ) {
        let w = RingWrite::new(Origin::Request(parked.id), name.clone(), op);
        self.issue(parked, Command::Get { name }, Pending::Ring(Box::new(w)));
    }

    /// Starts a change for the rotation schedule; its end is reported to
    /// [`Server::scheduled_done`].
    pub(super) fn start_scheduled_write(&mut self, name: KeyName, op: RingOp, now: Now) {
        let w = RingWrite::new(Origin::Schedule, name.clone(), op);
        let cid = self.command(Command::Get { name }, now);
        self.pending.insert(cid, Pending::Ring(Box::new(w)));
    }

    /// The next step of a change, from the last command's result.
    pub(super) fn ring_write_result(
        &mut self,
        mut w: Box<RingWrite>,
        result: StoreResult,
        now: Now,
        rng: &mut dyn rand_core::CryptoRngCore,
    ) {
        let next = match self.advance(&mut w, result, now, rng) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return self.ring_write_done(*w, now),
            Err(error) => {
                return match w.origin {
                    Origin::Request(req) => self.complete(req, Err(error), now),
                    Origin::Schedule => {
                        let message = w.failure.take();
                        self.scheduled_done(w.name, Outcome::Failed { error, message }, now)
                    }
                }
            }
        };
        let cid = self.command(next, now);
        self.pending.insert(cid, Pending::Ring(w));
    }

    fn ring_write_done(&mut self, mut w: RingWrite, now: Now) {
        match (w.origin, w.new.take(), w.not_due.take()) {
            (Origin::Request(req), Some((ring, _)), _) => {
                self.cache.insert_at(w.name, ring, now.instant);
                self.complete(req, Ok(Response::json(&w.answer)), now);
            }
            (Origin::Schedule, Some((ring, _)), _) => {
                self.scheduled_done(w.name, Outcome::Rotated { ring }, now);
            }
            (Origin::Schedule, None, Some((ring, due))) => {
                self.scheduled_done(w.name, Outcome::NotDue { ring, due }, now);
            }
            // Only a scheduled change can end without writing.
            (Origin::Request(req), None, _) => self.complete(req, Err(ApiError::StoreRead), now),
            (Origin::Schedule, None, None) => {
                let failed = Outcome::Failed { error: ApiError::StoreRead, message: None };
                self.scheduled_done(w.name, failed, now);
            }
        }
    }

    /// Applies a result; the next command, `None` when done.
    fn advance(
        &mut self,
        w: &mut RingWrite,
        result: StoreResult,
        now: Now,
        rng: &mut dyn rand_core::CryptoRngCore,
    ) -> Result<Option<Command>, ApiError> {
        let key = w.name.clone();
        let staging = key.staging();
        let scheduled = w.origin == Origin::Schedule;
        // The schedule logs its failures itself, once per run of them.
        let fail = |s: &mut Server, failure: &mut Option<String>, e: StoreError, api| {
            if scheduled {
                *failure = Some(e.to_string());
                Err(api)
            } else {
                s.store_failure(e, api, now)
            }
        };
        let (step, cmd) = match (&w.step, result) {
            (Step::ReadKey, Ok(StoreReply::Value(v))) => {
                let ring = self.decode_for_write(&key, v.expose(), now)?;
                if let RingOp::Scheduled { every, .. } = &w.op {
                    if let Some(due) = not_due(&ring, *every, now.unix) {
                        w.not_due = Some((ring, due));
                        return Ok(None);
                    }
                }
                let new = apply(&w.op, ring, &key, now, rng, &mut w.answer)?;
                let value = new.encode(now.unix);
                w.new = Some((new, value.clone()));
                w.base = Some(v);
                (Step::Stage, Command::Create { name: staging, value })
            }
            (Step::ReadKey, Err(StoreError::NotFound)) => {
                (Step::ReadStaged, Command::Get { name: staging })
            }
            // A writer died after deleting the entry, or is between steps 4
            // and 5: finish its work (the same value either way), once the
            // entry is seen missing after the staged copy was read (else
            // the copy may be another writer's that will be abandoned).
            (Step::ReadStaged, Ok(StoreReply::Value(v))) => {
                w.recovering = Some(v);
                (Step::RecheckKey, Command::Get { name: key })
            }
            (Step::RecheckKey, Err(StoreError::NotFound)) => {
                let v = w.recovering.take().unwrap_or_default();
                (Step::RecoverCreate, Command::Create { name: key, value: v })
            }
            (Step::RecheckKey, Ok(StoreReply::Value(_))) => return self.restart(w),
            // Neither: a change may have finished between the two reads;
            // the entry decides.
            (Step::ReadStaged, Err(StoreError::NotFound)) => {
                (Step::ReadLast, Command::Get { name: key })
            }
            (Step::ReadLast, Ok(StoreReply::Value(_))) => return self.restart(w),
            (Step::ReadLast, Err(StoreError::NotFound)) => {
                self.cache.evict(key.as_str());
                return Err(ApiError::KeyNotFound);
            }
            // The staged copy stays: it may be a live writer's lock, which
            // it deletes itself; if its writer died, it goes stale and the
            // next writer breaks it (below).
            (Step::RecoverCreate, Ok(_) | Err(StoreError::Exists)) => return self.restart(w),
            (Step::Stage, Ok(_)) => (Step::Verify, Command::Get { name: key }),
            (Step::Verify, Ok(StoreReply::Value(v))) if same(w.base.as_ref(), &v) => {
                (Step::DeleteKey, Command::Delete { name: key })
            }
            // Changed (or gone) since it was read: start over on the new state.
            (Step::Verify, Ok(_) | Err(StoreError::NotFound)) => {
                (Step::Abandon, Command::Delete { name: staging })
            }
            (Step::Abandon, Ok(_) | Err(StoreError::NotFound)) => return self.restart(w),
            (Step::Stage, Err(StoreError::Exists)) => {
                (Step::CheckStaged, Command::Get { name: staging })
            }
            (Step::CheckStaged, Ok(StoreReply::Value(v))) => {
                if age(&v, now).is_some_and(|a| a < STALE) {
                    return Err(ApiError::KeyBusy);
                }
                let breaker = key.breaker(v.expose());
                w.breaking = Some(v);
                (Step::ClaimBreak, Command::Create { name: breaker, value: stamp(now) })
            }
            // Breaking a dead writer's lock: see `ClaimBreak`.
            (Step::ClaimBreak, Ok(_)) => (Step::ConfirmStale, Command::Get { name: staging }),
            (Step::ClaimBreak, Err(StoreError::Exists)) => {
                let breaker = key.breaker(w.breaking.as_ref().map_or(&[][..], |b| b.expose()));
                (Step::CheckBreak, Command::Get { name: breaker })
            }
            (Step::CheckBreak, Ok(StoreReply::Value(m))) => {
                if stamp_age(&m, now).is_some_and(|a| a < STALE) {
                    return Err(ApiError::KeyBusy);
                }
                // Its breaker died too: free the claim, try again.
                let breaker = key.breaker(w.breaking.as_ref().map_or(&[][..], |b| b.expose()));
                (Step::DropBreak, Command::Delete { name: breaker })
            }
            (Step::CheckBreak | Step::DropBreak | Step::ReleaseBreak, Ok(_))
            | (
                Step::CheckBreak | Step::DropBreak | Step::ReleaseBreak,
                Err(StoreError::NotFound),
            ) => {
                w.breaking = None;
                return self.restart(w);
            }
            (Step::ConfirmStale, Ok(StoreReply::Value(v))) if same(w.breaking.as_ref(), &v) => {
                self.error_event(
                    format!("key '{key}': discarding the staged versions of an unfinished change"),
                    now,
                );
                (Step::DropStale, Command::Delete { name: staging })
            }
            (Step::ConfirmStale, Ok(_) | Err(StoreError::NotFound))
            | (Step::DropStale, Ok(_) | Err(StoreError::NotFound)) => {
                let breaker = key.breaker(w.breaking.as_ref().map_or(&[][..], |b| b.expose()));
                (Step::ReleaseBreak, Command::Delete { name: breaker })
            }
            (Step::CheckStaged, Err(StoreError::NotFound)) => return self.restart(w),
            (Step::DeleteKey, Ok(_) | Err(StoreError::NotFound)) => {
                let value = w.new.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
                (Step::CreateKey, Command::Create { name: key, value })
            }
            (Step::CreateKey, Ok(_)) => (Step::DeleteStaged, Command::Delete { name: staging }),
            // A recovering writer may have put back an older state: look.
            (Step::CreateKey, Err(StoreError::Exists)) => {
                (Step::CheckCreated, Command::Get { name: key })
            }
            (Step::CheckCreated, Ok(StoreReply::Value(v))) if same(w.staged(), &v) => {
                (Step::DeleteStaged, Command::Delete { name: staging })
            }
            (Step::CheckCreated, Ok(StoreReply::Value(_))) => {
                (Step::Reclaim, Command::Get { name: staging })
            }
            (Step::CheckCreated, Err(StoreError::NotFound)) => {
                let value = w.staged().cloned().unwrap_or_default();
                (Step::CreateKey, Command::Create { name: key, value })
            }
            // Still holding the lock: the entry is an older state, replace it.
            (Step::Reclaim, Ok(StoreReply::Value(v))) if same(w.staged(), &v) => {
                w.restarts += 1;
                if w.restarts > MAX_RESTARTS {
                    return Err(ApiError::KeyBusy);
                }
                (Step::DeleteKey, Command::Delete { name: key })
            }
            // The lock was taken over (this writer was presumed dead).
            (Step::Reclaim, Ok(_) | Err(StoreError::NotFound)) => return Err(ApiError::KeyBusy),
            (Step::DeleteStaged, Ok(_) | Err(StoreError::NotFound)) => return Ok(None),
            (
                Step::ReadKey
                | Step::ReadStaged
                | Step::ReadLast
                | Step::RecheckKey
                | Step::CheckStaged
                | Step::CheckCreated,
                Ok(_),
            ) => return Err(ApiError::StoreRead),
            (
                Step::ReadKey
                | Step::ReadStaged
                | Step::ReadLast
                | Step::RecheckKey
                | Step::CheckStaged
                | Step::Verify
                | Step::CheckCreated
                | Step::Reclaim,
                Err(e),
            ) => return fail(self, &mut w.failure, e, ApiError::StoreRead),
            (_, Err(e @ StoreError::Unreachable(_))) => {
                return fail(self, &mut w.failure, e, ApiError::StoreUnreachable)
            }
            (Step::Stage | Step::CreateKey | Step::RecoverCreate, Err(e)) => {
                return fail(self, &mut w.failure, e, ApiError::StoreCreate)
            }
            (_, Err(e)) => return fail(self, &mut w.failure, e, ApiError::StoreDelete),
        };
        w.step = step;
        Ok(Some(cmd))
    }

    fn restart(&mut self, w: &mut RingWrite) -> Result<Option<Command>, ApiError> {
        w.restarts += 1;
        if w.restarts > MAX_RESTARTS {
            return Err(ApiError::KeyBusy);
        }
        w.step = Step::ReadKey;
        w.new = None;
        w.base = None;
        Ok(Some(Command::Get { name: w.name.clone() }))
    }

    fn decode_for_write(
        &mut self,
        name: &KeyName,
        v: &[u8],
        now: Now,
    ) -> Result<KeyRing, ApiError> {
        KeyRing::decode(v).map_err(|e| {
            let why = crate::crypto::sealed::explain(v).unwrap_or_else(|| e.to_string());
            self.error_event(format!("key '{name}': {why}"), now);
            ApiError::KeyMalformed
        })
    }
}

impl RingWrite {
    fn new(origin: Origin, name: KeyName, op: RingOp) -> Self {
        Self {
            origin,
            name,
            op,
            step: Step::ReadKey,
            restarts: 0,
            base: None,
            new: None,
            answer: serde_json::Value::Null,
            not_due: None,
            failure: None,
            recovering: None,
            breaking: None,
        }
    }

    /// The stored form of the new state, once computed.
    fn staged(&self) -> Option<&SecretBytes> {
        self.new.as_ref().map(|(_, v)| v)
    }

    /// Whether the schedule started it (and so waits for it).
    pub(super) fn is_scheduled(&self) -> bool {
        self.origin == Origin::Schedule
    }
}

/// A claim's value: when it was made (Unix nanoseconds, as text).
fn stamp(now: Now) -> SecretBytes {
    SecretBytes::new(now.unix.as_nanos().to_string().into_bytes())
}

/// How old a claim is.
fn stamp_age(claim: &SecretBytes, now: Now) -> Option<Duration> {
    let made: i128 = std::str::from_utf8(claim.expose()).ok()?.trim().parse().ok()?;
    let nanos = (now.unix.as_nanos() - made).max(0);
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// How long ago a staged value was written (by the writer's clock).
fn age(staged: &SecretBytes, now: Now) -> Option<Duration> {
    let written = KeyRing::decode(staged.expose()).ok().and_then(|r| r.written_at())?;
    let nanos = (now.unix.as_nanos() - written.as_nanos()).max(0);
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// When a scheduled rotation of `ring` is due, if not yet: its newest
/// version's `created_at` plus `every`. A version without `created_at`
/// (keys from old KES versions) is taken as due.
fn not_due(ring: &KeyRing, every: Duration, now: UnixTime) -> Option<UnixTime> {
    let created = ring.latest().key.created_at?;
    let due = UnixTime::from_nanos(created.as_nanos().saturating_add(every.as_nanos() as i128));
    (due > now).then_some(due)
}

/// The new state, and what the answer says about it.
fn apply(
    op: &RingOp,
    ring: KeyRing,
    name: &KeyName,
    now: Now,
    rng: &mut dyn rand_core::CryptoRngCore,
    answer: &mut serde_json::Value,
) -> Result<KeyRing, ApiError> {
    Ok(match op {
        RingOp::Rotate { created_by } => {
            let key = new_version(&ring, now, created_by.clone(), rng);
            let ring = ring.rotated(key)?;
            *answer = json!({ "name": name.as_str(), "version": ring.latest().number });
            ring
        }
        RingOp::Scheduled { created_by, .. } => {
            let key = new_version(&ring, now, Some(created_by.clone()), rng);
            let ring = ring.rotated(key)?;
            *answer = json!({ "name": name.as_str(), "version": ring.latest().number });
            ring
        }
        RingOp::Retire(min) => {
            let ring = ring.retired_below(*min)?;
            *answer = json!({ "name": name.as_str(), "min_version": ring.min_version() });
            ring
        }
        RingOp::Purge => {
            let (ring, gone) = ring.purged();
            *answer = json!({ "name": name.as_str(), "purged": gone });
            ring
        }
    })
}

/// A fresh key with the newest version's algorithm and a new HMAC key.
fn new_version(
    ring: &KeyRing,
    now: Now,
    created_by: Option<String>,
    rng: &mut dyn rand_core::CryptoRngCore,
) -> SecretKey {
    let alg = ring.latest().key.effective_algorithm();
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    let mut hmac = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    rng.fill_bytes(hmac.as_mut());
    SecretKey::new(*key, Some(alg), Some(*hmac), Some(now.unix), created_by)
}

/// Whether the entry still holds the value the change was computed from
/// (compared in constant time: it is a key).
fn same(base: Option<&SecretBytes>, now: &SecretBytes) -> bool {
    use subtle::ConstantTimeEq;
    base.is_some_and(|b| b.expose().ct_eq(now.expose()).into())
}
