//! Entrust KeyControl as the key store: one secret per key in a box of a
//! secrets vault, named like the key, holding the KES key file
//! (stores-testing.md §5). Every call is a `POST /vault/1.0/<Op>/` with
//! the session token in `X-Vault-Auth`; the token is renewed at half its
//! lifetime (a fresh login when renewing fails).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kes_core::config::EntrustConfig;
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply, UnixTime};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use super::rest::{
    encode, failure_from, grant, request, take_string, Connected, Grant, Rest, Token,
};
use crate::https::{HttpRequest, HttpResponse};

/// Listing page size and the most pages followed.
const PAGE: usize = 250;
const MAX_PAGES: usize = 10_000;
/// Lifetime assumed when the answer names none (as KES).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A login or renew answer: `access_token` until `expires_at` (RFC 3339);
/// `now` in seconds since the epoch.
pub fn token_result(r: &HttpResponse, now: i64) -> Result<Grant, StoreError> {
    if r.status != 200 {
        return Err(failure("login failed", r));
    }
    let mut g = grant("keycontrol", r, "access_token", "", DEFAULT_LIFETIME.as_secs(), false)?;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if let Some(secs) = v["expires_at"]
        .as_str()
        .and_then(UnixTime::parse_rfc3339)
        .map(|t| t.to_parts().0 - now)
        .filter(|s| *s > 0)
    {
        g.lifetime = Duration::from_secs(secs as u64);
    }
    Ok(g)
}

/// The create request: the key file base64-encoded as `secret_data`.
pub fn create_body(box_id: &str, name: &str, value: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(STANDARD.encode(value.expose()));
    let mut out =
        Zeroizing::new(json!({ "box_id": box_id, "name": name }).to_string().into_bytes());
    out.pop();
    out.extend_from_slice(br#","secret_data":""#);
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(br#""}"#);
    out
}

/// The checkout answer's `secret_data`.
pub fn checkout_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("keycontrol: invalid answer: {e}")))?;
    let b64 = Zeroizing::new(
        take_string(&mut v, &["secret_data"])
            .ok_or_else(|| StoreError::Failed("keycontrol: secret has no data".into()))?,
    );
    let bytes = STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| StoreError::Failed(format!("keycontrol: invalid secret data: {e}")))?;
    Ok(StoreReply::Value(SecretBytes::new(bytes)))
}

/// The listing request; the continuation token is base64 of
/// `{"box_id","next_ctx"}`.
pub fn list_body(box_id: &str, next_ctx: Option<&str>) -> Vec<u8> {
    let mut v = json!({ "box_id": box_id, "max_items": PAGE });
    if let Some(ctx) = next_ctx {
        let token = json!({ "box_id": box_id, "next_ctx": ctx }).to_string();
        v["next_token"] = json!(STANDARD.encode(token));
    }
    v.to_string().into_bytes()
}

/// One listing page: names of unexpired secrets and the next context.
pub fn list_result(r: &HttpResponse) -> Result<(Vec<String>, Option<String>), StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("keycontrol: invalid answer: {e}")))?;
    let items = v["secrets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names = items
        .iter()
        .filter(|s| s["expired"].as_bool() != Some(true))
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let next = match v["next_token"].as_str().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => {
            let raw = STANDARD
                .decode(t)
                .map_err(|_| StoreError::Failed("keycontrol: invalid continuation token".into()))?;
            let t: Value = serde_json::from_slice(&raw)
                .map_err(|_| StoreError::Failed("keycontrol: invalid continuation token".into()))?;
            t["next_ctx"].as_str().filter(|c| !c.is_empty()).map(str::to_owned)
        }
    };
    Ok((names, next))
}

/// What a failed answer means: KeyControl says it in `error`.
pub fn failure(what: &str, r: &HttpResponse) -> StoreError {
    failure_from("keycontrol", what, r, "error")
}

struct Inner {
    api: Rest,
    vault_id: String,
    box_id: String,
    username: String,
    password: Zeroizing<String>,
    token: Token,
}

/// Logs in and reads the box now: wrong credentials or box stop start-up.
pub fn connect(config: &EntrustConfig) -> Result<Connected, String> {
    let inner = Arc::new(Inner {
        api: Rest::new("keycontrol", &config.endpoint, config.tls_ca.as_deref())?,
        vault_id: config.vault_id.clone(),
        box_id: config.box_id.clone(),
        username: config.username.clone(),
        password: Zeroizing::new(config.password.expose().to_owned()),
        token: Token::default(),
    });
    smol::block_on(async {
        let r = inner
            .op("GetBox", json!({ "box_id": inner.box_id }).to_string().into_bytes(), true)
            .await?;
        match r.status {
            200 => Ok(()),
            _ => Err(failure(&format!("cannot open box '{}'", inner.box_id), &r)),
        }
    })
    .map_err(|e| format!("keycontrol: {}: {e}", config.endpoint))?;
    let plaintext = inner.api.http.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext, source: None })
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        let secret = |name: &str| {
            json!({ "box_id": self.box_id, "secret_id": name }).to_string().into_bytes()
        };
        match cmd {
            Command::Create { name, value } => {
                let body = create_body(&self.box_id, name.as_str(), &value);
                let r = self.op("CreateSecret", body.to_vec(), false).await?;
                match r.status {
                    200 | 201 => Ok(StoreReply::Created),
                    409 => Err(StoreError::Exists),
                    _ => Err(failure("failed to create key", &r)),
                }
            }
            Command::Get { name } => {
                let r = self.op("CheckoutSecret", secret(name.as_str()), true).await?;
                match r.status {
                    200 => checkout_result(&r),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to read key", &r)),
                }
            }
            Command::Delete { name } => {
                let r = self.op("DeleteSecret", secret(name.as_str()), true).await?;
                match r.status {
                    200 | 204 => Ok(StoreReply::Deleted),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to delete key", &r)),
                }
            }
            Command::List => {
                let mut names = Vec::new();
                let mut next: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let r = self
                        .op("ListSecretIds", list_body(&self.box_id, next.as_deref()), true)
                        .await?;
                    if r.status != 200 {
                        return Err(failure("failed to list keys", &r));
                    }
                    let (page, ctx) = list_result(&r)?;
                    let empty = page.is_empty();
                    names.extend(page);
                    match ctx {
                        Some(c) if !empty => next = Some(c),
                        _ => return Ok(StoreReply::Names(names)),
                    }
                }
                Err(StoreError::Failed("keycontrol: listing has too many pages".into()))
            }
            Command::Status => {
                let start = std::time::Instant::now();
                let r = self
                    .op("GetBox", json!({ "box_id": self.box_id }).to_string().into_bytes(), true)
                    .await?;
                match r.status {
                    200 => Ok(StoreReply::Status { latency: start.elapsed() }),
                    _ => Err(failure("status", &r)),
                }
            }
        }
    }
}

impl Inner {
    /// One operation with the session token.
    async fn op(
        &self,
        op: &str,
        body: Vec<u8>,
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        let body = Zeroizing::new(body);
        let path = format!("/vault/1.0/{op}/");
        let make = |auth: &str| request("POST", &path, "X-Vault-Auth", auth, Some(&body));
        self.api.send_authed(&self.token, &|| self.refresh(), &make, idempotent).await
    }

    /// Renews the current token if there is one, else (or when that
    /// fails) logs in with the password.
    async fn refresh(&self) -> Result<Grant, StoreError> {
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Some(old) = self.token.peek() {
            let make = || {
                HttpRequest::new("POST", "/vault/1.0/Renew/".into()).header("X-Vault-Auth", &old)
            };
            if let Ok(r) = self.api.send(&make, true).await {
                if let Ok(g) = token_result(&r, now()) {
                    return Ok(g);
                }
            }
        }
        let body = Zeroizing::new(
            json!({ "username": self.username, "password": self.password.as_str() })
                .to_string()
                .into_bytes(),
        );
        let path = format!("/vault/1.0/Login/{}/", encode(&self.vault_id));
        let make = || HttpRequest::new("POST", path.clone()).json(body.to_vec());
        token_result(&self.api.send(&make, true).await?, now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::rest::response as resp;

    #[test]
    fn protocol() {
        let g = token_result(
            &resp(200, r#"{"access_token":"t","expires_at":"2026-01-01T00:10:00Z"}"#),
            1_767_225_600,
        )
        .unwrap();
        assert_eq!((g.token.as_str(), g.lifetime.as_secs()), ("t", 600));
        let g = token_result(&resp(200, r#"{"access_token":"t"}"#), 0).unwrap();
        assert_eq!(g.lifetime, DEFAULT_LIFETIME);
        assert!(
            matches!(token_result(&resp(401, r#"{"error":"Invalid credentials"}"#), 0), Err(StoreError::Failed(m)) if m.contains("Invalid credentials"))
        );
        let c: Value =
            serde_json::from_slice(&create_body("b", "k", &SecretBytes::new(b"v".to_vec())))
                .unwrap();
        assert_eq!(c, json!({"box_id":"b","name":"k","secret_data":"dg=="}));
        assert!(
            matches!(checkout_result(&resp(200, r#"{"secret_data":"dg=="}"#)).unwrap(), StoreReply::Value(v) if v.expose() == b"v")
        );
        let body: Value = serde_json::from_slice(&list_body("b", Some("c1"))).unwrap();
        let token = STANDARD.decode(body["next_token"].as_str().unwrap()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&token).unwrap(),
            json!({"box_id":"b","next_ctx":"c1"})
        );
        let next = STANDARD.encode(r#"{"box_id":"b","next_ctx":"c2"}"#);
        let (n, c) = list_result(&resp(200, &format!(r#"{{"secrets":[{{"name":"a","expired":false}},{{"name":"x","expired":true}}],"next_token":"{next}"}}"#))).unwrap();
        assert_eq!((n, c.as_deref()), (vec!["a".to_owned()], Some("c2")));
        assert!(list_result(&resp(200, r#"{"secrets":[],"next_token":"!!"}"#)).is_err());
    }
}
