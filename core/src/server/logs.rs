//! The log API: `/v1/log/{audit,error}` answer with a stream marker; the
//! adapter subscribes the connection and writes the events as they come.

use http::StatusCode;

use super::call::Call;
use super::Server;
use crate::api::wire::{LogStream, NDJSON};
use crate::api::{ApiError, Op, Response};

pub(super) fn stream(s: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    let mut r = Response::with(StatusCode::OK, NDJSON, Vec::new());
    r.stream = Some(if c.op == Op::LogAudit { LogStream::Audit } else { LogStream::Error });
    s.finish(c.id, c.ctx, r, c.now);
    Ok(())
}
