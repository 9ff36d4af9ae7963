//! AWS Secrets Manager as the key store (keystore.md §5): one secret per
//! key, named like the key, holding the KES key file; forced deletes; every
//! page of the listing. Requests are SigV4-signed with the configured key,
//! or with credentials from the AWS SDKs' default chain ([`creds`]).

pub mod creds;
pub mod proto;
pub mod sigv4;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_io::Timer;
use kes_core::config::AwsConfig;
use kes_core::{Command, StoreError, StoreReply};
use zeroize::Zeroizing;

use super::contract::{Remote, RemoteStore};
use crate::https::{HttpError, HttpRequest, HttpResponse, HttpsClient};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(100);
/// Listing pages followed at most (100 names each).
const MAX_PAGES: usize = 10_000;

/// An AWS Secrets Manager store; cheap to clone.
#[derive(Clone)]
pub struct AwsStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: Arc<HttpsClient>,
    region: String,
    kms_key: String,
    creds: creds::Provider,
}

impl AwsStore {
    /// A store for the config; `env` reads the environment the credential
    /// chain looks at when the config has no credentials. Start-up fetches
    /// the credentials (so a chain that finds none, or a refusing service,
    /// stops it with the reason) and checks that the endpoint answers.
    pub fn connect(
        config: &AwsConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let creds = creds::Provider::discover(config.credentials.as_ref(), &config.region, env)?;
        let http = HttpsClient::new(&config.endpoint, None, None)
            .map_err(|e| format!("keystore.aws: {e}"))?;
        let inner = Arc::new(Inner {
            http,
            region: config.region.clone(),
            kms_key: config.kms_key.clone(),
            creds,
        });
        smol::block_on(inner.creds.keys())
            .map_err(|e| format!("aws: no credentials from {}: {e}", inner.creds.label()))?;
        smol::block_on(inner.status())
            .map_err(|e| format!("aws: cannot reach {}: {e}", config.endpoint))?;
        Ok(Self { inner })
    }

    /// Where the credentials come from (the start-up log names it).
    pub fn credentials_source(&self) -> &str {
        self.inner.creds.label()
    }

    /// The store, ready for the server.
    pub fn into_store(self) -> RemoteStore<impl Remote> {
        RemoteStore::new(self.inner)
    }

    /// Whether the endpoint is plain HTTP.
    pub fn is_plaintext(&self) -> bool {
        self.inner.http.is_plaintext()
    }
}

impl Remote for Inner {
    async fn call(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        self.run(cmd).await
    }
}

impl Inner {
    async fn run(&self, cmd: Command) -> Result<StoreReply, StoreError> {
        match cmd {
            Command::Create { name, value } => {
                let body =
                    Zeroizing::new(proto::create_body(name.as_str(), &value, &self.kms_key)?);
                let r = self.send("CreateSecret", &body, false).await?;
                proto::create_result(&r)
            }
            Command::Get { name } => {
                let r = self.send("GetSecretValue", &proto::get_body(name.as_str()), true).await?;
                proto::get_result(&r)
            }
            Command::Delete { name } => {
                let r = self.send("DeleteSecret", &proto::delete_body(name.as_str()), true).await?;
                proto::delete_result(&r)
            }
            Command::List => {
                let mut names = Vec::new();
                let mut next: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let r =
                        self.send("ListSecrets", &proto::list_body(next.as_deref()), true).await?;
                    let (page, token) = proto::list_result(&r)?;
                    names.extend(page);
                    match token {
                        Some(t) => next = Some(t),
                        None => return Ok(StoreReply::Names(names)),
                    }
                }
                Err(StoreError::Failed("aws: listing has too many pages".into()))
            }
            Command::Status => self.status().await,
        }
    }

    /// A plain GET of the endpoint: any HTTP answer means it is there (as
    /// KES v0.24 checks).
    async fn status(&self) -> Result<StoreReply, StoreError> {
        let start = Instant::now();
        self.http
            .send(&HttpRequest::new("GET", "/".into()), REQUEST_TIMEOUT)
            .await
            .map_err(|e| StoreError::Unreachable(format!("aws: {e}")))?;
        Ok(StoreReply::Status { latency: start.elapsed() })
    }

    /// One signed call, retried with backoff when it failed transiently and
    /// is idempotent, or when no connection could be made at all.
    async fn send(
        &self,
        op: &str,
        body: &[u8],
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let keys = self.creds.keys().await?;
            let req = self.signed(&keys, op, body);
            match self.http.send(&req, REQUEST_TIMEOUT).await {
                // Temporary keys that expired early or were revoked: fetch
                // new ones and try once more (nothing was done).
                Ok(r)
                    if !renewed && proto::credentials_refused(&r) && self.creds.refused(&keys) =>
                {
                    renewed = true;
                    continue;
                }
                Ok(r) if idempotent && !last && proto::transient(&r) => {}
                Ok(r) => return Ok(r),
                Err(HttpError::Connect(_)) if !last => {}
                Err(_) if idempotent && !last => {}
                Err(e) => return Err(StoreError::Unreachable(format!("aws: {e}"))),
            }
            Timer::after(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
    }

    fn signed(&self, keys: &creds::Keys, op: &str, body: &[u8]) -> HttpRequest {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let date = sigv4::amz_date(secs as i64);
        let host = self.http.host_header();
        let target = proto::target(op);
        let content_type = "application/x-amz-json-1.1";
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("content-type", content_type),
            ("x-amz-date", &date),
            ("x-amz-target", &target),
        ];
        if let Some(t) = &keys.token {
            headers.push(("x-amz-security-token", t));
        }
        let signer = sigv4::Signer {
            access_key: &keys.access,
            secret_key: &keys.secret,
            region: &self.region,
            service: "secretsmanager",
        };
        let auth = signer.authorization("POST", "/", "", &headers, body, &date);
        let mut req = HttpRequest::new("POST", "/".into())
            .header("Content-Type", content_type)
            .header("X-Amz-Date", &date)
            .header("X-Amz-Target", &target)
            .header("Authorization", &auth)
            .body(body.to_vec());
        if let Some(t) = &keys.token {
            req = req.header("X-Amz-Security-Token", t);
        }
        req
    }
}
