//! `keystore.fortanix.sdkms`: Fortanix DSM, formerly SDKMS (config.md §4.3).

use super::super::schema::scalar_text;
use super::super::{ConfigError, FortanixConfig, KeystoreConfig, Secret};
use super::{https_endpoint, lookup, tls_ca};

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let sdkms = lookup(v, &["fortanix", "sdkms"])?;
    let text = |path: &[&str]| lookup(sdkms, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    let api_key = text(&["credentials", "key"]);
    if api_key.is_empty() {
        return Some(Err(ConfigError::new(
            "keystore.fortanix.sdkms: credentials.key (the application's API key) is required",
        )));
    }
    Some(Ok(KeystoreConfig::Fortanix(Box::new(FortanixConfig {
        endpoint: https_endpoint(&endpoint),
        group_id: text(&["group_id"]),
        api_key: Secret::new(api_key),
        tls_ca: tls_ca(&text),
    }))))
}

#[cfg(test)]
mod tests {
    use crate::config::KeystoreConfig;

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  fortanix:\n    sdkms:\n      endpoint: https://sdkms.fortanix.com\n      group_id: g1\n      credentials:\n        key: YXBpa2V5\n").unwrap();
        let KeystoreConfig::Fortanix(f) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!((f.group_id.as_str(), f.tls_ca.as_deref()), ("g1", None));
        assert!(!format!("{f:?}").contains("YXBpa2V5"));
        let e = parse("  fortanix:\n    sdkms:\n      endpoint: https://f\n").unwrap_err();
        assert!(e.message.contains("API key"), "{e}");
    }
}
