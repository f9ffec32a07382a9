//! Where a gateway keeps its admission state. A [`Limiter`] admits a request against its
//! tenant's limits with an atomic reservation and hands back a [`Reservation`]; two
//! implementations exist: `Admission` (`admission.rs`), in memory (one gateway replica limits
//! on its own), and `RedisLimiter` (`redis_limiter.rs`), whose state lives in Redis so the
//! limits hold across every replica.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use futures::future::BoxFuture;

use super::config::TenantPolicy;
use super::error::GatewayError;
use super::rate_limit::RateLimitHeaders;

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

/// A reservation whose request no engine has answered yet. Dropped before [`Self::answered`]
/// (the request was refused or failed on the way), it settles to zero tokens: a request no
/// engine answered used none.
#[derive(Debug)]
pub struct Unanswered(Option<Reservation>);

impl Unanswered {
    /// Guards `reservation` until an engine answers.
    pub fn new(reservation: Reservation) -> Self {
        Self(Some(reservation))
    }

    /// An engine answered: the reservation is settled from the response from now on.
    pub fn answered(mut self) -> Reservation {
        self.0.take().expect("a reservation is answered at most once")
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(reservation) = self.0.take() {
            reservation.settle(0);
        }
    }
}

/// The calendar month (UTC) a quota counts in, `YYYY-MM`, and the time left in it.
pub fn current_period() -> (String, Duration) {
    let now = Utc::now();
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let next = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single();
    let left = next
        .and_then(|n| (n - now).to_std().ok())
        .unwrap_or(Duration::from_secs(3600));
    (now.format("%Y-%m").to_string(), left)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records every settle as `(reserved, used)`.
    #[derive(Debug, Default)]
    struct Recorded(Arc<Mutex<Vec<(u64, u64)>>>);

    impl Hold for Recorded {
        fn settle(&self, reserved: u64, used: u64, _now: Instant) {
            self.0.lock().expect("lock").push((reserved, used));
        }
    }

    fn reservation(settled: &Arc<Mutex<Vec<(u64, u64)>>>) -> Reservation {
        Reservation::new(
            100,
            RateLimitHeaders::default(),
            Box::new(Recorded(settled.clone())),
        )
    }

    #[test]
    fn an_unanswered_reservation_gives_its_tokens_back_and_an_answered_one_is_left_alone() {
        let settled = Arc::new(Mutex::new(Vec::new()));
        drop(Unanswered::new(reservation(&settled)));
        assert_eq!(*settled.lock().expect("lock"), [(100, 0)]);
        let answered = Unanswered::new(reservation(&settled)).answered();
        assert_eq!(
            settled.lock().expect("lock").len(),
            1,
            "answering settles nothing"
        );
        answered.settle(42);
        assert_eq!(settled.lock().expect("lock")[1], (100, 42));
    }
}
