//! TLS: rustls server configuration from the KES config, and peer identity.
//!
//! Client certificates are always requested. Without `tls.auth: on` they are
//! required but not chain-verified (the normal KES deployment: identities are
//! pinned by hash in policies); the handshake still proves the client holds
//! the certificate's private key. With `on`, they must chain to `tls.ca`.
//! If any route has `skip_auth`, certificates become optional in the
//! handshake and protected routes answer 400 instead.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use kes_core::{Caller, Identity, IdentityError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// How client certificates are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// Chain-verify client certificates against the CA pool.
    pub verify: bool,
    /// Refuse the handshake without a client certificate.
    pub required: bool,
}

/// Builds the server's TLS configuration. TLS 1.2 and 1.3 only (rustls
/// defaults), ALPN `http/1.1`.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    password: Option<&str>,
    auth: ClientAuth,
    ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file, password)?;
    let verifier: Arc<dyn ClientCertVerifier> = if auth.verify {
        let roots = load_roots(ca)?;
        let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let b = if auth.required { b } else { b.allow_unauthenticated() };
        b.build().map_err(|e| format!("client CA configuration: {e}"))?
    } else {
        Arc::new(AnyClientCert {
            required: auth.required,
            algs: provider.signature_verification_algorithms,
        })
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Resumed sessions skip the certificate exchange and signatures; room for
    // a few thousand clients (the default holds 256).
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(cfg))
}

/// A verifier that chain-checks client certificates against `ca` (or the
/// system roots); used for certificates forwarded by TLS proxies.
pub fn chain_verifier(ca: Option<&Path>) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = load_roots(ca)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("client CA configuration: {e}"))
}

/// The caller of a connection, from the peer's certificate chain.
pub fn caller_of(certs: Option<&[CertificateDer<'_>]>) -> Caller {
    match certs {
        None | Some([]) => Caller::Anonymous(IdentityError::Missing),
        Some(chain) => match Identity::from_chain(chain) {
            Ok(id) => Caller::Identified(id),
            Err(e) => Caller::Anonymous(e),
        },
    }
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1). Legacy-encrypted
/// (`Proc-Type: 4,ENCRYPTED`) keys are decrypted with `password`.
pub fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
            format!("{}: private key is encrypted: password required", path.display())
        })?;
        let der = crate::tls_pem::decrypt_legacy_pem(&text, password)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(der);
    }
    if text.contains("ENCRYPTED PRIVATE KEY") {
        return Err(format!("{}: PKCS#8-encrypted keys are not supported; use an unencrypted key or the legacy OpenSSL encryption", path.display()));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn load_roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut files = Vec::new();
    match ca {
        Some(p) if p.is_dir() => {
            for e in std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))? {
                let e = e.map_err(|e| e.to_string())?;
                if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    files.push(e.path());
                }
            }
        }
        Some(p) => files.push(p.to_path_buf()),
        None => {
            let system = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            files.push(system);
        }
    }
    for f in files {
        for c in load_certs(&f)? {
            roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("tls.auth is on but no CA certificate was found".into());
    }
    Ok(roots)
}

/// Accepts any client certificate whose handshake signature verifies: the
/// identity (hash of the public key) is what policies pin, not a CA chain.
struct AnyClientCert {
    required: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for AnyClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyClientCert").field("required", &self.required).finish()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Advertising CA names makes Go clients withhold self-signed certs.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Builds the default provider once, for callers that need one (clients in tests).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
