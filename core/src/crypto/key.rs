//! Master keys: 256 bits plus KES metadata, sealing and opening data in
//! every ciphertext format. The layer above `aead` and `ciphertext`; key
//! files (`keyfile`) sit on top of it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::aead::{self, Algorithm, NotAuthentic};
use super::ciphertext::{self, CiphertextFormat};
use super::secret::SecretBytes;
use crate::identity::Identity;
use crate::time::UnixTime;

/// A 256-bit master key with its KES metadata.
///
/// `algorithm` is `None` for keys written by KES v0.19.0 (and v0.23 AES keys),
/// which carry no type: for those the algorithm named inside a legacy
/// ciphertext is honoured on decryption.
pub struct SecretKey {
    key: Zeroizing<[u8; 32]>,
    algorithm: Option<Algorithm>,
    hmac_key: Option<Zeroizing<[u8; 32]>>,
    /// Lowercase hex of SHA-256(key)[..16], the v0.19 key ID; computed once.
    key_id: String,
    /// When the key was created, if recorded.
    pub created_at: Option<UnixTime>,
    /// Who created it, if recorded.
    pub created_by: Option<String>,
}

impl SecretKey {
    /// Builds a key from its parts.
    pub fn new(
        key: [u8; 32],
        algorithm: Option<Algorithm>,
        hmac_key: Option<[u8; 32]>,
        created_at: Option<UnixTime>,
        created_by: Option<String>,
    ) -> Self {
        let key = Zeroizing::new(key);
        let digest = Sha256::digest(key.as_slice());
        let mut key_id = String::with_capacity(32);
        for b in &digest[..16] {
            key_id.push_str(&format!("{b:02x}"));
        }
        Self {
            key,
            algorithm,
            hmac_key: hmac_key.map(Zeroizing::new),
            key_id,
            created_at,
            created_by,
        }
    }

    /// A fresh random AES256 key with an HMAC key, as KES v0.24 creates them.
    pub fn generate(
        rng: &mut dyn rand_core::CryptoRngCore,
        created_at: UnixTime,
        created_by: Option<Identity>,
    ) -> Self {
        let mut key = [0u8; 32];
        let mut hmac_key = [0u8; 32];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut hmac_key);
        let k = Self::new(
            key,
            Some(Algorithm::Aes256),
            Some(hmac_key),
            Some(created_at),
            created_by.map(|i| i.to_string()),
        );
        key.zeroize();
        hmac_key.zeroize();
        k
    }

    /// The raw key bytes (for encoding into a key file only).
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The v0.19 key ID: lowercase hex of SHA-256(key)[..16], as JSON and
    /// MessagePack ciphertexts carry it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The HMAC key, if this key has one (v0.24 keys do, older keys do not).
    pub fn hmac_key(&self) -> Option<&[u8; 32]> {
        self.hmac_key.as_deref()
    }

    /// The key's fixed algorithm, if it has one.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    /// The algorithm new ciphertexts use: the key's, else AES256.
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.unwrap_or(Algorithm::Aes256)
    }

    /// Encrypts `plaintext` bound to `context`, in `format`.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &[u8],
        format: CiphertextFormat,
        rng: &mut dyn rand_core::CryptoRngCore,
    ) -> Vec<u8> {
        let mut random = [0u8; 28];
        rng.fill_bytes(&mut random);
        let mut iv = [0u8; 16];
        let mut nonce = [0u8; 12];
        iv.copy_from_slice(&random[..16]);
        nonce.copy_from_slice(&random[16..]);
        let alg = self.effective_algorithm();
        let sealed = aead::seal(alg, &self.key, &iv, &nonce, plaintext, context);
        ciphertext::encode(format, alg, &self.key_id, &iv, &nonce, sealed)
    }

    /// Decrypts a ciphertext in any of the three formats.
    pub fn decrypt(&self, ciphertext: &[u8], context: &[u8]) -> Result<SecretBytes, NotAuthentic> {
        let parsed = ciphertext::decode(ciphertext).ok_or(NotAuthentic)?;
        let first = match (self.algorithm, parsed.algorithm) {
            (Some(own), _) => own,
            (None, Some(named)) => named,
            (None, None) => Algorithm::Aes256,
        };
        let open =
            |alg| aead::open(alg, &self.key, &parsed.iv, &parsed.nonce, &parsed.sealed, context);
        match open(first) {
            Ok(p) => Ok(p),
            // A key without a fixed type may have been used with either
            // construction (v0.19.0 chose per call by CPU features).
            Err(NotAuthentic) if self.algorithm.is_none() => open(first.other()),
            Err(e) => Err(e),
        }
    }

    /// HMAC-SHA-256 of `message` under the key's HMAC key.
    pub fn hmac(&self, message: &[u8]) -> Option<[u8; 32]> {
        let key = self.hmac_key.as_ref()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).ok()?;
        mac.update(message);
        Some(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ciphertext::tests::{hex, spec_cases, K1};
    use proptest::prelude::*;

    fn legacy_key(k: &str) -> SecretKey {
        SecretKey::new(hex(k).try_into().unwrap(), None, None, None, None)
    }

    #[test]
    fn every_spec_format_decrypts_with_a_legacy_key() {
        for (k, pt, ctx, cts) in spec_cases() {
            let key = legacy_key(k);
            for ct in cts {
                assert_eq!(
                    key.decrypt(&ct, &ctx).unwrap().expose(),
                    &pt[..],
                    "{}",
                    String::from_utf8_lossy(&ct)
                );
                assert!(key.decrypt(&ct, b"wrong").is_err());
            }
        }
    }

    #[test]
    fn key_id_is_the_v019_one() {
        assert_eq!(legacy_key(K1).key_id, "630dcd2966c4336691125448bbb25b4f");
    }

    proptest! {
        #[test]
        fn both_formats_round_trip(key in any::<[u8; 32]>(), pt in proptest::collection::vec(any::<u8>(), 0..100),
                                   ctx in proptest::collection::vec(any::<u8>(), 0..20), raw in any::<bool>(),
                                   seed in any::<u64>()) {
            let mut rng = crate::testing::SeededRng(seed);
            let key = SecretKey::new(key, Some(Algorithm::Aes256), None, None, None);
            let format = if raw { CiphertextFormat::Raw } else { CiphertextFormat::Json };
            let ct = key.encrypt(&pt, &ctx, format, &mut rng);
            let opened = key.decrypt(&ct, &ctx).unwrap();
            prop_assert_eq!(opened.expose(), &pt[..]);
        }
    }
}
