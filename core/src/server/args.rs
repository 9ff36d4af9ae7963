//! Reading a request's arguments: names from the path, fields from the
//! body. Every problem becomes the API error a client expects.

use std::borrow::Cow;

use crate::api::wire;
use crate::api::ApiError;
use crate::name::{valid_name, KeyName, NameError};

/// Reads string fields of a request body in one pass; any problem is a 400.
pub(super) fn fields<'a, const N: usize>(
    body: &'a [u8],
    names: [&str; N],
) -> Result<[Option<Cow<'a, str>>; N], ApiError> {
    wire::string_fields(body, names).map_err(|_| ApiError::InvalidBody)
}

/// Decodes a base64 field from [`fields`]; any problem is a 400.
pub(super) fn unb64(v: Option<Cow<'_, str>>) -> Result<Vec<u8>, ApiError> {
    wire::b64_field(v.as_deref()).map_err(|_| ApiError::InvalidBody)
}

/// A key name to store or look up.
pub(super) fn key_name(r: &str) -> Result<KeyName, ApiError> {
    KeyName::parse(r).map_err(ApiError::InvalidName)
}

/// Validates a key name without allocating (the cached-key hot path).
pub(super) fn key_ref(r: &str) -> Result<&str, ApiError> {
    if valid_name(r) {
        Ok(r)
    } else {
        Err(ApiError::InvalidName(NameError::Key(r.to_owned())))
    }
}

pub(super) fn policy_name(r: &str) -> Result<String, ApiError> {
    if valid_name(r) {
        Ok(r.to_owned())
    } else {
        Err(ApiError::InvalidName(NameError::Policy(r.to_owned())))
    }
}

pub(super) fn identity_arg(r: &str) -> Result<String, ApiError> {
    if valid_name(r) {
        Ok(r.to_owned())
    } else {
        Err(ApiError::InvalidName(NameError::Identity(r.to_owned())))
    }
}
