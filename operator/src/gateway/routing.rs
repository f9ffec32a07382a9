//! Choosing a replica: least outstanding requests, with prefix affinity (requests whose prompts
//! start alike prefer the same replica, to reuse its KV cache, unless it is clearly busier), and
//! passive health (a replica that fails before answering is ejected for a backoff that doubles
//! with consecutive failures).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// First ejection; doubles per consecutive failure.
pub const EJECT_BASE: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const EJECT_MAX: Duration = Duration::from_secs(30);
/// How many more in-flight requests the affine replica may have than the least loaded one
/// before affinity gives way.
pub const AFFINITY_SLACK: usize = 2;

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

/// Rendezvous score of a replica for an affinity key: the replica with the highest score owns
/// the key, and removing a replica only moves the keys it owned.
fn affinity_score(key: &[u8], url: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update([0])
        .chain_update(url.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Picks a replica for a request, skipping `exclude` (the one that just failed). Ejected
/// replicas are avoided; if every candidate is ejected, the least loaded one is still tried
/// rather than failing outright.
pub fn pick(
    replicas: &[Arc<Replica>],
    affinity_key: &[u8],
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
    let least = pool.iter().min_by_key(|r| r.in_flight())?;
    if !affinity_key.is_empty() {
        let owner = pool.iter().max_by_key(|r| affinity_score(affinity_key, &r.url))?;
        if owner.in_flight() <= least.in_flight() + AFFINITY_SLACK {
            return Some((*owner).clone());
        }
    }
    Some((*least).clone())
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

    fn replicas() -> Vec<Arc<Replica>> {
        ["http://a:1", "http://b:1", "http://c:1"]
            .iter()
            .map(|u| Replica::new((*u).to_string()))
            .collect()
    }

    #[test]
    fn least_outstanding_wins_without_affinity() {
        let replicas = replicas();
        let _busy = [replicas[0].start(), replicas[1].start()];
        let chosen = pick(&replicas, b"", None, Instant::now()).expect("one");
        assert_eq!(chosen.url, "http://c:1");
    }

    #[test]
    fn affinity_is_sticky_until_the_owner_is_busier_by_the_slack() {
        let replicas = replicas();
        let now = Instant::now();
        let owner = pick(&replicas, b"system prompt", None, now).expect("one");
        assert_eq!(
            pick(&replicas, b"system prompt", None, now).map(|r| r.url.clone()),
            Some(owner.url.clone())
        );
        let _load: Vec<InFlight> = (0..=AFFINITY_SLACK).map(|_| owner.start()).collect();
        assert_ne!(
            pick(&replicas, b"system prompt", None, now).map(|r| r.url.clone()),
            Some(owner.url.clone())
        );
    }

    #[test]
    fn failed_replicas_are_ejected_with_doubling_backoff_and_excluded() {
        let replicas = replicas();
        let now = Instant::now();
        assert_eq!(replicas[0].failed(now), EJECT_BASE);
        assert_eq!(replicas[0].failed(now), EJECT_BASE * 2);
        for _ in 0..20 {
            let chosen = pick(&replicas, b"", Some("http://b:1"), now).expect("one");
            assert_eq!(chosen.url, "http://c:1");
        }
        assert!(!replicas[0].ejected_at(now + EJECT_BASE * 2));
        replicas[0].succeeded();
        assert!(!replicas[0].ejected_at(now));
        let kept = reconcile(&replicas, &["http://c:1".to_string(), "http://d:1".to_string()]);
        assert!(Arc::ptr_eq(&kept[0], &replicas[2]));
    }
}
