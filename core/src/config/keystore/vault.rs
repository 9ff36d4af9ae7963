//! `keystore.vault`: HashiCorp Vault / OpenBao K/V (config.md §4.2). Both
//! eras' keys; the v0.19 `retry` values are accepted and ignored, as KES
//! itself never used them.

use std::time::Duration;

use super::super::schema::scalar_text;
use super::super::{ConfigError, KeystoreConfig, KvVersion, Secret, VaultAuth, VaultConfig};
use super::lookup;
use crate::time::parse_go_duration;

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let vault = v.get("vault")?;
    let text = |path: &[&str]| lookup(vault, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    Some(parse(vault, endpoint, &text))
}

fn parse(
    vault: &serde_yaml::Value,
    endpoint: String,
    text: &dyn Fn(&[&str]) -> String,
) -> Result<KeystoreConfig, ConfigError> {
    let or = |s: String, default: &str| if s.is_empty() { default.to_owned() } else { s };
    // Several nodes may be listed, comma-separated (an extension of KES).
    for e in endpoint.split(',').map(str::trim) {
        if !e.starts_with("https://") && !e.starts_with("http://") {
            return Err(ConfigError::new(format!(
                "keystore.vault.endpoint '{e}' must start with https:// (or http://)"
            )));
        }
    }
    let kv = match text(&["version"]).as_str() {
        "" | "v1" | "1" => KvVersion::V1,
        "v2" | "2" => KvVersion::V2,
        other => {
            return Err(ConfigError::new(format!("vault: invalid engine API version '{other}'")))
        }
    };
    let tls_cert = match (text(&["tls", "cert"]), text(&["tls", "key"])) {
        (c, k) if c.is_empty() && k.is_empty() => None,
        (c, k) if c.is_empty() || k.is_empty() => {
            return Err(ConfigError::new(
                "keystore.vault.tls: 'cert' and 'key' go together (mTLS to Vault)",
            ))
        }
        (c, k) => Some((c, k)),
    };
    let ping = match text(&["status", "ping"]) {
        s if s.is_empty() => Duration::from_secs(15),
        s => parse_go_duration(&s).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
            ConfigError::new(format!("keystore.vault.status.ping: invalid duration '{s}'"))
        })?,
    };
    let transit = match lookup(vault, &["transit"]) {
        None => None,
        Some(_) => {
            let key = text(&["transit", "key"]);
            if key.is_empty() {
                return Err(ConfigError::new("keystore.vault.transit: no key specified"));
            }
            Some((or(text(&["transit", "engine"]), "transit").trim_matches('/').to_owned(), key))
        }
    };
    Ok(KeystoreConfig::Vault(Box::new(VaultConfig {
        endpoint: endpoint
            .split(',')
            .map(|e| e.trim().trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(","),
        engine: or(text(&["engine"]), "kv").trim_matches('/').to_owned(),
        kv,
        namespace: text(&["namespace"]),
        prefix: text(&["prefix"]).trim_matches('/').to_owned(),
        auth: auth(vault, text)?,
        tls_cert,
        tls_ca: Some(text(&["tls", "ca"])).filter(|s| !s.is_empty()),
        ping,
        transit,
    })))
}

/// AppRole if its section has an id or secret, else Kubernetes if it has a
/// role or JWT (v0.19's rule, which also covers v0.24's by-presence rule
/// for every file that can log in at all).
fn auth(
    vault: &serde_yaml::Value,
    text: &dyn Fn(&[&str]) -> String,
) -> Result<VaultAuth, ConfigError> {
    let or = |s: String, default: &str| if s.is_empty() { default.to_owned() } else { s };
    let (id, secret) = (text(&["approle", "id"]), text(&["approle", "secret"]));
    if !id.is_empty() || !secret.is_empty() {
        if id.is_empty() || secret.is_empty() {
            return Err(ConfigError::new(
                "keystore.vault.approle: both 'id' and 'secret' are needed",
            ));
        }
        return Ok(VaultAuth::AppRole {
            engine: or(text(&["approle", "engine"]), "approle"),
            id,
            secret: Secret::new(secret),
            namespace: text(&["approle", "namespace"]),
        });
    }
    let (role, jwt) = (text(&["kubernetes", "role"]), text(&["kubernetes", "jwt"]));
    if !role.is_empty() || !jwt.is_empty() {
        if role.is_empty() || jwt.is_empty() {
            return Err(ConfigError::new(
                "keystore.vault.kubernetes: both 'role' and 'jwt' are needed",
            ));
        }
        return Ok(VaultAuth::Kubernetes {
            engine: or(text(&["kubernetes", "engine"]), "kubernetes"),
            role,
            jwt: Secret::new(jwt),
            namespace: text(&["kubernetes", "namespace"]),
        });
    }
    let _ = vault;
    Err(ConfigError::new("vault: no or empty authentication credentials specified"))
}

#[cfg(test)]
mod tests {
    use crate::config::{KeystoreConfig, KvVersion, VaultAuth};

    use super::super::parse_with_keystore as parse;

    #[test]
    fn every_key_of_the_section() {
        let c = parse("  vault:\n    endpoint: https://127.0.0.1:8200/\n    engine: secret/\n    version: v2\n    namespace: team\n    prefix: /kes/\n    approle:\n      engine: ar\n      id: role\n      secret: s3cret\n      namespace: /\n      retry: 5s\n    tls:\n      key: c.key\n      cert: c.cert\n      ca: ca.pem\n    status:\n      ping: 3s\n    transit:\n      key: wrap\n").unwrap();
        let KeystoreConfig::Vault(v) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(v.endpoint, "https://127.0.0.1:8200");
        assert_eq!((v.engine.as_str(), v.kv, v.prefix.as_str()), ("secret", KvVersion::V2, "kes"));
        assert_eq!(v.namespace, "team");
        assert_eq!(v.tls_cert, Some(("c.cert".into(), "c.key".into())));
        assert_eq!(v.tls_ca.as_deref(), Some("ca.pem"));
        assert_eq!(v.ping, std::time::Duration::from_secs(3));
        assert_eq!(v.transit, Some(("transit".into(), "wrap".into())));
        match &v.auth {
            VaultAuth::AppRole { engine, id, secret, namespace } => {
                assert_eq!(
                    (engine.as_str(), id.as_str(), secret.expose()),
                    ("ar", "role", "s3cret")
                );
                assert_eq!(namespace, "/");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", v.auth).contains("s3cret"), "secrets never print");
    }

    #[test]
    fn defaults_kubernetes_and_errors() {
        let c = parse("  vault:\n    endpoint: http://vault:8200\n    kubernetes:\n      role: kes\n      jwt: /var/run/token\n").unwrap();
        let KeystoreConfig::Vault(v) = c.keystore else { panic!() };
        assert_eq!((v.engine.as_str(), v.kv), ("kv", KvVersion::V1));
        assert!(
            matches!(v.auth, VaultAuth::Kubernetes { ref engine, .. } if engine == "kubernetes")
        );
        let err = |k: &str| parse(k).unwrap_err().message;
        assert!(err("  vault:\n    endpoint: https://v\n").contains("no or empty authentication"));
        assert!(err("  vault:\n    endpoint: https://v\n    version: v3\n    approle:\n      id: a\n      secret: b\n").contains("invalid engine API version"));
        assert!(err(
            "  vault:\n    endpoint: v:8200\n    approle:\n      id: a\n      secret: b\n"
        )
        .contains("must start with https://"));
        assert!(err("  vault:\n    endpoint: https://v\n    approle:\n      id: a\n")
            .contains("both 'id' and 'secret'"));
    }
}
