//! Choosing a replica. [`pick`] keeps the passive health rules every router shares (the replica
//! that just failed is skipped; a replica that fails before answering is ejected for a backoff
//! that doubles with consecutive failures) and hands the remaining candidates to a [`Router`],
//! which chooses by its own algorithm. A new algorithm is one file in this folder implementing
//! [`Router`], plus its line in [`ROUTERS`].

mod least_outstanding;
mod prefix_affinity;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use least_outstanding::LeastOutstanding;
pub use prefix_affinity::{AFFINITY_SLACK, PrefixAffinity};

/// What a router may look at to choose a replica for one request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// First bytes of the prompt (empty when the request has none): requests that share it
    /// share a prompt prefix, so a replica that served one holds its KV cache.
    pub affinity_key: &'a [u8],
}

/// A replica-choosing algorithm: given the healthy candidates (never empty) of one served
/// model, which one takes the request.
pub trait Router: Send + Sync + fmt::Debug {
    /// Chooses one of `candidates`; `None` only when it cannot choose at all.
    fn choose(&self, candidates: &[&Arc<Replica>], request: &RouteRequest<'_>) -> Option<Arc<Replica>>;
}

/// Makes a router with its default settings.
pub type MakeRouter = fn() -> Arc<dyn Router>;

/// The routers `--router` can name, by name; the first is the default.
pub const ROUTERS: &[(&str, MakeRouter)] = &[
    ("prefix-affinity", || Arc::new(PrefixAffinity::default())),
    ("least-outstanding", || Arc::new(LeastOutstanding)),
];

/// The router `name` stands for in [`ROUTERS`].
pub fn router_named(name: &str) -> Result<Arc<dyn Router>, String> {
    ROUTERS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, make)| make())
        .ok_or_else(|| {
            let known: Vec<&str> = ROUTERS.iter().map(|(known, _)| *known).collect();
            format!("unknown router {name:?}; one of {}", known.join(", "))
        })
}

/// The default router (the first of [`ROUTERS`]).
pub fn default_router() -> Arc<dyn Router> {
    (ROUTERS[0].1)()
}

/// First ejection; doubles per consecutive failure.
pub const EJECT_BASE: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const EJECT_MAX: Duration = Duration::from_secs(30);
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
}

/// One replica of a model.
#[derive(Debug)]
pub struct Replica {
    /// Base URL, `http://host:port`.
    pub url: String,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

impl Replica {
    /// A healthy idle replica.
    pub fn new(url: String) -> Arc<Self> {
        Arc::new(Self {
            url,
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        })
    }

    /// Requests outstanding on this replica.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn ejected_at(&self, now: Instant) -> bool {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.ejected_until.is_some_and(|until| now < until)
    }

    /// Records a failure before the first byte and ejects the replica for the backoff.
    pub fn failed(&self, now: Instant) -> Duration {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        let exponent = health.consecutive_failures.saturating_sub(1).min(16);
        let backoff = EJECT_BASE.saturating_mul(1 << exponent).min(EJECT_MAX);
        health.ejected_until = Some(now + backoff);
        backoff
    }

    /// Records an answer: the replica is healthy again.
    pub fn succeeded(&self) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.consecutive_failures = 0;
        health.ejected_until = None;
    }

    /// Counts a request on this replica until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            replica: self.clone(),
        }
    }
}

/// An outstanding request on a replica.
#[derive(Debug)]
pub struct InFlight {
    /// The replica.
    pub replica: Arc<Replica>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks a replica for a request with `router`, skipping `exclude` (the one that just failed).
/// Ejected replicas are avoided; if every candidate is ejected, they are all offered to the
/// router rather than failing outright.
pub fn pick(
    router: &dyn Router,
    replicas: &[Arc<Replica>],
    request: &RouteRequest<'_>,
    exclude: Option<&str>,
    now: Instant,
) -> Option<Arc<Replica>> {
    let candidates: Vec<&Arc<Replica>> = replicas
        .iter()
        .filter(|r| Some(r.url.as_str()) != exclude)
        .collect();
    let healthy: Vec<&Arc<Replica>> = candidates
        .iter()
        .copied()
        .filter(|r| !r.ejected_at(now))
        .collect();
    let pool = if healthy.is_empty() { candidates } else { healthy };
    if pool.is_empty() {
        return None;
    }
    router.choose(&pool, request)
}

/// Keeps the replica objects (and their counters) of a model across Config swaps: replicas
/// with the same URL are carried over, new ones start fresh.
pub fn reconcile(existing: &[Arc<Replica>], urls: &[String]) -> Vec<Arc<Replica>> {
    urls.iter()
        .map(|url| {
            existing
                .iter()
                .find(|r| r.url == *url)
                .cloned()
                .unwrap_or_else(|| Replica::new(url.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn replicas() -> Vec<Arc<Replica>> {
        ["http://a:1", "http://b:1", "http://c:1"]
            .iter()
            .map(|u| Replica::new((*u).to_string()))
            .collect()
    }

    fn request(key: &[u8]) -> RouteRequest<'_> {
        RouteRequest { affinity_key: key }
    }

    #[test]
    fn failed_replicas_are_ejected_with_doubling_backoff_and_excluded() {
        let replicas = replicas();
        let now = Instant::now();
        assert_eq!(replicas[0].failed(now), EJECT_BASE);
        assert_eq!(replicas[0].failed(now), EJECT_BASE * 2);
        for _ in 0..20 {
            let chosen = pick(
                &LeastOutstanding,
                &replicas,
                &request(b""),
                Some("http://b:1"),
                now,
            )
            .expect("one");
            assert_eq!(chosen.url, "http://c:1");
        }
        assert!(!replicas[0].ejected_at(now + EJECT_BASE * 2));
        replicas[0].succeeded();
        assert!(!replicas[0].ejected_at(now));
        let kept = reconcile(&replicas, &["http://c:1".to_string(), "http://d:1".to_string()]);
        assert!(Arc::ptr_eq(&kept[0], &replicas[2]));
    }

    #[test]
    fn every_registered_router_is_named_and_unknown_names_are_refused() {
        for (name, _) in ROUTERS {
            assert!(router_named(name).is_ok(), "{name}");
        }
        let error = router_named("random").expect_err("unknown");
        assert!(error.contains("prefix-affinity"), "{error}");
    }
}
