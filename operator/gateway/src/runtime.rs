//! Live routing state of each served name, kept across Config swaps: the replica objects of each
//! variant (with their in-flight counters and health), the name's queue, and its canary split.
//! A new snapshot only replaces what changed: replicas with the same URL keep their counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::canary::Split;
use super::config::{ModelRoute, Variant};
use super::router::{Replica, reconcile};
use super::scheduler::{ModelScheduler, QueueLimits};

/// The replicas of one variant (InferenceModel) as last reconciled.
struct VariantReplicas {
    id: String,
    urls: Vec<String>,
    replicas: Arc<Vec<Arc<Replica>>>,
}

/// One served name's live state.
struct ModelRuntime {
    variants: Vec<VariantReplicas>,
    scheduler: Arc<ModelScheduler>,
    split: Split,
}

/// Where a request goes: the chosen variant's replicas, and a cold variant the split chose
/// first (to be woken in the background while a warm one serves this request).
pub struct Choice {
    /// Replicas of the variant serving the request.
    pub replicas: Arc<Vec<Arc<Replica>>>,
    /// `namespace/name` of the serving InferenceModel.
    pub variant: String,
    /// A variant at zero the weights picked first, if any.
    pub cold: Option<Variant>,
}

/// Live state of every served name.
pub struct Runtimes {
    models: Mutex<HashMap<String, ModelRuntime>>,
    queue: QueueLimits,
}

impl Runtimes {
    /// No served names yet; each gets a queue bounded by `queue` on first use.
    pub fn new(queue: QueueLimits) -> Self {
        Self {
            models: Mutex::new(HashMap::new()),
            queue,
        }
    }

    /// Brings a served name's replicas and queue capacity in line with `route` and hands its
    /// state to `f`.
    fn with<T>(&self, route: &ModelRoute, f: impl FnOnce(&mut ModelRuntime) -> T) -> T {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = route.replica_count() * route.max_in_flight_per_replica as usize;
        let runtime = models
            .entry(route.served_name.clone())
            .or_insert_with(|| ModelRuntime {
                variants: Vec::new(),
                scheduler: ModelScheduler::new(capacity, self.queue),
                split: Split::default(),
            });
        let unchanged = runtime.variants.len() == route.variants.len()
            && runtime
                .variants
                .iter()
                .zip(&route.variants)
                .all(|(live, wanted)| live.id == wanted.id && live.urls == wanted.replicas);
        if !unchanged {
            let previous: Vec<Arc<Replica>> = runtime
                .variants
                .iter()
                .flat_map(|v| v.replicas.iter().cloned())
                .collect();
            runtime.variants = route
                .variants
                .iter()
                .map(|v| VariantReplicas {
                    id: v.id.clone(),
                    urls: v.replicas.clone(),
                    replicas: Arc::new(reconcile(&previous, &v.replicas)),
                })
                .collect();
            runtime.scheduler.set_capacity(capacity);
        }
        f(runtime)
    }

    /// The served name's queue.
    pub fn scheduler(&self, route: &ModelRoute) -> Arc<ModelScheduler> {
        self.with(route, |runtime| runtime.scheduler.clone())
    }

    /// Chooses the variant for one request of `tier` by weight, among the variants that serve
    /// the tier. A variant with no ready replica is never served from; when the weights pick
    /// one, it is reported as `cold` and the choice is made again among the variants that have
    /// replicas. `None` when no such variant has any.
    pub fn choose(&self, route: &ModelRoute, tier: &str) -> Option<Choice> {
        self.with(route, |runtime| {
            let first = runtime.split.pick(&route.variants, &|v| v.serves(tier))?;
            let warm = |v: &Variant| v.serves(tier) && !v.replicas.is_empty();
            let (chosen, cold) = if warm(&route.variants[first]) {
                (first, None)
            } else {
                let chosen = runtime.split.pick(&route.variants, &warm)?;
                (chosen, Some(route.variants[first].clone()))
            };
            let live = runtime.variants.get(chosen)?;
            Some(Choice {
                replicas: live.replicas.clone(),
                variant: live.id.clone(),
                cold,
            })
        })
    }

    /// Visits each served name's replicas and queue (for metrics).
    pub fn for_each(&self, mut f: impl FnMut(&str, &[Arc<Replica>], &ModelScheduler)) {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        for (name, runtime) in models.iter() {
            let replicas: Vec<Arc<Replica>> = runtime
                .variants
                .iter()
                .flat_map(|v| v.replicas.iter().cloned())
                .collect();
            f(name, &replicas, &runtime.scheduler);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn route(variants: Vec<Variant>) -> ModelRoute {
        ModelRoute {
            served_name: "m".into(),
            variants,
            max_in_flight_per_replica: 4,
            max_context_tokens: 1024,
        }
    }

    fn variant(id: &str, weight: u32, urls: &[&str]) -> Variant {
        Variant {
            id: id.into(),
            weight,
            replicas: urls.iter().map(|u| (*u).to_string()).collect(),
            scale: None,
            tiers: BTreeSet::new(),
        }
    }

    #[test]
    fn a_cold_pick_is_reported_and_served_by_a_warm_variant() {
        let runtimes = Runtimes::new(QueueLimits::default());
        let route = route(vec![
            variant("n/canary", 1, &[]),
            variant("n/stable", 1, &["http://s:1"]),
        ]);
        let choices: Vec<Choice> = (0..4).filter_map(|_| runtimes.choose(&route, "gold")).collect();
        assert_eq!(choices.len(), 4);
        assert!(choices.iter().all(|c| c.variant == "n/stable"));
        assert!(
            choices
                .iter()
                .any(|c| c.cold.as_ref().is_some_and(|v| v.id == "n/canary"))
        );
        assert!(
            runtimes
                .choose(&self::route(vec![variant("n/a", 1, &[])]), "gold")
                .is_none()
        );
    }

    #[test]
    fn replicas_keep_their_counters_across_swaps() {
        let runtimes = Runtimes::new(QueueLimits::default());
        let before = route(vec![variant("n/a", 1, &["http://a:1"])]);
        let first = runtimes.choose(&before, "gold").expect("choice").replicas[0].clone();
        let _busy = first.start();
        let after = route(vec![variant("n/a", 1, &["http://a:1", "http://b:1"])]);
        let kept = runtimes.choose(&after, "gold").expect("choice");
        assert_eq!(kept.replicas.len(), 2);
        assert_eq!(kept.replicas[0].in_flight(), 1);
    }

    #[test]
    fn a_variant_serves_only_its_own_tiers() {
        let runtimes = Runtimes::new(QueueLimits::default());
        let mut premium = variant("n/premium", 1, &["http://p:1"]);
        premium.tiers = BTreeSet::from(["gold".to_string()]);
        let route = route(vec![premium, variant("n/open", 1, &["http://o:1"])]);
        let free: Vec<String> = (0..4)
            .filter_map(|_| runtimes.choose(&route, "free"))
            .map(|c| c.variant)
            .collect();
        assert_eq!(
            free,
            vec!["n/open"; 4],
            "the open variant does not widen the premium one"
        );
        let gold: Vec<String> = (0..4)
            .filter_map(|_| runtimes.choose(&route, "gold"))
            .map(|c| c.variant)
            .collect();
        assert!(gold.contains(&"n/premium".to_string()) && gold.contains(&"n/open".to_string()));
    }
}
