//! The policy API: describe/read, write, assign, list, delete. Policies
//! live in the server's memory (from the config, or written at run time as
//! KES v0.19 allowed); nothing here touches the key store.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::args::policy_name;
use super::call::Call;
use super::Server;
use crate::api::wire::{self, NDJSON};
use crate::api::{ApiError, Op, Response};
use crate::config::ApiCompat;
use crate::identity::Identity;
use crate::name::{ListPattern, NameError};
use crate::policy::{Binding, Pattern, Policy};

/// `describe` answers name and creation; `read` adds the patterns, in the
/// shape of the configured API era.
pub(super) fn describe(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = policy_name(c.resource)?;
    let p = s.policies.policy(&name).ok_or(ApiError::PolicyNotFound)?;
    let mut v = Map::new();
    if c.op == Op::PolicyRead {
        match s.compat.api {
            ApiCompat::V024 => {
                v.insert("name".into(), name.clone().into());
                insert_pattern_objects(&mut v, p, "allow", "deny");
            }
            ApiCompat::V019 => {
                if !p.allow.is_empty() {
                    v.insert("allow".into(), patterns(&p.allow));
                }
                if !p.deny.is_empty() {
                    v.insert("deny".into(), patterns(&p.deny));
                }
            }
        }
    } else {
        v.insert("name".into(), name.clone().into());
    }
    v.insert("created_at".into(), p.created_at.to_string().into());
    if let Some(by) = p.created_by {
        v.insert("created_by".into(), by.to_string().into());
    }
    s.finish(c.id, c.ctx, Response::json(&Value::Object(v)), c.now);
    Ok(())
}

pub(super) fn write(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = policy_name(c.resource)?;
    let obj = wire::parse_object(&c.body).map_err(|_| ApiError::InvalidBody)?;
    // Field names are matched case-insensitively: v0.19 clients send `Allow`.
    let list = |field: &str| -> Result<Vec<Pattern>, ApiError> {
        match wire::field_ci(&obj, field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(Pattern::new).ok_or(ApiError::InvalidBody))
                .collect(),
            Some(_) => Err(ApiError::InvalidBody),
        }
    };
    let policy = Policy {
        allow: list("allow")?,
        deny: list("deny")?,
        created_at: c.now.unix,
        created_by: c.ctx.identity,
    };
    s.policies.set_policy(&name, policy);
    s.finish(c.id, c.ctx, Response::empty(StatusCode::OK), c.now);
    Ok(())
}

pub(super) fn assign(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = policy_name(c.resource)?;
    let obj = wire::parse_object(&c.body).map_err(|_| ApiError::InvalidBody)?;
    let text = wire::str_field(&obj, "identity").map_err(|_| ApiError::InvalidBody)?;
    if text.is_empty() {
        return Err(ApiError::IdentityUnknown);
    }
    let target = Identity::parse(text)
        .ok_or_else(|| ApiError::InvalidName(NameError::Identity(text.to_owned())))?;
    if Some(target) == c.ctx.identity {
        return Err(ApiError::SelfAssign);
    }
    if Some(target) == s.admin.identity() {
        return Err(ApiError::IdentityIsRoot);
    }
    let binding = Binding { policy: name, created_at: c.now.unix, created_by: c.ctx.identity };
    s.policies.bind(target, binding);
    s.finish(c.id, c.ctx, Response::empty(StatusCode::OK), c.now);
    Ok(())
}

pub(super) fn delete(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let name = policy_name(c.resource)?;
    s.policies.remove_policy(&name);
    s.finish(c.id, c.ctx, Response::empty(StatusCode::OK), c.now);
    Ok(())
}

pub(super) fn list(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let pattern = ListPattern::parse(c.resource).map_err(ApiError::InvalidName)?;
    let mut body = Vec::new();
    for (name, p) in s.policies.policies().filter(|(n, _)| pattern.matches(n)) {
        let mut v = json!({ "name": name, "created_at": p.created_at.to_string() });
        if let Some(by) = p.created_by {
            v["created_by"] = by.to_string().into();
        }
        body.extend_from_slice(v.to_string().as_bytes());
        body.push(b'\n');
    }
    s.finish(c.id, c.ctx, Response::with(StatusCode::OK, NDJSON, body), c.now);
    Ok(())
}

/// Patterns as a JSON array of strings (v0.19 shapes).
pub(super) fn patterns(ps: &[Pattern]) -> Value {
    Value::Array(ps.iter().map(|p| Value::from(p.as_str())).collect())
}

/// Patterns as `{"<pattern>": {}}` objects (v0.24 shapes), omitted if empty.
pub(super) fn insert_pattern_objects(
    v: &mut Map<String, Value>,
    p: &Policy,
    allow: &str,
    deny: &str,
) {
    let obj = |ps: &[Pattern]| {
        Value::Object(ps.iter().map(|p| (p.as_str().to_owned(), json!({}))).collect())
    };
    if !p.allow.is_empty() {
        v.insert(allow.into(), obj(&p.allow));
    }
    if !p.deny.is_empty() {
        v.insert(deny.into(), obj(&p.deny));
    }
}
