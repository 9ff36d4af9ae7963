//! KES API keys (`kes:v1:<base64(0x00 ‖ seed)>`): an Ed25519 seed from which
//! the client derives its key pair and a self-signed certificate, so the
//! server sees an ordinary mTLS client (policy-identity.md §2).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kes_core::Identity;
use rand_core::{OsRng, RngCore};
use ring::signature::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::ClientError;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER SubjectPublicKeyInfo prefix of an Ed25519 public key.
const SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// An API key. The seed is secret: it zeroizes on drop and never prints
/// through `Debug`.
#[derive(Clone)]
pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

impl ApiKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        Self { seed }
    }

    /// From a raw Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { seed: Zeroizing::new(seed) }
    }

    /// Parses `kes:v1:...` (the prefix is optional, as in kms-go).
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let b64 = s.trim().strip_prefix("kes:v1:").unwrap_or(s.trim());
        let raw = Zeroizing::new(
            STANDARD.decode(b64).map_err(|e| ClientError::InvalidApiKey(e.to_string()))?,
        );
        if raw.len() != 33 {
            return Err(ClientError::InvalidApiKey("invalid length".into()));
        }
        if raw[0] != 0 {
            return Err(ClientError::InvalidApiKey("unsupported type".into()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        Ok(Self { seed })
    }

    /// The key as text, `kes:v1:...`. Secret: print it only to its owner.
    pub fn secret_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[1..].copy_from_slice(self.seed.as_ref());
        Zeroizing::new(format!("kes:v1:{}", STANDARD.encode(raw.as_ref())))
    }

    /// The PKCS#8 DER private key.
    pub fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(self.seed.as_ref());
        der
    }

    fn public_key(&self) -> Result<[u8; 32], ClientError> {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(self.seed.as_ref())
            .map_err(|e| ClientError::InvalidApiKey(e.to_string()))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(pair.public_key().as_ref());
        Ok(out)
    }

    /// The identity the server computes for this key's certificates.
    pub fn identity(&self) -> Result<Identity, ClientError> {
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public_key()?);
        Ok(Identity::from_spki_der(&spki))
    }

    /// A self-signed client certificate for this key (CN = identity,
    /// client-auth EKU, CA:FALSE) and the private key.
    pub fn certificate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), ClientError> {
        self.certificate_with(&CertificateOptions::default())
    }

    /// A self-signed certificate with a subject, SANs and validity of choice
    /// (`kes identity new`); with SANs it also carries the server-auth EKU, so
    /// the same identity can run a server.
    pub fn certificate_with(
        &self,
        opts: &CertificateOptions,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), ClientError> {
        let e = |e: rcgen::Error| ClientError::Certificate(e.to_string());
        let der = self.pkcs8();
        let pkcs8 = PrivatePkcs8KeyDer::from(der.to_vec());
        let pair = rcgen::KeyPair::try_from(&pkcs8).map_err(e)?;
        let mut sans: Vec<String> = opts.dns.clone();
        sans.extend(opts.ips.iter().map(|ip| ip.to_string()));
        let server_auth = !sans.is_empty();
        let mut params = rcgen::CertificateParams::new(sans).map_err(e)?;
        let cn = match &opts.subject {
            Some(s) => s.clone(),
            None => self.identity()?.to_string(),
        };
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if server_auth {
            params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        }
        match opts.expiry {
            Some(d) => {
                let now = std::time::SystemTime::now();
                params.not_before = now.into();
                params.not_after = (now + d).into();
            }
            None => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(9999, 12, 31);
            }
        }
        let cert = params.self_signed(&pair).map_err(e)?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
    }
}

/// What `kes identity new` can put into a certificate.
#[derive(Clone, Debug, Default)]
pub struct CertificateOptions {
    /// Common name (default: the identity).
    pub subject: Option<String>,
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<std::net::IpAddr>,
    /// Validity from now (default: until 9999).
    pub expiry: Option<std::time::Duration>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.identity() {
            Ok(id) => write!(f, "ApiKey(identity {id})"),
            Err(_) => f.write_str("ApiKey(<invalid>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// policy-identity.md §2.2.
    #[test]
    fn spec_vectors() {
        let cases = [
            (
                "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs",
                "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6",
            ),
            (
                "kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw",
                "0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb",
            ),
            (
                "kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ",
                "ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7",
            ),
            (
                "kes:v1:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f",
                "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5",
            ),
        ];
        for (key, id) in cases {
            let k = ApiKey::parse(key).unwrap();
            assert_eq!(k.identity().unwrap().to_string(), id);
            assert_eq!(k.secret_text().as_str(), key);
            let (cert, _) = k.certificate().unwrap();
            assert_eq!(
                Identity::from_certificate(&cert).unwrap().to_string(),
                id,
                "certificate identity"
            );
        }
        assert_eq!(
            ApiKey::parse(&cases[0].0[7..]).unwrap().identity().unwrap().to_string(),
            cases[0].1
        );
    }

    #[test]
    fn bad_keys() {
        assert!(
            matches!(ApiKey::parse("kes:v1:AAAA"), Err(ClientError::InvalidApiKey(m)) if m == "invalid length")
        );
        assert!(
            matches!(ApiKey::parse("kes:v1:AWaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs"), Err(ClientError::InvalidApiKey(m)) if m == "unsupported type")
        );
        assert!(ApiKey::parse("kes:v1:!!").is_err());
        let k = ApiKey::generate();
        assert!(!format!("{k:?}").contains(&k.secret_text()[7..]));
    }
}
