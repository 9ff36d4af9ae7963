//! Server-wide routes: version, status, readiness, metrics and the route
//! listing, and what the key store's status probe means for them.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use super::call::Call;
use super::{Pending, RequestId, Server, VERSION};
use crate::api::{ApiError, Response, ROUTES};
use crate::config::ApiCompat;
use crate::keystore::{Command, StoreError, StoreReply};
use crate::time::Now;

pub(super) fn version(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let r = Response::json(&json!({ "version": VERSION, "commit": "" }));
    s.finish(c.id, c.ctx, r, c.now);
    Ok(())
}

pub(super) fn status(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    s.issue(c.parked(), Command::Status, Pending::Status(c.id));
    Ok(())
}

pub(super) fn ready(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    s.issue(c.parked(), Command::Status, Pending::Ready(c.id));
    Ok(())
}

pub(super) fn metrics(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let uptime = c.now.instant - s.started.instant;
    let text = s.metrics.render(s.inflight.len() + 1, uptime, &s.system);
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    s.finish(c.id, c.ctx, Response::with(StatusCode::OK, content_type, text.into_bytes()), c.now);
    Ok(())
}

/// The listed routes with their effective timeouts.
pub(super) fn api(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let routes: Vec<Value> = ROUTES
        .iter()
        .zip(&s.overrides)
        .filter(|(r, _)| r.listed)
        .map(|(r, (_, t))| json!({"method": r.method.as_str(), "path": r.path, "max_body": r.max_body, "timeout": t.as_secs()}))
        .collect();
    s.finish(c.id, c.ctx, Response::json(&Value::Array(routes)), c.now);
    Ok(())
}

impl Server {
    pub(super) fn status_result(
        &mut self,
        req: RequestId,
        result: Result<StoreReply, StoreError>,
        now: Now,
    ) {
        let latency = match &result {
            Ok(StoreReply::Status { latency }) => Some(*latency),
            _ => None,
        };
        self.cache.set_offline(latency.is_none(), now.instant);
        let r = Ok(self.status_body(latency, now));
        self.complete(req, r, now);
    }

    /// Ready means this node can serve: the store answers, or it does not
    /// but offline caching holds keys to serve from (scale-out.md), so a
    /// load balancer keeps sending the requests it can answer.
    pub(super) fn ready_result(
        &mut self,
        req: RequestId,
        result: Result<StoreReply, StoreError>,
        now: Now,
    ) {
        let r = match result {
            Ok(StoreReply::Status { .. }) => {
                self.cache.set_offline(false, now.instant);
                Ok(Response::empty(StatusCode::OK))
            }
            // (handle_store_result has already marked the cache offline)
            Err(StoreError::Unreachable(_)) => {
                if self.cache.serves_offline() {
                    Ok(Response::empty(StatusCode::OK))
                } else {
                    Err(ApiError::StoreUnreachable)
                }
            }
            _ => Err(ApiError::StoreUnavailable),
        };
        self.complete(req, r, now);
    }

    /// The cache's own probe: only decides whether the store is offline.
    pub(super) fn probe_result(&mut self, result: Result<StoreReply, StoreError>, now: Now) {
        let offline = !matches!(result, Ok(StoreReply::Status { .. }));
        self.cache.set_offline(offline, now.instant);
    }

    fn status_body(&self, latency: Option<Duration>, now: Now) -> Response {
        let uptime = now.instant.saturating_duration_since(self.started.instant);
        match self.compat.api {
            ApiCompat::V019 => Response::json(&json!({
                "version": VERSION,
                "uptime": uptime.as_secs() * 1_000_000_000,
            })),
            ApiCompat::V024 => {
                let s = &self.system;
                let mut v = json!({
                    "version": VERSION, "os": s.os, "arch": s.arch, "uptime": uptime.as_secs(),
                    "num_cpu": s.num_cpu, "num_cpu_used": s.num_cpu_used,
                    "mem_heap_used": s.mem_heap_used, "mem_stack_used": s.mem_stack_used,
                });
                match latency {
                    Some(l) => v["keystore_latency"] = (l.as_millis().max(1) as u64).into(),
                    None => {
                        v["keystore_unreachable"] = true.into();
                        v["keystore_unavailable"] = true.into();
                    }
                }
                if self.metrics.audit_stalled {
                    // An addition to KES's fields: why requests get 503.
                    v["audit_log_stalled"] = true.into();
                }
                Response::json(&v)
            }
        }
    }
}
