//! Stored key encodings of every KES generation (crypto.md §5).
//!
//! Reading accepts all of them, so an existing fs directory keeps working;
//! writing uses the v0.24 protobuf form, the only one that carries an HMAC key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use super::aead::Algorithm;
use super::key::SecretKey;
use super::secret::SecretBytes;
use crate::time::UnixTime;

/// Why a stored value could not be read as a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedKey;

impl std::fmt::Display for MalformedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("key is malformed")
    }
}

impl std::error::Error for MalformedKey {}

/// Decodes a stored key of any generation.
pub fn decode(value: &[u8]) -> Result<SecretKey, MalformedKey> {
    let trimmed = value.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        return decode_json(trimmed);
    }
    let raw = Zeroizing::new(STANDARD.decode(trimmed).map_err(|_| MalformedKey)?);
    decode_protobuf(&raw)
}

/// Encodes a key in the v0.24 format: base64 of the protobuf `KeyVersion`.
pub fn encode(key: &SecretKey) -> Result<SecretBytes, MalformedKey> {
    let hmac = key.hmac_key().ok_or(MalformedKey)?;
    let alg_type = match key.effective_algorithm() {
        Algorithm::Aes256 => 1,
        Algorithm::ChaCha20 => 2,
    };
    let mut secret = Zeroizing::new(Vec::with_capacity(36));
    put_bytes(&mut secret, 1, key.key_bytes());
    put_varint_field(&mut secret, 2, alg_type);
    let mut hmac_msg = Zeroizing::new(Vec::with_capacity(36));
    put_bytes(&mut hmac_msg, 1, hmac);
    put_varint_field(&mut hmac_msg, 2, 1);
    let mut msg = Zeroizing::new(Vec::with_capacity(160));
    put_bytes(&mut msg, 1, &secret);
    put_bytes(&mut msg, 2, &hmac_msg);
    if let Some(t) = key.created_at {
        let (secs, nanos) = t.to_parts();
        let mut ts = Vec::new();
        if secs != 0 {
            put_varint_field(&mut ts, 1, secs as u64);
        }
        if nanos != 0 {
            put_varint_field(&mut ts, 2, nanos as u64);
        }
        put_bytes(&mut msg, 3, &ts);
    }
    if let Some(by) = key.created_by.as_deref().filter(|s| !s.is_empty()) {
        put_bytes(&mut msg, 4, by.as_bytes());
    }
    Ok(SecretBytes::new(STANDARD.encode(msg.as_slice()).into_bytes()))
}

fn decode_json(value: &[u8]) -> Result<SecretKey, MalformedKey> {
    let v: serde_json::Value = serde_json::from_slice(value).map_err(|_| MalformedKey)?;
    let obj = v.as_object().ok_or(MalformedKey)?;
    let bytes = obj.get("bytes").and_then(|b| b.as_str()).ok_or(MalformedKey)?;
    let bytes = Zeroizing::new(STANDARD.decode(bytes).map_err(|_| MalformedKey)?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| MalformedKey)?;
    let algorithm = match obj.get("algorithm").and_then(|a| a.as_str()).unwrap_or("") {
        "" => None,
        "AES256" | "AES256-GCM_SHA256" => Some(Algorithm::Aes256),
        "ChaCha20" | "XCHACHA20-POLY1305" => Some(Algorithm::ChaCha20),
        _ => return Err(MalformedKey),
    };
    let created_at =
        obj.get("created_at").and_then(|t| t.as_str()).and_then(UnixTime::parse_rfc3339);
    let created_by =
        obj.get("created_by").and_then(|t| t.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(SecretKey::new(key, algorithm, None, created_at, created_by))
}

/// The v0.24 protobuf key message. Longer than a screen on purpose: it
/// mirrors the message's nesting (secret, HMAC, timestamp, creator) field by
/// field, which splitting would hide.
fn decode_protobuf(msg: &[u8]) -> Result<SecretKey, MalformedKey> {
    let mut key = None;
    let mut alg = None;
    let mut hmac = None;
    let mut created_at = None;
    let mut created_by = None;
    for field in Fields(msg) {
        match field? {
            (1, Value::Bytes(secret)) => {
                for f in Fields(secret) {
                    match f? {
                        (1, Value::Bytes(k)) => key = Some(k),
                        (2, Value::Varint(1)) => alg = Some(Algorithm::Aes256),
                        (2, Value::Varint(2)) => alg = Some(Algorithm::ChaCha20),
                        (2, _) => return Err(MalformedKey),
                        _ => {}
                    }
                }
            }
            (2, Value::Bytes(h)) => {
                let mut hash = 0;
                for f in Fields(h) {
                    match f? {
                        (1, Value::Bytes(k)) => hmac = Some(k),
                        (2, Value::Varint(v)) => hash = v,
                        _ => {}
                    }
                }
                if hash != 1 {
                    return Err(MalformedKey);
                }
            }
            (3, Value::Bytes(ts)) => {
                let (mut secs, mut nanos) = (0i64, 0i32);
                for f in Fields(ts) {
                    match f? {
                        (1, Value::Varint(v)) => secs = v as i64,
                        (2, Value::Varint(v)) => nanos = v as i32,
                        _ => {}
                    }
                }
                created_at = Some(UnixTime::from_parts(secs, nanos));
            }
            (4, Value::Bytes(s)) => {
                created_by = Some(String::from_utf8(s.to_vec()).map_err(|_| MalformedKey)?);
            }
            _ => {}
        }
    }
    let key: [u8; 32] = key.ok_or(MalformedKey)?.try_into().map_err(|_| MalformedKey)?;
    let hmac: [u8; 32] = hmac.ok_or(MalformedKey)?.try_into().map_err(|_| MalformedKey)?;
    let alg = alg.ok_or(MalformedKey)?;
    Ok(SecretKey::new(key, Some(alg), Some(hmac), created_at, created_by.filter(|s| !s.is_empty())))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates over the (field number, value) pairs of a protobuf message.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), MalformedKey>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut step = || {
            let tag = read_varint(&mut self.0)?;
            let value = match tag & 7 {
                0 => Value::Varint(read_varint(&mut self.0)?),
                2 => {
                    let len =
                        usize::try_from(read_varint(&mut self.0)?).map_err(|_| MalformedKey)?;
                    if self.0.len() < len {
                        return Err(MalformedKey);
                    }
                    let (b, rest) = self.0.split_at(len);
                    self.0 = rest;
                    Value::Bytes(b)
                }
                1 | 5 => {
                    let n = if tag & 7 == 1 { 8 } else { 4 };
                    if self.0.len() < n {
                        return Err(MalformedKey);
                    }
                    self.0 = &self.0[n..];
                    Value::Fixed
                }
                _ => return Err(MalformedKey),
            };
            Ok((tag >> 3, value))
        };
        let r = step();
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

fn read_varint(input: &mut &[u8]) -> Result<u64, MalformedKey> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or(MalformedKey)?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(MalformedKey)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KF1: &str = "CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAESJAogICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8QARoLCMCGh68GEJWa7zoiQGM4NGNjOWI5MWFlMjM5OWIwNDNkYTdlY2E2MTYwNDhkNGI0MjAwZWRmMmZmNDE4ZDhhZjM4MzU5MTFkYjk0NWQ=";
    const KF2: &str = "CiQKIG8qnBtOfTCljCsfng1KfGtePyoZCPfm1cSzopGAcG9eEAISJAogVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVUQARoGCICL0rsG";

    #[test]
    fn v24_vectors_decode_and_reencode_identically() {
        let k1 = decode(KF1.as_bytes()).unwrap();
        assert_eq!(k1.key_bytes(), &core::array::from_fn::<u8, 32, _>(|i| i as u8));
        assert_eq!(k1.algorithm(), Some(Algorithm::Aes256));
        assert_eq!(k1.created_at.unwrap().to_string(), "2024-03-01T12:00:00.123456789Z");
        assert_eq!(
            k1.created_by.as_deref(),
            Some("c84cc9b91ae2399b043da7eca616048d4b4200edf2ff418d8af3835911db945d")
        );
        assert_eq!(encode(&k1).unwrap().expose(), KF1.as_bytes());
        let k2 = decode(KF2.as_bytes()).unwrap();
        assert_eq!(k2.algorithm(), Some(Algorithm::ChaCha20));
        assert_eq!(k2.created_by, None);
        assert_eq!(encode(&k2).unwrap().expose(), KF2.as_bytes());
    }

    #[test]
    fn hmac_vectors() {
        let k1 = decode(KF1.as_bytes()).unwrap();
        let k2 = decode(KF2.as_bytes()).unwrap();
        let h = |k: &SecretKey, m: &[u8]| {
            k.hmac(m).unwrap().iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(h(&k1, b""), "f49240b78aa90e53f46106c3481e377e19696e777328b1cd6ec6061a0bd868a9");
        assert_eq!(
            h(&k1, b"hello"),
            "1aec074502f2463912a191ca4d93c770524367c8afd40af8766cf0a96888bd8c"
        );
        assert_eq!(
            h(&k2, b"The quick brown fox jumps over the lazy dog"),
            "64276c2c0079d3afd4069817629b9735e50beb12d03584b550f1a778a2a95c19"
        );
    }

    #[test]
    fn v19_json_keys() {
        let k = decode(br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#).unwrap();
        assert_eq!(k.algorithm(), None);
        assert!(k.hmac_key().is_none());
        let k = decode(br#"{"version":"v1","bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","algorithm":"ChaCha20","created_at":"2023-05-02T10:11:12.123456789Z","created_by":"x"}"#).unwrap();
        assert_eq!(k.algorithm(), Some(Algorithm::ChaCha20));
        assert!(decode(br#"{"bytes":"AAEC"}"#).is_err());
        assert!(decode(
            br#"{"bytes":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","algorithm":"DES"}"#
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn generated_keys_round_trip(seed in any::<u64>(), secs in 0i64..4_000_000_000, nanos in 0i32..1_000_000_000) {
            let mut rng = crate::testing::SeededRng(seed);
            let k = SecretKey::generate(&mut rng, UnixTime::from_parts(secs, nanos), None);
            let back = decode(encode(&k).unwrap().expose()).unwrap();
            prop_assert_eq!(back.key_bytes(), k.key_bytes());
            prop_assert_eq!(back.hmac_key(), k.hmac_key());
            prop_assert_eq!(back.created_at, k.created_at);
        }
    }
}
