//! `keystore.gemalto.keysecure`: Thales CipherTrust Manager, formerly
//! Gemalto KeySecure; KES v0.19 and v0.24 both use this name (config.md
//! §4.3). v0.19's `credentials.retry` is accepted and ignored.

use super::super::schema::scalar_text;
use super::super::{ConfigError, KeySecureConfig, KeystoreConfig, Secret};
use super::{https_endpoint, lookup, tls_ca};

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let ks = lookup(v, &["gemalto", "keysecure"])?;
    let text = |path: &[&str]| lookup(ks, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    let token = text(&["credentials", "token"]);
    if token.is_empty() {
        return Some(Err(ConfigError::new(
            "keystore.gemalto.keysecure: credentials.token (a refresh token) is required",
        )));
    }
    Some(Ok(KeystoreConfig::KeySecure(Box::new(KeySecureConfig {
        endpoint: https_endpoint(&endpoint),
        token: Secret::new(token),
        domain: text(&["credentials", "domain"]),
        tls_ca: tls_ca(&text),
    }))))
}

#[cfg(test)]
mod tests {
    use crate::config::KeystoreConfig;

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  gemalto:\n    keysecure:\n      endpoint: https://ks.example.com\n      credentials:\n        token: r3fresh\n        domain: dom\n        retry: 15s\n      tls:\n        ca: /etc/ca.pem\n").unwrap();
        let KeystoreConfig::KeySecure(k) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!((k.domain.as_str(), k.tls_ca.as_deref()), ("dom", Some("/etc/ca.pem")));
        assert!(!format!("{k:?}").contains("r3fresh"));
        let e = parse("  gemalto:\n    keysecure:\n      endpoint: https://ks\n").unwrap_err();
        assert!(e.message.contains("token"), "{e}");
    }
}
