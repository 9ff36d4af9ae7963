//! What the bearer-token REST stores (GCP, Azure, KeySecure, Fortanix,
//! Entrust) share: one call with retries, and an access token that is
//! fetched once, reused, refreshed before it expires and replaced when the
//! store refuses it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use kes_core::StoreError;
use zeroize::Zeroizing;

use crate::https::{HttpError, HttpRequest, HttpResponse, HttpsClient};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(100);
/// After a failed refresh while the old token still works, wait this long
/// before trying again (so a login outage is not hammered per request).
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A store's HTTP endpoint and its name for messages.
pub struct Rest {
    /// The client.
    pub http: Arc<HttpsClient>,
    /// `gcp`, `azure`, … (prefixes every error).
    pub name: &'static str,
}

impl Rest {
    /// A client for `url`; `ca` a PEM file or directory (default: roots of
    /// the system, or `SSL_CERT_FILE`).
    pub fn new(name: &'static str, url: &str, ca: Option<&str>) -> Result<Self, String> {
        let http = HttpsClient::new(url, ca.map(std::path::Path::new), None)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Self { http, name })
    }

    /// Sends one request, built afresh for each attempt. A refused
    /// connection is always retried (nothing was sent); timeouts, broken
    /// connections, 5xx and 429 only when `idempotent`.
    pub async fn send(
        &self,
        make: &(dyn Fn() -> HttpRequest + Sync),
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            match self.http.send(&make(), REQUEST_TIMEOUT).await {
                Ok(r) if idempotent && !last && transient(r.status) => {}
                Ok(r) => return Ok(r),
                Err(HttpError::Connect(_)) if !last => {}
                Err(_) if idempotent && !last => {}
                Err(e) => return Err(StoreError::Unreachable(format!("{}: {e}", self.name))),
            }
            Timer::after(BACKOFF * 2u32.pow(attempt - 1)).await;
        }
    }

    /// Sends with the current token; a 401 drops the token and the call is
    /// made once more with a fresh one (tokens can be revoked early).
    pub async fn send_authed<F: Future<Output = Result<Grant, StoreError>> + Send>(
        &self,
        token: &Token,
        login: &(dyn Fn() -> F + Sync),
        make: &(dyn Fn(&str) -> HttpRequest + Sync),
        idempotent: bool,
    ) -> Result<HttpResponse, StoreError> {
        for retry in [false, true] {
            let t = token.get(login).await?;
            let r = self.send(&|| make(&t), idempotent).await?;
            if r.status == 401 && !retry {
                token.invalidate(&t);
                continue;
            }
            return Ok(r);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Any HTTP answer means the store is there: the status probe.
    pub async fn probe(&self, path: &str) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.http
            .send(&HttpRequest::new("GET", path.into()), REQUEST_TIMEOUT)
            .await
            .map_err(|e| StoreError::Unreachable(format!("{}: {e}", self.name)))?;
        Ok(start.elapsed())
    }

    /// A failed answer as an error naming the store, what was done and the
    /// store's own message: 5xx and 429 count as unreachable (the cache
    /// may serve), everything else as a failure.
    pub fn failure(&self, what: &str, r: &HttpResponse, detail: &str) -> StoreError {
        let text = match detail {
            "" => format!("{}: {what}: status {}", self.name, r.status),
            d => format!("{}: {what}: status {}: {d}", self.name, r.status),
        };
        if transient(r.status) {
            StoreError::Unreachable(text)
        } else {
            StoreError::Failed(text)
        }
    }

    /// A response body that should be JSON.
    pub fn json(&self, r: &HttpResponse) -> Result<serde_json::Value, StoreError> {
        serde_json::from_slice(&r.body)
            .map_err(|e| StoreError::Failed(format!("{}: invalid answer: {e}", self.name)))
    }
}

/// Whether trying again may help.
pub fn transient(status: u16) -> bool {
    status >= 500 || status == 429
}

/// A store opened by one of the REST stores' `connect`.
pub struct Connected {
    /// The store, ready for the server.
    pub store: Arc<dyn super::contract::KeyStore>,
    /// Whether it speaks plain HTTP (credentials and keys in the clear).
    pub plaintext: bool,
    /// Where its credentials came from, when the store looked them up
    /// (named in the start-up banner; never a secret).
    pub source: Option<String>,
}

/// A request carrying an auth header (`Authorization`, `X-Vault-Auth`)
/// and, if given, a JSON body.
pub fn request(
    method: &'static str,
    path: &str,
    auth_header: &'static str,
    auth: &str,
    body: Option<&[u8]>,
) -> HttpRequest {
    let req = HttpRequest::new(method, path.to_owned()).header(auth_header, auth);
    match body {
        Some(b) => req.json(b.to_vec()),
        None => req,
    }
}

/// A failed answer as an error of store `name`: the message is the
/// string `field` of a JSON body, else the first line of the body's text
/// (vendors answer some errors in plain text). 5xx and 429 are transient.
pub fn failure_from(name: &str, what: &str, r: &HttpResponse, field: &str) -> StoreError {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let desc: String = match v.get(field).and_then(|m| m.as_str()) {
        Some(m) => m.lines().next().unwrap_or("").to_owned(),
        None => {
            let text = String::from_utf8_lossy(&r.body);
            text.lines().next().unwrap_or("").chars().take(200).collect()
        }
    };
    let text = format!("{name}: {what}: status {} {desc}", r.status).trim_end().to_owned();
    if transient(r.status) {
        StoreError::Unreachable(text)
    } else {
        StoreError::Failed(text)
    }
}

/// An OAuth2 token endpoint's refusal (`error_description`, else `error`).
pub fn oauth_refused(name: &str, r: &HttpResponse) -> StoreError {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let field = if v.get("error_description").is_some() { "error_description" } else { "error" };
    failure_from(name, "token request refused", r, field)
}

/// A token from a 200 answer: the string `token_field` (sent as
/// `Bearer <token>` when `bearer`), valid for `lifetime_field` seconds (a
/// number, or a numeric string as IMDS writes it; `default` when absent).
pub fn grant(
    name: &str,
    r: &HttpResponse,
    token_field: &str,
    lifetime_field: &str,
    default: u64,
    bearer: bool,
) -> Result<Grant, StoreError> {
    let mut v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let secs = match v.get(lifetime_field) {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(default)
    .clamp(1, 86_400);
    let token =
        Zeroizing::new(take_string(&mut v, &[token_field]).filter(|t| !t.is_empty()).ok_or_else(
            || StoreError::Failed(format!("{name}: the answer has no {token_field}")),
        )?);
    let token = if bearer { Zeroizing::new(format!("Bearer {}", token.as_str())) } else { token };
    Ok(Grant { token, lifetime: Duration::from_secs(secs) })
}

/// A new access token (or any credential that expires: AWS's temporary
/// keys) and how long it lives.
pub struct Grant<T = Zeroizing<String>> {
    /// The token (or the full header value, if the store wants a prefix).
    pub token: T,
    /// Its lifetime as the issuer said.
    pub lifetime: Duration,
}

struct Held<T> {
    value: Arc<T>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// An access token shared by all calls of one store. One caller at a time
/// logs in (the others wait and reuse the result); a token is refreshed
/// after half its lifetime, and used until it expires if a refresh fails.
pub struct Token<T = Zeroizing<String>> {
    held: Mutex<Option<Held<T>>>,
    login: smol::lock::Mutex<()>,
}

impl<T> Default for Token<T> {
    fn default() -> Self {
        Self { held: Mutex::new(None), login: smol::lock::Mutex::new(()) }
    }
}

impl Token<Zeroizing<String>> {
    /// Forgets `value` if it is still the current token (the store refused it).
    pub fn invalidate(&self, value: &str) {
        let mut held = self.lock();
        if held.as_ref().is_some_and(|h| h.value.as_str() == value) {
            *held = None;
        }
    }
}

impl<T> Token<T> {
    /// Forgets `value` if it is still the one held (the service refused it).
    pub fn forget(&self, value: &Arc<T>) {
        let mut held = self.lock();
        if held.as_ref().is_some_and(|h| Arc::ptr_eq(&h.value, value)) {
            *held = None;
        }
    }

    /// The current token, logging in when there is none or it is due.
    pub async fn get<F: Future<Output = Result<Grant<T>, StoreError>> + Send>(
        &self,
        login: &(dyn Fn() -> F + Sync),
    ) -> Result<Arc<T>, StoreError> {
        if let Some(t) = self.usable(true) {
            return Ok(t);
        }
        let _one = self.login.lock().await;
        if let Some(t) = self.usable(true) {
            return Ok(t);
        }
        match login().await {
            Ok(g) => {
                let now = Instant::now();
                let value = Arc::new(g.token);
                // Expire a little early so a token is never sent as it dies.
                let skew = (g.lifetime / 10).min(Duration::from_secs(30));
                *self.lock() = Some(Held {
                    value: value.clone(),
                    refresh_at: now + g.lifetime / 2,
                    expires_at: now + g.lifetime - skew,
                });
                Ok(value)
            }
            Err(e) => match self.usable(false) {
                Some(old) => {
                    if let Some(h) = self.lock().as_mut() {
                        h.refresh_at = Instant::now() + REFRESH_RETRY;
                    }
                    Ok(old)
                }
                None => Err(e),
            },
        }
    }

    /// The current token while it has not expired, due for refresh or
    /// not (to renew it where the store can).
    pub fn peek(&self) -> Option<Arc<T>> {
        self.usable(false)
    }

    fn usable(&self, fresh: bool) -> Option<Arc<T>> {
        let now = Instant::now();
        let held = self.lock();
        let h = held.as_ref()?;
        let until = if fresh { h.refresh_at.min(h.expires_at) } else { h.expires_at };
        (now < until).then(|| h.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held<T>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves the string at `path` out of a JSON answer (so a secret is not
/// copied), or `None` when it is missing or not a string. Unlike indexing
/// with `v["a"]`, never panics on an answer of the wrong shape.
pub fn take_string(v: &mut serde_json::Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for k in path {
        cur = cur.as_object_mut()?.get_mut(*k)?;
    }
    match cur.take() {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Percent-encodes a query or form value (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The path (with query) of a URL; `/` when it has none.
pub fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].to_owned(),
        None => "/".to_owned(),
    }
}

/// The scheme and authority of a URL (`https://host:port`).
pub fn url_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// A response for parser tests.
#[cfg(test)]
pub(crate) fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse { status, location: None, body: Zeroizing::new(body.as_bytes().to_vec()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        assert_eq!(url_path("https://h:1/a/b?x=1"), "/a/b?x=1");
        assert_eq!(url_path("https://h"), "/");
        assert_eq!(url_origin("https://h:1/a/b"), "https://h:1");
        assert_eq!(encode("a b/c:d~"), "a%20b%2Fc%3Ad~");
    }

    #[test]
    fn one_login_then_reuse_refresh_and_fallback() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let logins = AtomicU32::new(0);
        let fail = std::sync::atomic::AtomicBool::new(false);
        let token = Token::default();
        let login = || async {
            let n = logins.fetch_add(1, Ordering::SeqCst);
            if fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unreachable("down".into()));
            }
            Ok(Grant {
                token: Zeroizing::new(format!("t{n}")),
                lifetime: Duration::from_millis(400),
            })
        };
        smol::block_on(async {
            assert_eq!(token.get(&login).await.unwrap().as_str(), "t0");
            assert_eq!(token.get(&login).await.unwrap().as_str(), "t0", "reused");
            token.invalidate("t0");
            assert_eq!(
                token.get(&login).await.unwrap().as_str(),
                "t1",
                "a refused token is replaced"
            );
            Timer::after(Duration::from_millis(250)).await; // past half its life
            fail.store(true, Ordering::SeqCst);
            assert_eq!(token.get(&login).await.unwrap().as_str(), "t1", "still valid: kept");
            let before = logins.load(Ordering::SeqCst);
            assert_eq!(token.get(&login).await.unwrap().as_str(), "t1");
            assert_eq!(logins.load(Ordering::SeqCst), before, "no login storm after a failure");
            Timer::after(Duration::from_millis(200)).await; // expired
            assert!(token.get(&login).await.is_err(), "expired and no new one");
            fail.store(false, Ordering::SeqCst);
            assert!(token.get(&login).await.unwrap().starts_with('t'));
        });
    }
}
