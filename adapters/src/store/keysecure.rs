//! Thales CipherTrust Manager (formerly Gemalto KeySecure) as the key
//! store: one secret of type `seed` per key, named like the key, holding
//! the KES key file as its material (stores-testing.md §5). kes logs in
//! with the configured refresh token and refreshes the short-lived JWT at
//! half its lifetime.

use std::sync::Arc;

use kes_core::config::KeySecureConfig;
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use super::rest::{failure_from, grant, request, take_string, Connected, Grant, Rest, Token};
use crate::https::{HttpRequest, HttpResponse};

const SECRETS: &str = "/api/v1/vault/secrets";
/// Listing page size and the most pages followed.
const PAGE: usize = 200;
const MAX_PAGES: usize = 10_000;

/// The login request: the refresh token for a JWT, in a domain.
pub fn login_body(refresh_token: &str, domain: &str) -> Zeroizing<Vec<u8>> {
    let mut v = json!({ "grant_type": "refresh_token", "refresh_token": refresh_token });
    if !domain.is_empty() {
        v["domain"] = json!(domain);
    }
    let out = Zeroizing::new(v.to_string().into_bytes());
    if let Value::Object(mut m) = v {
        if let Some(Value::String(s)) = m.get_mut("refresh_token") {
            zeroize::Zeroize::zeroize(s);
        }
    }
    out
}

/// The login answer: `jwt` valid for `duration` seconds.
pub fn login_result(r: &HttpResponse) -> Result<Grant, StoreError> {
    if r.status != 200 {
        return Err(failure("login failed", r));
    }
    grant("keysecure", r, "jwt", "duration", 300, true)
}

/// The create request: the key file as a `seed` secret's material.
pub fn create_body(name: &str, value: &SecretBytes) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let text = std::str::from_utf8(value.expose())
        .map_err(|_| StoreError::Failed("keysecure: key value is not text".into()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(6 * (text.len() + name.len()) + 48));
    out.extend_from_slice(br#"{"name":"#);
    serde_json::to_writer(&mut *out, name).map_err(|e| StoreError::Failed(e.to_string()))?;
    out.extend_from_slice(br#","dataType":"seed","material":"#);
    serde_json::to_writer(&mut *out, text).map_err(|e| StoreError::Failed(e.to_string()))?;
    out.push(b'}');
    Ok(out)
}

/// The export answer's `material`.
pub fn export_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("keysecure: invalid answer: {e}")))?;
    match take_string(&mut v, &["material"]) {
        Some(s) => Ok(StoreReply::Value(SecretBytes::new(s.into_bytes()))),
        None => Err(StoreError::Failed("keysecure: secret has no material".into())),
    }
}

/// One listing page: names and the total count.
pub fn list_result(r: &HttpResponse) -> Result<(Vec<String>, u64), StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("keysecure: invalid answer: {e}")))?;
    let items = v["resources"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names = items
        .iter()
        .filter_map(|i| i["name"].as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((names, v["total"].as_u64().unwrap_or(0)))
}

/// A failed answer: `codeDesc` when the body is JSON, else the text.
pub fn failure(what: &str, r: &HttpResponse) -> StoreError {
    failure_from("keysecure", what, r, "codeDesc")
}

struct Inner {
    api: Rest,
    refresh_token: Zeroizing<String>,
    domain: String,
    token: Token,
}

/// Logs in now: a wrong token stops start-up.
pub fn connect(config: &KeySecureConfig) -> Result<Connected, String> {
    let inner = Arc::new(Inner {
        api: Rest::new("keysecure", &config.endpoint, config.tls_ca.as_deref())?,
        refresh_token: Zeroizing::new(config.token.expose().to_owned()),
        domain: config.domain.clone(),
        token: Token::default(),
    });
    smol::block_on(inner.token.get(&|| inner.login()))
        .map_err(|e| format!("keysecure: cannot log in to {}: {e}", config.endpoint))?;
    let plaintext = inner.api.http.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext, source: None })
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => {
                let body = create_body(name.as_str(), &value)?;
                let r = self.call("POST", SECRETS.into(), Some(&body), false).await?;
                match r.status {
                    200 | 201 => Ok(StoreReply::Created),
                    409 => Err(StoreError::Exists),
                    _ => Err(failure("failed to create key", &r)),
                }
            }
            Command::Get { name } => {
                let path = format!("{SECRETS}/{}/export?type=name", name.as_str());
                let r = self.call("POST", path, None, true).await?;
                match r.status {
                    200 => export_result(&r),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to read key", &r)),
                }
            }
            Command::Delete { name } => {
                let path = format!("{SECRETS}/{}?type=name", name.as_str());
                let r = self.call("DELETE", path, None, true).await?;
                match r.status {
                    200 | 204 => Ok(StoreReply::Deleted),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to delete key", &r)),
                }
            }
            Command::List => {
                let mut names = Vec::new();
                for _ in 0..MAX_PAGES {
                    let path = format!("{SECRETS}?limit={PAGE}&skip={}", names.len());
                    let r = self.call("GET", path, None, true).await?;
                    if r.status != 200 {
                        return Err(failure("failed to list keys", &r));
                    }
                    let (page, total) = list_result(&r)?;
                    let done = page.is_empty() || names.len() + page.len() >= total as usize;
                    names.extend(page);
                    if done {
                        return Ok(StoreReply::Names(names));
                    }
                }
                Err(StoreError::Failed("keysecure: listing has too many pages".into()))
            }
            Command::Status => Ok(StoreReply::Status { latency: self.api.probe("/").await? }),
        }
    }
}

impl Inner {
    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<&Zeroizing<Vec<u8>>>,
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        let make =
            |auth: &str| request(method, &path, "Authorization", auth, body.map(|b| b.as_slice()));
        self.api.send_authed(&self.token, &|| self.login(), &make, idempotent).await
    }

    async fn login(&self) -> Result<Grant, StoreError> {
        let body = login_body(&self.refresh_token, &self.domain);
        let make = || HttpRequest::new("POST", "/api/v1/auth/tokens".into()).json(body.to_vec());
        login_result(&self.api.send(&make, true).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::rest::response as resp;

    #[test]
    fn protocol() {
        let b: Value = serde_json::from_slice(&login_body("rt", "")).unwrap();
        assert_eq!(b, json!({"grant_type": "refresh_token", "refresh_token": "rt"}));
        let g = login_result(&resp(200, r#"{"jwt":"j","duration":300,"token_type":"Bearer"}"#))
            .unwrap();
        assert_eq!((g.token.as_str(), g.lifetime.as_secs()), ("Bearer j", 300));
        let e = login_result(&resp(401, r#"{"code":1,"codeDesc":"NCERRInvalidRefreshToken"}"#));
        assert!(matches!(e, Err(StoreError::Failed(m)) if m.contains("NCERRInvalidRefreshToken")));
        let c: Value =
            serde_json::from_slice(&create_body("k", &SecretBytes::new(b"{}".to_vec())).unwrap())
                .unwrap();
        assert_eq!(c, json!({"name": "k", "dataType": "seed", "material": "{}"}));
        assert!(
            matches!(export_result(&resp(200, r#"{"material":"m"}"#)).unwrap(), StoreReply::Value(v) if v.expose() == b"m")
        );
        let (n, t) = list_result(&resp(
            200,
            r#"{"skip":0,"total":3,"resources":[{"name":"a"},{"name":"b"}]}"#,
        ))
        .unwrap();
        assert_eq!((n.len(), t), (2, 3));
        assert!(matches!(failure("x", &resp(503, "busy")), StoreError::Unreachable(_)));
    }
}
