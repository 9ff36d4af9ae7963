//! Per-identity budgets (policy `limits:`, an extension of KES): decided
//! after authentication and authorization, before any store call or crypto
//! work, so an identity over its budget costs almost nothing.
//!
//! Only identities bound to a policy (and the admin, when `admin.limits`
//! is set) get a budget, so the table is bounded by the configuration: a
//! flood of unknown certificates (answered 403) cannot grow it. Idle
//! entries (full bucket, nothing in flight) are dropped every minute. A
//! reload keeps every budget whose limit did not change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{RequestId, Server};
use crate::api::ApiError;
use crate::config::Config;
use crate::identity::Identity;
use crate::limits::{retry_after_secs, Bucket, Limit};

/// How often idle budgets are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The metrics label of the admin's budget.
const ADMIN_LABEL: &str = "(admin)";

#[derive(Default)]
pub(super) struct Budgets {
    default: Option<Limit>,
    admin: Option<Limit>,
    policies: BTreeMap<String, Limit>,
    table: BTreeMap<Identity, Budget>,
    /// Requests holding a `concurrent` slot, and whose.
    holds: BTreeMap<RequestId, Identity>,
    next_prune: Option<Instant>,
}

struct Budget {
    limit: Limit,
    bucket: Bucket,
    inflight: u32,
}

impl Budgets {
    pub(super) fn configure(&mut self, config: &Config) {
        self.default = config.limits;
        self.admin = config.admin_limits;
        self.policies =
            config.policies.iter().filter_map(|(n, p)| Some((n.clone(), p.limits?))).collect();
    }

    /// When idle entries are next dropped.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_prune
    }

    pub(super) fn prune(&mut self, now: Instant) {
        if self.next_prune.is_some_and(|t| t <= now) {
            self.table.retain(|_, b| {
                b.inflight > 0
                    || b.limit.rate.is_some_and(|r| !b.bucket.is_full(r, b.limit.burst, now))
            });
            self.next_prune = (!self.table.is_empty()).then(|| now + PRUNE_EVERY);
        }
    }

    /// Budgets held now (for tests and the status of a flood).
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

impl Server {
    /// Admits request `id` of `identity` (bound to `policy`, or the admin)
    /// or refuses it with 429. `holds_slot`: whether it counts against
    /// `concurrent` (log streams, which stay open, do not).
    pub(super) fn admit(
        &mut self,
        id: RequestId,
        identity: Identity,
        is_admin: bool,
        holds_slot: bool,
        now: Instant,
    ) -> Result<(), ApiError> {
        let b = &mut self.budgets;
        // No limits configured (the usual case): nothing to look up.
        if b.default.is_none() && b.admin.is_none() && b.policies.is_empty() {
            return Ok(());
        }
        let policy = match is_admin {
            true => None,
            false => self.policies.binding(&identity).map(|b| b.policy.as_str()),
        };
        let limit = match (policy, is_admin) {
            (_, true) => b.admin,
            (Some(p), false) => b.policies.get(p).copied().or(b.default),
            (None, false) => None,
        };
        let Some(limit) = limit else { return Ok(()) };
        let label = || policy.unwrap_or(ADMIN_LABEL).to_owned();
        let budget = b.table.entry(identity).or_insert_with(|| Budget {
            limit,
            bucket: Bucket::full(limit.burst, now),
            inflight: 0,
        });
        if budget.limit != limit {
            // The limit changed on reload: a fresh budget under the new one.
            *budget =
                Budget { limit, bucket: Bucket::full(limit.burst, now), inflight: budget.inflight };
        }
        if b.next_prune.is_none() {
            b.next_prune = Some(now + PRUNE_EVERY);
        }
        let refusal = match (limit.concurrent, limit.rate) {
            (Some(c), _) if holds_slot && budget.inflight >= c => Some((
                format!(
                    "too many requests: policy '{}' allows {c} requests in flight at once",
                    label()
                ),
                Duration::from_secs(1),
            )),
            (_, Some(r)) => budget.bucket.take(r, limit.burst, now).err().map(|wait| {
                (
                    format!(
                        "too many requests: policy '{}' allows {r} requests per second (burst {})",
                        label(),
                        limit.burst
                    ),
                    wait,
                )
            }),
            _ => None,
        };
        if let Some((message, wait)) = refusal {
            *self.metrics.throttled.entry(label()).or_default() += 1;
            return Err(ApiError::Throttled { message, retry_after: retry_after_secs(wait) });
        }
        if holds_slot && limit.concurrent.is_some() {
            budget.inflight += 1;
            b.holds.insert(id, identity);
        }
        Ok(())
    }

    /// A request ended: its `concurrent` slot, if it held one, is free.
    pub(super) fn release(&mut self, id: RequestId) {
        if self.budgets.holds.is_empty() {
            return;
        }
        if let Some(identity) = self.budgets.holds.remove(&id) {
            if let Some(b) = self.budgets.table.get_mut(&identity) {
                b.inflight = b.inflight.saturating_sub(1);
            }
        }
    }

    /// Budgets held in memory now (bounded by the configured identities).
    pub fn budgets_held(&self) -> usize {
        self.budgets.len()
    }
}
