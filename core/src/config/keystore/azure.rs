//! `keystore.azure.keyvault`: Azure Key Vault (config.md §4.3).

use super::super::schema::scalar_text;
use super::super::{AzureAuth, AzureConfig, ConfigError, KeystoreConfig, Secret};
use super::{https_endpoint, lookup};

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let kv = lookup(v, &["azure", "keyvault"])?;
    let text = |path: &[&str]| lookup(kv, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    let err = |m: &str| Some(Err(ConfigError::new(format!("keystore.azure.keyvault: {m}"))));
    let creds = ["tenant_id", "client_id", "client_secret"].map(|k| text(&["credentials", k]));
    let managed = text(&["managed_identity", "client_id"]);
    let any_creds = creds.iter().any(|s| !s.is_empty());
    let auth = match (any_creds, managed.is_empty()) {
        (true, false) => {
            return err("'credentials' and 'managed_identity' are both set: choose one")
        }
        (true, true) => {
            let [tenant_id, client_id, client_secret] = creds;
            for (v, k) in [
                (&tenant_id, "tenant_id"),
                (&client_id, "client_id"),
                (&client_secret, "client_secret"),
            ] {
                if v.is_empty() {
                    return err(&format!("credentials.{k} is required"));
                }
            }
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                client_secret: Secret::new(client_secret),
            }
        }
        (false, false) => AzureAuth::ManagedIdentity { client_id: managed },
        (false, true) if lookup(kv, &["managed_identity"]).is_some_and(|m| !m.is_null()) => {
            return err("managed_identity.client_id is required")
        }
        (false, true) => AzureAuth::Default,
    };
    Some(Ok(KeystoreConfig::Azure(Box::new(AzureConfig {
        endpoint: https_endpoint(&endpoint),
        auth,
    }))))
}

#[cfg(test)]
mod tests {
    use crate::config::{AzureAuth, KeystoreConfig};

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  azure:\n    keyvault:\n      endpoint: https://kes.vault.azure.net/\n      credentials:\n        tenant_id: t\n        client_id: c\n        client_secret: s3cret\n").unwrap();
        let KeystoreConfig::Azure(a) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(a.endpoint, "https://kes.vault.azure.net");
        assert!(matches!(&a.auth, AzureAuth::ClientSecret { tenant_id, .. } if tenant_id == "t"));
        assert!(!format!("{a:?}").contains("s3cret"));
        let c = parse("  azure:\n    keyvault:\n      endpoint: https://v\n      managed_identity:\n        client_id: m\n").unwrap();
        let KeystoreConfig::Azure(a) = c.keystore else { panic!() };
        assert_eq!(a.auth, AzureAuth::ManagedIdentity { client_id: "m".into() });
        let c = parse("  azure:\n    keyvault:\n      endpoint: https://v\n").unwrap();
        let KeystoreConfig::Azure(a) = c.keystore else { panic!() };
        assert_eq!(a.auth, AzureAuth::Default);
        for (body, msg) in [
            ("      credentials:\n        tenant_id: t\n        client_id: c\n      managed_identity:\n        client_id: m\n", "both set"),
            ("      credentials:\n        tenant_id: t\n        client_id: c\n", "client_secret is required"),
            ("      managed_identity:\n        client_id: \"\"\n", "managed_identity.client_id"),
        ] {
            let e = parse(&format!("  azure:\n    keyvault:\n      endpoint: https://v\n{body}")).unwrap_err();
            assert!(e.message.contains(msg), "{e}");
        }
    }
}
