//! The identity API: describe (another or oneself), list, forget. An
//! identity is known by being the admin or bound to a policy.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::args::identity_arg;
use super::call::Call;
use super::policies::{insert_pattern_objects, patterns};
use super::Server;
use crate::api::wire::{JSON, NDJSON};
use crate::api::{ApiError, Response};
use crate::config::ApiCompat;
use crate::identity::Identity;
use crate::name::ListPattern;
use crate::policy::Pattern;

pub(super) fn describe(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let target = identity_arg(c.resource)?;
    let r = s.describe_identity(target)?;
    s.finish(c.id, c.ctx, r, c.now);
    Ok(())
}

pub(super) fn describe_self(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let r = s.describe_self(c.ctx.identity)?;
    s.finish(c.id, c.ctx, r, c.now);
    Ok(())
}

/// NDJSON, one line per identity (the admin first when it matches), sorted.
pub(super) fn list(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let pattern = ListPattern::parse(c.resource).map_err(ApiError::InvalidName)?;
    let mut lines: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(admin) = s.admin.identity() {
        let id = admin.to_string();
        if pattern.matches(&id) {
            let created_at = s.started.unix.to_string();
            lines.insert(
                id.clone(),
                json!({"identity": id, "admin": true, "created_at": created_at}),
            );
        }
    }
    for (ident, b) in s.policies.bindings() {
        let id = ident.to_string();
        if pattern.matches(&id) {
            let mut v = json!({"identity": id, "admin": false, "policy": b.policy, "created_at": b.created_at.to_string()});
            if let Some(by) = b.created_by {
                v["created_by"] = by.to_string().into();
            }
            lines.insert(id, v);
        }
    }
    let mut body = Vec::new();
    for v in lines.values() {
        body.extend_from_slice(v.to_string().as_bytes());
        body.push(b'\n');
    }
    s.finish(c.id, c.ctx, Response::with(StatusCode::OK, NDJSON, body), c.now);
    Ok(())
}

pub(super) fn forget(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let target = identity_arg(c.resource)?;
    if let Some(t) = Identity::parse(&target) {
        s.policies.forget(&t);
    }
    s.finish(c.id, c.ctx, Response::empty(StatusCode::OK), c.now);
    Ok(())
}

impl Server {
    fn describe_identity(&self, target: String) -> Result<Response, ApiError> {
        let ident = Identity::parse(&target).ok_or(ApiError::IdentityNotFound)?;
        let start = self.started.unix.to_string();
        let v019 = self.compat.api == ApiCompat::V019;
        if Some(ident) == self.admin.identity() {
            return Ok(Response::json(&if v019 {
                json!({"identity": target, "policy": "", "created_at": start})
            } else {
                json!({"admin": true, "created_at": start})
            }));
        }
        let b = self.policies.binding(&ident).ok_or(ApiError::IdentityNotFound)?;
        let mut v = json!({"policy": b.policy, "created_at": b.created_at.to_string()});
        if v019 {
            v["identity"] = target.into();
        }
        if let Some(by) = b.created_by {
            v["created_by"] = by.to_string().into();
        }
        Ok(Response::json(&v))
    }

    fn describe_self(&self, caller: Option<Identity>) -> Result<Response, ApiError> {
        let ident = caller.ok_or(ApiError::IdentityNotFound)?;
        let start = self.started.unix.to_string();
        let v019 = self.compat.api == ApiCompat::V019;
        if Some(ident) == self.admin.identity() {
            let mut v = json!({"identity": ident.to_string(), "admin": true, "created_at": start});
            if v019 {
                v["policy"] = json!({"Allow": null, "Deny": null});
            }
            return Ok(Response::json(&v));
        }
        let b = self.policies.binding(&ident).ok_or(ApiError::IdentityNotFound)?;
        let p = self.policies.policy(&b.policy).ok_or(ApiError::PolicyNotFound)?;
        let mut v = Map::new();
        v.insert("identity".into(), ident.to_string().into());
        v.insert("admin".into(), false.into());
        v.insert("created_at".into(), b.created_at.to_string().into());
        if let Some(by) = b.created_by {
            v.insert("created_by".into(), by.to_string().into());
        }
        if v019 {
            v.insert("policy_name".into(), b.policy.clone().into());
            let list = |ps: &[Pattern]| {
                if ps.is_empty() {
                    Value::Null
                } else {
                    patterns(ps)
                }
            };
            v.insert("policy".into(), json!({"Allow": list(&p.allow), "Deny": list(&p.deny)}));
        } else {
            v.insert("policy".into(), b.policy.clone().into());
            insert_pattern_objects(&mut v, p, "allow", "deny");
        }
        let mut r = Response::json(&Value::Object(v));
        r.headers = vec![("Content-Type", JSON.into())];
        Ok(r)
    }
}
