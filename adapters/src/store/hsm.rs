//! Key values sealed at rest by an HSM (`hsm.pkcs11` in the config): every
//! value written to the store is sealed with AES-256-GCM by a key that never
//! leaves the token, and unsealed there when read. [`SealedStore`] wraps
//! any store; the core never sees an envelope (it caches unsealed keys, so
//! the request path does not touch the HSM, only store reads and writes).
//!
//! PKCS#11 is reached through `cryptoki`, which loads the vendor's module at
//! run time. Its calls block, so they run on smol's blocking pool. One
//! logged-in session is kept and used under a lock; when the token goes
//! away (HSM restarted, token removed) the next call opens a new one, and
//! while that fails the store counts as unreachable: creates fail with a
//! 5xx, cached keys keep serving.

use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use kes_core::config::HsmConfig;
use kes_core::crypto::sealed::{aad, Envelope};
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};
use rand_core::RngCore;

use super::contract::{KeyStore, StoreFuture};

/// An open token with the sealing key found.
pub struct Hsm {
    ctx: Pkcs11,
    token: String,
    label: String,
    pin: AuthPin,
    live: Mutex<Option<Live>>,
}

/// A logged-in session and the key's handle in it.
struct Live {
    session: Session,
    key: ObjectHandle,
}

/// Why an HSM call failed.
#[derive(Debug)]
pub enum HsmError {
    /// The token cannot be used now (gone, restarted, refusing sessions).
    Unavailable(String),
    /// The value is not one this key sealed for this name.
    Refused(String),
}

impl From<HsmError> for StoreError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::Unavailable(m) => StoreError::Unreachable(format!("HSM: {m}")),
            HsmError::Refused(m) => StoreError::Failed(format!("HSM: {m}")),
        }
    }
}

/// Return values that mean the session (or the token behind it) is gone,
/// so opening a new one may help.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in and finds the
    /// key; each failure names the config field at fault. A seal and
    /// unseal round trip proves the key can do AES-GCM.
    pub fn open(cfg: &HsmConfig) -> Result<Self, String> {
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| {
            format!("hsm.pkcs11.module '{}': cannot load the PKCS#11 module: {e}", cfg.module)
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(format!(
                    "hsm.pkcs11.module '{}': initialisation failed: {e}",
                    cfg.module
                ))
            }
        }
        let hsm = Self {
            ctx,
            token: cfg.token.clone(),
            label: cfg.key.clone(),
            pin: AuthPin::from(cfg.pin.expose()),
            live: Mutex::new(None),
        };
        let live = hsm.connect()?;
        *hsm.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
        let probe = hsm
            .seal("kes-rs-hsm-probe", b"probe")
            .and_then(|v| hsm.unseal("kes-rs-hsm-probe", &v))
            .map_err(|e| {
                format!("hsm.pkcs11.key '{}': cannot seal with AES-GCM: {e:?}", cfg.key)
            })?;
        if probe.expose() != b"probe" {
            return Err(format!("hsm.pkcs11.key '{}': a sealed probe did not open", cfg.key));
        }
        Ok(hsm)
    }

    /// What the banner says.
    pub fn describe(&self) -> String {
        format!("HSM token '{}', key '{}'", self.token, self.label)
    }

    /// A new logged-in session with the key's handle.
    fn connect(&self) -> Result<Live, String> {
        let mut labels = Vec::new();
        let slots = self.ctx.get_slots_with_token().map_err(|e| format!("listing tokens: {e}"))?;
        let mut found = None;
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else { continue };
            let label = info.label().trim().to_owned();
            if label == self.token {
                found = Some(slot);
                break;
            }
            labels.push(label);
        }
        let slot = found.ok_or_else(|| {
            format!("hsm.pkcs11.token '{}': no such token (tokens: {labels:?})", self.token)
        })?;
        let session = self.ctx.open_ro_session(slot).map_err(|e| {
            format!("hsm.pkcs11.token '{}': cannot open a session: {e}", self.token)
        })?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                return Err(format!("hsm.pkcs11.pin: the token '{}' refused the PIN", self.token))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(format!("hsm.pkcs11.pin: the PIN of token '{}' is locked", self.token))
            }
            Err(e) => return Err(format!("hsm.pkcs11.token '{}': login failed: {e}", self.token)),
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.label.as_bytes().to_vec()),
        ];
        let keys = session.find_objects(&template).map_err(|e| format!("finding the key: {e}"))?;
        let key = match keys.as_slice() {
            [k] => *k,
            [] => {
                return Err(format!(
                    "hsm.pkcs11.key '{}': no secret key with this label on token '{}'",
                    self.label, self.token
                ))
            }
            _ => {
                return Err(format!(
                    "hsm.pkcs11.key '{}': {} secret keys have this label on token '{}'; labels must be unique",
                    self.label,
                    keys.len(),
                    self.token
                ))
            }
        };
        let attrs = session.get_attributes(key, &[AttributeType::KeyType]).unwrap_or_default();
        if !attrs.iter().any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::AES)) {
            return Err(format!("hsm.pkcs11.key '{}': not an AES key", self.label));
        }
        Ok(Live { session, key })
    }

    /// A new session; when the token cannot be found, the module is
    /// finalised and initialised again first (a module lists its tokens
    /// when initialised: SoftHSM2 does not see a token that came back).
    /// Called with the session lock held and no session open.
    fn reconnect(&self) -> Result<Live, String> {
        self.connect().or_else(|first| {
            let _ = self.ctx.clone().finalize();
            self.ctx
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .map_err(|e| format!("{first}; initialising the module again failed: {e}"))?;
            self.connect()
        })
    }

    /// Runs `op` on the live session; a lost session is replaced once.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if live.is_none() {
                *live = Some(self.reconnect().map_err(HsmError::Unavailable)?);
            }
            let l = live.as_ref().expect("connected above");
            match op(&l.session, l.key) {
                Ok(v) => return Ok(v),
                Err(e) if session_lost(&e) && attempt == 0 => *live = None,
                // A fresh session fails the same way: the token is gone, or
                // (SoftHSM2 answers a GCM tag mismatch with a general
                // error) the data is at fault.
                Err(e @ CkError::Pkcs11(RvError::GeneralError, _)) => {
                    return Err(HsmError::Refused(e.to_string()))
                }
                Err(e) if session_lost(&e) => {
                    *live = None;
                    return Err(HsmError::Unavailable(e.to_string()));
                }
                Err(e) => return Err(HsmError::Refused(e.to_string())),
            }
        }
        unreachable!("the loop returns")
    }

    /// Seals `plaintext` for the store entry `name`: the envelope bytes.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut iv);
        let aad = aad(name);
        let sealed = self.with_session(|s, key| {
            let mut nonce = iv;
            let params = GcmParams::new(&mut nonce, &aad, 128.into())?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
        })?;
        Ok(Envelope { key: self.label.clone(), iv, sealed }.encode())
    }

    /// Unseals an envelope read from the entry `name`.
    pub fn unseal(&self, name: &str, value: &[u8]) -> Result<SecretBytes, HsmError> {
        let env = match Envelope::decode(value) {
            Some(Ok(e)) => e,
            Some(Err(why)) => return Err(HsmError::Refused(format!("'{name}': {why}"))),
            None => return Err(HsmError::Refused(format!("'{name}' is not sealed"))),
        };
        if env.key != self.label {
            return Err(HsmError::Refused(format!(
                "'{name}' is sealed by the HSM key '{}', not '{}' (hsm.pkcs11.key)",
                env.key, self.label
            )));
        }
        let aad = aad(name);
        let opened = self.with_session(|s, key| {
            let mut nonce = env.iv;
            let params = GcmParams::new(&mut nonce, &aad, 128.into())?;
            s.decrypt(&Mechanism::AesGcm(params), key, &env.sealed)
        });
        match opened {
            Ok(p) => Ok(SecretBytes::new(p)),
            Err(HsmError::Refused(e)) => Err(HsmError::Refused(format!(
                "'{name}' does not open under its name (a value copied from another key, or damaged): {e}"
            ))),
            Err(e) => Err(e),
        }
    }
}

/// A store whose values are sealed by an HSM. Values without the envelope
/// (written before `hsm:` was set, or by KES) are read as they are.
pub struct SealedStore {
    inner: Arc<dyn KeyStore>,
    hsm: Arc<Hsm>,
}

impl SealedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn KeyStore>, hsm: Arc<Hsm>) -> Self {
        Self { inner, hsm }
    }

    fn seal(hsm: &Hsm, cmd: Command) -> Result<Command, StoreError> {
        match cmd {
            Command::Create { name, value } => {
                let sealed = hsm.seal(name.as_str(), value.expose())?;
                Ok(Command::Create { name, value: SecretBytes::new(sealed) })
            }
            other => Ok(other),
        }
    }

    fn unseal(
        hsm: &Hsm,
        name: Option<&str>,
        r: Result<StoreReply, StoreError>,
    ) -> Result<StoreReply, StoreError> {
        match (name, r) {
            (Some(name), Ok(StoreReply::Value(v)))
                if kes_core::crypto::sealed::is_envelope(v.expose()) =>
            {
                Ok(StoreReply::Value(hsm.unseal(name, v.expose())?))
            }
            (_, r) => r,
        }
    }
}

fn get_name(cmd: &Command) -> Option<String> {
    match cmd {
        Command::Get { name } => Some(name.as_str().to_owned()),
        _ => None,
    }
}

impl KeyStore for SealedStore {
    fn execute(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        let name = get_name(&cmd);
        let cmd = Self::seal(&self.hsm, cmd)?;
        Self::unseal(&self.hsm, name.as_deref(), self.inner.execute(cmd))
    }

    fn blocks(&self) -> bool {
        true
    }

    fn execute_async(&self, cmd: Command) -> Result<StoreFuture, Command> {
        // A task: the HSM calls (and a blocking store's IO) go to the pool.
        let (inner, hsm) = (self.inner.clone(), self.hsm.clone());
        let name = get_name(&cmd);
        Ok(Box::pin(async move {
            let h = hsm.clone();
            let cmd = smol::unblock(move || Self::seal(&h, cmd)).await?;
            let r = match inner.execute_async(cmd) {
                Ok(fut) => fut.await,
                Err(cmd) => {
                    let inner = inner.clone();
                    smol::unblock(move || inner.execute(cmd)).await
                }
            };
            smol::unblock(move || Self::unseal(&hsm, name.as_deref(), r)).await
        }))
    }
}

/// What [`reseal`] did to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resealed {
    /// Rewritten in the wanted form.
    Changed,
    /// Already in the wanted form.
    Unchanged,
    /// A server is changing the key's versions right now: run again.
    Busy,
    /// Deleted meanwhile.
    Gone,
}

/// Rewrites one key of `raw` (a store without the HSM wrapper) in place:
/// sealed by the HSM (`seal`), or back to its plain value. Crash-safe and
/// safe to re-run, through the same steps as a change of versions: the new
/// form is staged under the key's staging name first (servers reading the
/// key while its entry is briefly gone use that copy), the entry is checked
/// unchanged, deleted and created again, then the staged copy is dropped;
/// a run that finds only a staged copy (an earlier run died) finishes it.
pub fn reseal(
    raw: &dyn KeyStore,
    hsm: &Hsm,
    name: &kes_core::KeyName,
    seal: bool,
) -> Result<Resealed, String> {
    use kes_core::crypto::sealed::is_envelope;
    let staging = name.staging();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("key '{name}': {what}: {e}");
    let form = |n: &str, plain: &[u8]| -> Result<SecretBytes, String> {
        match seal {
            true => hsm
                .seal(n, plain)
                .map(SecretBytes::new)
                .map_err(|e| fail("sealing", &format!("{e:?}"))),
            false => Ok(SecretBytes::new(plain.to_vec())),
        }
    };
    let plain = |n: &str, v: &SecretBytes| -> Result<SecretBytes, String> {
        match is_envelope(v.expose()) {
            true => hsm.unseal(n, v.expose()).map_err(|e| fail("unsealing", &format!("{e:?}"))),
            false => Ok(v.clone()),
        }
    };
    let get = |n: &kes_core::KeyName| match raw.execute(Command::Get { name: n.clone() }) {
        Ok(StoreReply::Value(v)) => Ok(Some(v)),
        Ok(_) | Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(fail("reading", &e)),
    };
    let create = |n: &kes_core::KeyName, value: SecretBytes| {
        raw.execute(Command::Create { name: n.clone(), value })
    };
    let delete = |n: &kes_core::KeyName| match raw.execute(Command::Delete { name: n.clone() }) {
        Ok(_) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(fail("deleting", &e)),
    };
    let Some(current) = get(name)? else {
        // Only a staged copy: finish the change it belongs to.
        let Some(staged) = get(&staging)? else { return Ok(Resealed::Gone) };
        let p = plain(staging.as_str(), &staged)?;
        match create(name, form(name.as_str(), p.expose())?) {
            Ok(_) | Err(StoreError::Exists) => {}
            Err(e) => return Err(fail("writing", &e)),
        }
        delete(&staging)?;
        return Ok(Resealed::Changed);
    };
    if is_envelope(current.expose()) == seal {
        return Ok(Resealed::Unchanged);
    }
    let p = plain(name.as_str(), &current)?;
    match create(&staging, form(staging.as_str(), p.expose())?) {
        Ok(_) => {}
        Err(StoreError::Exists) => {
            // Ours, from a run that died after staging? Else a server's.
            let Some(staged) = get(&staging)? else { return Ok(Resealed::Busy) };
            let sp = plain(staging.as_str(), &staged)?;
            if !bool::from(subtle::ConstantTimeEq::ct_eq(sp.expose(), p.expose())) {
                return Ok(Resealed::Busy);
            }
        }
        Err(e) => return Err(fail("staging", &e)),
    }
    let unchanged = get(name)?
        .is_some_and(|v| bool::from(subtle::ConstantTimeEq::ct_eq(v.expose(), current.expose())));
    if !unchanged {
        delete(&staging)?;
        return Ok(Resealed::Busy);
    }
    delete(name)?;
    create(name, form(name.as_str(), p.expose())?).map_err(|e| fail("writing", &e))?;
    delete(&staging)?;
    Ok(Resealed::Changed)
}
