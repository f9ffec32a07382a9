//! The gateway's view of the world: one immutable [`Config`] snapshot (tiers, tenants with their
//! key hashes, models by `servedName` with their replicas), built from the CR types and swapped
//! atomically behind a [`ConfigHandle`]. Local mode builds it from a folder of YAML
//! (the `hearth-local` crate); in a cluster, reflector stores build the same snapshot
//! (`cluster.rs`) and swap it in the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearth_crds::inference_model::AutoscalingMode;
use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_tenancy::keys::parse_key_hash;
use hearth_tenancy::limits::Limits;
use hearth_tenancy::object_id;
use tokio::sync::watch;

/// A tier as the scheduler and the model allow-list need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPolicy {
    /// Tier name.
    pub name: Arc<str>,
    /// Strict priority band (higher first).
    pub priority: i32,
    /// Fair-share weight inside the band (at least 1).
    pub weight: u32,
    /// Served model names this tier may call; empty means all.
    pub models: Vec<String>,
}

/// A tenant with everything admission needs, resolved against its tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `namespace/name`; sent to engines, never logged in clear.
    pub id: Arc<str>,
    /// The tenant's tier.
    pub tier: Arc<TierPolicy>,
    /// Limits in force.
    pub limits: Limits,
    /// A suspended tenant is refused with 403.
    pub suspended: bool,
    /// Set when the billing aggregator reports the budget crossed and the action is `Block`.
    pub budget_blocked: bool,
    /// Tokens the billing aggregator has already counted in a period (`YYYY-MM`), so a
    /// restarted gateway does not hand out the month's quota twice.
    pub reported_usage: Option<(String, u64)>,
}

/// One known API key hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Tenant id (`namespace/name`).
    pub tenant: Arc<str>,
    /// A revoked key is refused with 401.
    pub revoked: bool,
}

/// Where the gateway may ask for a replica of a model at zero: the Deployment the operator
/// builds for the InferenceModel (same namespace, named by
/// [`hearth_tenancy::child_name`]) whose `scale` it patches, and the count it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScaleTarget {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Name of the Deployment (the InferenceModel's name).
    pub deployment: String,
    /// Replicas to ask for: `replicas.min`, at least 1.
    pub replicas: i32,
    /// Whether the operator reports no pods at all (`status.replicas == 0`): only then does
    /// the gateway patch the scale, so it never shrinks a Deployment whose pods are starting.
    pub at_zero: bool,
}

/// One InferenceModel behind a served name: its share of the traffic and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `namespace/name` of the InferenceModel.
    pub id: String,
    /// Traffic weight against the other variants of the served name (`spec.weight`).
    pub weight: u32,
    /// Base URLs (`http://host:port`) of ready replicas.
    pub replicas: Vec<String>,
    /// Set when the gateway owns the replica count (`autoscaling.mode: gateway`) and so may
    /// wake the model from zero.
    pub scale: Option<ScaleTarget>,
    /// Tiers this variant serves (its `spec.tiers`); empty means every tier.
    pub tiers: BTreeSet<String>,
}

impl Variant {
    /// Whether this variant may serve a request of `tier`.
    pub fn serves(&self, tier: &str) -> bool {
        self.tiers.is_empty() || self.tiers.contains(tier)
    }
}

/// A served model: who may call it and its variants (one per InferenceModel sharing the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// The OpenAI model id.
    pub served_name: String,
    /// The InferenceModels serving this name, in `namespace/name` order.
    pub variants: Vec<Variant>,
    /// Requests one replica takes at once before the gateway queues (the engine's batch size).
    pub max_in_flight_per_replica: u32,
    /// Context window, reserved as completion tokens when neither the request nor the tier
    /// bounds `max_tokens`.
    pub max_context_tokens: u32,
}

impl ModelRoute {
    /// Whether a tier may call this model: the tier's `models` allow it (empty allows
    /// everything) and at least one variant serves the tier.
    pub fn allows(&self, tier: &TierPolicy) -> bool {
        (tier.models.is_empty() || tier.models.contains(&self.served_name))
            && self.variants.iter().any(|variant| variant.serves(&tier.name))
    }

    /// Ready replicas over every variant.
    pub fn replica_count(&self) -> usize {
        self.variants.iter().map(|v| v.replicas.len()).sum()
    }
}

/// An immutable snapshot of everything the gateway serves by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Tenants by id.
    pub tenants: BTreeMap<String, Arc<TenantPolicy>>,
    /// Every key hash, revoked ones included (auth compares against all of them).
    pub keys: Vec<KeyEntry>,
    /// Models by served name.
    pub models: BTreeMap<String, ModelRoute>,
}

fn tenant_id(tenant: &Tenant) -> String {
    object_id(&tenant.metadata)
}

impl Config {
    /// Builds a snapshot from the CRs. Key hashes come from `Tenant.status.apiKeys` (what the
    /// operator publishes) plus `extra_keys` (`(tenant id, key name, hash)`, e.g. local key
    /// files); revocation follows `spec.apiKeys[].revoked` or the status. Tenants whose tier
    /// does not exist are left out (their keys then fail as unknown). `replicas_of` gives an
    /// InferenceModel's ready replicas as base URLs (`http://host:port`).
    pub fn build(
        tiers: &[Tier],
        tenants: &[Tenant],
        models: &[InferenceModel],
        extra_keys: &[(String, String, String)],
        replicas_of: &dyn Fn(&InferenceModel) -> Vec<String>,
    ) -> Self {
        let tier_policies: BTreeMap<String, (Arc<TierPolicy>, &Tier)> = tiers
            .iter()
            .filter_map(|tier| {
                let name = tier.metadata.name.clone()?;
                let policy = TierPolicy {
                    name: Arc::from(name.as_str()),
                    priority: tier.spec.priority,
                    weight: tier.spec.weight.max(1),
                    models: tier.spec.models.clone(),
                };
                Some((name, (Arc::new(policy), tier)))
            })
            .collect();
        let mut config = Config::default();
        for tenant in tenants {
            let Some((tier_policy, tier)) = tier_policies.get(&tenant.spec.tier_ref) else {
                continue;
            };
            let id = tenant_id(tenant);
            let id_arc: Arc<str> = Arc::from(id.as_str());
            let reported_usage = tenant.status.as_ref().and_then(|s| s.usage.as_ref()).map(|u| {
                (
                    u.period.clone(),
                    u.prompt_tokens.saturating_add(u.completion_tokens),
                )
            });
            let policy = TenantPolicy {
                id: id_arc.clone(),
                tier: tier_policy.clone(),
                limits: Limits::effective(tier, tenant),
                suspended: tenant.spec.suspended,
                budget_blocked: hearth_tenancy::budget::is_blocked(tenant),
                reported_usage,
            };
            let spec_revoked = |name: &str| tenant.spec.api_keys.iter().any(|k| k.name == name && k.revoked);
            let published = tenant.status.iter().flat_map(|s| s.api_keys.iter());
            for key in published {
                if let Some(hash) = parse_key_hash(&key.hash) {
                    let revoked = key.revoked || spec_revoked(&key.name);
                    config.keys.push(KeyEntry {
                        hash,
                        tenant: id_arc.clone(),
                        revoked,
                    });
                }
            }
            for (_, name, hash) in extra_keys.iter().filter(|(owner, _, _)| *owner == id) {
                if let Some(hash) = parse_key_hash(hash) {
                    let revoked = spec_revoked(name);
                    config.keys.push(KeyEntry {
                        hash,
                        tenant: id_arc.clone(),
                        revoked,
                    });
                }
            }
            config.tenants.insert(id, Arc::new(policy));
        }
        config.models = model_routes(models, replicas_of);
        config
    }
}

/// The scale target of a model whose replica count the gateway owns.
fn scale_target(model: &InferenceModel) -> Option<ScaleTarget> {
    if model.spec.autoscaling.mode != AutoscalingMode::Gateway {
        return None;
    }
    let at_zero = model.status.as_ref().is_some_and(|s| s.replicas == 0);
    Some(ScaleTarget {
        namespace: model.metadata.namespace.clone()?,
        deployment: hearth_tenancy::child_name(model)?.to_string(),
        replicas: i32::try_from(model.spec.replicas.min.max(1)).unwrap_or(1),
        at_zero,
    })
}

/// Groups InferenceModels by served name, one [`Variant`] each, from the namespace that holds
/// the name only (see [`hearth_tenancy::served_names`]); each variant serves its own `tiers`,
/// so a variant can never open another one to more tiers.
fn model_routes(
    models: &[InferenceModel],
    replicas_of: &dyn Fn(&InferenceModel) -> Vec<String>,
) -> BTreeMap<String, ModelRoute> {
    let holders = hearth_tenancy::served_names::holders(models);
    let mut routes: BTreeMap<String, ModelRoute> = BTreeMap::new();
    let mut sorted: Vec<&InferenceModel> = models
        .iter()
        .filter(|m| holders.get(&m.spec.served_name).is_some_and(|h| h.admits(m)))
        .collect();
    sorted.sort_by_key(|m| object_id(&m.metadata));
    for model in sorted {
        let spec = &model.spec;
        let route = routes
            .entry(spec.served_name.clone())
            .or_insert_with(|| ModelRoute {
                served_name: spec.served_name.clone(),
                variants: Vec::new(),
                max_in_flight_per_replica: spec.engine.max_batch_size.max(1),
                max_context_tokens: spec.engine.max_context_tokens,
            });
        route.variants.push(Variant {
            id: object_id(&model.metadata),
            weight: spec.weight,
            replicas: replicas_of(model),
            scale: scale_target(model),
            tiers: spec.tiers.iter().cloned().collect(),
        });
    }
    routes
}

/// The current [`Config`], swapped atomically: readers take a cheap `Arc` clone and keep a
/// consistent snapshot for the whole request, writers replace it in one step, and waiters (a
/// request for a model at zero) hear of every swap.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    current: Arc<watch::Sender<Arc<Config>>>,
}

impl Default for ConfigHandle {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl ConfigHandle {
    /// A handle holding `config`.
    pub fn new(config: Config) -> Self {
        Self {
            current: Arc::new(watch::Sender::new(Arc::new(config))),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    /// Replaces the snapshot; requests already admitted keep the one they started with.
    pub fn store(&self, config: Config) {
        self.current.send_replace(Arc::new(config));
    }

    /// A receiver that wakes on every later [`Self::store`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(namespace: &str, name: &str, created: i64, tiers: &[&str]) -> InferenceModel {
        let created = k8s_openapi::jiff::Timestamp::from_second(created)
            .expect("time")
            .to_string();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"servedName": "chat", "tiers": tiers, "source": {"uri": "hf://org/m"}},
        }))
        .expect("model")
    }

    #[test]
    fn a_served_name_is_served_from_its_holder_s_namespace_only() {
        let models = [
            model("team-a", "chat", 100, &["gold"]),
            model("team-a", "chat-canary", 300, &["gold"]),
            // Newer, in another namespace, open to every tier: neither joins nor widens.
            model("intruder", "chat", 200, &[]),
        ];
        let routes = model_routes(&models, &|_| vec!["http://10.0.0.1:8001".into()]);
        let ids: Vec<&str> = routes["chat"].variants.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["team-a/chat", "team-a/chat-canary"]);
        let tier = |name: &str| TierPolicy {
            name: name.into(),
            priority: 0,
            weight: 1,
            models: Vec::new(),
        };
        assert!(routes["chat"].allows(&tier("gold")));
        assert!(
            !routes["chat"].allows(&tier("free")),
            "tiers: [] elsewhere opened it"
        );
    }
}
