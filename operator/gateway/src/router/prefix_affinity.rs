//! Prefix affinity: requests whose prompts start alike go to the same replica, to reuse its KV
//! cache of that prefix, unless it is clearly busier than the least loaded one. The owner of a
//! prefix is chosen by rendezvous hashing, so removing a replica moves only the prefixes it owned.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{LeastOutstanding, Replica, RouteRequest, Router};

/// How many more in-flight requests the affine replica may have than the least loaded one
/// before affinity gives way.
pub const AFFINITY_SLACK: usize = 2;

/// Prefix affinity over least outstanding requests.
#[derive(Debug, Clone, Copy)]
pub struct PrefixAffinity {
    /// In-flight requests the owner may have beyond the least loaded replica.
    pub slack: usize,
}

impl Default for PrefixAffinity {
    fn default() -> Self {
        Self {
            slack: AFFINITY_SLACK,
        }
    }
}

/// Rendezvous score of a replica for an affinity key: the replica with the highest score owns
/// the key.
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

impl Router for PrefixAffinity {
    fn choose(&self, candidates: &[&Arc<Replica>], request: &RouteRequest<'_>) -> Option<Arc<Replica>> {
        let least = LeastOutstanding.choose(candidates, request)?;
        if request.affinity_key.is_empty() {
            return Some(least);
        }
        let owner = candidates
            .iter()
            .max_by_key(|r| affinity_score(request.affinity_key, &r.url))?;
        if owner.in_flight() <= least.in_flight() + self.slack {
            return Some((*owner).clone());
        }
        Some(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::replicas;

    #[test]
    fn affinity_is_sticky_until_the_owner_is_busier_by_the_slack() {
        let replicas = replicas();
        let candidates: Vec<&Arc<Replica>> = replicas.iter().collect();
        let request = RouteRequest {
            affinity_key: b"system prompt",
        };
        let router = PrefixAffinity::default();
        let owner = router.choose(&candidates, &request).expect("one");
        assert_eq!(
            router.choose(&candidates, &request).map(|r| r.url.clone()),
            Some(owner.url.clone())
        );
        let _load: Vec<_> = (0..=AFFINITY_SLACK).map(|_| owner.start()).collect();
        assert_ne!(
            router.choose(&candidates, &request).map(|r| r.url.clone()),
            Some(owner.url.clone())
        );
    }

    #[test]
    fn without_a_prompt_prefix_the_least_loaded_replica_wins() {
        let replicas = replicas();
        let _busy = [replicas[0].start(), replicas[1].start()];
        let candidates: Vec<&Arc<Replica>> = replicas.iter().collect();
        let chosen = PrefixAffinity::default()
            .choose(&candidates, &RouteRequest { affinity_key: b"" })
            .expect("one");
        assert_eq!(chosen.url, "http://c:1");
    }
}
