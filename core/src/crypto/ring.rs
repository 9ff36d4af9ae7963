//! Key versions (an extension of KES, which has none): a master key that
//! has been rotated is a ring of versions, each an ordinary KES key value.
//!
//! A key that was never rotated is stored exactly as KES stores it and is
//! used exactly as before. The first rotation replaces the stored value with
//! a ring: a JSON object that embeds every version's KES value verbatim, so
//! each version is read by the same decoder as any KES key. Versions below
//! `min_version` are retired: they no longer seal or open anything, and
//! their material stays until it is purged.

use serde::Deserialize;
use zeroize::Zeroizing;

use super::aead::NotAuthentic;
use super::key::SecretKey;
use super::keyfile::{self, MalformedKey};
use super::secret::SecretBytes;
use crate::time::UnixTime;

/// The field that marks a stored value as a ring (KES key values never have it).
const MARK: &str = "kes-rs.key-ring";

/// Most versions that may be active at once: a raw (v0.24) ciphertext names
/// no version, so decryption tries the active ones newest first, and this
/// bounds that work (each miss costs one key derivation and one tag check).
pub const MAX_ACTIVE: usize = 32;

/// One version of a key.
pub struct Version {
    /// 1 for the key as first created, then counting up.
    pub number: u32,
    /// The key.
    pub key: SecretKey,
    /// Its stored KES value, kept verbatim (legacy values cannot be re-encoded).
    value: SecretBytes,
}

/// Whether a version may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Seals (if newest) and opens.
    Active,
    /// Below the minimum: neither seals nor opens; material kept until purged.
    Retired,
}

impl State {
    /// The name in API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// Why a ring operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The version does not exist (never, or purged).
    NoSuchVersion(u32),
    /// The version is retired.
    Retired(u32),
    /// Rotating would leave more than [`MAX_ACTIVE`] versions active.
    TooManyActive,
    /// A minimum below the current one or above the newest version.
    InvalidMinimum(u32),
    /// No active version opens the ciphertext.
    NotAuthentic,
}

/// A key and its versions, as cached and used by the server.
pub struct KeyRing {
    versions: Vec<Version>,
    min: u32,
    /// Whether the stored value is a ring (the key was rotated), rather
    /// than a plain KES value.
    versioned: bool,
    /// When this ring was written (rings only).
    written_at: Option<UnixTime>,
}

#[derive(Deserialize)]
struct StoredRing {
    #[serde(rename = "kes-rs.key-ring")]
    format: u32,
    min_version: u32,
    #[serde(default)]
    written_at: Option<String>,
    versions: Vec<StoredVersion>,
}

#[derive(Deserialize)]
struct StoredVersion {
    version: u32,
    key: Zeroizing<String>,
}

impl KeyRing {
    /// A key that was never rotated: version 1, stored as `value`.
    pub fn single(key: SecretKey, value: SecretBytes) -> Self {
        let v = Version { number: 1, key, value };
        Self { versions: vec![v], min: 1, versioned: false, written_at: None }
    }

    /// Decodes a stored value: a ring, or any KES key value (version 1).
    pub fn decode(value: &[u8]) -> Result<Self, MalformedKey> {
        let text = value.trim_ascii();
        let is_ring =
            text.first() == Some(&b'{') && text.windows(MARK.len()).any(|w| w == MARK.as_bytes());
        if !is_ring {
            let key = keyfile::decode(value)?;
            return Ok(Self::single(key, SecretBytes::new(value.to_vec())));
        }
        let stored: StoredRing = serde_json::from_slice(text).map_err(|_| MalformedKey)?;
        if stored.format != 1 || stored.versions.is_empty() {
            return Err(MalformedKey);
        }
        let mut versions = Vec::with_capacity(stored.versions.len());
        for v in stored.versions {
            let bytes = SecretBytes::new(v.key.as_bytes().to_vec());
            let key = keyfile::decode(bytes.expose())?;
            versions.push(Version { number: v.version, key, value: bytes });
        }
        versions.sort_by_key(|v| v.number);
        let increasing = versions.windows(2).all(|w| w[0].number < w[1].number);
        let newest = versions.last().map_or(0, |v| v.number);
        if !increasing || versions[0].number == 0 || stored.min_version > newest {
            return Err(MalformedKey);
        }
        let written_at = stored.written_at.as_deref().and_then(UnixTime::parse_rfc3339);
        Ok(Self { versions, min: stored.min_version.max(1), versioned: true, written_at })
    }

    /// The stored form of a ring (always the ring format: it is written
    /// only when a key changes).
    pub fn encode(&self, now: UnixTime) -> SecretBytes {
        let mut out = Zeroizing::new(Vec::with_capacity(256 * self.versions.len() + 128));
        out.extend_from_slice(
            format!(r#"{{"{MARK}":1,"min_version":{},"written_at":"{now}","versions":["#, self.min)
                .as_bytes(),
        );
        for (i, v) in self.versions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!(r#"{{"version":{},"key":"#, v.number).as_bytes());
            // KES values are base64 or JSON text; written as a JSON string.
            let text = String::from_utf8_lossy(v.value.expose());
            let _ = serde_json::to_writer(&mut *out, text.as_ref());
            if let std::borrow::Cow::Owned(mut s) = text {
                zeroize::Zeroize::zeroize(&mut s);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        SecretBytes::new(out.to_vec())
    }

    /// Whether the key was ever rotated (its stored value is a ring).
    pub fn is_versioned(&self) -> bool {
        self.versioned
    }

    /// When the stored ring was written, if it is a ring.
    pub fn written_at(&self) -> Option<UnixTime> {
        self.written_at
    }

    /// Every version still held, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The lowest version that is not retired.
    pub fn min_version(&self) -> u32 {
        self.min
    }

    /// The newest version: the one that seals by default.
    pub fn latest(&self) -> &Version {
        // Never empty: every constructor keeps at least one version.
        &self.versions[self.versions.len() - 1]
    }

    /// A version's state.
    pub fn state(&self, number: u32) -> State {
        if number < self.min {
            State::Retired
        } else {
            State::Active
        }
    }

    /// The version that seals: `requested` (0 or absent: the newest).
    pub fn sealing(&self, requested: Option<u32>) -> Result<&Version, RingError> {
        match requested.filter(|n| *n != 0) {
            None => Ok(self.latest()),
            Some(n) => {
                let v = self.get(n).ok_or(RingError::NoSuchVersion(n))?;
                match self.state(n) {
                    State::Active => Ok(v),
                    State::Retired => Err(RingError::Retired(n)),
                }
            }
        }
    }

    fn get(&self, number: u32) -> Option<&Version> {
        self.versions.iter().find(|v| v.number == number)
    }

    /// Opens a ciphertext and says which version sealed it. A legacy
    /// ciphertext's key ID picks the version; otherwise (raw ciphertexts,
    /// or an ID no version has) the active versions are tried newest first.
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<(SecretBytes, u32), RingError> {
        if !self.versioned {
            let v = self.latest();
            return v
                .key
                .decrypt(ciphertext, context)
                .map(|p| (p, v.number))
                .map_err(|_| RingError::NotAuthentic);
        }
        if let Some(id) = super::ciphertext::key_id(ciphertext) {
            if let Some(v) = self.versions.iter().find(|v| v.key.key_id() == id) {
                if self.state(v.number) == State::Retired {
                    return Err(RingError::Retired(v.number));
                }
                return v
                    .key
                    .decrypt(ciphertext, context)
                    .map(|p| (p, v.number))
                    .map_err(|_| RingError::NotAuthentic);
            }
        }
        for v in self.versions.iter().rev().filter(|v| v.number >= self.min) {
            match v.key.decrypt(ciphertext, context) {
                Ok(p) => return Ok((p, v.number)),
                Err(NotAuthentic) => continue,
            }
        }
        Err(RingError::NotAuthentic)
    }

    /// The ring with `key` as a new newest version.
    pub fn rotated(mut self, key: SecretKey) -> Result<Self, RingError> {
        let active = self.versions.iter().filter(|v| v.number >= self.min).count();
        if active >= MAX_ACTIVE {
            return Err(RingError::TooManyActive);
        }
        let value = keyfile::encode(&key).map_err(|_| RingError::TooManyActive)?;
        let number = self.latest().number + 1;
        self.versions.push(Version { number, key, value });
        self.versioned = true;
        Ok(self)
    }

    /// The ring with versions below `min` retired. The minimum only rises,
    /// and the newest version can never be retired.
    pub fn retired_below(mut self, min: u32) -> Result<Self, RingError> {
        if min < self.min || min > self.latest().number {
            return Err(RingError::InvalidMinimum(min));
        }
        self.min = min;
        self.versioned = true;
        Ok(self)
    }

    /// The ring without its retired versions' material, and their numbers.
    pub fn purged(mut self) -> (Self, Vec<u32>) {
        let min = self.min;
        let gone = self.versions.iter().filter(|v| v.number < min).map(|v| v.number).collect();
        self.versions.retain(|v| v.number >= min);
        self.versioned = true;
        (self, gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CiphertextFormat;
    use crate::testing::SeededRng;
    use proptest::prop_assert;

    fn rng() -> SeededRng {
        SeededRng(7)
    }

    fn fresh(rng: &mut SeededRng) -> SecretKey {
        SecretKey::generate(rng, UnixTime::from_parts(1_700_000_000, 0), None)
    }

    #[test]
    fn a_plain_key_is_version_one_and_unchanged() {
        // crypto.md §7.6 KF1, a v0.24 value.
        let kf1 = b"CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAESJAogICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8QARoLCMCGh68GEJWa7zoiQGM4NGNjOWI5MWFlMjM5OWIwNDNkYTdlY2E2MTYwNDhkNGI0MjAwZWRmMmZmNDE4ZDhhZjM4MzU5MTFkYjk0NWQ=";
        let ring = KeyRing::decode(kf1).unwrap();
        assert!(!ring.is_versioned());
        assert_eq!((ring.latest().number, ring.min_version()), (1, 1));
        // A v0.19 JSON key is not mistaken for a ring.
        let legacy = br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
        assert!(!KeyRing::decode(legacy).unwrap().is_versioned());
    }

    #[test]
    fn rotate_retire_purge_and_round_trip() {
        let mut r = rng();
        let legacy = br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
        let ring = KeyRing::decode(legacy).unwrap();
        let old_json = ring.latest().key.encrypt(b"dek1", b"c", CiphertextFormat::Json, &mut r);
        let old_raw = ring.latest().key.encrypt(b"dek1", b"c", CiphertextFormat::Raw, &mut r);
        let ring = ring.rotated(fresh(&mut r)).unwrap();
        assert!(ring.is_versioned());
        assert_eq!(ring.sealing(None).unwrap().number, 2);
        let new =
            ring.sealing(None).unwrap().key.encrypt(b"dek2", b"", CiphertextFormat::Raw, &mut r);
        // Stored and read back: the legacy value is kept verbatim.
        let stored = ring.encode(UnixTime::from_parts(1_800_000_000, 0));
        let ring = KeyRing::decode(stored.expose()).unwrap();
        assert_eq!(ring.versions()[0].value.expose(), legacy);
        assert_eq!(ring.decrypt(&old_json, b"c").unwrap().1, 1, "by key ID");
        assert_eq!(ring.decrypt(&old_raw, b"c").unwrap().1, 1, "by trying");
        assert_eq!(ring.decrypt(&new, b"").unwrap().1, 2);
        assert_eq!(ring.decrypt(&new, b"x"), Err(RingError::NotAuthentic));
        assert_eq!(ring.sealing(Some(1)).unwrap().number, 1);
        assert_eq!(ring.sealing(Some(3)).err(), Some(RingError::NoSuchVersion(3)));
        // Retire version 1: it neither seals nor opens; 2 still works.
        let ring = ring.retired_below(2).unwrap();
        assert_eq!(ring.sealing(Some(1)).err(), Some(RingError::Retired(1)));
        assert_eq!(ring.decrypt(&old_json, b"c"), Err(RingError::Retired(1)));
        assert_eq!(ring.decrypt(&old_raw, b"c"), Err(RingError::NotAuthentic));
        assert_eq!(ring.decrypt(&new, b"").unwrap().1, 2);
        assert!(matches!(ring.retired_below(1), Err(RingError::InvalidMinimum(1))));
        let ring = KeyRing::decode(legacy)
            .unwrap()
            .rotated(fresh(&mut r))
            .unwrap()
            .retired_below(2)
            .unwrap();
        assert!(
            matches!(ring.retired_below(3), Err(RingError::InvalidMinimum(3))),
            "the newest stays"
        );
        let ring = KeyRing::decode(legacy)
            .unwrap()
            .rotated(fresh(&mut r))
            .unwrap()
            .retired_below(2)
            .unwrap();
        let (ring, gone) = ring.purged();
        assert_eq!(gone, [1]);
        let ring = KeyRing::decode(ring.encode(UnixTime::from_parts(0, 0)).expose()).unwrap();
        assert_eq!((ring.versions().len(), ring.min_version(), ring.latest().number), (1, 2, 2));
        assert_eq!(ring.sealing(Some(1)).err(), Some(RingError::NoSuchVersion(1)));
    }

    #[test]
    fn active_versions_are_bounded() {
        let mut r = rng();
        let mut ring = KeyRing::single(fresh(&mut r), SecretBytes::new(b"unused".to_vec()));
        for _ in 1..MAX_ACTIVE {
            ring = ring.rotated(fresh(&mut r)).unwrap();
        }
        assert_eq!(ring.latest().number as usize, MAX_ACTIVE);
        assert!(matches!(ring.rotated(fresh(&mut r)), Err(RingError::TooManyActive)));
    }

    proptest::proptest! {
        /// What fuzz/fuzz_targets/ciphertext.rs runs: any stored value,
        /// including ring-shaped JSON, is refused or read, never a panic.
        #[test]
        fn any_stored_value_is_read_or_refused(
            min in 0u32..5,
            versions in proptest::collection::vec((0u32..6, "[ -~]{0,20}"), 0..4),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let legacy = r#"{\"bytes\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}"#;
            let entries: Vec<String> = versions
                .iter()
                .map(|(n, k)| {
                    let key = if k.len() % 2 == 0 { legacy.to_owned() } else { serde_json::to_string(k).unwrap().trim_matches('"').to_owned() };
                    format!(r#"{{"version":{n},"key":"{key}"}}"#)
                })
                .collect();
            let text = format!(r#"{{"{MARK}":1,"min_version":{min},"versions":[{}]}}"#, entries.join(","));
            for value in [text.as_bytes(), &bytes[..]] {
                if let Ok(ring) = KeyRing::decode(value) {
                    let _ = ring.decrypt(&bytes, b"");
                    let newest = ring.latest().number;
                    prop_assert!(ring.min_version() <= newest);
                    let _ = ring.retired_below(newest).map(|r| r.purged());
                }
            }
        }
    }

    #[test]
    fn malformed_rings_are_refused() {
        for bad in [
            r#"{"kes-rs.key-ring":1,"min_version":1,"versions":[]}"#,
            r#"{"kes-rs.key-ring":2,"min_version":1,"versions":[{"version":1,"key":"x"}]}"#,
            r#"{"kes-rs.key-ring":1,"min_version":5,"versions":[{"version":1,"key":"{\"bytes\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}"}]}"#,
            r#"{"kes-rs.key-ring":1,"min_version":1,"versions":[{"version":1,"key":"nope"}]}"#,
        ] {
            assert!(KeyRing::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
