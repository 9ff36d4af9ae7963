//! Who is calling: the SHA-256 of a client certificate's public key.
//!
//! KES never authenticates a name or a subject, only a key: re-issuing a
//! certificate for the same key pair keeps its identity, which is what lets
//! operators rotate certificates without touching policies.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::der;

/// The lowercase-hex SHA-256 of a certificate's DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity([u8; 32]);

impl Identity {
    /// The identity of a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        Self(Sha256::digest(spki).into())
    }

    /// The identity of one DER certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let info = der::parse_certificate(der).ok_or(IdentityError::Malformed)?;
        Ok(Self::from_spki_der(info.spki))
    }

    /// The identity of a peer chain (leaf first).
    ///
    /// Only the first certificate can be the identity: it is the one whose
    /// private key the TLS handshake proved the peer holds. Both original KES
    /// versions skipped `CA:TRUE` certificates and took the identity from a
    /// later one, which let anyone send [own CA certificate, admin's
    /// certificate] and act as admin (policy-identity.md §1.1). So:
    /// - a lone certificate is its own identity, CA or not (self-signed
    ///   `openssl req -x509` client certificates are `CA:TRUE`);
    /// - in a longer chain the first must not be a CA (a CA first means the
    ///   client is presenting someone else's leaf after it) and every later
    ///   one must be a CA (intermediates); they never become the identity.
    pub fn from_chain<C: AsRef<[u8]>>(chain: &[C]) -> Result<Self, IdentityError> {
        let Some((first, rest)) = chain.split_first() else {
            return Err(IdentityError::Missing);
        };
        let leaf = der::parse_certificate(first.as_ref()).ok_or(IdentityError::Malformed)?;
        if !rest.is_empty() {
            if leaf.is_ca {
                return Err(IdentityError::CaFirst);
            }
            for cert in rest {
                let info = der::parse_certificate(cert.as_ref()).ok_or(IdentityError::Malformed)?;
                if !info.is_ca {
                    return Err(IdentityError::TooMany);
                }
            }
        }
        Ok(Self::from_spki_der(leaf.spki))
    }

    /// Parses 64 lowercase hex characters; anything else is not an identity
    /// (and, used as admin, disables the admin account).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0])?;
            let lo = hex_val(pair[1])?;
            out[i] = hi << 4 | lo;
        }
        Some(Self(out))
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// Why no identity could be computed from a peer's certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// The peer sent no (non-CA) certificate.
    Missing,
    /// More than one non-CA certificate was sent.
    TooMany,
    /// A chain starts with a CA certificate followed by others: the identity
    /// would have to come from a certificate the handshake did not prove.
    CaFirst,
    /// A certificate could not be parsed.
    Malformed,
    /// A TLS proxy forwarded no client certificate header.
    ProxyMissing,
    /// A TLS proxy forwarded the certificate header more than once.
    ProxyTooMany,
    /// A forwarded certificate does not chain to a trusted CA (`tls.auth: on`).
    Untrusted,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "tls: client certificate is required",
            Self::TooMany => "tls: received more than one client certificate",
            Self::CaFirst => {
                "tls: the first client certificate is a CA certificate: send the client's own certificate first"
            }
            Self::Malformed => "invalid client certificate",
            Self::ProxyMissing => "no client certificate is present",
            Self::ProxyTooMany => "too many client certificates are present",
            Self::Untrusted => "forwarded client certificate is not trusted",
        })
    }
}

impl std::error::Error for IdentityError {}

/// The caller of a request, as the adapter established it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No usable certificate; protected routes answer 400 with the reason.
    Anonymous(IdentityError),
    /// A certificate was presented and hashed.
    Identified(Identity),
}

impl Caller {
    /// The identity, if there is one.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Self::Anonymous(_) => None,
            Self::Identified(id) => Some(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_spki_vector() {
        // policy-identity.md §2.2: seed 0x00..0x1f. The Ed25519 public key of
        // that seed (RFC 8032 arithmetic) is fixed; we hash its SPKI.
        let pubkey = hex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(&pubkey);
        assert_eq!(
            Identity::from_spki_der(&spki).to_string(),
            "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
        );
    }

    #[test]
    fn parse_round_trip_and_rejects() {
        let s = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
        assert_eq!(Identity::parse(s).unwrap().to_string(), s);
        assert!(Identity::parse("disabled").is_none());
        assert!(Identity::parse(&s.to_uppercase()).is_none());
    }

    fn cert(ca: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn id(der: &[u8]) -> Identity {
        Identity::from_certificate(der).unwrap()
    }

    #[test]
    fn identity_is_the_first_certificate_only() {
        let (leaf, ca, admin, other_ca) = (cert(false), cert(true), cert(false), cert(true));
        // Alone, any certificate is its own identity (seed: even a CA one).
        assert_eq!(Identity::from_chain(&[&leaf]), Ok(id(&leaf)));
        assert_eq!(Identity::from_chain(&[&ca]), Ok(id(&ca)));
        // A leaf with intermediates: the leaf.
        assert_eq!(Identity::from_chain(&[&leaf, &ca, &other_ca]), Ok(id(&leaf)));
        // The escalation: own CA first, someone else's leaf after it. The
        // later certificate must never become the identity.
        assert_eq!(Identity::from_chain(&[&ca, &admin]), Err(IdentityError::CaFirst));
        assert_eq!(Identity::from_chain(&[&ca, &other_ca, &admin]), Err(IdentityError::CaFirst));
        // Two leaves: refused as KES does.
        assert_eq!(Identity::from_chain(&[&leaf, &admin]), Err(IdentityError::TooMany));
        assert_eq!(Identity::from_chain::<&[u8]>(&[]), Err(IdentityError::Missing));
        assert_eq!(Identity::from_chain(&[&leaf, &b"junk"[..]]), Err(IdentityError::Malformed));
    }

    #[test]
    fn no_chain_ever_yields_a_later_certificate() {
        // Exhaustive over chains of up to three from {leaf, CA, victim}: the
        // result is the first certificate's identity or an error.
        let certs = [cert(false), cert(true), cert(false), cert(true)];
        let victim = id(&certs[2]);
        let mut chains: Vec<Vec<&[u8]>> = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<Vec<&[u8]>> = chains
                .iter()
                .flat_map(|c| {
                    certs.iter().map(move |x| {
                        let mut c = c.clone();
                        c.push(x.as_slice());
                        c
                    })
                })
                .collect();
            chains.extend(longer);
        }
        for chain in chains.iter().filter(|c| !c.is_empty()) {
            if let Ok(got) = Identity::from_chain(chain) {
                assert_eq!(got, id(chain[0]));
                if chain[0] != certs[2].as_slice() {
                    assert_ne!(got, victim);
                }
            }
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
