//! The Vault K/V protocol as plain functions (keystore.md §4): from a
//! command to an [`HttpRequest`], from an [`HttpResponse`] to a result. No
//! IO here, so every branch is unit-tested and the parsers are fuzzed.

use std::time::Duration;

use kes_core::config::{KvVersion, VaultAuth, VaultConfig};
use kes_core::crypto::SecretBytes;
use kes_core::{StoreError, StoreReply};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::https::{HttpRequest, HttpResponse};

/// KES's health query: every state answers 299 and the JSON says which.
pub const HEALTH: &str = "/v1/sys/health?uninitcode=299&sealedcode=299&standbycode=299&drsecondarycode=299&performancestandbycode=299";

/// Where a store's keys live in Vault.
#[derive(Clone, Debug)]
pub struct Paths {
    engine: String,
    prefix: String,
    kv: KvVersion,
}

impl Paths {
    /// The paths of a config.
    pub fn new(c: &VaultConfig) -> Self {
        Self { engine: c.engine.clone(), prefix: c.prefix.clone(), kv: c.kv }
    }

    fn join(&self, middle: &str, name: &str) -> String {
        let parts = [self.engine.as_str(), middle, self.prefix.as_str(), name];
        let path: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
        format!("/v1/{}", path.join("/"))
    }

    /// Where a key's value is read and written.
    pub fn data(&self, name: &str) -> String {
        match self.kv {
            KvVersion::V1 => self.join("", name),
            KvVersion::V2 => self.join("data", name),
        }
    }

    /// A v2 read of the first (only) version, as KES v0.24 reads.
    pub fn read(&self, name: &str) -> String {
        match self.kv {
            KvVersion::V1 => self.data(name),
            KvVersion::V2 => format!("{}?version=1", self.data(name)),
        }
    }

    /// What a delete removes: v2 deletes metadata, i.e. every version.
    pub fn delete(&self, name: &str) -> String {
        match self.kv {
            KvVersion::V1 => self.data(name),
            KvVersion::V2 => self.join("metadata", name),
        }
    }

    /// The listing of all keys.
    pub fn list(&self) -> String {
        match self.kv {
            KvVersion::V1 => format!("{}?list=true", self.join("", "")),
            KvVersion::V2 => format!("{}?list=true", self.join("metadata", "")),
        }
    }

    /// The K/V version.
    pub fn kv(&self) -> KvVersion {
        self.kv
    }
}

/// The create body: a one-entry object whose field is the key name and
/// whose value the encoded key as a string (byte-compatible with KES); v2
/// adds `cas: 0`, so Vault refuses the write if the path exists.
pub fn create_body(kv: KvVersion, name: &str, value: &SecretBytes) -> Result<Vec<u8>, StoreError> {
    let text = std::str::from_utf8(value.expose())
        .map_err(|_| StoreError::Failed("vault: key value is not text".into()))?;
    // Written by hand into one buffer sized for the worst-case escaping, so
    // no copy of the key is left behind by a growing buffer.
    let mut out = Vec::with_capacity(6 * (text.len() + name.len()) + 64);
    if kv == KvVersion::V2 {
        out.extend_from_slice(br#"{"options":{"cas":0},"data":"#);
    }
    out.push(b'{');
    let json = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(out, s).map_err(|e| StoreError::Failed(format!("vault: {e}")))
    };
    json(&mut out, name)?;
    out.push(b':');
    json(&mut out, text)?;
    out.push(b'}');
    if kv == KvVersion::V2 {
        out.push(b'}');
    }
    Ok(out)
}

/// Vault's `errors` list as one message.
pub fn errors(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let list: Vec<String> = v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    list.join("; ")
}

/// A failure status as a store error: 5xx and redirects (a standby that
/// lost its leader) are transient, a sealed Vault unreachable, the rest
/// plain failures naming Vault's message.
pub fn failure(what: &str, r: &HttpResponse) -> StoreError {
    let msg = errors(&r.body);
    let text = if msg.is_empty() {
        format!("vault: {what}: status {}", r.status)
    } else {
        format!("vault: {what}: {msg}")
    };
    match r.status {
        503 if msg.contains("sealed") => {
            StoreError::Unreachable("vault: key store is sealed".into())
        }
        307 | 500..=599 => StoreError::Unreachable(text),
        _ => StoreError::Failed(text),
    }
}

/// A redirect's `Location` as `scheme://authority` and path (with query).
pub fn split_location(location: &str) -> Option<(&str, &str)> {
    let scheme_end = location.find("://")? + 3;
    let path_start = location[scheme_end..].find('/').map(|i| scheme_end + i)?;
    let (base, path) = location.split_at(path_start);
    (base.starts_with("https://") || base.starts_with("http://")).then_some((base, path))
}

/// Whether a failure may succeed if tried again (transient).
pub fn transient(r: &HttpResponse) -> bool {
    r.status == 307 || r.status == 429 || r.status >= 500
}

/// The result of a create.
pub fn create_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match r.status {
        200 | 204 => Ok(StoreReply::Created),
        400 if errors(&r.body).contains("check-and-set") => Err(StoreError::Exists),
        _ => Err(failure("failed to create key", r)),
    }
}

/// The result of a read: the value under the key's own field.
pub fn get_result(kv: KvVersion, name: &str, r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match r.status {
        200 => {}
        404 => return Err(StoreError::NotFound),
        _ => return Err(failure("failed to read key", r)),
    }
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("vault: invalid response: {e}")))?;
    let path: &[&str] = match kv {
        KvVersion::V1 => &["data"],
        KvVersion::V2 => &["data", "data"],
    };
    let data = path.iter().try_fold(&v, |v, k| v.get(*k));
    if data.is_none_or(Value::is_null) {
        return Err(StoreError::NotFound); // v2 after a soft delete
    }
    // Moved out, not copied: the key's text becomes the secret bytes.
    let field: Vec<&str> = path.iter().copied().chain([name]).collect();
    match super::super::rest::take_string(&mut v, &field) {
        Some(s) => Ok(StoreReply::Value(SecretBytes::new(s.into_bytes()))),
        None => Err(StoreError::Failed(format!(
            "vault: entry '{name}' exists but no secret key is present"
        ))),
    }
}

/// The result of a delete. Vault answers 204 for a missing path too.
pub fn delete_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match r.status {
        200 | 204 => Ok(StoreReply::Deleted),
        404 => Err(StoreError::NotFound),
        _ => Err(failure("failed to delete key", r)),
    }
}

/// The result of a listing: names, without sub-folders; an empty engine
/// answers 404 `{"errors":[]}`, which is an empty list, not an error.
pub fn list_result(r: &HttpResponse) -> Result<StoreReply, StoreError> {
    match r.status {
        200 => {}
        404 => return Ok(StoreReply::Names(Vec::new())),
        _ => return Err(failure("failed to list keys", r)),
    }
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("vault: invalid listing: {e}")))?;
    let names = v["data"]["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|k| !k.ends_with('/'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(StoreReply::Names(names))
}

/// Vault's health, as KES's query reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// Initialised.
    pub initialized: bool,
    /// Sealed.
    pub sealed: bool,
    /// A standby node.
    pub standby: bool,
}

impl Health {
    /// Whether keys can be served.
    pub fn serving(&self) -> bool {
        self.initialized && !self.sealed
    }
}

/// Reads a health answer (200 or 299 with JSON; anything else is not a
/// health answer).
pub fn health_result(r: &HttpResponse) -> Result<Health, StoreError> {
    if !matches!(r.status, 200 | 299 | 429 | 501 | 503) {
        return Err(failure("health check failed", r));
    }
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Unreachable(format!("vault: invalid health answer: {e}")))?;
    Ok(Health {
        initialized: v["initialized"].as_bool().unwrap_or(false),
        sealed: v["sealed"].as_bool().unwrap_or(true),
        standby: v["standby"].as_bool().unwrap_or(false),
    })
}

/// Transit-wrapped values start like this; the number is the transit key's
/// version. KES v0.24 accepted only `vault:v1:`, so it could not read a
/// value wrapped after the transit key was rotated; any version is read
/// here (Vault decrypts every version it still holds).
pub fn is_wrapped(value: &[u8]) -> bool {
    let Some(rest) = value.strip_prefix(b"vault:v") else { return false };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b':')
}

/// `POST <engine>/encrypt/<key>` of a key file.
pub fn wrap_request(engine: &str, key: &str, value: &SecretBytes) -> HttpRequest {
    use base64::Engine as _;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(value.expose()));
    let mut body = Vec::with_capacity(b64.len() + 32);
    body.extend_from_slice(br#"{"plaintext":""#);
    body.extend_from_slice(b64.as_bytes());
    body.extend_from_slice(br#""}"#);
    HttpRequest::new("POST", format!("/v1/{engine}/encrypt/{key}")).json(body)
}

/// The wrapped value of an encrypt answer.
pub fn wrap_result(r: &HttpResponse) -> Result<SecretBytes, StoreError> {
    if r.status != 200 {
        return Err(failure("transit encrypt failed", r));
    }
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("vault: invalid transit answer: {e}")))?;
    match v["data"]["ciphertext"].as_str() {
        Some(c) if is_wrapped(c.as_bytes()) => Ok(SecretBytes::new(c.as_bytes().to_vec())),
        _ => Err(StoreError::Failed("vault: transit answer has no ciphertext".into())),
    }
}

/// `POST <engine>/decrypt/<key>` of a wrapped value.
pub fn unwrap_request(engine: &str, key: &str, wrapped: &[u8]) -> HttpRequest {
    let body = json!({ "ciphertext": String::from_utf8_lossy(wrapped) }).to_string().into_bytes();
    HttpRequest::new("POST", format!("/v1/{engine}/decrypt/{key}")).json(body)
}

/// The key file of a decrypt answer.
pub fn unwrap_result(r: &HttpResponse) -> Result<SecretBytes, StoreError> {
    use base64::Engine as _;
    if r.status != 200 {
        return Err(failure("transit decrypt failed", r));
    }
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("vault: invalid transit answer: {e}")))?;
    let Some(b64) = super::super::rest::take_string(&mut v, &["data", "plaintext"]) else {
        return Err(StoreError::Failed("vault: transit answer has no plaintext".into()));
    };
    let b64 = Zeroizing::new(b64);
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map(SecretBytes::new)
        .map_err(|e| StoreError::Failed(format!("vault: invalid transit plaintext: {e}")))
}

/// A token and how long it lives.
pub struct Token {
    /// `auth.client_token`; wiped on drop.
    pub token: Zeroizing<String>,
    /// `auth.lease_duration`; zero means it does not expire.
    pub ttl: Duration,
    /// Whether renew-self can extend it.
    pub renewable: bool,
}

/// The login request of a config's auth method. A Kubernetes JWT given as
/// a path (it contains `/`) is read by the caller and passed in.
pub fn login_request(auth: &VaultAuth, data_namespace: &str, jwt: Option<&str>) -> HttpRequest {
    let (path, body, ns) = match auth {
        VaultAuth::AppRole { engine, id, secret, namespace } => (
            format!("/v1/auth/{}/login", engine.trim_matches('/')),
            json!({"role_id": id, "secret_id": secret.expose()}),
            namespace,
        ),
        VaultAuth::Kubernetes { engine, role, jwt: configured, namespace } => (
            format!("/v1/auth/{}/login", engine.trim_matches('/')),
            json!({"role": role, "jwt": jwt.unwrap_or(configured.expose())}),
            namespace,
        ),
    };
    let mut req = HttpRequest::new("PUT", path).json(serde_json::to_vec(&body).unwrap_or_default());
    // The auth method's namespace ('/' = root); else the data namespace.
    let ns = if ns.is_empty() { data_namespace } else { ns.as_str() };
    if !ns.is_empty() && ns != "/" {
        req = req.header("X-Vault-Namespace", ns);
    }
    req
}

/// Reads a login or renew-self answer.
pub fn token_result(r: &HttpResponse) -> Result<Token, StoreError> {
    if r.status != 200 {
        return Err(failure("login failed", r));
    }
    let mut v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| StoreError::Failed(format!("vault: invalid login answer: {e}")))?;
    let token = match super::super::rest::take_string(&mut v, &["auth", "client_token"]) {
        Some(t) if !t.is_empty() => Zeroizing::new(t),
        _ => return Err(StoreError::Failed("vault: login answer has no token".into())),
    };
    let auth = &v["auth"];
    Ok(Token {
        token,
        ttl: Duration::from_secs(auth["lease_duration"].as_u64().unwrap_or(0)),
        renewable: auth["renewable"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kes_core::config::Secret;

    /// Store results compare by their debug form (values print redacted).
    macro_rules! same {
        ($a:expr, $b:expr) => {
            assert_eq!(format!("{:?}", $a), format!("{:?}", $b))
        };
    }

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, location: None, body: Zeroizing::new(body.as_bytes().to_vec()) }
    }

    fn paths(kv: KvVersion, prefix: &str) -> Paths {
        Paths { engine: "kv".into(), prefix: prefix.into(), kv }
    }

    #[test]
    fn paths_of_both_versions() {
        let v1 = paths(KvVersion::V1, "kes");
        assert_eq!(v1.data("k"), "/v1/kv/kes/k");
        assert_eq!(v1.read("k"), "/v1/kv/kes/k");
        assert_eq!(v1.delete("k"), "/v1/kv/kes/k");
        assert_eq!(v1.list(), "/v1/kv/kes?list=true");
        let v2 = paths(KvVersion::V2, "");
        assert_eq!(v2.data("k"), "/v1/kv/data/k");
        assert_eq!(v2.read("k"), "/v1/kv/data/k?version=1");
        assert_eq!(v2.delete("k"), "/v1/kv/metadata/k");
        assert_eq!(v2.list(), "/v1/kv/metadata?list=true");
    }

    #[test]
    fn stored_values_are_kes_compatible() {
        let value = SecretBytes::new(br#"{"bytes":"AAEC"}"#.to_vec());
        let v1 = create_body(KvVersion::V1, "my-key", &value).unwrap();
        assert_eq!(v1, br#"{"my-key":"{\"bytes\":\"AAEC\"}"}"#);
        let v2: Value =
            serde_json::from_slice(&create_body(KvVersion::V2, "k", &value).unwrap()).unwrap();
        assert_eq!(v2, json!({"options": {"cas": 0}, "data": {"k": r#"{"bytes":"AAEC"}"#}}));
        // What Vault gives back reads as the same value.
        let read =
            resp(200, r#"{"data":{"data":{"k":"{\"bytes\":\"AAEC\"}"},"metadata":{"version":1}}}"#);
        match get_result(KvVersion::V2, "k", &read).unwrap() {
            StoreReply::Value(v) => assert_eq!(v, value),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_mapping() {
        same!(create_result(&resp(204, "")), Ok::<_, StoreError>(StoreReply::Created));
        same!(create_result(&resp(200, "{}")), Ok::<_, StoreError>(StoreReply::Created));
        let cas = r#"{"errors":["check-and-set parameter did not match the current version"]}"#;
        same!(create_result(&resp(400, cas)), Err::<StoreReply, _>(StoreError::Exists));
        let denied =
            create_result(&resp(403, r#"{"errors":["permission denied"]}"#)).err().unwrap();
        assert_eq!(
            denied,
            StoreError::Failed("vault: failed to create key: permission denied".into())
        );
        let sealed = resp(503, r#"{"errors":["Vault is sealed"]}"#);
        same!(
            get_result(KvVersion::V1, "k", &sealed),
            Err::<StoreReply, _>(StoreError::Unreachable("vault: key store is sealed".into()))
        );
        same!(
            get_result(KvVersion::V1, "k", &resp(404, r#"{"errors":[]}"#)),
            Err::<StoreReply, _>(StoreError::NotFound)
        );
        same!(
            get_result(KvVersion::V2, "k", &resp(404, r#"{"data":{"data":null}}"#)),
            Err::<StoreReply, _>(StoreError::NotFound)
        );
        assert!(matches!(
            get_result(KvVersion::V1, "k", &resp(200, r#"{"data":{"other":"x"}}"#)),
            Err(StoreError::Failed(_))
        ));
        same!(delete_result(&resp(204, "")), Ok::<_, StoreError>(StoreReply::Deleted));
        assert!(
            transient(&resp(500, "")) && transient(&resp(307, "")) && !transient(&resp(403, ""))
        );
    }

    #[test]
    fn listings() {
        same!(
            list_result(&resp(404, r#"{"errors":[]}"#)),
            Ok::<_, StoreError>(StoreReply::Names(vec![]))
        );
        let r = resp(200, r#"{"data":{"keys":["a","b","sub/"]}}"#);
        same!(
            list_result(&r),
            Ok::<_, StoreError>(StoreReply::Names(vec!["a".into(), "b".into()]))
        );
        assert!(list_result(&resp(403, r#"{"errors":["permission denied"]}"#)).is_err());
    }

    #[test]
    fn redirect_locations() {
        assert_eq!(
            split_location("https://10.0.0.2:8200/v1/kv/data/k?version=1"),
            Some(("https://10.0.0.2:8200", "/v1/kv/data/k?version=1"))
        );
        assert_eq!(split_location("/v1/relative"), None);
        assert_eq!(split_location("ftp://x/y"), None);
        assert_eq!(split_location("https://host-only"), None);
    }

    #[test]
    fn transit_values() {
        assert!(is_wrapped(b"vault:v1:abc") && is_wrapped(b"vault:v12:abc"));
        assert!(
            !is_wrapped(b"vault:v:abc")
                && !is_wrapped(b"{\"bytes\":1}")
                && !is_wrapped(b"vault:vx1:")
        );
        let r = resp(200, r#"{"data":{"ciphertext":"vault:v2:AAAA"}}"#);
        assert_eq!(wrap_result(&r).unwrap().expose(), b"vault:v2:AAAA");
        let r = resp(200, r#"{"data":{"plaintext":"aGVsbG8="}}"#);
        assert_eq!(unwrap_result(&r).unwrap().expose(), b"hello");
        assert!(wrap_result(&resp(200, r#"{"data":{"ciphertext":"x"}}"#)).is_err());
    }

    #[test]
    fn health_and_login() {
        let h = health_result(&resp(299, r#"{"initialized":true,"sealed":true,"standby":false}"#))
            .unwrap();
        assert!(!h.serving());
        let h = health_result(&resp(200, r#"{"initialized":true,"sealed":false,"standby":false}"#))
            .unwrap();
        assert!(h.serving());
        let t = token_result(&resp(
            200,
            r#"{"auth":{"client_token":"s.abc","lease_duration":40,"renewable":true}}"#,
        ))
        .unwrap();
        assert_eq!(
            (t.token.as_str(), t.ttl, t.renewable),
            ("s.abc", Duration::from_secs(40), true)
        );
        assert!(token_result(&resp(400, r#"{"errors":["invalid role or secret ID"]}"#)).is_err());
        let auth = VaultAuth::AppRole {
            engine: "approle".into(),
            id: "r".into(),
            secret: Secret::new("s".into()),
            namespace: "/".into(),
        };
        let req = login_request(&auth, "team", None);
        assert_eq!((req.method, req.path.as_str()), ("PUT", "/v1/auth/approle/login"));
        let ns = |req: &HttpRequest| {
            req.headers.iter().find(|(k, _)| *k == "X-Vault-Namespace").map(|(_, v)| v.to_string())
        };
        assert_eq!(ns(&req), None, "'/' logs in at the root namespace");
        let auth = VaultAuth::AppRole {
            engine: "approle".into(),
            id: "r".into(),
            secret: Secret::new("s".into()),
            namespace: String::new(),
        };
        assert_eq!(ns(&login_request(&auth, "team", None)).as_deref(), Some("team"));
    }
}
