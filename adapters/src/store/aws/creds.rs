//! Where the AWS store's credentials come from when the config names none:
//! the AWS SDKs' default chain, in their documented order, the first
//! source present winning:
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`;
//! 2. the shared files: `AWS_SHARED_CREDENTIALS_FILE` (default
//!    `~/.aws/credentials`) and `AWS_CONFIG_FILE` (default `~/.aws/config`),
//!    profile `AWS_PROFILE` (default `default`): static keys, or a
//!    `role_arn` with a `web_identity_token_file`;
//! 3. web identity (EKS IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` and
//!    `AWS_ROLE_ARN` (and `AWS_ROLE_SESSION_NAME`), exchanged at STS
//!    (`AssumeRoleWithWebIdentity`); the token file is read again at every
//!    refresh, since the kubelet rotates it;
//! 4. container credentials (ECS, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `_TOKEN`;
//! 5. EC2 instance metadata, IMDSv2 only (a session token first), at
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT`, unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Sources 3-5 hand out temporary keys with an `Expiration`: they are
//! fetched again at half their life, kept while a refresh fails and they
//! are still valid, and dropped when a call says they expired. Nothing
//! here logs a key; [`Provider::label`] names the source only.
//!
//! The SDKs do this for KES; the official Rust SDK needs its own runtime
//! and a newer Rust than ours, so the chain is written here, small.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kes_core::config::AwsCredentials;
use kes_core::StoreError;
use zeroize::Zeroizing;

use crate::https::{HttpRequest, HttpsClient};
use crate::store::rest::{encode, url_origin, url_path, Grant, Token};

/// Deadline of one call to a credential service; IMDS is local and fast
/// (the SDKs give it one second), so an absent one fails start-up quickly.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
/// The IMDS session token's lifetime we ask for (the SDKs' default).
const IMDS_TOKEN_TTL: &str = "21600";
/// The addresses AWS serves container credentials on over plain HTTP.
const CONTAINER_HOST: &str = "http://169.254.170.2";
const IMDS_HOST: &str = "http://169.254.169.254";

/// A key pair and session token; wiped on drop, never printed.
pub struct Keys {
    /// Access key id (not secret; named in errors).
    pub access: String,
    /// Secret access key.
    pub secret: Zeroizing<String>,
    /// Session token of temporary keys.
    pub token: Option<Zeroizing<String>>,
}

/// The store's credentials: fixed, or fetched and refreshed.
pub struct Provider {
    label: String,
    source: Source,
}

enum Source {
    Fixed(Arc<Keys>),
    Temporary(Box<Fetcher>, Token<Keys>),
}

/// A service that hands out temporary keys.
enum Fetcher {
    WebIdentity {
        sts: Arc<HttpsClient>,
        path: String,
        token_file: PathBuf,
        role_arn: String,
        session: String,
    },
    Container {
        http: Arc<HttpsClient>,
        path: String,
        auth: ContainerAuth,
    },
    Imds {
        http: Arc<HttpsClient>,
    },
}

enum ContainerAuth {
    None,
    Token(Zeroizing<String>),
    /// Read at every fetch (EKS Pod Identity rotates it).
    File(PathBuf),
}

impl Provider {
    /// Finds the credentials: the config's, else the first source of the
    /// chain that is present. `env` reads the environment (tests inject
    /// theirs); files are read at once, services at the first
    /// [`Self::keys`].
    pub fn discover(
        config: Option<&AwsCredentials>,
        region: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(c) = config {
            let keys = Keys {
                access: c.access_key.clone(),
                secret: Zeroizing::new(c.secret_key.expose().to_owned()),
                token: c.session_token.as_ref().map(|t| Zeroizing::new(t.expose().to_owned())),
            };
            return Ok(Self::fixed("the config file", keys));
        }
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access), Some(secret)) => {
                let token = var("AWS_SESSION_TOKEN").map(Zeroizing::new);
                let keys = Keys { access, secret: Zeroizing::new(secret), token };
                return Ok(Self::fixed("the environment (AWS_ACCESS_KEY_ID)", keys));
            }
            (Some(_), None) => {
                return Err(
                    "keystore.aws: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "keystore.aws: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
                        .into(),
                )
            }
            (None, None) => {}
        }
        if let Some(p) = Self::from_profile(region, &var)? {
            return Ok(p);
        }
        if let (Some(file), Some(role)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
        {
            let session = var("AWS_ROLE_SESSION_NAME");
            return Self::web_identity(
                region,
                &var,
                file.into(),
                role,
                session,
                "AWS_WEB_IDENTITY_TOKEN_FILE",
            );
        }
        if let Some(p) = Self::from_container(&var)? {
            return Ok(p);
        }
        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err("keystore.aws: no credentials: none in the config, the environment, the shared files (AWS_PROFILE), web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN) or container credentials, and instance metadata is disabled (AWS_EC2_METADATA_DISABLED)".into());
        }
        let endpoint = var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| IMDS_HOST.into());
        let http = HttpsClient::new(endpoint.trim_end_matches('/'), None, None)
            .map_err(|e| format!("AWS_EC2_METADATA_SERVICE_ENDPOINT: {e}"))?;
        Ok(Self::temporary(
            format!("EC2 instance metadata (IMDSv2, {endpoint})"),
            Fetcher::Imds { http },
        ))
    }

    fn fixed(label: &str, keys: Keys) -> Self {
        Self { label: label.into(), source: Source::Fixed(Arc::new(keys)) }
    }

    fn temporary(label: String, fetcher: Fetcher) -> Self {
        Self { label, source: Source::Temporary(Box::new(fetcher), Token::default()) }
    }

    /// The shared files' profile: static keys, or web identity.
    fn from_profile(
        region: &str,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let home = var("HOME").map(PathBuf::from);
        let path = |name: &str, default: &str| {
            var(name).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        let named = var("AWS_PROFILE");
        let profile = named.clone().unwrap_or_else(|| "default".into());
        let read = |p: &Option<PathBuf>| -> Result<Option<(PathBuf, String)>, String> {
            let Some(p) = p else { return Ok(None) };
            match std::fs::read_to_string(p) {
                Ok(text) => Ok(Some((p.clone(), text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", p.display())),
            }
        };
        let credentials = read(&path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"))?;
        let config = read(&path("AWS_CONFIG_FILE", ".aws/config"))?;
        let mut found = false;
        for (file, text, config_style) in
            [credentials.map(|(p, t)| (p, t, false)), config.map(|(p, t)| (p, t, true))]
                .into_iter()
                .flatten()
        {
            let Some(section) = ini_section(&text, &profile, config_style) else { continue };
            found = true;
            let get = |k: &str| section.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let label = format!("the shared file {} (profile '{profile}')", file.display());
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(access), Some(secret)) => {
                    let token = get("aws_session_token").map(Zeroizing::new);
                    let keys = Keys { access, secret: Zeroizing::new(secret), token };
                    return Ok(Some(Self::fixed(&label, keys)));
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(format!("{}: profile '{profile}' needs both aws_access_key_id and aws_secret_access_key", file.display()))
                }
                (None, None) => {}
            }
            if let (Some(role), Some(token_file)) =
                (get("role_arn"), get("web_identity_token_file"))
            {
                let session = get("role_session_name");
                return Self::web_identity(region, var, token_file.into(), role, session, &label)
                    .map(Some);
            }
        }
        if let (Some(name), false) = (named, found) {
            return Err(format!("keystore.aws: AWS_PROFILE names '{name}', which neither the shared credentials file nor the config file has"));
        }
        Ok(None)
    }

    fn web_identity(
        region: &str,
        var: &dyn Fn(&str) -> Option<String>,
        token_file: PathBuf,
        role_arn: String,
        session: Option<String>,
        from: &str,
    ) -> Result<Self, String> {
        let endpoint = var("AWS_ENDPOINT_URL_STS")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let sts = HttpsClient::new(&url_origin(&endpoint), ca(var).as_deref(), None)
            .map_err(|e| format!("keystore.aws: STS endpoint: {e}"))?;
        let mut path = url_path(&endpoint);
        if path.is_empty() {
            path = "/".into();
        }
        let session = session.unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("kes-{now}")
        });
        let label = format!("web identity ({from}, role {role_arn}, STS {endpoint})");
        Ok(Self::temporary(
            label,
            Fetcher::WebIdentity { sts, path, token_file, role_arn, session },
        ))
    }

    fn from_container(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let url = match (
            var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(rel), _) => format!("{CONTAINER_HOST}{rel}"),
            (None, Some(full)) => {
                container_url_allowed(&full)?;
                full
            }
            (None, None) => return Ok(None),
        };
        let auth = match (
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(f), _) => ContainerAuth::File(f.into()),
            (None, Some(t)) => ContainerAuth::Token(Zeroizing::new(t)),
            (None, None) => ContainerAuth::None,
        };
        let http = HttpsClient::new(&url_origin(&url), ca(var).as_deref(), None)
            .map_err(|e| format!("keystore.aws: container credentials: {e}"))?;
        let label = format!("container credentials ({url})");
        Ok(Some(Self::temporary(label, Fetcher::Container { http, path: url_path(&url), auth })))
    }

    /// Which source the keys come from (for the start-up log; no secret).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The keys to sign with, fetching or refreshing temporary ones when due.
    pub async fn keys(&self) -> Result<Arc<Keys>, StoreError> {
        match &self.source {
            Source::Fixed(k) => Ok(k.clone()),
            Source::Temporary(f, token) => token.get(&|| f.fetch()).await,
        }
    }

    /// The service refused `keys` as expired or unknown: temporary keys are
    /// fetched anew at the next call (fixed ones cannot be).
    pub fn refused(&self, keys: &Arc<Keys>) -> bool {
        match &self.source {
            Source::Fixed(_) => false,
            Source::Temporary(_, token) => {
                token.forget(keys);
                true
            }
        }
    }
}

/// `SSL_CERT_FILE`, as the rest of the AWS store uses it.
fn ca(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    var("SSL_CERT_FILE").map(PathBuf::from)
}

/// The SDKs take a full container URI over plain HTTP only to a loopback
/// address or the ECS / EKS Pod Identity agents; anything else must be HTTPS
/// (the authorization token would cross the network in the clear).
fn container_url_allowed(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url.strip_prefix("http://").and_then(|r| {
        let authority = r.split('/').next()?;
        Some(match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        })
    });
    let host = host.map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    let ok = match host {
        Some("localhost" | "169.254.170.2" | "169.254.170.23" | "fd00:ec2::23") => true,
        Some(h) => h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI '{url}': plain HTTP is allowed only to a loopback address or the ECS/EKS credential agents; use https://"))
    }
}

impl Fetcher {
    async fn fetch(&self) -> Result<Grant<Keys>, StoreError> {
        match self {
            Fetcher::WebIdentity { sts, path, token_file, role_arn, session } => {
                let jwt = Zeroizing::new(std::fs::read_to_string(token_file).map_err(|e| {
                    StoreError::Failed(format!(
                        "aws: web identity token file '{}': {e}",
                        token_file.display()
                    ))
                })?);
                let body = Zeroizing::new(format!(
                    "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
                    encode(role_arn),
                    encode(session),
                    encode(jwt.trim())
                ));
                let req = HttpRequest::new("POST", path.clone())
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .header("Accept", "text/xml")
                    .body(body.as_bytes().to_vec());
                let r = sts.send(&req, FETCH_TIMEOUT).await.map_err(|e| unreachable("STS", e))?;
                let text = String::from_utf8_lossy(&r.body);
                if r.status != 200 {
                    let code = xml_text(&text, "Code").unwrap_or_default();
                    let msg = xml_text(&text, "Message").unwrap_or_default();
                    return Err(refusal(
                        r.status,
                        format!(
                            "aws: STS AssumeRoleWithWebIdentity: status {}: {code} {msg}",
                            r.status
                        ),
                    ));
                }
                let field = |tag: &str| {
                    xml_text(&text, tag)
                        .ok_or_else(|| StoreError::Failed(format!("aws: STS answer without {tag}")))
                };
                let keys = Keys {
                    access: field("AccessKeyId")?,
                    secret: Zeroizing::new(field("SecretAccessKey")?),
                    token: Some(Zeroizing::new(field("SessionToken")?)),
                };
                Ok(Grant { lifetime: lifetime(&field("Expiration")?)?, token: keys })
            }
            Fetcher::Container { http, path, auth } => {
                let mut req = HttpRequest::new("GET", path.clone());
                match auth {
                    ContainerAuth::None => {}
                    ContainerAuth::Token(t) => req = req.header("Authorization", t),
                    ContainerAuth::File(f) => {
                        let t = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                            StoreError::Failed(format!(
                                "aws: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '{}': {e}",
                                f.display()
                            ))
                        })?);
                        req = req.header("Authorization", t.trim());
                    }
                }
                let r = http
                    .send(&req, FETCH_TIMEOUT)
                    .await
                    .map_err(|e| unreachable("container credentials", e))?;
                if r.status != 200 {
                    return Err(refusal(
                        r.status,
                        format!("aws: container credentials: status {}", r.status),
                    ));
                }
                json_keys(&r.body, "container credentials")
            }
            Fetcher::Imds { http } => {
                let put = HttpRequest::new("PUT", "/latest/api/token".into())
                    .header("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL);
                let r = http
                    .send(&put, IMDS_TIMEOUT)
                    .await
                    .map_err(|e| unreachable("instance metadata", e))?;
                if r.status != 200 {
                    return Err(refusal(
                        r.status,
                        format!("aws: instance metadata: session token: status {}", r.status),
                    ));
                }
                let session = Zeroizing::new(String::from_utf8_lossy(&r.body).trim().to_owned());
                let get = |path: String| {
                    HttpRequest::new("GET", path).header("X-aws-ec2-metadata-token", &session)
                };
                const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
                let r = http
                    .send(&get(ROLES.into()), IMDS_TIMEOUT)
                    .await
                    .map_err(|e| unreachable("instance metadata", e))?;
                let roles = String::from_utf8_lossy(&r.body).into_owned();
                let role = roles.lines().map(str::trim).find(|l| !l.is_empty());
                let role = match (r.status, role) {
                    (200, Some(role)) => role.to_owned(),
                    (404, _) | (200, None) => return Err(StoreError::Failed(
                        "aws: instance metadata: this instance has no IAM role (instance profile)"
                            .into(),
                    )),
                    (s, _) => {
                        return Err(refusal(s, format!("aws: instance metadata: role: status {s}")))
                    }
                };
                let r = http
                    .send(&get(format!("{ROLES}{}", encode(&role))), IMDS_TIMEOUT)
                    .await
                    .map_err(|e| unreachable("instance metadata", e))?;
                if r.status != 200 {
                    return Err(refusal(
                        r.status,
                        format!(
                            "aws: instance metadata: credentials of role '{role}': status {}",
                            r.status
                        ),
                    ));
                }
                json_keys(&r.body, "instance metadata")
            }
        }
    }
}

fn unreachable(what: &str, e: crate::https::HttpError) -> StoreError {
    StoreError::Unreachable(format!("aws: {what}: {e}"))
}

/// A credential service's refusal: 5xx and 429 are its outage, the rest a
/// configuration problem.
fn refusal(status: u16, text: String) -> StoreError {
    if status >= 500 || status == 429 {
        StoreError::Unreachable(text)
    } else {
        StoreError::Failed(text)
    }
}

/// The JSON the container endpoint and IMDS answer with.
fn json_keys(body: &[u8], from: &str) -> Result<Grant<Keys>, StoreError> {
    use crate::store::rest::take_string;
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| StoreError::Failed(format!("aws: {from}: invalid answer: {e}")))?;
    if let Some(code) = v.get("Code").and_then(|c| c.as_str()).filter(|c| *c != "Success") {
        return Err(StoreError::Failed(format!("aws: {from}: {code}")));
    }
    let mut field = |k: &str| {
        take_string(&mut v, &[k])
            .filter(|s| !s.is_empty())
            .ok_or_else(|| StoreError::Failed(format!("aws: {from}: the answer has no {k}")))
    };
    let access = field("AccessKeyId")?;
    let secret = Zeroizing::new(field("SecretAccessKey")?);
    let token = Some(Zeroizing::new(field("Token")?));
    let expiration = field("Expiration")?;
    Ok(Grant { lifetime: lifetime(&expiration)?, token: Keys { access, secret, token } })
}

/// Time left until an RFC 3339 `Expiration`.
fn lifetime(expiration: &str) -> Result<Duration, StoreError> {
    let at = kes_core::UnixTime::parse_rfc3339(expiration.trim()).ok_or_else(|| {
        StoreError::Failed(format!("aws: credentials with an unreadable Expiration '{expiration}'"))
    })?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let left = at.to_parts().0 - now;
    if left <= 0 {
        return Err(StoreError::Failed(format!(
            "aws: the credentials handed out expired at {expiration}"
        )));
    }
    Ok(Duration::from_secs(left as u64))
}

/// The text of the first `<tag>` element, entities undone. STS answers in
/// XML; its values are plain text, so no parser is needed.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The `key = value` lines of one profile: `[name]` in the credentials
/// file; `[profile name]` (or `[default]`) in the config file.
fn ini_section(text: &str, profile: &str, config_style: bool) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut seen = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = match (config_style, name.strip_prefix("profile ")) {
                (true, Some(n)) => n.trim(),
                (true, None) if name != "default" => "",
                _ => name,
            };
            inside = !name.is_empty() && name == profile;
            seen |= inside;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
    }
    seen.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn discover(vars: &[(&str, &str)]) -> Result<Provider, String> {
        Provider::discover(None, "us-east-1", &env(vars))
    }

    #[test]
    fn ini_profiles() {
        let creds = "[default]\naws_access_key_id = A1\naws_secret_access_key=S1\n\n# c\n[prod]\nAWS_ACCESS_KEY_ID = A2\naws_secret_access_key = S2\naws_session_token = T2\n";
        let d = ini_section(creds, "default", false).unwrap();
        assert_eq!(
            d,
            vec![
                ("aws_access_key_id".into(), "A1".into()),
                ("aws_secret_access_key".into(), "S1".into())
            ]
        );
        assert_eq!(ini_section(creds, "prod", false).unwrap().len(), 3);
        assert!(ini_section(creds, "nope", false).is_none());
        let config = "[default]\nregion = eu-west-1\n[profile prod]\nrole_arn = arn:aws:iam::1:role/r\n[prod2]\nx = y\n";
        assert_eq!(ini_section(config, "default", true).unwrap().len(), 1);
        assert_eq!(ini_section(config, "prod", true).unwrap()[0].1, "arn:aws:iam::1:role/r");
        // In the config file a section without "profile " is not a profile.
        assert!(ini_section(config, "prod2", true).is_none());
    }

    #[test]
    fn sts_xml() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s&amp;k</SecretAccessKey><SessionToken>\n  tok\n</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(xml, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(xml_text(xml, "SecretAccessKey").as_deref(), Some("s&k"));
        assert_eq!(xml_text(xml, "SessionToken").as_deref(), Some("tok"));
        assert!(xml_text(xml, "Nope").is_none());
        assert!(lifetime("2030-01-01T00:00:00Z").unwrap() > Duration::from_secs(86_400));
        assert!(lifetime("2001-01-01T00:00:00Z").is_err());
        assert!(lifetime("tomorrow").is_err());
    }

    /// The first source present wins, in the SDKs' order.
    #[test]
    fn chain_order() {
        let dir = std::env::temp_dir().join(format!("kes-aws-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(&file, "[default]\naws_access_key_id=F\naws_secret_access_key=S\n").unwrap();
        let f = file.to_str().unwrap();
        let none = dir.join("none");
        let n = none.to_str().unwrap();
        let web =
            [("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"), ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")];
        let all = [
            ("AWS_ACCESS_KEY_ID", "E"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_SHARED_CREDENTIALS_FILE", f),
            ("AWS_CONFIG_FILE", n),
            web[0],
            web[1],
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/c"),
        ];
        let label = |vars: &[(&str, &str)]| discover(vars).map(|p| p.label().to_owned());
        assert!(label(&all).unwrap().starts_with("the environment"));
        assert!(label(&all[2..]).unwrap().starts_with("the shared file"));
        assert!(label(&all[3..]).unwrap().starts_with("web identity"));
        assert!(label(&all[5..]).unwrap().starts_with("container credentials"));
        let home = [("HOME", n), ("AWS_CONFIG_FILE", n)];
        assert!(label(&home).unwrap().starts_with("EC2 instance metadata"));
        let off = [("HOME", n), ("AWS_EC2_METADATA_DISABLED", "true")];
        assert!(label(&off).unwrap_err().contains("no credentials"));
        // The config's keys come before all of them.
        let c = AwsCredentials {
            access_key: "C".into(),
            secret_key: kes_core::config::Secret::new("S".into()),
            session_token: None,
        };
        let p = Provider::discover(Some(&c), "us-east-1", &env(&all)).unwrap();
        assert_eq!(p.label(), "the config file");
        // A profile that is asked for by name must exist.
        let named =
            [("AWS_SHARED_CREDENTIALS_FILE", f), ("AWS_CONFIG_FILE", n), ("AWS_PROFILE", "prod")];
        assert!(label(&named).unwrap_err().contains("'prod'"));
        // Half a key pair is an error, not a fall-through.
        assert!(label(&[("AWS_ACCESS_KEY_ID", "E")])
            .unwrap_err()
            .contains("AWS_SECRET_ACCESS_KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn container_uris() {
        for ok in [
            "https://creds.example/x",
            "http://127.0.0.1:8080/c",
            "http://169.254.170.23/v1/credentials",
            "http://[::1]:9/c",
            "http://localhost/c",
        ] {
            assert!(container_url_allowed(ok).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1/c", "http://evil.example/c", "ftp://x"] {
            assert!(container_url_allowed(bad).is_err(), "{bad}");
        }
    }
}
