//! From a request to its handler: route on the raw path, check the method,
//! authenticate and authorize, then call the one handler of the route's
//! operation. Every handler has the same shape ([`Handler`], in
//! [`super::call`], which the handler modules import, so the arrows run from
//! here to them and not back), so adding a route is a row in [`ROUTES`] and
//! a handler in its family's module, named in [`handler`].

use std::borrow::Cow;

use http::StatusCode;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::call::{Call, Handler};
use super::{enclaves, identities, keys, logs, policies, status, Ctx, RequestId, Server};
use crate::api::route::{self, percent_decode, RouteMatch};
use crate::api::{ApiError, Auth, Op, Request, Response, Route, ROUTES};
use crate::identity::Caller;
use crate::policy::Refusal;
use crate::time::Now;

/// The handler of each operation.
fn handler(op: Op) -> Handler {
    match op {
        Op::Version => status::version,
        Op::Status => status::status,
        Op::Ready => status::ready,
        Op::Metrics => status::metrics,
        Op::Api => status::api,
        Op::KeyCreate => keys::create,
        Op::KeyImport => keys::import,
        Op::KeyDescribe => keys::describe,
        Op::KeyDelete => keys::delete,
        Op::KeyList => keys::list,
        Op::KeyGenerate => keys::generate,
        Op::KeyEncrypt => keys::encrypt,
        Op::KeyDecrypt => keys::decrypt,
        Op::KeyBulkDecrypt => keys::bulk_decrypt,
        Op::KeyHmac => keys::hmac,
        Op::KeyRotate => keys::rotate,
        Op::KeyRewrap => keys::rewrap,
        Op::KeyRetire => keys::retire,
        Op::KeyPurge => keys::purge,
        Op::PolicyDescribe | Op::PolicyRead => policies::describe,
        Op::PolicyWrite => policies::write,
        Op::PolicyAssign => policies::assign,
        Op::PolicyList => policies::list,
        Op::PolicyDelete => policies::delete,
        Op::IdentityDescribe => identities::describe,
        Op::IdentitySelfDescribe => identities::describe_self,
        Op::IdentityList => identities::list,
        Op::IdentityForget => identities::forget,
        Op::LogError | Op::LogAudit => logs::stream,
        Op::EnclaveCreate | Op::EnclaveDelete => enclaves::refuse,
    }
}

impl Server {
    pub(super) fn dispatch(
        &mut self,
        id: RequestId,
        caller: Caller,
        req: Request,
        ctx: &Ctx,
        now: Now,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(), ApiError> {
        // Route on the raw path, then decode: an encoded `/` or `..` inside a
        // resource must fail name validation, never change the route.
        let (index, raw_resource) = match route::find(&req.path) {
            RouteMatch::Found(i, rest) => (i, rest),
            RouteMatch::Redirect(to) => {
                self.finish(id, ctx, redirect(to, req.query.as_deref()), now);
                return Ok(());
            }
            RouteMatch::NotFound => {
                self.finish(id, ctx, not_found(), now);
                return Ok(());
            }
        };
        let path = percent_decode(&req.path).ok_or(ApiError::BadPath)?;
        let resource = percent_decode(raw_resource).ok_or(ApiError::BadPath)?;
        let route = &ROUTES[index];
        // Fail closed, visibly: no audit record, no service; what reports
        // on the server still answers (its record waits in the log queue).
        if self.metrics.audit_stalled && !matches!(route.op, Op::Status | Op::Metrics | Op::Version)
        {
            return Err(ApiError::AuditLogStalled);
        }
        check_method_and_query(route, &req)?;
        let (skip_auth, timeout) = self.overrides.get(index).copied().unwrap_or_default();
        self.authorize(route.auth, skip_auth, caller, &path)?;
        // Budgets: for authenticated routes; the admin only with admin.limits.
        if let (Some(identity), false) = (caller.identity(), skip_auth || route.auth == Auth::None)
        {
            let is_admin = Some(identity) == self.admin.identity();
            let holds_slot = !matches!(route.op, Op::LogError | Op::LogAudit);
            self.admit(id, identity, is_admin, holds_slot, now.instant)?;
        }
        if req.body_too_large {
            return Err(ApiError::BodyTooLarge);
        }
        let call = Call {
            id,
            ctx,
            op: route.op,
            resource: &resource,
            body: Zeroizing::new(req.body),
            deadline: (!timeout.is_zero()).then(|| now.instant + timeout),
            now,
            rng,
        };
        handler(route.op)(self, call)
    }

    fn authorize(
        &self,
        auth: Auth,
        skip: bool,
        caller: Caller,
        path: &str,
    ) -> Result<(), ApiError> {
        let admin = self.admin.identity();
        match (auth, skip) {
            (Auth::None, _) | (Auth::Policy, true) => Ok(()),
            (Auth::Identity, _) => caller.identity().map(|_| ()).ok_or(match caller {
                Caller::Anonymous(e) => ApiError::NoIdentity(e),
                Caller::Identified(_) => ApiError::NotAllowed,
            }),
            (Auth::Admin, _) => match caller {
                Caller::Anonymous(e) => Err(ApiError::NoIdentity(e)),
                Caller::Identified(id) if Some(id) == admin => Ok(()),
                Caller::Identified(_) => Err(ApiError::AdminOnly),
            },
            (Auth::Policy, false) => match caller {
                Caller::Anonymous(e) => Err(ApiError::NoIdentity(e)),
                Caller::Identified(id) if Some(id) == admin => Ok(()),
                Caller::Identified(id) => self.policies.authorize(&id, path).map_err(|r| match r {
                    Refusal::NotAllowed => ApiError::NotAllowed,
                    Refusal::PolicyMissing => ApiError::PolicyNotFound,
                }),
            },
        }
    }
}

/// The route's method (or its alternative), and no enclave: we serve only
/// the default one.
fn check_method_and_query(route: &'static Route, req: &Request) -> Result<(), ApiError> {
    if !route.accepts(&req.method) {
        return Err(ApiError::MethodNotAllowed {
            got: req.method.to_string(),
            want: route.method.as_str(),
        });
    }
    if let Some(q) = &req.query {
        let enclave = q.split('&').find_map(|kv| kv.strip_prefix("enclave="));
        if enclave.is_some_and(|e| !e.is_empty()) {
            return Err(ApiError::EnclaveNotFound);
        }
    }
    Ok(())
}

/// Go's `ServeMux` answer to an unclean path or a subtree root without `/`.
fn redirect(to: String, query: Option<&str>) -> Response {
    let location = match query {
        Some(q) => format!("{to}?{q}"),
        None => to,
    };
    let mut r = Response::empty(StatusCode::MOVED_PERMANENTLY);
    r.headers.push(("Location", Cow::Owned(location)));
    r
}

/// v0.24's answer for unknown paths, byte for byte.
fn not_found() -> Response {
    let mut r = Response::with(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        b"404 page not found\n".to_vec(),
    );
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r
}
