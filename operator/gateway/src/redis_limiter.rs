//! The shared limiter: admission state in Redis, so a tenant's limits hold across every gateway
//! replica. Each step is one Lua script run atomically by Redis (EVALSHA, loaded on first use):
//! `admit` checks and takes the concurrency lease, both per-minute buckets and the monthly
//! counter all or nothing; `finish` frees the lease and refunds (or charges) the difference
//! between reservation and real usage; `renew` extends a running request's lease.
//!
//! Keys are `<prefix>:{<tenant>}:<what>` (the braces keep one tenant's keys in one cluster
//! slot) and all expire: buckets once they would be full again, the month counter after its
//! month, the lease set shortly after its last lease. A concurrency slot is a lease in a
//! sorted set scored by its expiry; the gateway renews it while the request runs, so a gateway
//! that dies leaks its slots for at most one lease TTL.
//!
//! Redis unreachable (or slower than the timeout) fails closed: the request is refused with
//! 503 `limiter_unavailable` rather than admitted without limits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::oneshot;

use super::config::TenantPolicy;
use super::error::{GatewayError, LimitKind};
use super::limiter::current_period;
use super::limiter::{Hold, Limiter, Reservation};
use super::rate_limit::RateLimitHeaders;

const COMMON: &str = include_str!("lua/common.lua");

/// How a [`RedisLimiter`] connects and names its keys.
#[derive(Debug, Clone)]
pub struct RedisLimiterOptions {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// First part of every key, so several installs can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one script's answer (connecting included) before failing closed.
    pub timeout: Duration,
    /// How long a concurrency lease lives without renewal (renewed every third of it).
    pub lease_ttl: Duration,
}

impl RedisLimiterOptions {
    /// Options for `url` with the defaults: prefix `hearth`, 250 ms timeout, 30 s leases.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "hearth".into(),
            timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

struct Scripts {
    admit: Script,
    finish: Script,
    renew: Script,
}

/// A [`Limiter`] whose state lives in Redis, shared by every gateway pointed at it.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    options: Arc<RedisLimiterOptions>,
}

/// A limit for a script argument: `-1` when absent.
fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl RedisLimiter {
    /// A limiter for `options.url`. It connects lazily (and reconnects on its own), so a gateway
    /// starts while Redis is still coming up; until it answers, requests fail closed. Errors
    /// only on a malformed URL.
    pub fn new(options: RedisLimiterOptions) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(options.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let script = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Ok(Self {
            connection,
            scripts: Arc::new(Scripts {
                admit: script(include_str!("lua/admit.lua")),
                finish: script(include_str!("lua/finish.lua")),
                renew: script(include_str!("lua/renew.lua")),
            }),
            options: Arc::new(options),
        })
    }

    /// Checks that Redis answers (for a startup log line; admission does not need it).
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.options.timeout, ping.query_async::<String>(&mut connection)).await {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }

    fn key(&self, tenant: &str, what: &str) -> String {
        format!("{}:{{{tenant}}}:{what}", self.options.key_prefix)
    }

    async fn admit_tenant(&self, tenant: &TenantPolicy, tokens: u64) -> Result<Reservation, GatewayError> {
        let (period, month_left) = current_period();
        let limits = &tenant.limits;
        let reported = match &tenant.reported_usage {
            Some((reported_period, used)) if *reported_period == period => *used,
            _ => 0,
        };
        let lease = format!("{:032x}", rand::random::<u128>());
        let lease_ms = self.options.lease_ttl.as_millis().max(1) as u64;
        let tokens_key = self.key(&tenant.id, "tpm");
        let leases_key = self.key(&tenant.id, "leases");
        let month_key = self.key(&tenant.id, &format!("month:{period}"));
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(self.key(&tenant.id, "rpm"))
            .key(&tokens_key)
            .key(&leases_key)
            .key(&month_key)
            .arg(limit_arg(limits.requests_per_minute))
            .arg(limit_arg(limits.tokens_per_minute))
            .arg(limit_arg(limits.max_concurrent_requests.map(u64::from)))
            .arg(limit_arg(limits.tokens_per_month))
            .arg(tokens)
            .arg(reported)
            // The month counter outlives its month by a day, for late settlements.
            .arg(month_left.as_secs() + 86_400)
            .arg(&lease)
            .arg(lease_ms);
        let mut connection = self.connection.clone();
        let reply = tokio::time::timeout(
            self.options.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let reply = match reply {
            Ok(Ok(reply)) if reply.len() == 6 => reply,
            Ok(Ok(reply)) => {
                tracing::warn!(len = reply.len(), "unexpected answer from the Redis limiter");
                return Err(GatewayError::LimiterUnavailable);
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "Redis limiter failed; refusing (fail closed)");
                return Err(GatewayError::LimiterUnavailable);
            }
            Err(_) => {
                tracing::warn!("Redis limiter timed out; refusing (fail closed)");
                return Err(GatewayError::LimiterUnavailable);
            }
        };
        let bucket = |limit: Option<u64>, remaining: i64, reset: i64| {
            limit.map(|l| (l, u64::try_from(remaining).unwrap_or(0), millis(reset)))
        };
        let headers = RateLimitHeaders {
            requests: bucket(limits.requests_per_minute, reply[2], reply[3]),
            tokens: bucket(limits.tokens_per_minute, reply[4], reply[5]),
        };
        let retry_after = millis(reply[1]);
        let limited = |kind| GatewayError::RateLimited {
            kind,
            retry_after,
            headers: headers.clone(),
        };
        match reply[0] {
            0 => {}
            1 => return Err(limited(LimitKind::Concurrency)),
            2 => return Err(limited(LimitKind::Requests)),
            3 => return Err(limited(LimitKind::Tokens)),
            _ => {
                return Err(GatewayError::QuotaExhausted {
                    retry_after: month_left,
                });
            }
        }
        let (done, finished) = oneshot::channel();
        let lease = Lease {
            limiter: self.clone(),
            id: lease,
            tokens_per_minute: limits.tokens_per_minute,
            reserved: tokens,
            tokens_key,
            leases_key,
            month_key,
        };
        tokio::spawn(lease.keep(finished));
        let hold = RedisHold {
            used: Mutex::new(None),
            done: Some(done),
        };
        Ok(Reservation::new(tokens, headers, Box::new(hold)))
    }
}

impl Limiter for RedisLimiter {
    fn admit<'a>(
        &'a self,
        tenant: &'a TenantPolicy,
        tokens: u64,
    ) -> BoxFuture<'a, Result<Reservation, GatewayError>> {
        Box::pin(self.admit_tenant(tenant, tokens))
    }
}

/// A running request's lease, kept alive by a task until the request ends.
struct Lease {
    limiter: RedisLimiter,
    id: String,
    tokens_per_minute: Option<u64>,
    reserved: u64,
    tokens_key: String,
    leases_key: String,
    month_key: String,
}

impl Lease {
    /// Renews the lease until `finished` brings the settled usage (or `None` when it is
    /// unknown), then ends the request in Redis. If the gateway dies, this task dies with it
    /// and the lease expires on its own.
    async fn keep(self, mut finished: oneshot::Receiver<Option<u64>>) {
        let every = (self.limiter.options.lease_ttl / 3).max(Duration::from_millis(10));
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let used = loop {
            tokio::select! {
                used = &mut finished => break used.ok().flatten(),
                _ = renewals.tick() => self.renew().await,
            }
        };
        self.finish(used).await;
    }

    async fn renew(&self) {
        let options = &self.limiter.options;
        let mut invocation = self.limiter.scripts.renew.prepare_invoke();
        invocation
            .key(&self.leases_key)
            .arg(&self.id)
            .arg(options.lease_ttl.as_millis().max(1) as u64);
        let mut connection = self.limiter.connection.clone();
        let renewed = invocation.invoke_async::<i64>(&mut connection);
        match tokio::time::timeout(options.timeout, renewed).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "could not renew a concurrency lease"),
            Err(_) => tracing::warn!("renewing a concurrency lease timed out"),
        }
    }

    async fn finish(&self, used: Option<u64>) {
        let used = used.map_or(-1, |u| i64::try_from(u).unwrap_or(i64::MAX));
        let mut invocation = self.limiter.scripts.finish.prepare_invoke();
        invocation
            .key(&self.tokens_key)
            .key(&self.leases_key)
            .key(&self.month_key)
            .arg(limit_arg(self.tokens_per_minute))
            .arg(self.reserved)
            .arg(used)
            .arg(&self.id);
        let mut connection = self.limiter.connection.clone();
        let finished = invocation.invoke_async::<i64>(&mut connection);
        // The lease expires on its own; the reservation then stays charged in full.
        match tokio::time::timeout(self.limiter.options.timeout * 4, finished).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "could not settle a reservation in Redis"),
            Err(_) => tracing::warn!("settling a reservation in Redis timed out"),
        }
    }
}

/// The Redis limiter's side of a reservation: the settled usage, sent to the lease task on drop.
#[derive(Debug)]
struct RedisHold {
    used: Mutex<Option<u64>>,
    done: Option<oneshot::Sender<Option<u64>>>,
}

impl Hold for RedisHold {
    fn settle(&self, _reserved: u64, used: u64, _now: Instant) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = Some(used);
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        let used = *self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = self.done.take() {
            // The task is gone only when its runtime is; the lease then expires on its own.
            let _ = done.send(used);
        }
    }
}
