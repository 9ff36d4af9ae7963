//! Legacy OpenSSL-encrypted PEM keys (RFC 1423 `Proc-Type`/`DEK-Info`), which
//! KES accepts with `tls.password`: the key is EVP_BytesToKey(MD5, one round,
//! salt = first 8 bytes of the IV), the cipher CBC with PKCS#7 padding.

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

/// Decrypts the first encrypted private-key block of `pem`.
pub fn decrypt_legacy_pem(pem: &str, password: &str) -> Result<PrivateKeyDer<'static>, String> {
    let begin = pem.find("-----BEGIN ").ok_or("no PEM block")?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----").ok_or("malformed PEM header")?;
    let label = rest.get(..label_end).ok_or("malformed PEM header")?;
    let body_start = label_end + 5;
    let end = rest.find("-----END ").ok_or("unterminated PEM block")?;
    let block = rest.get(body_start..end).ok_or("malformed PEM block")?;
    let mut dek_info = None;
    let mut b64 = String::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("DEK-Info:") {
            dek_info = Some(v.trim().to_owned());
        } else if !line.contains(':') {
            b64.push_str(line);
        }
    }
    let dek_info = dek_info.ok_or("encrypted PEM block without DEK-Info")?;
    let (cipher, iv_hex) = dek_info.split_once(',').ok_or("malformed DEK-Info")?;
    let iv = decode_hex(iv_hex.trim()).ok_or("malformed DEK-Info IV")?;
    let mut data = Zeroizing::new(STANDARD.decode(b64).map_err(|e| format!("PEM body: {e}"))?);
    let key_len = match cipher {
        "DES-CBC" => 8,
        "DES-EDE3-CBC" => 24,
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        other => return Err(format!("unsupported PEM cipher '{other}'")),
    };
    if iv.len() < 8 {
        return Err("DEK-Info IV too short".into());
    }
    let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let plain_len = match cipher {
        "DES-CBC" => cbc_decrypt::<des::Des>(&key, &iv, &mut data)?,
        "DES-EDE3-CBC" => cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut data)?,
        "AES-128-CBC" => cbc_decrypt::<aes::Aes128>(&key, &iv, &mut data)?,
        "AES-192-CBC" => cbc_decrypt::<aes::Aes192>(&key, &iv, &mut data)?,
        _ => cbc_decrypt::<aes::Aes256>(&key, &iv, &mut data)?,
    };
    let der = data[..plain_len].to_vec();
    Ok(match label {
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
    })
}

/// CBC-decrypts `data` in place and strips PKCS#7 padding; returns the
/// plaintext length. Bad padding almost always means a wrong password.
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], data: &mut [u8]) -> Result<usize, String>
where
    C: aes::cipher::BlockDecryptMut + aes::cipher::BlockCipher,
    cbc::Decryptor<C>: KeyIvInit + BlockDecryptMut,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| "bad key or IV length")?;
    dec.decrypt_padded_mut::<aes::cipher::block_padding::Pkcs7>(data)
        .map(|p| p.len())
        .map_err(|_| "decryption password incorrect".to_owned())
}

fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(password);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        for pem in [
            "",
            "-----BEGIN -----END X-----",
            "-----BEGIN X-----\nDEK-Info: AES-256-CBC,00\n-----END X-----",
            "-----BEGIN X-----\nDEK-Info: RC4,0011223344556677\n-----END X-----",
        ] {
            assert!(decrypt_legacy_pem(pem, "pw").is_err(), "{pem:?}");
        }
    }
}
