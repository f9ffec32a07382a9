//! Per-tenant admission with atomic reservation. Under one lock per tenant, a request is checked
//! against the concurrency cap, the requests-per-minute bucket, the tokens-per-minute bucket and
//! the monthly quota, and only if all of them have room does it take from all of them at once.
//! It reserves its prompt estimate plus its completion bound up front, so a burst of concurrent
//! requests cannot overshoot a limit; when the response ends, [`Reservation::settle`] refunds
//! what the real usage left unused (or charges the excess, leaving the bucket in debt).
//! This is the default [`Limiter`]: each gateway replica limits on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::bucket::TokenBucket;
use super::config::TenantPolicy;
use super::error::{GatewayError, LimitKind};
use super::limiter::{Hold, Limiter, Reservation, current_period};
use super::rate_limit::RateLimitHeaders;
use hearth_tenancy::limits::Limits;

#[derive(Debug)]
struct TenantState {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    in_flight: u32,
    period: String,
    /// Tokens used or reserved in `period`.
    month_used: u64,
}

fn sync_bucket(bucket: &mut Option<TokenBucket>, limit: Option<u64>, now: Instant) {
    match (bucket.as_mut(), limit) {
        (_, None) => *bucket = None,
        (None, Some(limit)) => *bucket = Some(TokenBucket::new(limit, now)),
        (Some(existing), Some(limit)) => existing.set_limit(limit, now),
    }
}

impl TenantState {
    fn sync(&mut self, tenant: &TenantPolicy, now: Instant, period: &str) {
        sync_bucket(&mut self.requests, tenant.limits.requests_per_minute, now);
        sync_bucket(&mut self.tokens, tenant.limits.tokens_per_minute, now);
        if self.period != period {
            self.period = period.to_string();
            self.month_used = 0;
        }
        if let Some((reported_period, used)) = &tenant.reported_usage
            && reported_period == period
        {
            self.month_used = self.month_used.max(*used);
        }
    }

    fn headers(&mut self, now: Instant) -> RateLimitHeaders {
        let mut read = |b: &mut TokenBucket| (b.limit(), b.remaining(now), b.until_full(now));
        RateLimitHeaders {
            requests: self.requests.as_mut().map(&mut read),
            tokens: self.tokens.as_mut().map(&mut read),
        }
    }
}

/// Admission state of every tenant seen; survives Config swaps, which only change the limits.
#[derive(Debug, Default)]
pub struct Admission {
    tenants: Mutex<HashMap<Arc<str>, Arc<Mutex<TenantState>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    /// An empty admission table.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self, tenant: &TenantPolicy, now: Instant, period: &str) -> Arc<Mutex<TenantState>> {
        let mut tenants = lock(&self.tenants);
        tenants
            .entry(tenant.id.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(TenantState {
                    requests: tenant
                        .limits
                        .requests_per_minute
                        .map(|l| TokenBucket::new(l, now)),
                    tokens: tenant.limits.tokens_per_minute.map(|l| TokenBucket::new(l, now)),
                    in_flight: 0,
                    period: period.to_string(),
                    month_used: 0,
                }))
            })
            .clone()
    }

    /// Admits one request reserving `tokens` (prompt bound plus completion bound), or refuses
    /// it without taking anything.
    pub fn admit(&self, tenant: &TenantPolicy, tokens: u64) -> Result<Reservation, GatewayError> {
        let (period, month_left) = current_period();
        self.admit_at(tenant, tokens, Instant::now(), &period, month_left)
    }

    /// [`Self::admit`] at an explicit time and period (for tests).
    pub fn admit_at(
        &self,
        tenant: &TenantPolicy,
        tokens: u64,
        now: Instant,
        period: &str,
        month_left: Duration,
    ) -> Result<Reservation, GatewayError> {
        let shared = self.state(tenant, now, period);
        let mut state = lock(&shared);
        state.sync(tenant, now, period);
        let Limits {
            max_concurrent_requests,
            tokens_per_month,
            ..
        } = tenant.limits;
        if max_concurrent_requests.is_some_and(|cap| state.in_flight >= cap) {
            let headers = state.headers(now);
            return Err(GatewayError::RateLimited {
                kind: LimitKind::Concurrency,
                retry_after: Duration::from_secs(1),
                headers,
            });
        }
        let request_wait = state
            .requests
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(1, now));
        let token_wait = state
            .tokens
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(tokens, now));
        if !request_wait.is_zero() || !token_wait.is_zero() {
            let kind = if request_wait.is_zero() {
                LimitKind::Tokens
            } else {
                LimitKind::Requests
            };
            let headers = state.headers(now);
            return Err(GatewayError::RateLimited {
                kind,
                retry_after: request_wait.max(token_wait),
                headers,
            });
        }
        if tokens_per_month.is_some_and(|quota| state.month_used.saturating_add(tokens) > quota) {
            return Err(GatewayError::QuotaExhausted {
                retry_after: month_left,
            });
        }
        if let Some(bucket) = state.requests.as_mut() {
            bucket.take(1, now);
        }
        if let Some(bucket) = state.tokens.as_mut() {
            bucket.take(tokens, now);
        }
        state.month_used = state.month_used.saturating_add(tokens);
        state.in_flight += 1;
        let headers = state.headers(now);
        drop(state);
        let hold = MemoryHold {
            state: shared,
            period: period.to_string(),
        };
        Ok(Reservation::new(tokens, headers, Box::new(hold)))
    }
}

/// The in-memory limiter's hold on a tenant: its concurrency slot and its reservation's period.
#[derive(Debug)]
struct MemoryHold {
    state: Arc<Mutex<TenantState>>,
    period: String,
}

impl Hold for MemoryHold {
    fn settle(&self, reserved: u64, used: u64, now: Instant) {
        let mut state = lock(&self.state);
        if used < reserved {
            let refund = reserved - used;
            if let Some(bucket) = state.tokens.as_mut() {
                bucket.give_back(refund, now);
            }
            if state.period == self.period {
                state.month_used = state.month_used.saturating_sub(refund);
            }
        } else {
            let excess = used - reserved;
            if let Some(bucket) = state.tokens.as_mut() {
                bucket.take(excess, now);
            }
            if state.period == self.period {
                state.month_used = state.month_used.saturating_add(excess);
            }
        }
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl Limiter for Admission {
    fn admit<'a>(
        &'a self,
        tenant: &'a TenantPolicy,
        tokens: u64,
    ) -> BoxFuture<'a, Result<Reservation, GatewayError>> {
        Box::pin(std::future::ready(Admission::admit(self, tenant, tokens)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TierPolicy;

    fn tenant(limits: Limits) -> TenantPolicy {
        TenantPolicy {
            id: "ns/t".into(),
            tier: Arc::new(TierPolicy {
                name: "t".into(),
                priority: 0,
                weight: 1,
                models: vec![],
            }),
            limits,
            suspended: false,
            budget_blocked: false,
            reported_usage: None,
        }
    }

    const MONTH: Duration = Duration::from_secs(86_400);

    #[test]
    fn token_reservation_refund_readmits_at_the_exact_boundary() {
        let admission = Admission::new();
        let tenant = tenant(Limits {
            tokens_per_minute: Some(1000),
            ..Limits::default()
        });
        let now = Instant::now();
        let first = admission
            .admit_at(&tenant, 600, now, "2025-01", MONTH)
            .expect("room for 600");
        let refused = admission.admit_at(&tenant, 401, now, "2025-01", MONTH);
        assert!(matches!(
            refused,
            Err(GatewayError::RateLimited {
                kind: LimitKind::Tokens,
                ..
            })
        ));
        assert!(admission.admit_at(&tenant, 400, now, "2025-01", MONTH).is_ok());
        first.settle_at(100, now);
        assert!(admission.admit_at(&tenant, 500, now, "2025-01", MONTH).is_ok());
    }

    #[test]
    fn concurrency_slot_is_freed_on_drop_and_quota_counts_settled_usage() {
        let admission = Admission::new();
        let tenant = tenant(Limits {
            max_concurrent_requests: Some(1),
            tokens_per_month: Some(100),
            ..Limits::default()
        });
        let now = Instant::now();
        let held = admission
            .admit_at(&tenant, 80, now, "2025-01", MONTH)
            .expect("first");
        assert!(matches!(
            admission.admit_at(&tenant, 1, now, "2025-01", MONTH),
            Err(GatewayError::RateLimited {
                kind: LimitKind::Concurrency,
                ..
            })
        ));
        held.settle_at(50, now);
        drop(held);
        assert!(matches!(
            admission.admit_at(&tenant, 51, now, "2025-01", MONTH),
            Err(GatewayError::QuotaExhausted { .. })
        ));
        assert!(admission.admit_at(&tenant, 50, now, "2025-01", MONTH).is_ok());
        // A new month starts from zero.
        assert!(admission.admit_at(&tenant, 100, now, "2025-02", MONTH).is_ok());
    }
}
