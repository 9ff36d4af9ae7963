//! Operations on a key: run at once when the key is cached, else parked
//! while the key is fetched, once however many requests wait for it
//! (single flight), then run for each waiter.

use http::StatusCode;
use rand_core::CryptoRngCore;
use serde_json::json;

use super::{InFlight, Parked, Server};
use crate::api::wire::{b64, JSON};
use crate::api::{ApiError, Response};
use crate::crypto::{keyfile, CiphertextFormat, SecretBytes, SecretKey};
use crate::keystore::{Command, StoreError, StoreReply};
use crate::name::KeyName;
use crate::time::{Now, GO_ZERO_TIME};

/// What a request wants done with a key.
pub(super) enum KeyOp {
    Describe(KeyName),
    Generate { context: Vec<u8> },
    Encrypt { plaintext: SecretBytes, context: Vec<u8> },
    Decrypt { ciphertext: Vec<u8>, context: Vec<u8> },
    Bulk(Vec<(Vec<u8>, Vec<u8>)>),
    Hmac { message: Vec<u8> },
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
        if let Some(key) = self.cache.get(name) {
            let r = run_key_op(key, op, format, rng);
            self.metrics.cache_hits += 1;
            self.finish_result(id, ctx, r, now);
            return;
        }
        self.metrics.cache_misses += 1;
        let name = match KeyName::parse(name) {
            Ok(n) => n,
            Err(e) => return self.finish_result(id, ctx, Err(ApiError::InvalidName(e)), now),
        };
        self.inflight.insert(id, InFlight { ctx: ctx.clone(), deadline });
        let waiters = self.fetching.entry(name.clone()).or_default();
        waiters.push((id, op));
        if waiters.len() == 1 {
            let cid = self.command(Command::Get { name: name.clone() }, now);
            self.fetches.insert(cid, name);
        }
    }

    pub(super) fn finish_fetch(
        &mut self,
        name: KeyName,
        result: Result<StoreReply, StoreError>,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) {
        let waiters = self.fetching.remove(&name).unwrap_or_default();
        let outcome: Result<(), ApiError> = match result {
            Ok(StoreReply::Value(v)) => match keyfile::decode(v.expose()) {
                Ok(key) => {
                    self.cache.set_offline(false, now.instant);
                    self.cache.insert(name.clone(), key);
                    Ok(())
                }
                Err(e) => {
                    self.error_event(format!("key '{name}': {e}"), now);
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
            let r = match &outcome {
                Ok(()) => match self.cache.get(name.as_str()) {
                    Some(key) => run_key_op(key, op, format, rng),
                    None => Err(ApiError::StoreRead),
                },
                Err(e) => Err(e.clone()),
            };
            self.complete(req, r, now);
        }
    }
}

/// Runs an operation on a key in hand.
fn run_key_op(
    key: &SecretKey,
    op: KeyOp,
    format: CiphertextFormat,
    rng: &mut dyn CryptoRngCore,
) -> Result<Response, ApiError> {
    match op {
        KeyOp::Describe(name) => {
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
            Ok(Response::json(&v))
        }
        KeyOp::Generate { context } => {
            let mut dek = zeroize::Zeroizing::new([0u8; 32]);
            rng.fill_bytes(dek.as_mut());
            let ct = key.encrypt(dek.as_slice(), &context, format, rng);
            Ok(secret_json(&[("plaintext", dek.as_slice()), ("ciphertext", &ct)]))
        }
        KeyOp::Encrypt { plaintext, context } => {
            let ct = key.encrypt(plaintext.expose(), &context, format, rng);
            Ok(secret_json(&[("ciphertext", &ct)]))
        }
        KeyOp::Decrypt { ciphertext, context } => {
            let pt = key.decrypt(&ciphertext, &context).map_err(|_| ApiError::NotAuthentic)?;
            Ok(secret_json(&[("plaintext", pt.expose())]))
        }
        KeyOp::Bulk(items) => bulk_decrypt(key, items),
        KeyOp::Hmac { message } => {
            let mac = key.hmac(&message).ok_or(ApiError::NoHmacKey)?;
            Ok(secret_json(&[("hmac", &mac)]))
        }
    }
}

/// Decrypts every ciphertext in order; the first failure fails them all.
fn bulk_decrypt(key: &SecretKey, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (ct, cx) in items {
        let pt = key.decrypt(&ct, &cx).map_err(|_| ApiError::NotAuthentic)?;
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

/// A JSON object of base64 fields, built without intermediate `Value`s that
/// would leave copies of secrets on the heap.
fn secret_json(fields: &[(&str, &[u8])]) -> Response {
    let mut body =
        Vec::with_capacity(fields.iter().map(|(_, v)| v.len() * 4 / 3 + 24).sum::<usize>() + 2);
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
    body.push(b'}');
    Response::with(StatusCode::OK, JSON, body)
}
