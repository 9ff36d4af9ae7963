//! What a handler gets and what it is: the one shape every API handler has.
//! Its own module so that the handler modules and the dispatcher both
//! depend on it, and the dispatcher alone depends on the handlers.

use std::time::Instant;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::{Ctx, Parked, RequestId, Server};
use crate::api::{ApiError, Op};
use crate::time::Now;

/// One routed and authorized request, as its handler gets it.
pub(super) struct Call<'a> {
    /// Where the response goes.
    pub id: RequestId,
    /// What the audit record needs.
    pub ctx: &'a Ctx,
    /// The operation (several ops share a handler).
    pub op: Op,
    /// The percent-decoded rest of the path after the route: a key, policy
    /// or identity name, or a list pattern. Not validated yet.
    pub resource: &'a str,
    /// The body; it may hold a plaintext or a key, so it is wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
    /// When a request parked on the store times out.
    pub deadline: Option<Instant>,
    /// The time handed in with the request.
    pub now: Now,
    /// Randomness for keys, nonces and data keys.
    pub rng: &'a mut dyn CryptoRngCore,
}

impl Call<'_> {
    /// The parts a request parked on the store keeps.
    pub(super) fn parked(&self) -> Parked<'_> {
        Parked { id: self.id, ctx: self.ctx, deadline: self.deadline }
    }
}

/// What every handler is: it answers with [`Server::finish`] (at once) or
/// [`Server::issue`] (after the store), or fails with an error response.
pub(super) type Handler = fn(&mut Server, Call<'_>) -> Result<(), ApiError>;
