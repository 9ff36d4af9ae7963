//! `keystore.aws.secretsmanager`: AWS Secrets Manager (config.md §4.3).

use super::super::schema::scalar_text;
use super::super::{AwsConfig, AwsCredentials, ConfigError, KeystoreConfig, Secret};
use super::lookup;

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let sm = lookup(v, &["aws", "secretsmanager"])?;
    let text = |path: &[&str]| lookup(sm, path).map(scalar_text).unwrap_or_default();
    let endpoint = text(&["endpoint"]);
    if endpoint.is_empty() {
        return None;
    }
    let region = text(&["region"]);
    if region.is_empty() {
        return Some(Err(ConfigError::new("keystore.aws.secretsmanager: no region specified")));
    }
    let endpoint = if endpoint.contains("://") { endpoint } else { format!("https://{endpoint}") };
    let (access, secret) =
        (text(&["credentials", "accesskey"]), text(&["credentials", "secretkey"]));
    let token = text(&["credentials", "token"]);
    let credentials =
        match (access.is_empty(), secret.is_empty()) {
            (true, true) if token.is_empty() => None,
            (false, false) => Some(AwsCredentials {
                access_key: access,
                secret_key: Secret::new(secret),
                session_token: (!token.is_empty()).then(|| Secret::new(token)),
            }),
            _ => return Some(Err(ConfigError::new(
                "keystore.aws.secretsmanager.credentials: 'accesskey' and 'secretkey' go together",
            ))),
        };
    Some(Ok(KeystoreConfig::Aws(Box::new(AwsConfig {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        region,
        kms_key: text(&["kmskey"]),
        credentials,
    }))))
}

#[cfg(test)]
mod tests {
    use crate::config::KeystoreConfig;

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  aws:\n    secretsmanager:\n      endpoint: secretsmanager.us-east-2.amazonaws.com\n      region: us-east-2\n      kmskey: alias/kes\n      credentials:\n        accesskey: AKID\n        secretkey: s3cret\n").unwrap();
        let KeystoreConfig::Aws(a) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(a.endpoint, "https://secretsmanager.us-east-2.amazonaws.com");
        assert_eq!((a.region.as_str(), a.kms_key.as_str()), ("us-east-2", "alias/kes"));
        let creds = a.credentials.as_ref().unwrap();
        assert_eq!((creds.access_key.as_str(), creds.secret_key.expose()), ("AKID", "s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
        let c = parse("  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:4566\n      region: us-east-1\n").unwrap();
        let KeystoreConfig::Aws(a) = c.keystore else { panic!() };
        assert!(a.credentials.is_none(), "from the environment");
        let e = parse("  aws:\n    secretsmanager:\n      endpoint: x\n").unwrap_err();
        assert!(e.message.contains("no region"), "{e}");
    }
}
