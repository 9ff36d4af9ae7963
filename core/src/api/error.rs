//! Every API failure as a typed value, mapped to status and message in one
//! exhaustive match. Messages are KES's, byte for byte: clients compare them.

use http::StatusCode;

use super::wire::Response;
use crate::identity::IdentityError;
use crate::name::NameError;

/// An API error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The caller presented no usable certificate.
    NoIdentity(IdentityError),
    /// Over the caller's budget (policy `limits:`).
    Throttled {
        /// Names the limit.
        message: String,
        /// When to try again, in whole seconds (`Retry-After`).
        retry_after: u64,
    },
    /// Policy denies the request.
    NotAllowed,
    /// Only the admin may do this.
    AdminOnly,
    /// A name or pattern is invalid.
    InvalidName(NameError),
    /// The request body is not what the route expects.
    InvalidBody,
    /// The import body is not what the route expects.
    InvalidImportBody,
    /// The body exceeds the route's limit.
    BodyTooLarge,
    /// An imported key has the wrong length.
    InvalidKeySize(String),
    /// An imported key names an unknown algorithm.
    UnsupportedAlgorithm(String),
    /// The key does not exist.
    KeyNotFound,
    /// The key exists already.
    KeyExists,
    /// The key has no HMAC key (created by an older KES).
    NoHmacKey,
    /// Decryption failed authentication.
    NotAuthentic,
    /// More than 1000 ciphertexts in a bulk decrypt.
    TooManyCiphertexts,
    /// The policy does not exist.
    PolicyNotFound,
    /// The identity does not exist.
    IdentityNotFound,
    /// Policy assignment without an identity.
    IdentityUnknown,
    /// Policy assignment to oneself.
    SelfAssign,
    /// Policy assignment to the admin.
    IdentityIsRoot,
    /// An `enclave` query parameter other than the default.
    EnclaveNotFound,
    /// Enclaves cannot be created or deleted.
    EnclaveUnsupported(&'static str),
    /// The request method does not fit the route.
    MethodNotAllowed {
        /// The method received.
        got: String,
        /// The method the route expects.
        want: &'static str,
    },
    /// The percent-encoding of the path is invalid.
    BadPath,
    /// A stored key could not be decoded.
    KeyMalformed,
    /// A key version that does not exist (never, or purged).
    NoSuchVersion(u32),
    /// A key version that is retired.
    VersionRetired(u32),
    /// Rotation would leave too many versions active.
    TooManyVersions,
    /// A minimum version below the current one or above the newest.
    InvalidMinVersion(u32),
    /// Another request is changing the key's versions right now.
    KeyBusy,
    /// The key store failed while creating.
    StoreCreate,
    /// The key store failed while reading.
    StoreRead,
    /// The key store failed while deleting.
    StoreDelete,
    /// The key store failed while listing.
    StoreList,
    /// The key store is unreachable (ready check).
    StoreUnreachable,
    /// The key store reports an error (ready check).
    StoreUnavailable,
    /// The request did not finish within its route's timeout.
    Timeout,
    /// The audit log cannot be written (its reader stopped reading), so a
    /// request that needs an audit record is not served.
    AuditLogStalled,
}

impl From<crate::crypto::RingError> for ApiError {
    fn from(e: crate::crypto::RingError) -> Self {
        use crate::crypto::RingError as R;
        match e {
            R::NoSuchVersion(v) => Self::NoSuchVersion(v),
            R::Retired(v) => Self::VersionRetired(v),
            R::TooManyActive => Self::TooManyVersions,
            R::InvalidMinimum(v) => Self::InvalidMinVersion(v),
            R::NotAuthentic => Self::NotAuthentic,
        }
    }
}

impl ApiError {
    /// The status code and message.
    ///
    /// Longer than a screen on purpose: one arm per error, all in one place,
    /// so every status and message can be checked against api.md at a glance.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        use StatusCode as S;
        let (status, msg): (StatusCode, &str) = match self {
            Self::NoIdentity(e @ IdentityError::Untrusted) => return (S::FORBIDDEN, e.to_string()),
            Self::NoIdentity(e) => return (S::BAD_REQUEST, e.to_string()),
            Self::Throttled { message, .. } => return (S::TOO_MANY_REQUESTS, message.clone()),
            Self::NotAllowed | Self::AdminOnly => {
                (S::FORBIDDEN, "not authorized: insufficient permissions")
            }
            Self::InvalidName(e) => return (S::BAD_REQUEST, e.to_string()),
            Self::InvalidBody => (S::BAD_REQUEST, "invalid request body"),
            Self::InvalidImportBody => (S::BAD_REQUEST, "invalid import key request body"),
            Self::BodyTooLarge => (S::PAYLOAD_TOO_LARGE, "request body too large"),
            Self::InvalidKeySize(c) => {
                return (S::NOT_ACCEPTABLE, format!("invalid key size for '{c}'"))
            }
            Self::UnsupportedAlgorithm(c) => {
                return (S::NOT_ACCEPTABLE, format!("algorithm '{c}' is not supported"))
            }
            Self::KeyNotFound => (S::NOT_FOUND, "key does not exist"),
            Self::KeyExists => (S::BAD_REQUEST, "key already exists"),
            Self::NoHmacKey => (S::CONFLICT, "key does not support HMAC"),
            Self::NotAuthentic => {
                (S::BAD_REQUEST, "decryption failed: ciphertext is not authentic")
            }
            Self::TooManyCiphertexts => (S::BAD_REQUEST, "too many ciphertexts"),
            Self::PolicyNotFound => (S::NOT_FOUND, "policy does not exist"),
            Self::IdentityNotFound => (S::NOT_FOUND, "identity does not exist"),
            Self::IdentityUnknown => (S::BAD_REQUEST, "identity is unknown"),
            Self::SelfAssign => (S::FORBIDDEN, "identity cannot assign policy to itself"),
            Self::IdentityIsRoot => (S::BAD_REQUEST, "identity is root"),
            Self::EnclaveNotFound => (S::NOT_FOUND, "enclave does not exist"),
            Self::EnclaveUnsupported(m) => (S::NOT_IMPLEMENTED, m),
            Self::MethodNotAllowed { got, want } => {
                return (
                    S::METHOD_NOT_ALLOWED,
                    format!("received method '{got}' expected '{want}'"),
                )
            }
            Self::BadPath => (S::BAD_REQUEST, "invalid URL escape in request path"),
            Self::KeyMalformed => {
                (S::INTERNAL_SERVER_ERROR, "failed to read key: key is malformed")
            }
            Self::NoSuchVersion(v) => {
                return (S::NOT_FOUND, format!("key version {v} does not exist"))
            }
            Self::VersionRetired(v) => {
                return (S::BAD_REQUEST, format!("key version {v} is retired"))
            }
            Self::TooManyVersions => {
                (S::CONFLICT, "too many active key versions: retire old versions before rotating")
            }
            Self::InvalidMinVersion(v) => {
                return (
                    S::BAD_REQUEST,
                    format!(
                        "invalid minimum version {v}: it may only rise, up to the newest version"
                    ),
                )
            }
            Self::KeyBusy => (S::CONFLICT, "key versions are being changed: try again"),
            Self::StoreCreate => (S::BAD_GATEWAY, "failed to create key"),
            Self::StoreRead => (S::BAD_GATEWAY, "failed to read key"),
            Self::StoreDelete => (S::BAD_GATEWAY, "failed to delete key"),
            Self::StoreList => (S::BAD_GATEWAY, "failed to list keys"),
            Self::StoreUnreachable => (S::GATEWAY_TIMEOUT, "key store is not reachable"),
            Self::StoreUnavailable => (S::BAD_GATEWAY, "key store is unavailable"),
            Self::AuditLogStalled => (S::SERVICE_UNAVAILABLE, "audit log is not being written"),
            Self::Timeout => (S::SERVICE_UNAVAILABLE, "request timeout exceeded"),
        };
        (status, msg.to_owned())
    }

    /// The JSON error response.
    pub fn response(&self) -> Response {
        let (status, msg) = self.status_and_message();
        let mut r = Response::error(status, &msg);
        if let Self::MethodNotAllowed { want, .. } = self {
            r.headers.push(("Accept", (*want).into()));
        }
        if let Self::Throttled { retry_after, .. } = self {
            r.headers.push(("Retry-After", retry_after.to_string().into()));
        }
        r
    }
}
