//! The key API: create, import, describe, delete, list, and the operations
//! that use a key (generate, encrypt, decrypt, bulk decrypt, HMAC). Those
//! run on the cached key at once or after one fetch ([`super::keyops`]).

use http::StatusCode;
use serde_json::{json, Value};

use super::args::{fields, key_name, key_ref, unb64};
use super::call::Call;
use super::keyops::KeyOp;
use super::rotation::RingOp;
use super::{Parked, Pending, RequestId, Server};
use crate::api::wire::{self, NDJSON};
use crate::api::{ApiError, Response};
use crate::crypto::{keyfile, Algorithm, SecretBytes, SecretKey};
use crate::keystore::{Command, StoreError, StoreReply};
use crate::name::{valid_name, KeyName, ListPattern};
use crate::time::Now;

/// Most ciphertexts one bulk decrypt may carry.
const MAX_BULK: usize = 1000;

pub(super) fn create(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    let key = SecretKey::generate(c.rng, c.now.unix, c.ctx.identity);
    s.create(c.parked(), name, &key)
}

pub(super) fn import(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    // An import needs a key: no body at all is a decode error (Go's json
    // decoder says EOF), not a key of size zero.
    if c.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidImportBody);
    }
    let bad = |_| ApiError::InvalidImportBody;
    let obj = wire::parse_object(&c.body).map_err(bad)?;
    // v0.24 sends `key`, v0.19 `bytes`.
    let mut bytes = wire::bytes_field(&obj, "key").map_err(bad)?;
    if bytes.is_empty() {
        bytes = wire::bytes_field(&obj, "bytes").map_err(bad)?;
    }
    let bytes = SecretBytes::new(bytes);
    let cipher = wire::str_field(&obj, "cipher").map_err(bad)?;
    let alg = match cipher {
        "" => Algorithm::Aes256,
        named => Algorithm::from_name(named)
            .ok_or_else(|| ApiError::UnsupportedAlgorithm(named.to_owned()))?,
    };
    let label = if cipher.is_empty() { "AES256" } else { cipher };
    let raw: [u8; 32] =
        bytes.expose().try_into().map_err(|_| ApiError::InvalidKeySize(label.to_owned()))?;
    let mut hmac = [0u8; 32];
    c.rng.fill_bytes(&mut hmac);
    let created_by = c.ctx.identity.map(|i| i.to_string());
    let key = SecretKey::new(raw, Some(alg), Some(hmac), Some(c.now.unix), created_by);
    s.create(c.parked(), name, &key)
}

pub(super) fn delete(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    let cmd = Command::Delete { name: name.clone() };
    // A staged copy left by an unfinished change of the key's versions
    // would bring the key back: it goes too (its result is not awaited).
    let staging = Command::Delete { name: name.staging() };
    s.issue(c.parked(), cmd, Pending::Delete(c.id, name));
    s.command(staging, c.now);
    Ok(())
}

pub(super) fn list(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let pattern = ListPattern::parse(c.resource).map_err(ApiError::InvalidName)?;
    s.issue(c.parked(), Command::List, Pending::List(c.id, pattern));
    Ok(())
}

pub(super) fn describe(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    let lookup = name.as_str().to_owned();
    let parked = Parked { id: c.id, ctx: c.ctx, deadline: c.deadline };
    s.with_key(parked, &lookup, KeyOp::Describe(name), c.now, c.rng);
    Ok(())
}

pub(super) fn generate(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let [context] = fields(&c.body, ["context"])?;
    let op = KeyOp::Generate { context: unb64(context)?, version: version_field(&c.body)? };
    s.with_key(Parked { id: c.id, ctx: c.ctx, deadline: c.deadline }, name, op, c.now, c.rng);
    Ok(())
}

pub(super) fn encrypt(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let [plaintext, context] = fields(&c.body, ["plaintext", "context"])?;
    let plaintext = SecretBytes::new(unb64(plaintext)?);
    let op =
        KeyOp::Encrypt { plaintext, context: unb64(context)?, version: version_field(&c.body)? };
    s.with_key(Parked { id: c.id, ctx: c.ctx, deadline: c.deadline }, name, op, c.now, c.rng);
    Ok(())
}

pub(super) fn decrypt(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let [ciphertext, context] = fields(&c.body, ["ciphertext", "context"])?;
    let op = KeyOp::Decrypt { ciphertext: unb64(ciphertext)?, context: unb64(context)? };
    s.with_key(Parked { id: c.id, ctx: c.ctx, deadline: c.deadline }, name, op, c.now, c.rng);
    Ok(())
}

/// Re-seals a ciphertext under the newest version (key versions).
pub(super) fn rewrap(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let [ciphertext, context] = fields(&c.body, ["ciphertext", "context"])?;
    let op = KeyOp::Rewrap { ciphertext: unb64(ciphertext)?, context: unb64(context)? };
    s.with_key(Parked { id: c.id, ctx: c.ctx, deadline: c.deadline }, name, op, c.now, c.rng);
    Ok(())
}

/// Adds a version that seals from now on (key versions).
pub(super) fn rotate(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    let created_by = c.ctx.identity.map(|i| i.to_string());
    s.start_ring_write(c.parked(), name, RingOp::Rotate { created_by });
    Ok(())
}

/// Retires versions below `min_version` (key versions).
pub(super) fn retire(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    let v: Value = serde_json::from_slice(&c.body).map_err(|_| ApiError::InvalidBody)?;
    let min = v
        .get("min_version")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or(ApiError::InvalidBody)?;
    s.start_ring_write(c.parked(), name, RingOp::Retire(min));
    Ok(())
}

/// Removes retired versions' material (key versions).
pub(super) fn purge(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_name(c.resource)?;
    s.start_ring_write(c.parked(), name, RingOp::Purge);
    Ok(())
}

/// The optional `version` field of generate and encrypt. KES v0.24's wire
/// types declare it as a string (and ignore it): "" means the newest, "2"
/// or "v2" version 2; a JSON number is accepted too. Read only when the
/// body names it, so the usual request pays nothing.
fn version_field(body: &[u8]) -> Result<Option<u32>, ApiError> {
    if !body.windows(9).any(|w| w == b"\"version\"") {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)?;
    let n = match v.get("version") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.strip_prefix('v').unwrap_or(s).parse::<u32>().ok(),
        Some(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
    };
    let n = n.ok_or(ApiError::InvalidBody)?;
    Ok((n != 0).then_some(n))
}

pub(super) fn bulk_decrypt(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let items: Vec<Value> = serde_json::from_slice(&c.body).map_err(|_| ApiError::InvalidBody)?;
    if items.len() > MAX_BULK {
        return Err(ApiError::TooManyCiphertexts);
    }
    let bytes = |obj: &serde_json::Map<String, Value>, name: &str| {
        wire::bytes_field(obj, name).map_err(|_| ApiError::InvalidBody)
    };
    let mut list = Vec::with_capacity(items.len());
    for item in &items {
        let obj = item.as_object().ok_or(ApiError::InvalidBody)?;
        list.push((bytes(obj, "ciphertext")?, bytes(obj, "context")?));
    }
    let parked = Parked { id: c.id, ctx: c.ctx, deadline: c.deadline };
    s.with_key(parked, name, KeyOp::Bulk(list), c.now, c.rng);
    Ok(())
}

pub(super) fn hmac(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = key_ref(c.resource)?;
    let [message] = fields(&c.body, ["message"])?;
    let op = KeyOp::Hmac { message: unb64(message)? };
    s.with_key(Parked { id: c.id, ctx: c.ctx, deadline: c.deadline }, name, op, c.now, c.rng);
    Ok(())
}

impl Server {
    /// Encodes a new key as a KES key file and asks the store to create it.
    fn create(
        &mut self,
        parked: Parked<'_>,
        name: KeyName,
        key: &SecretKey,
    ) -> Result<(), ApiError> {
        let value = keyfile::encode(key).map_err(|_| ApiError::StoreCreate)?;
        let id = parked.id;
        self.issue(parked, Command::Create { name, value }, Pending::Create(id));
        Ok(())
    }

    pub(super) fn created(
        &mut self,
        req: RequestId,
        result: Result<StoreReply, StoreError>,
        now: Now,
    ) {
        let r = match result {
            Ok(_) => Ok(Response::empty(StatusCode::OK)),
            Err(StoreError::Exists) => Err(ApiError::KeyExists),
            Err(e) => self.store_failure(e, ApiError::StoreCreate, now),
        };
        self.complete(req, r, now);
    }

    pub(super) fn deleted(
        &mut self,
        req: RequestId,
        name: KeyName,
        result: Result<StoreReply, StoreError>,
        now: Now,
    ) {
        let r = match result {
            Ok(_) => {
                self.cache.evict(name.as_str());
                self.unseals.remove(name.as_str());
                Ok(Response::empty(StatusCode::OK))
            }
            Err(StoreError::NotFound) => {
                self.cache.evict(name.as_str());
                Err(ApiError::KeyNotFound)
            }
            Err(e) => self.store_failure(e, ApiError::StoreDelete, now),
        };
        self.complete(req, r, now);
    }

    /// Answers a listing: valid names matching the pattern, sorted, once
    /// each, as NDJSON.
    pub(super) fn listed(
        &mut self,
        req: RequestId,
        pattern: ListPattern,
        result: Result<StoreReply, StoreError>,
        now: Now,
    ) {
        let r = match result {
            Ok(StoreReply::Names(names)) => {
                // A key being changed (or whose writer died mid-change) may
                // exist only as its staged copy for a while: list it.
                let mut names: Vec<String> = names
                    .into_iter()
                    .filter_map(|n| match valid_name(&n) {
                        true => Some(n),
                        false => KeyName::of_staging(&n).map(|k| k.as_str().to_owned()),
                    })
                    .filter(|n| pattern.matches(n))
                    .collect();
                names.sort_unstable();
                names.dedup();
                let mut body = Vec::with_capacity(names.len() * 24);
                for n in names {
                    body.extend_from_slice(json!({ "name": n }).to_string().as_bytes());
                    body.push(b'\n');
                }
                Ok(Response::with(StatusCode::OK, NDJSON, body))
            }
            Ok(_) => Err(ApiError::StoreList),
            Err(e) => self.store_failure(e, ApiError::StoreList, now),
        };
        self.complete(req, r, now);
    }
}
