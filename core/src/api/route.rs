//! The route table: the union of KES v0.19.0's and v0.24's APIs, plus the
//! aliases the brief's wiki and the seed-era CLI use.
//!
//! Routing follows Go's `ServeMux`, because clients depend on its quirks:
//! unclean paths and subtree roots without their slash get a 301.

use std::time::Duration;

use http::Method;

/// How a route authenticates its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Identity required; admin or a policy that allows the path.
    Policy,
    /// Identity required; no policy check (self-describe).
    Identity,
    /// Nothing required (`/version`).
    None,
    /// Only the admin identity (seed-era enclave routes).
    Admin,
}

/// What a route does.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Version,
    Status,
    Ready,
    Metrics,
    Api,
    KeyCreate,
    KeyImport,
    KeyDescribe,
    KeyDelete,
    KeyList,
    KeyGenerate,
    KeyEncrypt,
    KeyDecrypt,
    KeyBulkDecrypt,
    KeyHmac,
    KeyRotate,
    KeyRewrap,
    KeyRetire,
    KeyPurge,
    PolicyDescribe,
    PolicyRead,
    PolicyWrite,
    PolicyAssign,
    PolicyList,
    PolicyDelete,
    IdentityDescribe,
    IdentitySelfDescribe,
    IdentityList,
    IdentityForget,
    LogError,
    LogAudit,
    EnclaveCreate,
    EnclaveDelete,
}

/// One route.
#[derive(Clone, Debug)]
pub struct Route {
    /// The path; subtree routes end in `/` and take a resource after it.
    pub path: &'static str,
    /// The method named in 405 answers.
    pub method: Method,
    /// A second accepted method (POST for PUT routes, HEAD for policy describe).
    pub alt_method: Option<Method>,
    /// Largest accepted body in bytes.
    pub max_body: usize,
    /// Default timeout; zero means none (log streams).
    pub timeout: Duration,
    /// Authentication.
    pub auth: Auth,
    /// The operation.
    pub op: Op,
    /// Listed by `/v1/api` (aliases are not).
    pub listed: bool,
}

impl Route {
    /// Whether the route takes a resource argument.
    pub fn is_subtree(&self) -> bool {
        self.path.ends_with('/')
    }

    /// Whether `m` is accepted.
    pub fn accepts(&self, m: &Method) -> bool {
        *m == self.method || self.alt_method.as_ref() == Some(m)
    }
}

const MIB: usize = 1 << 20;
const S10: Duration = Duration::from_secs(10);
const S15: Duration = Duration::from_secs(15);
const NONE: Duration = Duration::ZERO;

macro_rules! route {
    ($path:expr, $m:ident, $alt:expr, $body:expr, $t:expr, $auth:ident, $op:ident, $listed:expr) => {
        Route {
            path: $path,
            method: Method::$m,
            alt_method: $alt,
            max_body: $body,
            timeout: $t,
            auth: Auth::$auth,
            op: Op::$op,
            listed: $listed,
        }
    };
}

const POST: Option<Method> = Some(Method::POST);

/// Every route, both eras.
pub static ROUTES: &[Route] = &[
    route!("/version", GET, None, 0, S10, None, Version, true),
    route!("/v1/status", GET, None, 0, S15, Policy, Status, true),
    route!("/v1/ready", GET, None, 0, S15, Policy, Ready, true),
    route!("/v1/metrics", GET, None, 0, S15, Policy, Metrics, true),
    route!("/v1/api", GET, None, 0, S10, Policy, Api, true),
    route!("/v1/key/create/", PUT, POST, 0, S15, Policy, KeyCreate, true),
    route!("/v1/key/import/", PUT, POST, MIB, S15, Policy, KeyImport, true),
    route!("/v1/key/describe/", GET, None, 0, S15, Policy, KeyDescribe, true),
    route!("/v1/key/delete/", DELETE, None, 0, S15, Policy, KeyDelete, true),
    route!("/v1/key/list/", GET, None, 0, S15, Policy, KeyList, true),
    route!("/v1/key/generate/", PUT, POST, MIB, S15, Policy, KeyGenerate, true),
    route!("/v1/key/encrypt/", PUT, POST, MIB, S15, Policy, KeyEncrypt, true),
    route!("/v1/key/decrypt/", PUT, POST, MIB, S15, Policy, KeyDecrypt, true),
    route!(
        "/v1/key/bulk/decrypt/",
        POST,
        Some(Method::PUT),
        MIB,
        S15,
        Policy,
        KeyBulkDecrypt,
        true
    ),
    route!("/v1/key/hmac/", PUT, POST, MIB, S15, Policy, KeyHmac, true),
    // Key versions: an extension of KES (README, "Key versions").
    route!("/v1/key/rotate/", PUT, POST, 0, S15, Policy, KeyRotate, true),
    route!("/v1/key/rewrap/", PUT, POST, MIB, S15, Policy, KeyRewrap, true),
    route!("/v1/key/retire/", PUT, POST, MIB, S15, Policy, KeyRetire, true),
    route!("/v1/key/purge/", PUT, POST, 0, S15, Policy, KeyPurge, true),
    route!("/v1/policy/describe/", GET, Some(Method::HEAD), 0, S15, Policy, PolicyDescribe, true),
    route!("/v1/policy/read/", GET, None, 0, S15, Policy, PolicyRead, true),
    route!("/v1/policy/write/", POST, Some(Method::PUT), MIB, S15, Policy, PolicyWrite, true),
    route!("/v1/policy/assign/", POST, Some(Method::PUT), MIB, S15, Policy, PolicyAssign, true),
    route!("/v1/policy/list/", GET, None, 0, S15, Policy, PolicyList, true),
    route!("/v1/policy/delete/", DELETE, None, 0, S15, Policy, PolicyDelete, true),
    route!("/v1/identity/describe/", GET, None, 0, S15, Policy, IdentityDescribe, true),
    route!("/v1/identity/self/describe", GET, None, 0, S15, Identity, IdentitySelfDescribe, true),
    route!("/v1/identity/list/", GET, None, 0, S15, Policy, IdentityList, true),
    route!("/v1/identity/forget/", DELETE, None, 0, S15, Policy, IdentityForget, true),
    route!("/v1/identity/delete/", DELETE, None, 0, S15, Policy, IdentityForget, false),
    route!("/v1/log/error", GET, None, 0, NONE, Policy, LogError, true),
    route!("/v1/log/audit", GET, None, 0, NONE, Policy, LogAudit, true),
    route!("/v1/log/error/trace", GET, None, 0, NONE, Policy, LogError, false),
    route!("/v1/log/audit/trace", GET, None, 0, NONE, Policy, LogAudit, false),
    route!("/v1/enclave/create/", POST, None, 0, S15, Admin, EnclaveCreate, true),
    route!("/v1/enclave/delete/", POST, None, 0, S15, Admin, EnclaveDelete, true),
];

/// The result of routing a decoded path.
#[derive(Debug)]
pub enum RouteMatch<'p> {
    /// A route, its index in [`ROUTES`], and the resource argument.
    Found(usize, &'p str),
    /// Redirect (301) to this path, as Go's mux does.
    Redirect(String),
    /// No such route.
    NotFound,
}

impl RouteMatch<'_> {
    /// Whether a route was found.
    pub fn is_found(&self) -> bool {
        matches!(self, Self::Found(..))
    }
}

/// Routes a request path.
pub fn find(path: &str) -> RouteMatch<'_> {
    if !is_clean(path) {
        let cleaned = clean_path(path);
        if cleaned != path {
            return RouteMatch::Redirect(cleaned);
        }
    }
    let mut best: Option<(usize, &str)> = None;
    for (i, r) in ROUTES.iter().enumerate() {
        if r.is_subtree() {
            if let Some(rest) = path.strip_prefix(r.path) {
                if best.is_none_or(|(b, _)| ROUTES[b].path.len() < r.path.len()) {
                    best = Some((i, rest));
                }
            } else if path.len() + 1 == r.path.len() && r.path.starts_with(path) {
                return RouteMatch::Redirect(format!("{path}/"));
            }
        } else if r.path == path {
            return RouteMatch::Found(i, "");
        }
    }
    match best {
        Some((i, rest)) => RouteMatch::Found(i, rest),
        None => RouteMatch::NotFound,
    }
}

/// Whether `p` is already what [`clean_path`] returns (checked without
/// allocating: every request passes here).
fn is_clean(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("//")
        && !p.contains("/./")
        && !p.contains("/../")
        && !p.ends_with("/.")
        && !p.ends_with("/..")
}

/// Go's `path.Clean`, keeping a trailing slash as `ServeMux` does.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_owned();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut cleaned = String::with_capacity(p.len());
    for seg in &out {
        cleaned.push('/');
        cleaned.push_str(seg);
    }
    let trailing = p.ends_with('/') || p.ends_with("/.") || p.ends_with("/..");
    if cleaned.is_empty() || trailing {
        cleaned.push('/');
    }
    cleaned
}

/// Percent-decodes a URL path. Invalid escapes are an error, as in Go.
pub fn percent_decode(p: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !p.contains('%') {
        return Some(std::borrow::Cow::Borrowed(p));
    }
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = p.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(path: &str) -> Option<(Op, String)> {
        match find(path) {
            RouteMatch::Found(i, rest) => Some((ROUTES[i].op, rest.to_owned())),
            _ => None,
        }
    }

    #[test]
    fn routing() {
        assert_eq!(op("/v1/key/create/a"), Some((Op::KeyCreate, "a".into())));
        assert_eq!(op("/v1/key/bulk/decrypt/a"), Some((Op::KeyBulkDecrypt, "a".into())));
        assert_eq!(op("/v1/identity/self/describe"), Some((Op::IdentitySelfDescribe, "".into())));
        assert_eq!(op("/v1/log/audit/trace"), Some((Op::LogAudit, "".into())));
        assert_eq!(op("/v1/key/create/a/b"), Some((Op::KeyCreate, "a/b".into())));
        assert!(matches!(find("/v1/status/"), RouteMatch::NotFound));
        assert!(matches!(find("/v1/nothing"), RouteMatch::NotFound));
        match find("/v1/key/list") {
            RouteMatch::Redirect(p) => assert_eq!(p, "/v1/key/list/"),
            other => panic!("{other:?}"),
        }
        match find("/v1//key/./list/x") {
            RouteMatch::Redirect(p) => assert_eq!(p, "/v1/key/list/x"),
            other => panic!("{other:?}"),
        }
        match find("/v1/key/create/../delete/x") {
            RouteMatch::Redirect(p) => assert_eq!(p, "/v1/key/delete/x"),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn clean_check_agrees_with_cleaning(p in "[/.ab]{0,12}") {
            if is_clean(&p) {
                proptest::prop_assert_eq!(clean_path(&p), p);
            }
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/v1/key/list/%2A").unwrap(), "/v1/key/list/*");
        assert!(percent_decode("/x%2").is_none());
        assert!(percent_decode("/x%zz").is_none());
    }
}
