//! Client errors: the server's canonical errors as variants, everything else
//! with the status and message it came with.

use std::fmt;

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// 400 `key already exists`.
    KeyExists,
    /// 404 `key does not exist`.
    KeyNotFound,
    /// 403: the policy does not allow this call.
    NotAllowed,
    /// 400 `decryption failed: ciphertext is not authentic`.
    NotAuthentic,
    /// 404 `policy does not exist`.
    PolicyNotFound,
    /// 404 `identity does not exist`.
    IdentityNotFound,
    /// Any other error answer.
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// No endpoint could be reached.
    Connect(String),
    /// The request did not complete in time.
    Timeout,
    /// The answer was not what the API promises.
    InvalidResponse(String),
    /// The API key is malformed.
    InvalidApiKey(String),
    /// A certificate or key could not be loaded or used.
    Certificate(String),
    /// The server's certificate is not trusted (unknown issuer, wrong name,
    /// expired): the client refused the server, not the other way round.
    ServerCertificate(String),
    /// The client was configured wrongly.
    Config(String),
}

impl ClientError {
    /// Maps an error answer to a variant (both message generations).
    pub(crate) fn from_answer(status: u16, message: String) -> Self {
        match (status, message.as_str()) {
            (400, "key already exists" | "key does already exist") => Self::KeyExists,
            (404, "key does not exist") => Self::KeyNotFound,
            (403, _) => Self::NotAllowed,
            (400, "decryption failed: ciphertext is not authentic") => Self::NotAuthentic,
            (404, "policy does not exist") => Self::PolicyNotFound,
            (404, "identity does not exist") => Self::IdentityNotFound,
            _ => Self::Api { status, message },
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyExists => f.write_str("key already exists"),
            Self::KeyNotFound => f.write_str("key does not exist"),
            Self::NotAllowed => f.write_str("not authorized: insufficient permissions"),
            Self::NotAuthentic => f.write_str("decryption failed: ciphertext is not authentic"),
            Self::PolicyNotFound => f.write_str("policy does not exist"),
            Self::IdentityNotFound => f.write_str("identity does not exist"),
            Self::Api { status, message } if message.is_empty() => {
                write!(f, "server answered {status}")
            }
            Self::Api { message, .. } => f.write_str(message),
            Self::Connect(m) => write!(f, "cannot reach the server: {m}"),
            Self::Timeout => f.write_str("the server did not answer in time"),
            Self::InvalidResponse(m) => write!(f, "invalid answer from the server: {m}"),
            Self::InvalidApiKey(m) => write!(f, "invalid API key: {m}"),
            Self::Certificate(m) => write!(f, "client certificate: {m}"),
            Self::ServerCertificate(m) => write!(
                f,
                "the server's certificate is not trusted: set KES_CAPATH or use -k (insecure); reason: {m}"
            ),
            Self::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ClientError {}
