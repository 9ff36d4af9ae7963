//! Fortanix DSM (formerly SDKMS) as the key store: one opaque, exportable
//! security object per key, named like the key, holding the KES key file
//! (stores-testing.md §5). The API key opens a session whose bearer token
//! is used for the data calls and renewed before it expires (KES sends the
//! API key itself with every call; a session keeps it off the wire).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kes_core::config::FortanixConfig;
use kes_core::crypto::SecretBytes;
use kes_core::{Command, StoreError, StoreReply};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use super::rest::{
    encode, failure_from, grant, request, take_string, Connected, Grant, Rest, Token,
};
use crate::https::{HttpRequest, HttpResponse};

/// Listing page size and the most pages followed.
const PAGE: usize = 100;
const MAX_PAGES: usize = 100_000;

/// The session answer: `access_token` for `expires_in` seconds.
pub fn session_result(r: &HttpResponse) -> Result<Grant, StoreError> {
    if r.status != 200 {
        return Err(failure("authentication failed", r));
    }
    grant("fortanix", r, "access_token", "expires_in", 600, true)
}

/// The create request: an opaque object that may be exported.
pub fn create_body(name: &str, group_id: &str, value: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(STANDARD.encode(value.expose()));
    let mut head = json!({
        "obj_type": "OPAQUE",
        "name": name,
        "key_ops": ["EXPORT", "APPMANAGEABLE"],
        "enabled": true,
    });
    if !group_id.is_empty() {
        head["group_id"] = json!(group_id);
    }
    // The value goes in last, written straight into the wiped buffer.
    let mut out = Zeroizing::new(head.to_string().into_bytes());
    out.pop();
    out.extend_from_slice(br#","value":""#);
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(br#""}"#);
    out
}

/// The export answer's value (refused when the object is disabled) and kid.
pub fn export_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("fortanix: invalid answer: {e}")))?;
    if v["enabled"].as_bool() == Some(false) {
        return Err(StoreError::Failed("fortanix: the key's object is disabled".into()));
    }
    let b64 = Zeroizing::new(
        take_string(&mut v, &["value"])
            .ok_or_else(|| StoreError::Failed("fortanix: object has no value".into()))?,
    );
    let bytes = STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| StoreError::Failed(format!("fortanix: invalid value: {e}")))?;
    Ok(StoreReply::Value(SecretBytes::new(bytes)))
}

/// The `kid` of an object description.
pub fn kid(r: &HttpResponse) -> Result<String, StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("fortanix: invalid answer: {e}")))?;
    v["kid"]
        .as_str()
        .filter(|k| !k.is_empty() && !k.contains(['/', '?', '#']))
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Failed("fortanix: object has no kid".into()))
}

/// One listing page (a JSON array of objects): their names.
pub fn list_result(r: &HttpResponse) -> Result<Vec<String>, StoreError> {
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("fortanix: invalid answer: {e}")))?;
    let items =
        v.as_array().ok_or_else(|| StoreError::Failed("fortanix: invalid listing".into()))?;
    Ok(items.iter().filter_map(|i| i["name"].as_str()).map(str::to_owned).collect())
}

/// A failed answer: Fortanix errors are plain text (or a JSON `message`).
pub fn failure(what: &str, r: &HttpResponse) -> StoreError {
    failure_from("fortanix", what, r, "message")
}

struct Inner {
    api: Rest,
    basic: Zeroizing<String>,
    group_id: String,
    token: Token,
}

/// Opens a session now: a wrong API key stops start-up.
pub fn connect(config: &FortanixConfig) -> Result<Connected, String> {
    let inner = Arc::new(Inner {
        api: Rest::new("fortanix", &config.endpoint, config.tls_ca.as_deref())?,
        basic: Zeroizing::new(format!("Basic {}", config.api_key.expose())),
        group_id: config.group_id.clone(),
        token: Token::default(),
    });
    smol::block_on(inner.token.get(&|| inner.session()))
        .map_err(|e| format!("fortanix: cannot authenticate to {}: {e}", config.endpoint))?;
    let plaintext = inner.api.http.is_plaintext();
    Ok(Connected { store: Arc::new(RemoteStore::new(inner)), plaintext, source: None })
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => {
                let body = create_body(name.as_str(), &self.group_id, &value);
                let r = self.call("PUT", "/crypto/v1/keys".into(), Some(&body), false).await?;
                match r.status {
                    200 | 201 => Ok(StoreReply::Created),
                    409 => Err(StoreError::Exists),
                    _ => Err(failure("failed to create key", &r)),
                }
            }
            Command::Get { name } => {
                let body =
                    Zeroizing::new(json!({ "name": name.as_str() }).to_string().into_bytes());
                let r =
                    self.call("POST", "/crypto/v1/keys/export".into(), Some(&body), true).await?;
                match r.status {
                    200 => export_result(&r),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to read key", &r)),
                }
            }
            Command::Delete { name } => {
                // Objects are deleted by id: look it up by name (without the value).
                let body =
                    Zeroizing::new(json!({ "name": name.as_str() }).to_string().into_bytes());
                let r = self.call("POST", "/crypto/v1/keys/info".into(), Some(&body), true).await?;
                match r.status {
                    200 => {}
                    404 => return Err(StoreError::NotFound),
                    _ => return Err(failure("failed to delete key", &r)),
                }
                let r = self
                    .call("DELETE", format!("/crypto/v1/keys/{}", kid(&r)?), None, true)
                    .await?;
                match r.status {
                    200 | 204 => Ok(StoreReply::Deleted),
                    404 => Err(StoreError::NotFound),
                    _ => Err(failure("failed to delete key", &r)),
                }
            }
            Command::List => {
                let mut names: Vec<String> = Vec::new();
                for _ in 0..MAX_PAGES {
                    // `start` is exclusive: the last name of the page before.
                    let mut path = format!("/crypto/v1/keys?sort=name:asc&limit={PAGE}");
                    if let Some(last) = names.last() {
                        path.push_str(&format!("&start={}", encode(last)));
                    }
                    let r = self.call("GET", path, None, true).await?;
                    if r.status != 200 {
                        return Err(failure("failed to list keys", &r));
                    }
                    // Servers cap `limit`: a page shorter than asked is not
                    // the end, only an empty one (or one with nothing new) is.
                    let before = names.len();
                    for n in list_result(&r)? {
                        // Guard against a server that ignores `start`.
                        if names.last().is_none_or(|l| &n > l) {
                            names.push(n);
                        }
                    }
                    if names.len() == before {
                        return Ok(StoreReply::Names(names));
                    }
                }
                Err(StoreError::Failed("fortanix: listing has too many pages".into()))
            }
            Command::Status => {
                Ok(StoreReply::Status { latency: self.api.probe("/sys/v1/health").await? })
            }
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
        self.api.send_authed(&self.token, &|| self.session(), &make, idempotent).await
    }

    async fn session(&self) -> Result<Grant, StoreError> {
        let make = || {
            HttpRequest::new("POST", "/sys/v1/session/auth".into())
                .header("Authorization", &self.basic)
        };
        session_result(&self.api.send(&make, true).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::rest::response as resp;

    #[test]
    fn protocol() {
        let c: Value =
            serde_json::from_slice(&create_body("k", "g", &SecretBytes::new(b"v".to_vec())))
                .unwrap();
        assert_eq!(
            c,
            json!({"obj_type":"OPAQUE","name":"k","group_id":"g","key_ops":["EXPORT","APPMANAGEABLE"],"enabled":true,"value":"dg=="})
        );
        let c: Value =
            serde_json::from_slice(&create_body("k", "", &SecretBytes::new(b"v".to_vec())))
                .unwrap();
        assert!(c.get("group_id").is_none());
        assert!(
            matches!(export_result(&resp(200, r#"{"value":"dg==","enabled":true,"kid":"x"}"#)).unwrap(), StoreReply::Value(v) if v.expose() == b"v")
        );
        assert!(export_result(&resp(200, r#"{"value":"dg==","enabled":false}"#)).is_err());
        assert_eq!(kid(&resp(200, r#"{"kid":"abc"}"#)).unwrap(), "abc");
        assert!(kid(&resp(200, r#"{"kid":"../x"}"#)).is_err());
        assert_eq!(list_result(&resp(200, r#"[{"name":"a"},{"name":"b"}]"#)).unwrap(), ["a", "b"]);
        let g = session_result(&resp(
            200,
            r#"{"access_token":"t","expires_in":60,"token_type":"Bearer"}"#,
        ))
        .unwrap();
        assert_eq!(g.token.as_str(), "Bearer t");
        assert!(
            matches!(session_result(&resp(401, "invalid API key")), Err(StoreError::Failed(m)) if m.contains("invalid API key"))
        );
    }
}
