//! The limits in force for a tenant: its Tier's, tightened (never loosened) by its overrides.

use hearth_crds::tier::TierLimits;
use hearth_crds::{Tenant, Tier};

/// Limits in force for one tenant: the stricter of its tier's and its overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute (token bucket of this capacity, refilled continuously).
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute (reserved up front).
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent_requests: Option<u32>,
    /// Cap on a request's `max_tokens`, and its reservation when it sets none.
    pub max_tokens_per_request: Option<u32>,
    /// Prompt plus completion tokens per calendar month (UTC).
    pub tokens_per_month: Option<u64>,
}

/// The stricter (smaller) of two optional limits; absent means unlimited.
fn stricter<T: Ord + Copy>(tier: Option<T>, tenant: Option<T>) -> Option<T> {
    match (tier, tenant) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Limits {
    /// Combines a tier's limits and quota with a tenant's overrides; an override can only
    /// tighten a limit, never loosen it.
    pub fn effective(tier: &Tier, tenant: &Tenant) -> Self {
        let base = &tier.spec.limits;
        let default_limits = TierLimits::default();
        let overrides = tenant.spec.overrides.as_ref();
        let over = overrides.map_or(&default_limits, |o| &o.limits);
        let tier_month = tier.spec.quota.as_ref().and_then(|q| q.tokens_per_month);
        let tenant_month = overrides
            .and_then(|o| o.quota.as_ref())
            .and_then(|q| q.tokens_per_month);
        Self {
            requests_per_minute: stricter(base.requests_per_minute, over.requests_per_minute),
            tokens_per_minute: stricter(base.tokens_per_minute, over.tokens_per_minute),
            max_concurrent_requests: stricter(base.max_concurrent_requests, over.max_concurrent_requests),
            max_tokens_per_request: stricter(base.max_tokens_per_request, over.max_tokens_per_request),
            tokens_per_month: stricter(tier_month, tenant_month),
        }
    }
}
