//! `keystore.gcp.secretmanager`: GCP Secret Manager (config.md §4.3).

use super::super::schema::scalar_text;
use super::super::{ConfigError, GcpConfig, GcpCredentials, KeystoreConfig, Secret};
use super::{https_endpoint, lookup};

/// Google's OAuth2 token endpoint for service accounts.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub(super) fn read(v: &serde_yaml::Value) -> Option<Result<KeystoreConfig, ConfigError>> {
    let sm = lookup(v, &["gcp", "secretmanager"])?;
    let text = |path: &[&str]| lookup(sm, path).map(scalar_text).unwrap_or_default();
    let project_id = text(&["project_id"]);
    if project_id.is_empty() {
        return None;
    }
    let err = |m: &str| Some(Err(ConfigError::new(format!("keystore.gcp.secretmanager: {m}"))));
    let endpoint = match text(&["endpoint"]) {
        e if e.is_empty() => "https://secretmanager.googleapis.com".to_owned(),
        e => https_endpoint(&e),
    };
    let scopes = match lookup(sm, &["scopes"]) {
        Some(serde_yaml::Value::Sequence(s)) => {
            s.iter().map(scalar_text).filter(|s| !s.is_empty()).collect()
        }
        Some(serde_yaml::Value::Null) | None => Vec::new(),
        Some(other) => match scalar_text(other) {
            s if s.is_empty() => return err("'scopes' must be a list"),
            s => vec![s],
        },
    };
    let scopes = if scopes.is_empty() { vec![DEFAULT_SCOPE.to_owned()] } else { scopes };
    let client_email = text(&["credentials", "client_email"]);
    let private_key = text(&["credentials", "private_key"]);
    let credentials = match (client_email.is_empty(), private_key.is_empty()) {
        // Neither: Application Default Credentials (as KES left it to
        // Google's SDK).
        (true, true) => None,
        (true, false) => return err("credentials.client_email is required with a private_key"),
        (false, true) => return err("credentials.private_key is required with a client_email"),
        (false, false) => {
            let token_uri = match text(&["credentials", "token_uri"]) {
                t if t.is_empty() => GOOGLE_TOKEN_URI.to_owned(),
                t if t.starts_with("https://") || t.starts_with("http://") => t,
                t => return err(&format!("credentials.token_uri '{t}' must be an https:// URL")),
            };
            Some(GcpCredentials {
                client_email,
                client_id: text(&["credentials", "client_id"]),
                private_key_id: text(&["credentials", "private_key_id"]),
                private_key: Secret::new(private_key),
                token_uri,
            })
        }
    };
    Some(Ok(KeystoreConfig::Gcp(Box::new(GcpConfig { endpoint, project_id, scopes, credentials }))))
}

#[cfg(test)]
mod tests {
    use crate::config::KeystoreConfig;

    use super::super::parse_with_keystore as parse;

    #[test]
    fn section() {
        let c = parse("  gcp:\n    secretmanager:\n      project_id: p1\n      endpoint: secretmanager.googleapis.com:443\n      credentials:\n        client_email: kes@p1.iam.gserviceaccount.com\n        client_id: \"123\"\n        private_key_id: abc\n        private_key: \"-----BEGIN PRIVATE KEY-----\\nMII\\n-----END PRIVATE KEY-----\\n\"\n").unwrap();
        let KeystoreConfig::Gcp(g) = c.keystore else { panic!("{:?}", c.keystore) };
        assert_eq!(g.endpoint, "https://secretmanager.googleapis.com:443");
        assert_eq!(g.scopes, ["https://www.googleapis.com/auth/cloud-platform"]);
        let creds = g.credentials.as_ref().unwrap();
        assert_eq!(creds.token_uri, "https://oauth2.googleapis.com/token");
        assert!(creds.private_key.expose().contains("MII"));
        assert!(!format!("{g:?}").contains("MII"), "the key is never printed");
        let c = parse("  gcp:\n    secretmanager:\n      project_id: p1\n      scopes: [a, b]\n      credentials:\n        client_email: e\n        private_key: k\n        token_uri: http://127.0.0.1:9/token\n").unwrap();
        let KeystoreConfig::Gcp(g) = c.keystore else { panic!() };
        assert_eq!(
            (g.scopes.len(), g.credentials.unwrap().token_uri.as_str()),
            (2, "http://127.0.0.1:9/token")
        );
        // No key in the config: Application Default Credentials.
        let c = parse("  gcp:\n    secretmanager:\n      project_id: p1\n      credentials:\n        client_email: \"\"\n        private_key: \"\"\n").unwrap();
        let KeystoreConfig::Gcp(g) = c.keystore else { panic!() };
        assert!(g.credentials.is_none());
        // Half a key is an error.
        let e = parse("  gcp:\n    secretmanager:\n      project_id: p1\n      credentials:\n        client_email: e\n").unwrap_err();
        assert!(e.message.contains("private_key is required"), "{e}");
        // v0.19's sample file lists the store with empty values: not selected.
        let c = parse("  gcp:\n    secretmanager:\n      project_id: \"\"\n  fs:\n    path: ./k\n")
            .unwrap();
        assert!(matches!(c.keystore, KeystoreConfig::Fs { .. }));
    }
}
