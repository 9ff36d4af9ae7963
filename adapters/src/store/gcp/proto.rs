//! GCP Secret Manager's REST API v1 and Google's service-account token
//! exchange as plain functions (keystore.md §6, stores-testing.md §3, §8):
//! one secret per key (secret id = key name, automatic replication), the
//! KES key file as the payload of version 1.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use kes_core::crypto::SecretBytes;
use kes_core::{StoreError, StoreReply};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::super::rest::{encode, grant, oauth_refused, take_string, Grant};
use crate::https::HttpResponse;

/// The JWT-bearer grant type, form-encoded.
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// Lifetime asked for (Google's maximum).
pub const TOKEN_SECONDS: u64 = 3600;

/// The claims of the assertion a service account signs.
pub struct Assertion<'a> {
    /// `client_email`.
    pub issuer: &'a str,
    /// `private_key_id`, the header's `kid`.
    pub key_id: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// The token URI (the audience).
    pub audience: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
}

/// The unsigned `header.claims` of the RS256 JWT.
pub fn signing_input(a: &Assertion<'_>) -> String {
    let mut header = json!({ "alg": "RS256", "typ": "JWT" });
    if !a.key_id.is_empty() {
        header["kid"] = json!(a.key_id);
    }
    let claims = json!({
        "iss": a.issuer,
        "scope": a.scope,
        "aud": a.audience,
        "iat": a.now,
        "exp": a.now + TOKEN_SECONDS,
    });
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The form body exchanging a signed JWT for an access token.
pub fn token_form(jwt: &str) -> Vec<u8> {
    format!("grant_type={JWT_BEARER}&assertion={}", encode(jwt)).into_bytes()
}

/// The token endpoint's answer: `access_token` and `expires_in`.
pub fn token_result(r: &HttpResponse) -> Result<Grant, StoreError> {
    if r.status != 200 {
        return Err(oauth_refused("gcp", r));
    }
    grant("gcp", r, "access_token", "expires_in", TOKEN_SECONDS, true)
}

/// `projects/P/secrets`.
pub fn secrets_path(project: &str) -> String {
    format!("/v1/projects/{}/secrets", encode(project))
}

/// Body of the secret creation: replicated automatically, as KES does.
pub fn create_body() -> Vec<u8> {
    br#"{"replication":{"automatic":{}}}"#.to_vec()
}

/// Body of `:addVersion` carrying the key.
pub fn add_version_body(value: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(STANDARD.encode(value.expose()));
    let mut out = Zeroizing::new(Vec::with_capacity(b64.len() + 32));
    out.extend_from_slice(br#"{"payload":{"data":""#);
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(br#""}}"#);
    out
}

/// The `status` of a Google API error (`NOT_FOUND`, `ALREADY_EXISTS`, …)
/// and its message.
pub fn error(r: &HttpResponse) -> (String, String) {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let e = &v["error"];
    (e["status"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())
}

/// The payload of `versions/1:access`.
pub fn access_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("gcp: invalid answer: {e}")))?;
    let data = Zeroizing::new(
        take_string(&mut v, &["payload", "data"])
            .ok_or_else(|| StoreError::Failed("gcp: secret version has no payload".into()))?,
    );
    let bytes = STANDARD
        .decode(data.as_bytes())
        .map_err(|e| StoreError::Failed(format!("gcp: invalid payload: {e}")))?;
    Ok(StoreReply::Value(SecretBytes::new(bytes)))
}

/// One listing page: key names (the last part of each secret's resource
/// name) and the next page's token.
pub fn list_result(r: &HttpResponse) -> Result<(Vec<String>, Option<String>), StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("gcp: invalid answer: {e}")))?;
    let names = match &v["secrets"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s["name"].as_str())
            .filter_map(|n| n.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Null => Vec::new(),
        _ => return Err(StoreError::Failed("gcp: invalid listing".into())),
    };
    let next = v["nextPageToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
    Ok((names, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::rest::response as resp;

    #[test]
    fn assertion_and_token() {
        let a = Assertion {
            issuer: "kes@p.iam",
            key_id: "k1",
            scope: "s",
            audience: "https://t/token",
            now: 100,
        };
        let input = signing_input(&a);
        let (h, c) = input.split_once('.').unwrap();
        let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap();
        assert_eq!((h["alg"].as_str(), h["kid"].as_str()), (Some("RS256"), Some("k1")));
        assert_eq!(
            (c["iss"].as_str(), c["aud"].as_str(), c["exp"].as_u64()),
            (Some("kes@p.iam"), Some("https://t/token"), Some(3700))
        );
        assert!(String::from_utf8(token_form("a.b.c")).unwrap().ends_with("&assertion=a.b.c"));
        let g = token_result(&resp(200, r#"{"access_token":"ya29","expires_in":120}"#)).unwrap();
        assert_eq!((g.token.as_str(), g.lifetime.as_secs()), ("Bearer ya29", 120));
        assert!(
            matches!(token_result(&resp(400, r#"{"error":"invalid_grant"}"#)), Err(StoreError::Failed(m)) if m.contains("invalid_grant"))
        );
        assert!(token_result(&resp(200, "{}")).is_err());
    }

    #[test]
    fn values_and_listing() {
        let body = add_version_body(&SecretBytes::new(b"{\"bytes\":\"x\"}".to_vec()));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let data = v["payload"]["data"].as_str().unwrap().to_owned();
        let got =
            access_result(&resp(200, &format!(r#"{{"name":"n","payload":{{"data":"{data}"}}}}"#)))
                .unwrap();
        assert!(matches!(got, StoreReply::Value(v) if v.expose() == b"{\"bytes\":\"x\"}"));
        assert!(access_result(&resp(200, "{}")).is_err());
        let (names, next) = list_result(&resp(200, r#"{"secrets":[{"name":"projects/p/secrets/a"},{"name":"projects/p/secrets/b"}],"nextPageToken":"t2"}"#)).unwrap();
        assert_eq!((names, next.as_deref()), (vec!["a".to_owned(), "b".to_owned()], Some("t2")));
        assert_eq!(list_result(&resp(200, "{}")).unwrap(), (vec![], None));
        assert_eq!(
            error(&resp(409, r#"{"error":{"code":409,"status":"ALREADY_EXISTS","message":"m"}}"#))
                .0,
            "ALREADY_EXISTS"
        );
    }
}
