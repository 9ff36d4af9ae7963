//! The two KES sealing constructions.
//!
//! Each encryption derives a one-time key from the master key and a random
//! 16-byte IV, then seals with a random 12-byte nonce. Deriving per message
//! keeps (key, nonce) pairs from ever repeating across billions of data keys.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::secret::SecretBytes;

/// A sealing construction; names as in the stored data of each era.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-256-GCM with the key derived by HMAC-SHA-256(K, IV).
    Aes256,
    /// ChaCha20-Poly1305 with the key derived by HChaCha20(K, IV).
    ChaCha20,
}

impl Algorithm {
    /// The other construction.
    pub fn other(self) -> Self {
        match self {
            Self::Aes256 => Self::ChaCha20,
            Self::ChaCha20 => Self::Aes256,
        }
    }

    /// The name KES v0.24 uses in APIs (`/v1/key/describe`).
    pub fn v24_name(self) -> &'static str {
        match self {
            Self::Aes256 => "AES256",
            Self::ChaCha20 => "ChaCha20",
        }
    }

    /// The `aead` name of the v0.19.0 JSON ciphertext.
    pub fn json_name(self) -> &'static str {
        match self {
            Self::Aes256 => "AES-256-GCM-HMAC-SHA-256",
            Self::ChaCha20 => "ChaCha20Poly1305",
        }
    }

    /// Parses any name an era used for this algorithm (msgpack, key files,
    /// import requests).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "AES256" | "AES256-GCM_SHA256" | "AES-256-GCM-HMAC-SHA-256" => Some(Self::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" | "ChaCha20Poly1305" => Some(Self::ChaCha20),
            _ => None,
        }
    }
}

/// Authentication failed: wrong key, wrong context, or a tampered ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAuthentic;

impl std::fmt::Display for NotAuthentic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decryption failed: ciphertext is not authentic")
    }
}

impl std::error::Error for NotAuthentic {}

/// The one-time sealing key for (K, IV).
pub fn derive(alg: Algorithm, key: &[u8; 32], iv: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    match alg {
        Algorithm::Aes256 => {
            // HMAC accepts keys of any length; 32 bytes cannot fail.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            mac.update(iv);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        Algorithm::ChaCha20 => {
            let k = chacha20::Key::from_slice(key);
            let n = chacha20::cipher::generic_array::GenericArray::from_slice(iv);
            let derived = chacha20::hchacha::<chacha20::cipher::consts::U10>(k, n);
            out.copy_from_slice(&derived);
        }
    }
    out
}

/// Seals `plaintext` with associated data `aad`: ciphertext ‖ 16-byte tag.
pub fn seal(
    alg: Algorithm,
    key: &[u8; 32],
    iv: &[u8; 16],
    nonce: &[u8; 12],
    plaintext: &[u8],
    aad: &[u8],
) -> Vec<u8> {
    let s = derive(alg, key, iv);
    let payload = Payload { msg: plaintext, aad };
    let result = match alg {
        Algorithm::Aes256 => Aes256Gcm::new(s.as_slice().into()).encrypt(nonce.into(), payload),
        Algorithm::ChaCha20 => {
            ChaCha20Poly1305::new(s.as_slice().into()).encrypt(nonce.into(), payload)
        }
    };
    // Sealing only fails for plaintexts beyond 64 GiB, far above any body limit.
    result.unwrap_or_else(|_| unreachable!("AEAD seal of a bounded plaintext"))
}

/// Opens `sealed` (ciphertext ‖ tag).
pub fn open(
    alg: Algorithm,
    key: &[u8; 32],
    iv: &[u8; 16],
    nonce: &[u8; 12],
    sealed: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, NotAuthentic> {
    let s = derive(alg, key, iv);
    let payload = Payload { msg: sealed, aad };
    let result = match alg {
        Algorithm::Aes256 => Aes256Gcm::new(s.as_slice().into()).decrypt(nonce.into(), payload),
        Algorithm::ChaCha20 => {
            ChaCha20Poly1305::new(s.as_slice().into()).decrypt(nonce.into(), payload)
        }
    };
    result.map(SecretBytes::new).map_err(|_| NotAuthentic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex(s).try_into().unwrap()
    }

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "6f2a9c1b4e7d30a58c2b1f9e0d4a7c6b5e3f2a1908f7e6d5c4b3a29180706f5e";
    const IV1: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
    const N1: &str = "b0b1b2b3b4b5b6b7b8b9babb";
    const IV2: &str = "00112233445566778899aabbccddeeff";
    const N2: &str = "0f0e0d0c0b0a090807060504";

    #[test]
    fn derived_keys_match_spec() {
        let cases = [
            (
                Algorithm::Aes256,
                K1,
                IV1,
                "b1489727b2602a0e047cb237580a4c795aaf9023c5bc6b0b865c7fa17e0a2367",
            ),
            (
                Algorithm::Aes256,
                K2,
                IV2,
                "b0111c40ef9e68c95f4a7704f64d63667b1d7665703f5f2588db4d6ea28a1c6f",
            ),
            (
                Algorithm::ChaCha20,
                K1,
                IV1,
                "63af6fb4d59bc1c804aa5445ac7b83ad4a382704316d56d2c89aca16db68ee39",
            ),
            (
                Algorithm::ChaCha20,
                K2,
                IV2,
                "27f6b9a85aa02dd74c6d0fb3fb372b5c341e26e956403c358fdd0d3c34205339",
            ),
        ];
        for (alg, k, iv, want) in cases {
            assert_eq!(derive(alg, &arr(k), &arr(iv)).to_vec(), hex(want), "{alg:?}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a literal table of spec vectors
    fn sealed_vectors_match_spec() {
        let dek = hex(&"c0ffee00".repeat(8));
        let cases: [(&str, &str, &str, &[u8], &[u8], &str, &str); 3] = [
            (K1, IV1, N1, b"", b"", "832292083357ebeed8d503c5c69dccc0", "c8ab971c3b4a3b968da12bd463139ce1"),
            (K1, IV1, N1, b"Hello, KES!", b"my-context",
             "fc7d5169f998211be888bda7bea3923b2f16f570f4255ee3e8f693",
             "830ff8b305f7dfc58390ba25cd2cf9d9bae5771d773cbc17fe87a1"),
            (K2, IV2, N2, &dek, br#"{"bucket":"photos"}"#,
             "9ff30ffa498bf783c8b6d61058575eec0a7722793eb8b576a4d46792a107c2d3cff98c5cf18655e6939848afc5ebb5be",
             "3432fc4c4943c9724629976bb67a72377f3c3ec95ab50ce91dd354def2dbda38110004ed97560ccfcd4118993dd9c465"),
        ];
        for (k, iv, n, pt, ctx, aes, chacha) in cases {
            let (k, iv, n) = (arr(k), arr(iv), arr(n));
            assert_eq!(seal(Algorithm::Aes256, &k, &iv, &n, pt, ctx), hex(aes));
            assert_eq!(seal(Algorithm::ChaCha20, &k, &iv, &n, pt, ctx), hex(chacha));
            assert_eq!(open(Algorithm::Aes256, &k, &iv, &n, &hex(aes), ctx).unwrap().expose(), pt);
            assert_eq!(
                open(Algorithm::ChaCha20, &k, &iv, &n, &hex(chacha), ctx).unwrap().expose(),
                pt
            );
        }
    }

    fn algs() -> impl Strategy<Value = Algorithm> {
        prop_oneof![Just(Algorithm::Aes256), Just(Algorithm::ChaCha20)]
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(alg in algs(), key in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
                                nonce in any::<[u8; 12]>(), pt in proptest::collection::vec(any::<u8>(), 0..200),
                                aad in proptest::collection::vec(any::<u8>(), 0..50)) {
            let sealed = seal(alg, &key, &iv, &nonce, &pt, &aad);
            prop_assert_eq!(sealed.len(), pt.len() + 16);
            let opened = open(alg, &key, &iv, &nonce, &sealed, &aad).unwrap();
            prop_assert_eq!(opened.expose(), &pt[..]);
        }

        #[test]
        fn tampering_is_always_rejected(alg in algs(), key in any::<[u8; 32]>(), iv in any::<[u8; 16]>(),
                                        nonce in any::<[u8; 12]>(), pt in proptest::collection::vec(any::<u8>(), 0..64),
                                        pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut sealed = seal(alg, &key, &iv, &nonce, &pt, b"ctx");
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(open(alg, &key, &iv, &nonce, &sealed, b"ctx").err(), Some(NotAuthentic));
        }

        #[test]
        fn wrong_context_is_rejected(alg in algs(), key in any::<[u8; 32]>(), ctx in proptest::collection::vec(any::<u8>(), 0..20)) {
            let sealed = seal(alg, &key, &[1; 16], &[2; 12], b"data", &ctx);
            let mut other = ctx.clone();
            other.push(0);
            prop_assert!(open(alg, &key, &[1; 16], &[2; 12], &sealed, &other).is_err());
        }
    }
}
