//! Where a gateway keeps its admission state. A [`Limiter`] admits a request against its
//! tenant's limits with an atomic reservation and hands back a [`Reservation`]; two
//! implementations exist: [`Admission`](super::admission::Admission), in memory (one gateway
//! replica limits on its own), and [`RedisLimiter`](super::redis_limiter::RedisLimiter), whose
//! state lives in Redis so the limits hold across every replica.

use std::fmt;
use std::time::Instant;

use futures::future::BoxFuture;

use super::admission::RateLimitHeaders;
use super::config::TenantPolicy;
use super::error::GatewayError;

/// Admission state behind the HTTP layer: one per gateway, shared by all its requests.
pub trait Limiter: Send + Sync + 'static {
    /// Admits one request reserving `tokens` (prompt bound plus completion bound) against the
    /// concurrency cap, both per-minute buckets and the monthly quota all at once, or refuses
    /// it without taking anything.
    fn admit<'a>(
        &'a self,
        tenant: &'a TenantPolicy,
        tokens: u64,
    ) -> BoxFuture<'a, Result<Reservation, GatewayError>>;
}

/// A limiter's side of an admitted request. Dropping it frees the concurrency slot (and, for a
/// limiter that defers work, applies the settled usage).
pub trait Hold: Send + Sync + fmt::Debug {
    /// Corrects a reservation of `reserved` tokens to the `used` tokens the response reported.
    fn settle(&self, reserved: u64, used: u64, now: Instant);
}

/// Capacity held by an admitted request: one concurrency slot (released on drop) and its
/// reserved tokens (kept in full unless [`Self::settle`] reports the real usage, so a response
/// whose usage is unknown is charged its whole reservation).
#[derive(Debug)]
pub struct Reservation {
    tokens: u64,
    headers: RateLimitHeaders,
    hold: Box<dyn Hold>,
}

impl Reservation {
    /// A reservation of `tokens` held by `hold`, with the `x-ratelimit-*` values at admission.
    pub fn new(tokens: u64, headers: RateLimitHeaders, hold: Box<dyn Hold>) -> Self {
        Self {
            tokens,
            headers,
            hold,
        }
    }

    /// Tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The `x-ratelimit-*` values right after admission.
    pub fn headers(&self) -> &RateLimitHeaders {
        &self.headers
    }

    /// Corrects the reservation to the `used` tokens the response reported.
    pub fn settle(&self, used: u64) {
        self.settle_at(used, Instant::now());
    }

    /// [`Self::settle`] at an explicit time (for tests of the in-memory limiter).
    pub fn settle_at(&self, used: u64, now: Instant) {
        self.hold.settle(self.tokens, used, now);
    }
}
