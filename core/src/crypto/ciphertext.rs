//! The three KES ciphertext formats, byte-exact.
//!
//! | format | written by | layout |
//! |---|---|---|
//! | JSON | v0.19.0 | `{"aead":..,"id":..,"iv":..,"nonce":..,"bytes":..}` |
//! | MessagePack | v0.19.1-v0.23 | `[alg, id, iv, nonce, sealed]` |
//! | raw | v0.24 | `sealed ‖ iv ‖ nonce` |
//!
//! Every KES version decrypts the JSON format, so that is what we write by
//! default; the raw format (44 bytes smaller) is a config switch.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::aead::Algorithm;

/// Which format new ciphertexts are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CiphertextFormat {
    /// The v0.19.0 JSON envelope: readable by every KES version.
    #[default]
    Json,
    /// The v0.24 raw layout: smallest, readable only by v0.24 and later.
    Raw,
}

/// A decoded ciphertext.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The algorithm the ciphertext names (legacy formats only).
    pub algorithm: Option<Algorithm>,
    /// The 16-byte key-derivation IV.
    pub iv: [u8; 16],
    /// The 12-byte AEAD nonce.
    pub nonce: [u8; 12],
    /// Ciphertext ‖ tag.
    pub sealed: Cow<'a, [u8]>,
}

/// Encodes a sealed message in `format`.
pub fn encode(
    format: CiphertextFormat,
    alg: Algorithm,
    key_id: &str,
    iv: &[u8; 16],
    nonce: &[u8; 12],
    mut sealed: Vec<u8>,
) -> Vec<u8> {
    match format {
        CiphertextFormat::Raw => {
            sealed.reserve_exact(28);
            sealed.extend_from_slice(iv);
            sealed.extend_from_slice(nonce);
            sealed
        }
        CiphertextFormat::Json => {
            // Written straight into one buffer: this runs for every data key.
            let name = alg.json_name();
            let mut out = Vec::with_capacity(90 + name.len() + key_id.len() + sealed.len() * 4 / 3);
            out.extend_from_slice(br#"{"aead":""#);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(br#"","id":""#);
            out.extend_from_slice(key_id.as_bytes());
            out.extend_from_slice(br#"","iv":""#);
            push_b64(&mut out, iv);
            out.extend_from_slice(br#"","nonce":""#);
            push_b64(&mut out, nonce);
            out.extend_from_slice(br#"","bytes":""#);
            push_b64(&mut out, &sealed);
            out.extend_from_slice(b"\"}");
            out
        }
    }
}

/// Appends standard padded base64 of `bytes`.
fn push_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
    let n = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
}

/// Decodes any format, with KES v0.24's detection: a structured parse that
/// fails falls back to raw, so a raw ciphertext starting with `0x95` or `{`
/// still decrypts.
pub fn decode(c: &[u8]) -> Option<Parsed<'_>> {
    let structured = match c.first()? {
        0x95 => decode_msgpack(c),
        b'{' => decode_json(c),
        _ => None,
    };
    structured.or_else(|| decode_raw(c))
}

/// The key ID a JSON or MessagePack ciphertext names, if any (raw
/// ciphertexts name none). Used only to pick a key version; the tag decides.
pub fn key_id(c: &[u8]) -> Option<String> {
    match c.first()? {
        0x95 => {
            let rest = c.strip_prefix(&[0x95])?;
            let (_alg, rest) = mp_str(rest)?;
            let (id, _) = mp_str(rest)?;
            std::str::from_utf8(id).ok().map(str::to_owned)
        }
        b'{' => {
            let [id] = crate::api::wire::string_fields(c, ["id"]).ok()?;
            id.map(|s| s.into_owned())
        }
        _ => None,
    }
}

fn decode_raw(c: &[u8]) -> Option<Parsed<'_>> {
    if c.len() <= 28 {
        return None;
    }
    let (sealed, tail) = c.split_at(c.len() - 28);
    let (iv, nonce) = tail.split_at(16);
    Some(Parsed {
        algorithm: None,
        iv: iv.try_into().ok()?,
        nonce: nonce.try_into().ok()?,
        sealed: Cow::Borrowed(sealed),
    })
}

fn decode_json(c: &[u8]) -> Option<Parsed<'static>> {
    let [aead, iv, nonce, bytes] =
        crate::api::wire::string_fields(c, ["aead", "iv", "nonce", "bytes"]).ok()?;
    let algorithm = match aead.as_deref()? {
        "AES-256-GCM-HMAC-SHA-256" => Algorithm::Aes256,
        "ChaCha20Poly1305" => Algorithm::ChaCha20,
        _ => return None,
    };
    let mut iv_buf = [0u8; 16];
    let mut nonce_buf = [0u8; 12];
    (STANDARD.decode_slice(iv.as_deref()?, &mut iv_buf).ok()? == 16).then_some(())?;
    (STANDARD.decode_slice(nonce.as_deref()?, &mut nonce_buf).ok()? == 12).then_some(())?;
    let sealed = STANDARD.decode(bytes.as_deref().unwrap_or("")).ok()?;
    Some(Parsed {
        algorithm: Some(algorithm),
        iv: iv_buf,
        nonce: nonce_buf,
        sealed: Cow::Owned(sealed),
    })
}

fn decode_msgpack(c: &[u8]) -> Option<Parsed<'_>> {
    let rest = c.strip_prefix(&[0x95])?;
    let (alg, rest) = mp_str(rest)?;
    let (_id, rest) = mp_str(rest)?;
    let (iv, rest) = mp_bin(rest)?;
    let (nonce, rest) = mp_bin(rest)?;
    let (sealed, rest) = mp_bin(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let algorithm = match alg {
        b"AES256" | b"AES256-GCM_SHA256" => Algorithm::Aes256,
        b"ChaCha20" | b"XCHACHA20-POLY1305" => Algorithm::ChaCha20,
        _ => return None,
    };
    Some(Parsed {
        algorithm: Some(algorithm),
        iv: iv.try_into().ok()?,
        nonce: nonce.try_into().ok()?,
        sealed: Cow::Borrowed(sealed),
    })
}

fn take(input: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (input.len() >= n).then(|| input.split_at(n))
}

fn be_len(bytes: &[u8]) -> usize {
    bytes.iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b))
}

fn mp_str(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (len, rest) = match tag {
        0xa0..=0xbf => (usize::from(tag & 0x1f), rest),
        0xd9 => take(rest, 1).map(|(l, r)| (be_len(l), r))?,
        0xda => take(rest, 2).map(|(l, r)| (be_len(l), r))?,
        0xdb => take(rest, 4).map(|(l, r)| (be_len(l), r))?,
        _ => return None,
    };
    take(rest, len)
}

fn mp_bin(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let width = match tag {
        0xc4 => 1,
        0xc5 => 2,
        0xc6 => 4,
        _ => return None,
    };
    let (l, rest) = take(rest, width)?;
    take(rest, be_len(l))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    pub(crate) const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    pub(crate) const K2: &str = "6f2a9c1b4e7d30a58c2b1f9e0d4a7c6b5e3f2a1908f7e6d5c4b3a29180706f5e";

    /// crypto.md §7.3-7.5: each case in all formats, both algorithms.
    #[allow(clippy::type_complexity)] // a literal table of spec vectors
    pub(crate) fn spec_cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>, Vec<Vec<u8>>)> {
        let a1 = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"oKGio6SlpqeoqaqrrK2urw==","nonce":"sLGys7S1tre4ubq7","bytes":"gyKSCDNX6+7Y1QPFxp3MwA=="}"#.to_vec();
        let a2 = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"oKGio6SlpqeoqaqrrK2urw==","nonce":"sLGys7S1tre4ubq7","bytes":"/H1RafmYIRvoiL2nvqOSOy8W9XD0JV7j6PaT"}"#.to_vec();
        let c3 = br#"{"aead":"ChaCha20Poly1305","id":"ff0df0065d2f281cef8db5f1f68b9e2f","iv":"ABEiM0RVZneImaq7zN3u/w==","nonce":"Dw4NDAsKCQgHBgUE","bytes":"NDL8TElDyXJGKZdrtnpyN388PslatQzpHdNU3vLb2jgRAATtl1YMz81BGJk92cRl"}"#.to_vec();
        let dek = hex(&"c0ffee00".repeat(8));
        vec![
            (K1, vec![], vec![], vec![
                a1,
                hex("95b14145533235362d47434d5f534841323536d9203633306463643239363663343333363639313132353434386262623235623466c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc410832292083357ebeed8d503c5c69dccc0"),
                hex("95a84368614368613230d9203633306463643239363663343333363639313132353434386262623235623466c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc410c8ab971c3b4a3b968da12bd463139ce1"),
                hex("832292083357ebeed8d503c5c69dccc0a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb"),
                hex("c8ab971c3b4a3b968da12bd463139ce1a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb"),
            ]),
            (K1, b"Hello, KES!".to_vec(), b"my-context".to_vec(), vec![
                a2,
                hex("95a6414553323536d9203633306463643239363663343333363639313132353434386262623235623466c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc41bfc7d5169f998211be888bda7bea3923b2f16f570f4255ee3e8f693"),
                hex("95b25843484143484132302d504f4c5931333035d9203633306463643239363663343333363639313132353434386262623235623466c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc41b830ff8b305f7dfc58390ba25cd2cf9d9bae5771d773cbc17fe87a1"),
            ]),
            (K2, dek, br#"{"bucket":"photos"}"#.to_vec(), vec![
                c3,
                hex("95a6414553323536d9206666306466303036356432663238316365663864623566316636386239653266c41000112233445566778899aabbccddeeffc40c0f0e0d0c0b0a090807060504c4309ff30ffa498bf783c8b6d61058575eec0a7722793eb8b576a4d46792a107c2d3cff98c5cf18655e6939848afc5ebb5be"),
                hex("3432fc4c4943c9724629976bb67a72377f3c3ec95ab50ce91dd354def2dbda38110004ed97560ccfcd4118993dd9c46500112233445566778899aabbccddeeff0f0e0d0c0b0a090807060504"),
            ]),
        ]
    }

    #[test]
    fn key_ids_of_legacy_formats() {
        // crypto.md §7.3 AES-V1 and §7.4 (v0.23 names) AES-V1: K1's ID.
        let json = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"oKGio6SlpqeoqaqrrK2urw==","nonce":"sLGys7S1tre4ubq7","bytes":"gyKSCDNX6+7Y1QPFxp3MwA=="}"#;
        let mp = hex("95a6414553323536d9203633306463643239363663343333363639313132353434386262623235623466c410a0a1a2a3a4a5a6a7a8a9aaabacadaeafc40cb0b1b2b3b4b5b6b7b8b9babbc410832292083357ebeed8d503c5c69dccc0");
        assert_eq!(key_id(json).as_deref(), Some("630dcd2966c4336691125448bbb25b4f"));
        assert_eq!(key_id(&mp).as_deref(), Some("630dcd2966c4336691125448bbb25b4f"));
        let raw = hex("832292083357ebeed8d503c5c69dccc0a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb");
        assert_eq!(key_id(&raw), None);
        assert_eq!(key_id(b""), None);
    }

    #[test]
    fn json_encoding_is_byte_exact() {
        let iv: [u8; 16] = hex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf").try_into().unwrap();
        let nonce: [u8; 12] = hex("b0b1b2b3b4b5b6b7b8b9babb").try_into().unwrap();
        let out = encode(
            CiphertextFormat::Json,
            Algorithm::Aes256,
            "630dcd2966c4336691125448bbb25b4f",
            &iv,
            &nonce,
            hex("fc7d5169f998211be888bda7bea3923b2f16f570f4255ee3e8f693"),
        );
        assert_eq!(out, spec_cases()[1].3[0]);
    }

    #[test]
    fn raw_starting_with_structure_bytes_still_decodes() {
        let mut c = vec![0x95; 40];
        c[1] = 0x00;
        let p = decode(&c).unwrap();
        assert_eq!(p.sealed.len(), 12);
        assert!(decode(&[b'{'; 28]).is_none());
        assert!(decode(&[]).is_none());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

    }
}
