//! TLS-terminating proxies (seed semantics, policy-identity.md §7): a listed
//! proxy forwards the real client's certificate in a header, and the request
//! is then handled as that client. Anyone else's header is ignored.

use std::net::IpAddr;
use std::sync::Arc;

use kes_core::{Caller, Identity, IdentityError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

/// Who may forward, in which header, and how forwarded certificates are checked.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Proxy identities.
    pub identities: Vec<Identity>,
    /// The header carrying the URL-escaped PEM certificate.
    pub header: String,
    /// Chain verification for forwarded certificates (`tls.auth: on`).
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl ProxyConfig {
    /// Whether `caller` is a proxy whose requests carry a forwarded client.
    pub fn is_proxy(&self, caller: &Caller) -> bool {
        caller.identity().is_some_and(|id| self.identities.contains(&id))
    }

    /// The effective caller and client IP of a request from a proxy.
    pub fn resolve(
        &self,
        forwarded: &[String],
        forwarded_for: Option<&str>,
        peer: IpAddr,
    ) -> (Caller, IpAddr) {
        let ip = forwarded_for.and_then(first_ip).unwrap_or(peer);
        let caller = match forwarded {
            [] => Caller::Anonymous(IdentityError::ProxyMissing),
            [one] => match self.forwarded_identity(one) {
                Ok(id) => Caller::Identified(id),
                Err(e) => Caller::Anonymous(e),
            },
            _ => Caller::Anonymous(IdentityError::ProxyTooMany),
        };
        (caller, ip)
    }

    /// The forwarded client's identity, by the same rule as a direct
    /// connection ([`Identity::from_chain`]): a proxy that forwards a whole
    /// chain gets the identity of its first certificate, never a later one.
    fn forwarded_identity(&self, value: &str) -> Result<Identity, IdentityError> {
        let pem = query_unescape(value).ok_or(IdentityError::Malformed)?;
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| IdentityError::Malformed)?;
        if chain.is_empty() {
            return Err(IdentityError::Malformed);
        }
        let id = Identity::from_chain(&chain)?;
        if let Some(v) = &self.verifier {
            v.verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
                .map_err(|_| IdentityError::Untrusted)?;
        }
        Ok(id)
    }
}

/// URL query unescaping: `%XX` decoded and `+` turned into a space, as Go's
/// `url.QueryUnescape` (proxies must therefore escape `+`).
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The first element of `X-Forwarded-For` (optionally `ip:port`), unless `unknown`.
fn first_ip(xff: &str) -> Option<IpAddr> {
    let first = xff.split(',').next()?.trim();
    if first.eq_ignore_ascii_case("unknown") {
        return None;
    }
    first.parse().ok().or_else(|| first.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescaping_and_forwarded_for() {
        assert_eq!(query_unescape("a%20b+c").unwrap(), "a b c");
        assert!(query_unescape("%zz").is_none());
        assert_eq!(first_ip("10.1.2.3, 10.0.0.1"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(first_ip("10.1.2.3:4444"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(first_ip("unknown"), None);
    }

    #[test]
    fn header_count_rules() {
        let p =
            ProxyConfig { identities: vec![], header: "X-Tls-Client-Cert".into(), verifier: None };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(p.resolve(&[], None, peer).0, Caller::Anonymous(IdentityError::ProxyMissing));
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(p.resolve(&two, None, peer).0, Caller::Anonymous(IdentityError::ProxyTooMany));
        assert_eq!(
            p.resolve(&["junk".into()], None, peer).0,
            Caller::Anonymous(IdentityError::Malformed)
        );
    }

    fn escaped_pem(ders: &[&[u8]]) -> String {
        use base64::Engine as _;
        let mut pem = String::new();
        for der in ders {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn cert(ca: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    /// A proxy forwarding [attacker's CA, admin's leaf] must not make the
    /// request the admin's: same first-certificate rule as direct TLS.
    #[test]
    fn forwarded_chain_takes_only_the_first_certificate() {
        let p =
            ProxyConfig { identities: vec![], header: "X-Tls-Client-Cert".into(), verifier: None };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let (own_ca, admin, leaf, inter) = (cert(true), cert(false), cert(false), cert(true));
        let admin_id = Identity::from_certificate(&admin).unwrap();
        let attack = escaped_pem(&[&own_ca, &admin]);
        let got = p.resolve(&[attack], None, peer).0;
        assert_eq!(got, Caller::Anonymous(IdentityError::CaFirst));
        assert_ne!(got.identity(), Some(admin_id));
        let legit = escaped_pem(&[&leaf, &inter]);
        assert_eq!(
            p.resolve(&[legit], None, peer).0,
            Caller::Identified(Identity::from_certificate(&leaf).unwrap())
        );
        let lone_ca = escaped_pem(&[&own_ca]);
        assert_eq!(
            p.resolve(&[lone_ca], None, peer).0,
            Caller::Identified(Identity::from_certificate(&own_ca).unwrap())
        );
    }
}
