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
//! Between 3 and 4 the key has no entry: readers then use the staged copy
//! (`keyops`), which is already the new state. A writer that finds the
//! entry gone but a staged copy there finishes steps 4-5 first; one that
//! finds a staged copy older than [`STALE`] (a writer that died) discards
//! it, since the entry is still the last completed state.

use std::time::Duration;

use serde_json::json;

use super::{Pending, RequestId, Server};
use crate::api::{ApiError, Response};
use crate::crypto::{KeyRing, SecretBytes, SecretKey};
use crate::keystore::{Command, StoreError, StoreReply};
use crate::name::KeyName;
use crate::time::Now;

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
}

/// One change of a key's versions, between store results.
pub(super) struct RingWrite {
    req: RequestId,
    name: KeyName,
    op: RingOp,
    step: Step,
    restarts: u8,
    /// The stored value the new state was computed from.
    base: Option<SecretBytes>,
    /// The new state and its stored form, once computed.
    new: Option<(KeyRing, SecretBytes)>,
    /// What the answer says.
    answer: serde_json::Value,
}

enum Step {
    ReadKey,
    ReadStaged,
    RecoverCreate,
    RecoverDeleteStaged,
    Stage,
    Verify,
    Abandon,
    CheckStaged,
    DropStale,
    DeleteKey,
    CreateKey,
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
        let w = RingWrite {
            req: parked.id,
            name: name.clone(),
            op,
            step: Step::ReadKey,
            restarts: 0,
            base: None,
            new: None,
            answer: serde_json::Value::Null,
        };
        self.issue(parked, Command::Get { name }, Pending::Ring(Box::new(w)));
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
            Ok(None) => {
                let (ring, _) = w.new.take().expect("a finished write has its new state");
                self.cache.insert_at(w.name.clone(), ring, now.instant);
                let r = Ok(Response::json(&w.answer));
                return self.complete(w.req, r, now);
            }
            Err(e) => return self.complete(w.req, Err(e), now),
        };
        let cid = self.command(next, now);
        self.pending.insert(cid, Pending::Ring(w));
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
        let fail = |s: &mut Server, e: StoreError, api: ApiError| s.store_failure(e, api, now);
        let (step, cmd) = match (&w.step, result) {
            (Step::ReadKey, Ok(StoreReply::Value(v))) => {
                let ring = self.decode_for_write(&key, v.expose(), now)?;
                let new = apply(&w.op, ring, &key, now, rng, &mut w.answer)?;
                let value = new.encode(now.unix);
                w.new = Some((new, value.clone()));
                w.base = Some(v);
                (Step::Stage, Command::Create { name: staging, value })
            }
            (Step::ReadKey, Err(StoreError::NotFound)) => {
                (Step::ReadStaged, Command::Get { name: staging })
            }
            (Step::ReadStaged, Ok(StoreReply::Value(v))) => {
                // A writer died after deleting the entry: finish its work.
                (Step::RecoverCreate, Command::Create { name: key, value: v })
            }
            (Step::ReadStaged, Err(StoreError::NotFound)) => {
                self.cache.evict(key.as_str());
                return Err(ApiError::KeyNotFound);
            }
            (Step::RecoverCreate, Ok(_) | Err(StoreError::Exists)) => {
                (Step::RecoverDeleteStaged, Command::Delete { name: staging })
            }
            (Step::RecoverDeleteStaged | Step::DropStale, Ok(_) | Err(StoreError::NotFound)) => {
                return self.restart(w);
            }
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
                let written = KeyRing::decode(v.expose()).ok().and_then(|r| r.written_at());
                let age = written.map(|t| {
                    let nanos = (now.unix.as_nanos() - t.as_nanos()).max(0);
                    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
                });
                if age.is_some_and(|a| a < STALE) {
                    return Err(ApiError::KeyBusy);
                }
                self.error_event(
                    format!("key '{key}': discarding the staged versions of an unfinished change"),
                    now,
                );
                (Step::DropStale, Command::Delete { name: staging })
            }
            (Step::CheckStaged, Err(StoreError::NotFound)) => return self.restart(w),
            (Step::DeleteKey, Ok(_) | Err(StoreError::NotFound)) => {
                let value = w.new.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
                (Step::CreateKey, Command::Create { name: key, value })
            }
            (Step::CreateKey, Ok(_) | Err(StoreError::Exists)) => {
                (Step::DeleteStaged, Command::Delete { name: staging })
            }
            (Step::DeleteStaged, Ok(_) | Err(StoreError::NotFound)) => return Ok(None),
            (Step::ReadKey | Step::ReadStaged | Step::CheckStaged, Ok(_)) => {
                return Err(ApiError::StoreRead)
            }
            (Step::ReadKey | Step::ReadStaged | Step::CheckStaged | Step::Verify, Err(e)) => {
                return fail(self, e, ApiError::StoreRead)
            }
            (_, Err(e @ StoreError::Unreachable(_))) => {
                return fail(self, e, ApiError::StoreUnreachable)
            }
            (Step::Stage | Step::CreateKey | Step::RecoverCreate, Err(e)) => {
                return fail(self, e, ApiError::StoreCreate)
            }
            (_, Err(e)) => return fail(self, e, ApiError::StoreDelete),
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
            self.error_event(format!("key '{name}': {e}"), now);
            ApiError::KeyMalformed
        })
    }
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
