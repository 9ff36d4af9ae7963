//! Operations on a key: run at once when the key is cached, else parked
//! while the key is fetched, once however many requests wait for it
//! (single flight), then run for each waiter.

use http::StatusCode;
use rand_core::CryptoRngCore;
use serde_json::json;

use super::{InFlight, Parked, Server};
use crate::api::wire::{b64, JSON};
use crate::api::{ApiError, Response};
use crate::crypto::{CiphertextFormat, KeyRing, SecretBytes};
use crate::keystore::{Command, StoreError, StoreReply};
use crate::name::KeyName;
use crate::time::{Now, GO_ZERO_TIME};

/// What a request wants done with a key.
/// `version` (kms-go's field): seal under that version; `None`: the newest.
#[derive(Clone)]
pub(super) enum KeyOp {
    Describe(KeyName),
    Generate {
        context: Vec<u8>,
        version: Option<u32>,
    },
    Encrypt {
        plaintext: SecretBytes,
        context: Vec<u8>,
        version: Option<u32>,
    },
    Decrypt {
        ciphertext: Vec<u8>,
        context: Vec<u8>,
    },
    /// Opens under whichever version sealed it, seals under the newest.
    Rewrap {
        ciphertext: Vec<u8>,
        context: Vec<u8>,
    },
    Bulk(Vec<(Vec<u8>, Vec<u8>)>),
    Hmac {
        message: Vec<u8>,
    },
}

impl Server {
    /// Runs `op` with the named key now if cached, else parks the request
    /// and fetches the key (once, however many requests wait for it).
    /// `name` is validated already; a `KeyName` is only built on a miss, so a
    /// cache hit allocates nothing for the name.
    pub(super) fn with_key(
        &mut self,
        parked: Parked<'_>,
        name: &str,
        op: KeyOp,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        let Parked { id, ctx, deadline } = parked;
        let format = self.compat.ciphertext;
        // A ciphertext that no cached version opens may be sealed under a
        // version another node added since: read the key again, once
        // (at most once per REFRESH per key, so bad ciphertexts cannot
        // turn into a stream of store reads).
        let opens = matches!(op, KeyOp::Decrypt { .. } | KeyOp::Rewrap { .. } | KeyOp::Bulk(_));
        let since = if opens { now.instant.checked_sub(REFRESH) } else { None };
        let mut op = Some(op);
        if let Some((key, refresh)) = self.cache.get_loaded_before(name, since) {
            let retry = if refresh { op.clone() } else { None };
            let uses = self.unseals.get(name);
            let unseal = op.as_ref().is_some_and(KeyOp::unseals);
            let r = run_key_op(key, op.take().expect("set above"), format, rng, uses);
            match (r, retry) {
                (Err(ApiError::NotAuthentic), Some(again)) => op = Some(again),
                (r, _) => {
                    self.metrics.cache_hits += 1;
                    self.note_unseal(name, unseal, &r, now);
                    self.finish_result(id, ctx, r, now);
                    return;
                }
            }
        }
        let op = op.expect("not run yet");
        // A re-read already slower than `stale_wait`: its stale copy
        // answers at once instead of queueing behind it.
        if self.revalidating.get(name).is_some_and(Option::is_none) {
            if let Some(key) = self.cache.stale(name, now.instant) {
                let unseal = op.unseals();
                let r = run_key_op(key, op, format, rng, self.unseals.get(name));
                self.metrics.cache_hits += 1;
                self.note_unseal(name, unseal, &r, now);
                self.finish_result(id, ctx, r, now);
                return;
            }
        }
        self.metrics.cache_misses += 1;
        let name = match KeyName::parse(name) {
            Ok(n) => n,
            Err(e) => return self.finish_result(id, ctx, Err(ApiError::InvalidName(e)), now),
        };
        self.inflight.insert(id, InFlight { ctx: ctx.clone(), deadline });
        let first = !self.fetching.contains_key(&name);
        self.fetching.entry(name.clone()).or_default().push((id, op));
        if first {
            let wait = self.cache.stale_wait();
            if !wait.is_zero() && self.cache.stale(name.as_str(), now.instant).is_some() {
                self.revalidating.insert(name.clone(), Some(now.instant + wait));
            }
            self.start_fetch(name, now);
        }
    }

    fn start_fetch(&mut self, name: KeyName, now: Now) {
        self.fetch_started.insert(name.clone(), now.instant);
        let cid = self.command(Command::Get { name: name.clone() }, now);
        self.fetches.insert(cid, (name, Fetch::Key));
    }

    /// Stale-while-revalidate: the waiters of re-reads that took longer
    /// than `stale_wait` get the key's stale copy; the re-read goes on and
    /// its result replaces (or, if the key is gone, drops) the copy.
    pub(super) fn serve_stale_due(&mut self, now: Now, rng: &mut dyn CryptoRngCore) {
        let due: Vec<KeyName> = self
            .revalidating
            .iter()
            .filter(|(_, t)| t.is_some_and(|t| t <= now.instant))
            .map(|(n, _)| n.clone())
            .collect();
        let format = self.compat.ciphertext;
        for name in due {
            self.revalidating.insert(name.clone(), None);
            let waiters = match self.fetching.get_mut(&name) {
                Some(w) if self.cache.stale(name.as_str(), now.instant).is_some() => {
                    std::mem::take(w)
                }
                _ => continue,
            };
            self.error_event(
                format!("key store slow: serving the cached key '{name}' while it is read again"),
                now,
            );
            for (req, op) in waiters {
                let Some(key) = self.cache.stale(name.as_str(), now.instant) else { break };
                let unseal = op.unseals();
                let r = run_key_op(key, op, format, rng, self.unseals.get(name.as_str()));
                self.note_unseal(name.as_str(), unseal, &r, now);
                self.complete(req, r, now);
            }
        }
    }

    pub(super) fn finish_fetch(
        &mut self,
        (name, fetch): (KeyName, Fetch),
        result: Result<StoreReply, StoreError>,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        // A key whose entry is gone may be mid-way through a change of its
        // versions (server::rotation): its new state is staged. The entry
        // is read once more after the staged copy: absent still, the copy
        // is the lock holder's and will be the entry; present, the entry
        // wins. (The copy read after one look at a missing entry may be
        // another writer's, staged meanwhile and about to be abandoned:
        // sealing under it would lose the data.)
        let result = match (fetch, result) {
            (Fetch::Key, Err(StoreError::NotFound)) => {
                let cid = self.command(Command::Get { name: name.staging() }, now);
                self.fetches.insert(cid, (name, Fetch::Staged));
                return;
            }
            (Fetch::Staged, Ok(StoreReply::Value(v))) => {
                let cid = self.command(Command::Get { name: name.clone() }, now);
                self.fetches.insert(cid, (name, Fetch::Recheck(v)));
                return;
            }
            (Fetch::Recheck(staged), Err(StoreError::NotFound)) => Ok(StoreReply::Value(staged)),
            // Neither entry nor staged copy: the change may have finished
            // between the two reads (entry created, copy deleted); the
            // entry answers.
            (Fetch::Staged, Err(StoreError::NotFound)) => {
                let cid = self.command(Command::Get { name: name.clone() }, now);
                self.fetches.insert(cid, (name, Fetch::Last));
                return;
            }
            (_, result) => result,
        };
        let mut waiters = self.fetching.remove(&name).unwrap_or_default();
        self.revalidating.remove(&name);
        let started = self.fetch_started.remove(&name);
        // Read-your-writes: a request that joined this fetch after it was
        // sent may come from a client whose create was acknowledged since;
        // "not found" is only the answer for those that were there first,
        // the others read again (the fleet simulation found a client told
        // 404 right after its create succeeded).
        let joined_late = |s: &Server, req: &super::RequestId| {
            s.inflight.get(req).is_some_and(|f| started.is_some_and(|t| f.ctx.arrived.instant > t))
        };
        let mut again: Vec<(super::RequestId, KeyOp)> = Vec::new();
        if matches!(result, Err(StoreError::NotFound))
            && self.cache.stale(name.as_str(), now.instant).is_none()
        {
            again = waiters.extract_if(.., |(req, _)| joined_late(self, req)).collect();
        }
        let outcome: Result<(), ApiError> = match result {
            Ok(StoreReply::Value(v)) => match KeyRing::decode(v.expose()) {
                Ok(key) => {
                    self.cache.set_offline(false, now.instant);
                    // Loaded as of when the read was sent: an answer that
                    // was slow may predate a change made meanwhile, and
                    // must not make the key look freshly read (a ciphertext
                    // of a version added meanwhile would be refused until
                    // the refresh limit passed; the fleet simulation found it).
                    let as_of = started.unwrap_or(now.instant);
                    self.cache.insert_at(name.clone(), key, as_of);
                    Ok(())
                }
                Err(e) => {
                    let why = crate::crypto::sealed::explain(v.expose());
                    let why = why.unwrap_or_else(|| e.to_string());
                    self.error_event(format!("key '{name}': {why}"), now);
                    Err(ApiError::KeyMalformed)
                }
            },
            Ok(_) => Err(ApiError::StoreRead),
            Err(StoreError::NotFound) => {
                self.cache.evict(name.as_str());
                Err(ApiError::KeyNotFound)
            }
            // The store is down: a key kept aside for an outage serves.
            Err(e @ StoreError::Unreachable(_))
                if self.cache.restore_stale(name.as_str(), now.instant) =>
            {
                self.error_event(
                    format!("{e}; serving the cached key '{name}' while the key store is offline"),
                    now,
                );
                Ok(())
            }
            Err(e) => self.store_failure::<()>(e, ApiError::StoreRead, now).map(|_| ()),
        };
        let format = self.compat.ciphertext;
        for (req, op) in waiters {
            let unseal = op.unseals();
            // Likewise a ciphertext of a version added after this read was
            // sent: a late joiner reads again rather than be refused.
            let retry = (unseal && joined_late(self, &req)).then(|| op.clone());
            let r = match (&outcome, self.cache.get(name.as_str())) {
                (Ok(()), Some(key)) => {
                    run_key_op(key, op, format, rng, self.unseals.get(name.as_str()))
                }
                (Ok(()), None) => Err(ApiError::StoreRead),
                // A re-read of a cached key failed (store down): the cached
                // key still answers; but a ciphertext it does not open may be
                // of a version it could not learn of, so that is the store's
                // failure (retry), not "not authentic" (the fleet simulation
                // found valid data refused with 400 during an outage).
                (Err(e), Some(key)) => {
                    match run_key_op(key, op, format, rng, self.unseals.get(name.as_str())) {
                        Err(ApiError::NotAuthentic) => Err(e.clone()),
                        r => r,
                    }
                }
                (Err(e), None) => Err(e.clone()),
            };
            if let (Err(ApiError::NotAuthentic), Some(op)) = (&r, retry) {
                again.push((req, op));
                continue;
            }
            self.note_unseal(name.as_str(), unseal, &r, now);
            self.complete(req, r, now);
        }
        if !again.is_empty() {
            self.fetching.insert(name.clone(), again);
            self.start_fetch(name, now);
        }
    }

    /// Counts an opened ciphertext under its key version (rotated keys
    /// only; their answers name the version), and, in the metrics, when
    /// that version is older than the key's newest: how much data still
    /// needs a version before it is retired.
    fn note_unseal(&mut self, name: &str, unseal: bool, r: &Result<Response, ApiError>, now: Now) {
        let Some(v) = r.as_ref().ok().filter(|_| unseal).and_then(|r| r.key_version) else {
            return;
        };
        if self.cache.newest_version(name).is_some_and(|newest| v < newest) {
            self.metrics.unseals_older_version += 1;
        }
        // The name is parsed (and allocated) on a key's first unseal only.
        let versions = match self.unseals.get_mut(name) {
            Some(v) => v,
            None => {
                let Ok(key) = KeyName::parse(name) else { return };
                self.unseals.entry(key).or_default()
            }
        };
        let e = versions.entry(v).or_default();
        e.0 += 1;
        e.1 = now.unix;
    }
}

impl KeyOp {
    /// Whether the operation opens a ciphertext (what per-version use counts).
    fn unseals(&self) -> bool {
        matches!(self, KeyOp::Decrypt { .. } | KeyOp::Rewrap { .. })
    }
}

/// Per version of one key: how often this node opened data under it, and
/// when it last did (shown by describe).
pub(super) type Unseals = std::collections::BTreeMap<u32, (u64, crate::time::UnixTime)>;

/// The least time between two re-reads of a cached key for a ciphertext
/// it could not open.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Which entry a key fetch reads: the key's own, its staged new state, or
/// the key's again (holding the staged state read).
pub(super) enum Fetch {
    Key,
    Staged,
    Recheck(SecretBytes),
    Last,
}

/// Runs an operation on a key in hand. A key that was never rotated
/// answers exactly as KES does; a rotated one also names versions.
fn run_key_op(
    ring: &KeyRing,
    op: KeyOp,
    format: CiphertextFormat,
    rng: &mut dyn CryptoRngCore,
    uses: Option<&Unseals>,
) -> Result<Response, ApiError> {
    let versioned = ring.is_versioned();
    match op {
        KeyOp::Describe(name) => Ok(Response::json(&describe(&name, ring, uses))),
        KeyOp::Generate { context, version } => {
            let v = ring.sealing(version)?;
            let mut dek = zeroize::Zeroizing::new([0u8; 32]);
            rng.fill_bytes(dek.as_mut());
            let ct = v.key.encrypt(dek.as_slice(), &context, format, rng);
            let fields = [("plaintext", dek.as_slice()), ("ciphertext", &ct)];
            Ok(secret_json(&fields, versioned.then_some(v.number)))
        }
        KeyOp::Encrypt { plaintext, context, version } => {
            let v = ring.sealing(version)?;
            let ct = v.key.encrypt(plaintext.expose(), &context, format, rng);
            Ok(secret_json(&[("ciphertext", &ct)], versioned.then_some(v.number)))
        }
        KeyOp::Decrypt { ciphertext, context } => {
            let (pt, number) = ring.decrypt(&ciphertext, &context)?;
            Ok(secret_json(&[("plaintext", pt.expose())], versioned.then_some(number)))
        }
        KeyOp::Rewrap { ciphertext, context } => {
            let (pt, _) = ring.decrypt(&ciphertext, &context)?;
            let v = ring.latest();
            let ct = v.key.encrypt(pt.expose(), &context, format, rng);
            Ok(secret_json(&[("ciphertext", &ct)], Some(v.number)))
        }
        KeyOp::Bulk(items) => bulk_decrypt(ring, items),
        KeyOp::Hmac { message } => {
            // The newest version's HMAC key: rotation changes HMACs.
            let mac = ring.latest().key.hmac(&message).ok_or(ApiError::NoHmacKey)?;
            Ok(secret_json(&[("hmac", &mac)], None))
        }
    }
}

/// A key's description: KES's fields (of the newest version), and for a
/// rotated key its versions.
fn describe(name: &KeyName, ring: &KeyRing, uses: Option<&Unseals>) -> serde_json::Value {
    let key = &ring.latest().key;
    let mut v = json!({
        "name": name.as_str(),
        "created_at": key.created_at.unwrap_or(GO_ZERO_TIME).to_string(),
    });
    if let Some(a) = key.algorithm() {
        v["algorithm"] = a.v24_name().into();
    }
    if let Some(by) = &key.created_by {
        v["created_by"] = by.clone().into();
    }
    if ring.is_versioned() {
        v["version"] = ring.latest().number.into();
        v["min_version"] = ring.min_version().into();
        let versions: Vec<serde_json::Value> = ring
            .versions()
            .iter()
            .map(|ver| {
                let mut e = json!({
                    "version": ver.number,
                    "created_at": ver.key.created_at.unwrap_or(GO_ZERO_TIME).to_string(),
                    "state": ring.state(ver.number).as_str(),
                });
                if let Some(by) = &ver.key.created_by {
                    e["created_by"] = by.clone().into();
                }
                // What this node has opened under the version since it
                // started: whether old data still needs it.
                let (n, last) = uses.and_then(|u| u.get(&ver.number)).copied().unwrap_or_default();
                e["unseals"] = n.into();
                if n > 0 {
                    e["last_unseal"] = last.to_string().into();
                }
                e
            })
            .collect();
        v["versions"] = versions.into();
    }
    v
}

/// Decrypts every ciphertext in order; the first failure fails them all.
fn bulk_decrypt(ring: &KeyRing, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (ct, cx) in items {
        let (pt, _) = ring.decrypt(&ct, &cx)?;
        out.push(b64(pt.expose()));
    }
    let mut body = b"[".to_vec();
    for (i, p) in out.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"plaintext":""#);
        body.extend_from_slice(p.as_bytes());
        body.extend_from_slice(br#""}"#);
    }
    body.push(b']');
    zeroize::Zeroize::zeroize(&mut out);
    Ok(Response::with(StatusCode::OK, JSON, body))
}

/// A JSON object of base64 fields (and the key version that was used, for
/// rotated keys: a string, the type KES v0.24's wire types declare for
/// `version`), built in one allocation without intermediate `Value`s
/// that would leave copies of secrets on the heap.
fn secret_json(fields: &[(&str, &[u8])], version: Option<u32>) -> Response {
    let mut body =
        Vec::with_capacity(fields.iter().map(|(_, v)| v.len() * 4 / 3 + 24).sum::<usize>() + 32);
    body.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":\"");
        let start = body.len();
        body.resize(start + base64::encoded_len(value.len(), true).unwrap_or(0), 0);
        let n = base64::Engine::encode_slice(
            &base64::engine::general_purpose::STANDARD,
            value,
            &mut body[start..],
        )
        .unwrap_or(0);
        body.truncate(start + n);
        body.push(b'"');
    }
    if let Some(n) = version {
        body.extend_from_slice(format!(r#","version":"{n}""#).as_bytes());
    }
    body.push(b'}');
    let mut r = Response::with(StatusCode::OK, JSON, body);
    r.key_version = version;
    r
}
