//! Azure Key Vault's secrets REST API and Microsoft Entra ID tokens as
//! plain functions (stores-testing.md §4, §8), with the semantics KES v0.24
//! relies on: a key is a secret named like the key; its value is the
//! **oldest** version (so when two creators race, the first one wins for
//! every reader); a deleted secret is purged so the name can be reused.

use kes_core::crypto::SecretBytes;
use kes_core::{StoreError, StoreReply};
use serde_json::Value;
use zeroize::Zeroizing;

use super::super::rest::{encode, grant, oauth_refused, take_string, Grant};
use crate::https::HttpResponse;

/// The secrets API version sent with every call.
pub const API_VERSION: &str = "7.4";
/// The token scope for Key Vault.
pub const SCOPE: &str = "https://vault.azure.net/.default";
/// The resource for managed-identity tokens.
pub const RESOURCE: &str = "https://vault.azure.net";

/// The `error.code` of a failed call (`SecretNotFound`, …).
pub fn error_code(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let e = &v["error"];
    // Some errors nest the specific code one level down.
    e["innererror"]["code"].as_str().or(e["code"].as_str()).unwrap_or("").to_owned()
}

/// The `error.message` of a failed call.
pub fn error_message(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["error"]["message"].as_str().unwrap_or("").to_owned()
}

/// Client-credentials form for the token endpoint.
pub fn client_credentials_form(client_id: &str, secret: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            encode(client_id),
            encode(secret),
            encode(SCOPE)
        )
        .into_bytes(),
    )
}

/// A token answer (Entra ID or IMDS): `expires_in` is a number or, from
/// IMDS, a string.
pub fn token_result(r: &HttpResponse) -> Result<Grant, StoreError> {
    if r.status != 200 {
        return Err(oauth_refused("azure", r));
    }
    grant("azure", r, "access_token", "expires_in", 3600, true)
}

/// Body of a secret write: the KES key file as the secret's value.
pub fn set_body(value: &SecretBytes) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let text = std::str::from_utf8(value.expose())
        .map_err(|_| StoreError::Failed("azure: key value is not text".into()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(6 * text.len() + 16));
    out.extend_from_slice(br#"{"value":"#);
    serde_json::to_writer(&mut *out, text).map_err(|e| StoreError::Failed(e.to_string()))?;
    out.push(b'}');
    Ok(out)
}

/// One version in a versions listing.
#[derive(Debug, PartialEq, Eq)]
pub struct Version {
    /// The version id (last path part of its `id`).
    pub id: String,
    /// `attributes.created`, seconds since the epoch.
    pub created: i64,
}

/// The versions of a secret (one page). More pages mean more versions
/// than KES ever writes: refused, as KES does ("TooManyObjectVersions").
pub fn versions_result(r: &HttpResponse) -> Result<Vec<Version>, StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("azure: invalid answer: {e}")))?;
    if v["nextLink"].as_str().is_some_and(|l| !l.is_empty()) {
        return Err(StoreError::Failed("azure: the secret has too many versions".into()));
    }
    let items = v["value"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    Ok(items
        .iter()
        .filter_map(|i| {
            let id = i["id"].as_str()?.rsplit('/').next()?.to_owned();
            let created = i["attributes"]["created"].as_i64().unwrap_or(i64::MAX);
            (!id.is_empty()).then_some(Version { id, created })
        })
        .collect())
}

/// The oldest version: the one every reader agrees on.
pub fn oldest(versions: &[Version]) -> Option<&Version> {
    versions.iter().min_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)))
}

/// A secret version's value, refused when disabled, not yet valid or
/// expired (`now` in seconds since the epoch).
pub fn secret_result(r: &HttpResponse, now: i64) -> Result<StoreReply, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("azure: invalid answer: {e}")))?;
    let attrs = &v["attributes"];
    if attrs["enabled"].as_bool() == Some(false) {
        return Err(StoreError::Failed("azure: the key's secret is disabled".into()));
    }
    if attrs["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
        return Err(StoreError::Failed("azure: the key's secret is not valid yet".into()));
    }
    if attrs["exp"].as_i64().is_some_and(|exp| exp <= now) {
        return Err(StoreError::Failed("azure: the key's secret has expired".into()));
    }
    match take_string(&mut v, &["value"]) {
        Some(s) => Ok(StoreReply::Value(SecretBytes::new(s.into_bytes()))),
        None => Err(StoreError::Failed("azure: secret has no value".into())),
    }
}

/// One listing page: secret names and the path of the next page.
pub fn list_result(r: &HttpResponse) -> Result<(Vec<String>, Option<String>), StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("azure: invalid answer: {e}")))?;
    let items = v["value"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names = items
        .iter()
        .filter_map(|i| i["id"].as_str()?.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let next = v["nextLink"].as_str().filter(|l| !l.is_empty()).map(str::to_owned);
    Ok((names, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::rest::response as resp;

    #[test]
    fn tokens() {
        let g = token_result(&resp(200, r#"{"access_token":"a","expires_in":"60"}"#)).unwrap();
        assert_eq!((g.token.as_str(), g.lifetime.as_secs()), ("Bearer a", 60));
        let e = token_result(&resp(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.\nTrace"}"#,
        ));
        assert!(
            matches!(e, Err(StoreError::Failed(m)) if m.contains("AADSTS7000215") && !m.contains("Trace"))
        );
        let f = String::from_utf8(client_credentials_form("c", "s&=").to_vec()).unwrap();
        assert!(
            f.contains("client_secret=s%26%3D")
                && f.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default")
        );
    }

    #[test]
    fn versions_values_and_listing() {
        let r = resp(
            200,
            r#"{"value":[{"id":"https://v/secrets/k/b2","attributes":{"created":20}},{"id":"https://v/secrets/k/a1","attributes":{"created":10}}]}"#,
        );
        let vs = versions_result(&r).unwrap();
        assert_eq!(oldest(&vs).unwrap().id, "a1");
        assert!(versions_result(&resp(200, r#"{"value":[],"nextLink":"https://v/x"}"#)).is_err());
        let ok = secret_result(
            &resp(200, r#"{"value":"v","attributes":{"enabled":true,"exp":200}}"#),
            100,
        )
        .unwrap();
        assert!(matches!(ok, StoreReply::Value(v) if v.expose() == b"v"));
        for body in [
            r#"{"value":"v","attributes":{"enabled":false}}"#,
            r#"{"value":"v","attributes":{"nbf":200}}"#,
            r#"{"value":"v","attributes":{"exp":50}}"#,
            "{}",
        ] {
            assert!(secret_result(&resp(200, body), 100).is_err(), "{body}");
        }
        let (n, next) = list_result(&resp(200, r#"{"value":[{"id":"https://v/secrets/a"}],"nextLink":"https://v/secrets?$skiptoken=x"}"#)).unwrap();
        assert_eq!(
            (n, next.as_deref()),
            (vec!["a".to_owned()], Some("https://v/secrets?$skiptoken=x"))
        );
        assert_eq!(
            error_code(&resp(404, r#"{"error":{"code":"SecretNotFound","message":"m"}}"#)),
            "SecretNotFound"
        );
        assert_eq!(
            error_code(&resp(
                409,
                r#"{"error":{"code":"Conflict","innererror":{"code":"ObjectIsBeingDeleted"}}}"#
            )),
            "ObjectIsBeingDeleted"
        );
        let b = set_body(&SecretBytes::new(b"{\"a\":1}".to_vec())).unwrap();
        assert_eq!(&b[..], br#"{"value":"{\"a\":1}"}"#);
    }
}
