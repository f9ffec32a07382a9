//! A per-minute token bucket: it holds up to `per_minute` units, refills continuously at
//! `per_minute / 60` a second, and can go into debt when a request ends up using more than it
//! reserved, so the long-run rate holds even when a reservation was too small.

use std::time::{Duration, Instant};

/// A token bucket measured in whole units (requests or LLM tokens).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_minute: u64,
    available: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` units.
    pub fn new(per_minute: u64, now: Instant) -> Self {
        Self {
            per_minute,
            available: per_minute as f64,
            updated: now,
        }
    }

    /// Seconds to refill `units` (computed as `units * 60 / limit`, exact for whole units).
    fn seconds_for(&self, units: f64) -> Option<f64> {
        (self.per_minute > 0).then(|| units * 60.0 / self.per_minute as f64)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.available =
            (self.available + elapsed * self.per_minute as f64 / 60.0).min(self.per_minute as f64);
        self.updated = now;
    }

    /// The capacity (the per-minute limit).
    pub fn limit(&self) -> u64 {
        self.per_minute
    }

    /// Changes the limit (a Tier edit); what is available is kept, capped at the new limit.
    pub fn set_limit(&mut self, per_minute: u64, now: Instant) {
        if per_minute != self.per_minute {
            self.refill(now);
            self.per_minute = per_minute;
            self.available = self.available.min(per_minute as f64);
        }
    }

    /// How long until `amount` units are available; zero when they are now. An amount above
    /// the limit only needs a full bucket (it is then admitted and leaves the bucket in debt),
    /// so a single large request is never refused forever.
    pub fn wait_for(&mut self, amount: u64, now: Instant) -> Duration {
        self.refill(now);
        let needed = amount.min(self.per_minute) as f64;
        if self.available >= needed {
            return Duration::ZERO;
        }
        self.seconds_for(needed - self.available)
            .map_or(Duration::MAX, Duration::from_secs_f64)
    }

    /// Takes `amount` units; call after [`Self::wait_for`] returned zero (the bucket may go
    /// into debt).
    pub fn take(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.available -= amount as f64;
    }

    /// Returns units reserved but not used.
    pub fn give_back(&mut self, amount: u64, now: Instant) {
        self.refill(now);
        self.available = (self.available + amount as f64).min(self.per_minute as f64);
    }

    /// Whole units available now (zero while in debt).
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.available.max(0.0).floor() as u64
    }

    /// Time until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn until_full(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.seconds_for((self.per_minute as f64 - self.available).max(0.0))
            .map_or(Duration::ZERO, Duration::from_secs_f64)
    }
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do: `6m0s`, `1s`, `20ms`.
pub fn format_reset(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64();
    let minutes = (seconds / 60.0).floor() as u64;
    let rest = seconds - (minutes * 60) as f64;
    let rest = if rest.fract() == 0.0 {
        format!("{rest:.0}")
    } else {
        format!("{rest:.3}").trim_end_matches('0').to_string()
    };
    if minutes > 0 {
        format!("{minutes}m{rest}s")
    } else {
        format!("{rest}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_n_plus_first_unit_in_a_minute_waits_one_refill_interval() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        for _ in 0..10 {
            assert_eq!(bucket.wait_for(1, start), Duration::ZERO);
            bucket.take(1, start);
        }
        // 10 a minute refill one unit every 6 s.
        assert_eq!(bucket.wait_for(1, start), Duration::from_secs(6));
        assert_eq!(bucket.wait_for(1, start + Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(
            bucket.until_full(start + Duration::from_secs(6)),
            Duration::from_secs(54)
        );
    }

    #[test]
    fn debt_and_refunds_keep_the_long_run_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(600, start);
        bucket.take(1000, start);
        assert_eq!(bucket.remaining(start), 0);
        // 400 of debt at 10/s: 40 s until the next unit.
        let wait = bucket.wait_for(1, start).as_secs_f64();
        assert!((wait - 40.1).abs() < 1e-6, "{wait}");
        bucket.give_back(2000, start);
        assert_eq!(bucket.remaining(start), 600);
        bucket.set_limit(100, start);
        assert_eq!(bucket.remaining(start), 100);
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_secs(6)), "6s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
    }
}
