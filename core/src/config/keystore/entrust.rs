//! `keystore.entrust.keycontrol`: Entrust KeyControl (KES v0.24, config.md
//! §4.3).

use super::super::schema::scalar_text;
use super::super::{ConfigError, EntrustConfig, KeystoreConfig, Secret};
use super::{https_endpoint, lookup, tls_ca};

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let kc = lookup(v, &["entrust", "keycontrol"])?;
    let text = |path: &[&str]| lookup(kc, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    let [vault_id, box_id, username, password] = [
        &["vault_id"][..],
        &["box_id"],
        &["credentials", "username"],
        &["credentials", "password"],
    ]
    .map(text);
    for (v, k) in [
        (&vault_id, "vault_id"),
        (&box_id, "box_id"),
        (&username, "credentials.username"),
        (&password, "credentials.password"),
    ] {
        if v.is_empty() {
            return Some(Err(ConfigError::new(format!(
                "keystore.entrust.keycontrol: {k} is required"
            ))));
        }
    }
    Some(Ok(KeystoreConfig::Entrust(Box::new(EntrustConfig {
        endpoint: https_endpoint(&endpoint),
        vault_id,
        box_id,
        username,
        password: Secret::new(password),
        tls_ca: tls_ca(&text),
    }))))
}

#[cfg(test)]
mod tests {
    use crate::config::KeystoreConfig;

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  entrust:\n    keycontrol:\n      endpoint: https://kc.example.com\n      vault_id: v1\n      box_id: b1\n      credentials:\n        username: kes\n        password: pa55\n      tls:\n        ca: ca.pem\n").unwrap();
        let KeystoreConfig::Entrust(e) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(
            (e.vault_id.as_str(), e.box_id.as_str(), e.username.as_str()),
            ("v1", "b1", "kes")
        );
        assert!(!format!("{e:?}").contains("pa55"));
        let e =
            parse("  entrust:\n    keycontrol:\n      endpoint: https://kc\n      vault_id: v\n")
                .unwrap_err();
        assert!(e.message.contains("box_id"), "{e}");
    }
}
