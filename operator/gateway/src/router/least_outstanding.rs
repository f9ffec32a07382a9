//! The replica with the fewest requests outstanding takes the next one.

use std::sync::Arc;

use super::{Replica, RouteRequest, Router};

/// Least outstanding requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastOutstanding;

impl Router for LeastOutstanding {
    fn choose(&self, candidates: &[&Arc<Replica>], _request: &RouteRequest<'_>) -> Option<Arc<Replica>> {
        candidates
            .iter()
            .min_by_key(|r| r.in_flight())
            .map(|r| (*r).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::replicas;

    #[test]
    fn the_least_loaded_replica_wins() {
        let replicas = replicas();
        let _busy = [replicas[0].start(), replicas[1].start()];
        let candidates: Vec<&Arc<Replica>> = replicas.iter().collect();
        let request = RouteRequest {
            affinity_key: b"ignored",
        };
        let chosen = LeastOutstanding.choose(&candidates, &request).expect("one");
        assert_eq!(chosen.url, "http://c:1");
    }
}
