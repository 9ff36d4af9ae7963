//! Where the GCP store's access tokens come from: a service account's key
//! in the config, else Google's Application Default Credentials, in their
//! documented order:
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS` naming a JSON file: a service
//!    account's key (`"type": "service_account"`: a signed JWT exchanged at
//!    its `token_uri`), or workload identity federation
//!    (`"type": "external_account"`: a subject token from a file or URL
//!    exchanged at the STS `token_url`, then, if the file names a
//!    `service_account_impersonation_url`, for that account's token);
//! 2. the metadata server (GCE, GKE Workload Identity): `GET
//!    /computeMetadata/v1/instance/service-accounts/default/token` with
//!    `Metadata-Flavor: Google`, at `GCE_METADATA_HOST` (default
//!    `metadata.google.internal`).
//!
//! KES left this to Google's SDK; the chain is small enough to write here.
//! Tokens are refreshed at half their life by [`crate::store::rest::Token`].

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use kes_core::config::GcpCredentials;
use kes_core::StoreError;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::proto;
use crate::https::{HttpRequest, HttpResponse};
use crate::store::rest::{
    encode, grant, oauth_refused, take_string, url_origin, url_path, Grant, Rest,
};

const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_STS: &str = "https://sts.googleapis.com/v1/token";
const METADATA_HOST: &str = "metadata.google.internal";
const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How the store gets its access tokens.
pub enum Auth {
    /// A service account's key: a signed JWT exchanged at the token URI.
    ServiceAccount(Box<ServiceAccount>),
    /// Workload identity federation.
    External(Box<External>),
    /// The metadata server of the machine or pod.
    Metadata(Rest),
}

pub struct ServiceAccount {
    oauth: Rest,
    token_path: String,
    token_uri: String,
    email: String,
    key_id: String,
    key: RsaKeyPair,
}

pub struct External {
    sts: Rest,
    sts_path: String,
    audience: String,
    subject_token_type: String,
    subject: Subject,
    /// The IAM Credentials endpoint and path of
    /// `service_account_impersonation_url`.
    impersonate: Option<(Rest, String)>,
}

/// Where an external account's subject token is read, at every refresh.
enum Subject {
    File { path: PathBuf, field: Option<String> },
    Url { http: Rest, path: String, headers: Vec<(&'static str, String)>, field: Option<String> },
}

impl Auth {
    /// The config's service account, else Application Default Credentials
    /// (`env` gives `GOOGLE_APPLICATION_CREDENTIALS`, `GCE_METADATA_HOST`).
    /// Returns the source's name for the start-up banner (no secret).
    pub fn discover(
        config: Option<&GcpCredentials>,
        ca: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, String), String> {
        if let Some(c) = config {
            let sa = ServiceAccount::new(
                &c.client_email,
                &c.private_key_id,
                c.private_key.expose(),
                &c.token_uri,
                ca,
                "keystore.gcp.secretmanager.credentials.private_key",
            )?;
            let label = format!("the service account key in the config ({})", c.client_email);
            return Ok((Auth::ServiceAccount(Box::new(sa)), label));
        }
        if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
            return Self::from_file(&path, ca);
        }
        let host = env("GCE_METADATA_HOST").filter(|h| !h.is_empty());
        let host = host.as_deref().unwrap_or(METADATA_HOST);
        let url = if host.contains("://") { host.to_owned() } else { format!("http://{host}") };
        let rest = Rest::new("gcp", &url, ca)?;
        Ok((Auth::Metadata(rest), format!("the metadata server ({url})")))
    }

    fn from_file(path: &str, ca: Option<&str>) -> Result<(Self, String), String> {
        let what = format!("GOOGLE_APPLICATION_CREDENTIALS '{path}'");
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{what}: {e}"))?);
        let mut v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{what}: not JSON: {e}"))?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        match s(&v, "type").as_str() {
            "service_account" => {
                let email = s(&v, "client_email");
                let key = Zeroizing::new(take_string(&mut v, &["private_key"]).unwrap_or_default());
                let token_uri = match s(&v, "token_uri") {
                    t if t.is_empty() => GOOGLE_TOKEN_URI.to_owned(),
                    t => t,
                };
                let sa = ServiceAccount::new(&email, &s(&v, "private_key_id"), &key, &token_uri, ca, &what)?;
                Ok((Auth::ServiceAccount(Box::new(sa)), format!("{what} (service account {email})")))
            }
            "external_account" => {
                let ext = External::new(&v, ca, &what)?;
                let label = format!("{what} (workload identity federation, audience {})", ext.audience);
                Ok((Auth::External(Box::new(ext)), label))
            }
            other => Err(format!(
                "{what}: credentials of type '{other}' are not supported (use a service_account key, an external_account, or the metadata server)"
            )),
        }
    }

    /// Whether a token crosses the network in the clear (worth a warning):
    /// the metadata server is plain HTTP by design and stays on the host.
    pub fn is_plaintext(&self) -> bool {
        match self {
            Auth::ServiceAccount(sa) => sa.oauth.http.is_plaintext(),
            Auth::External(e) => e.sts.http.is_plaintext(),
            Auth::Metadata(_) => false,
        }
    }

    /// A fresh access token (`Bearer ...`) for `scope` (space-separated).
    pub async fn token(&self, scope: &str) -> Result<Grant, StoreError> {
        match self {
            Auth::ServiceAccount(sa) => sa.token(scope).await,
            Auth::External(e) => e.token(scope).await,
            Auth::Metadata(rest) => {
                let scopes = scope.split(' ').map(encode).collect::<Vec<_>>().join(",");
                let path = format!("{METADATA_TOKEN}?scopes={scopes}");
                let make =
                    || HttpRequest::new("GET", path.clone()).header("Metadata-Flavor", "Google");
                let r = rest.send(&make, true).await?;
                if r.status != 200 {
                    return Err(refused("metadata server", &r));
                }
                grant("gcp", &r, "access_token", "expires_in", proto::TOKEN_SECONDS, true)
            }
        }
    }
}

impl ServiceAccount {
    fn new(
        email: &str,
        key_id: &str,
        pem: &str,
        token_uri: &str,
        ca: Option<&str>,
        what: &str,
    ) -> Result<Self, String> {
        if email.is_empty() {
            return Err(format!("{what}: no client_email"));
        }
        Ok(Self {
            oauth: Rest::new("gcp", &url_origin(token_uri), ca)?,
            token_path: url_path(token_uri),
            token_uri: token_uri.to_owned(),
            email: email.to_owned(),
            key_id: key_id.to_owned(),
            key: load_key(pem, what)?,
        })
    }

    /// Signs a fresh assertion and exchanges it for an access token.
    async fn token(&self, scope: &str) -> Result<Grant, StoreError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let input = proto::signing_input(&proto::Assertion {
            issuer: &self.email,
            key_id: &self.key_id,
            scope,
            audience: &self.token_uri,
            now,
        });
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .map_err(|_| StoreError::Failed("gcp: cannot sign the token request".into()))?;
        let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
        let form = proto::token_form(&jwt);
        let make = || {
            HttpRequest::new("POST", self.token_path.clone())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.clone())
        };
        let r = self.oauth.send(&make, true).await?;
        proto::token_result(&r)
    }
}

impl External {
    fn new(v: &Value, ca: Option<&str>, what: &str) -> Result<Self, String> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let audience = s(v, "audience");
        if audience.is_empty() {
            return Err(format!("{what}: an external_account needs an audience"));
        }
        let token_url = match s(v, "token_url") {
            t if t.is_empty() => GOOGLE_STS.to_owned(),
            t => t,
        };
        let source = v.get("credential_source").cloned().unwrap_or(Value::Null);
        let field = match s(&source["format"], "type").as_str() {
            "json" => {
                Some(s(&source["format"], "subject_token_field_name")).filter(|f| !f.is_empty())
            }
            _ => None,
        };
        let subject = if !s(&source, "file").is_empty() {
            Subject::File { path: s(&source, "file").into(), field }
        } else if !s(&source, "url").is_empty() {
            let url = s(&source, "url");
            let mut headers = Vec::new();
            if let Some(h) = source.get("headers").and_then(Value::as_object) {
                for (k, v) in h {
                    let name = known_header(k).ok_or_else(|| {
                        format!("{what}: credential_source header '{k}' is not supported")
                    })?;
                    headers.push((name, v.as_str().unwrap_or("").to_owned()));
                }
            }
            let http = Rest::new("gcp", &url_origin(&url), ca)?;
            Subject::Url { http, path: url_path(&url), headers, field }
        } else {
            return Err(format!(
                "{what}: credential_source must name a file or a url (AWS-sourced and executable sources are not supported)"
            ));
        };
        let impersonate = match s(v, "service_account_impersonation_url") {
            u if u.is_empty() => None,
            u => Some((Rest::new("gcp", &url_origin(&u), ca)?, url_path(&u))),
        };
        Ok(Self {
            sts: Rest::new("gcp", &url_origin(&token_url), ca)?,
            sts_path: url_path(&token_url),
            audience,
            subject_token_type: match s(v, "subject_token_type") {
                t if t.is_empty() => "urn:ietf:params:oauth:token-type:jwt".to_owned(),
                t => t,
            },
            subject,
            impersonate,
        })
    }

    /// Reads the subject token (again: the platform rotates it).
    async fn subject_token(&self) -> Result<Zeroizing<String>, StoreError> {
        let (raw, field) = match &self.subject {
            Subject::File { path, field } => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StoreError::Failed(format!("gcp: subject token file '{}': {e}", path.display()))
                })?;
                (Zeroizing::new(text), field)
            }
            Subject::Url { http, path, headers, field } => {
                let make = || {
                    headers
                        .iter()
                        .fold(HttpRequest::new("GET", path.clone()), |r, (k, v)| r.header(k, v))
                };
                let r = http.send(&make, true).await?;
                if r.status != 200 {
                    return Err(refused("subject token url", &r));
                }
                (Zeroizing::new(String::from_utf8_lossy(&r.body).into_owned()), field)
            }
        };
        match field {
            None => Ok(Zeroizing::new(raw.trim().to_owned())),
            Some(f) => {
                let mut v: Value = serde_json::from_str(&raw).map_err(|e| {
                    StoreError::Failed(format!("gcp: subject token is not JSON: {e}"))
                })?;
                take_string(&mut v, &[f]).map(Zeroizing::new).ok_or_else(|| {
                    StoreError::Failed(format!("gcp: subject token JSON has no '{f}'"))
                })
            }
        }
    }

    async fn token(&self, scope: &str) -> Result<Grant, StoreError> {
        let subject = self.subject_token().await?;
        let form = Zeroizing::new(format!(
            "grant_type={}&audience={}&scope={}&requested_token_type={}&subject_token_type={}&subject_token={}",
            encode(TOKEN_EXCHANGE),
            encode(&self.audience),
            encode(scope),
            encode(ACCESS_TOKEN_TYPE),
            encode(&self.subject_token_type),
            encode(&subject)
        ));
        let make = || {
            HttpRequest::new("POST", self.sts_path.clone())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.as_bytes().to_vec())
        };
        let r = self.sts.send(&make, true).await?;
        if r.status != 200 {
            return Err(oauth_refused("gcp", &r));
        }
        let federated = grant("gcp", &r, "access_token", "expires_in", proto::TOKEN_SECONDS, true)?;
        let Some((iam, path)) = &self.impersonate else { return Ok(federated) };
        let scopes: Vec<&str> = scope.split(' ').collect();
        let body =
            json!({"scope": scopes, "lifetime": format!("{}s", proto::TOKEN_SECONDS)}).to_string();
        let make = || {
            HttpRequest::new("POST", path.clone())
                .header("Authorization", &federated.token)
                .json(body.clone().into_bytes())
        };
        let r = iam.send(&make, true).await?;
        if r.status != 200 {
            return Err(refused("service account impersonation", &r));
        }
        impersonated(&r)
    }
}

/// generateAccessToken's answer: `accessToken` until `expireTime`.
fn impersonated(r: &HttpResponse) -> Result<Grant, StoreError> {
    let mut v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let token =
        take_string(&mut v, &["accessToken"]).filter(|t| !t.is_empty()).ok_or_else(|| {
            StoreError::Failed("gcp: service account impersonation: no accessToken".into())
        })?;
    let expires = v.get("expireTime").and_then(Value::as_str).unwrap_or("");
    let at = kes_core::UnixTime::parse_rfc3339(expires).ok_or_else(|| {
        StoreError::Failed(format!("gcp: service account impersonation: expireTime '{expires}'"))
    })?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let secs = (at.to_parts().0 - now).clamp(1, 86_400) as u64;
    let token = Zeroizing::new(format!("Bearer {}", Zeroizing::new(token).as_str()));
    Ok(Grant { token, lifetime: std::time::Duration::from_secs(secs) })
}

/// A refusal by a token source, with Google's message when it sent one.
fn refused(what: &str, r: &HttpResponse) -> StoreError {
    let (status, message) = proto::error(r);
    let text = format!("gcp: {what}: status {} {status} {message}", r.status).trim_end().to_owned();
    if r.status >= 500 || r.status == 429 {
        StoreError::Unreachable(text)
    } else {
        StoreError::Failed(text)
    }
}

/// Header names a `credential_source.url` may carry (the request builder
/// takes static names; these are the ones Google documents for the
/// metadata services subject tokens come from).
fn known_header(name: &str) -> Option<&'static str> {
    ["Metadata", "Metadata-Flavor", "Authorization", "X-Identity-Header"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(name))
}

/// The PKCS#8 RSA key of a service account. Keys pasted from the JSON key
/// file keep their `\n` escapes; those are undone.
fn load_key(pem: &str, what: &str) -> Result<RsaKeyPair, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let pem =
        Zeroizing::new(if pem.contains('\n') { pem.to_owned() } else { pem.replace("\\n", "\n") });
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("{what}: not a PKCS#8 PEM key: {e}"))?;
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| format!("{what}: not a usable RSA key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn order_and_file_types() {
        let (auth, label) = Auth::discover(None, None, &env(vec![])).unwrap();
        assert!(matches!(auth, Auth::Metadata(_)) && label.contains("metadata.google.internal"));
        let host = vec![("GCE_METADATA_HOST", "127.0.0.1:8080".to_owned())];
        let (_, label) = Auth::discover(None, None, &env(host)).unwrap();
        assert!(label.contains("http://127.0.0.1:8080"), "{label}");
        let dir = std::env::temp_dir().join(format!("kes-adc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let ext = write(
            "ext.json",
            r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:9/v1/token","credential_source":{"file":"/var/run/token"}}"#,
        );
        let vars = vec![("GOOGLE_APPLICATION_CREDENTIALS", ext)];
        let (auth, label) = Auth::discover(None, None, &env(vars)).unwrap();
        assert!(matches!(auth, Auth::External(_)), "{label}");
        assert!(label.contains("workload identity federation"));
        let user = write("user.json", r#"{"type":"authorized_user","refresh_token":"x"}"#);
        let err = Auth::from_file(&user, None).err().unwrap();
        assert!(err.contains("'authorized_user' are not supported"), "{err}");
        let aws = write(
            "aws.json",
            r#"{"type":"external_account","audience":"a","credential_source":{"environment_id":"aws1"}}"#,
        );
        assert!(Auth::from_file(&aws, None).err().unwrap().contains("AWS-sourced"));
        let hdr = write(
            "hdr.json",
            r#"{"type":"external_account","audience":"a","credential_source":{"url":"http://127.0.0.1:1/t","headers":{"X-Evil":"1"}}}"#,
        );
        assert!(Auth::from_file(&hdr, None).err().unwrap().contains("X-Evil"));
        assert!(Auth::from_file(&dir.join("missing").to_string_lossy(), None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
