//! The gateway's view of the world: one immutable [`Config`] snapshot (tiers, tenants with their
//! key hashes, models by `servedName` with their replicas), built from the CR types and swapped
//! atomically behind a [`ConfigHandle`]. Local mode builds it from a folder of YAML; cluster
//! reflectors can build the same snapshot from their stores and swap it in the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use hearth_crds::tier::TierLimits;
use hearth_crds::{InferenceModel, Tenant, Tier};

use crate::local::config::LocalConfig;
use crate::local::keys::LocalKey;

/// Limits in force for one tenant: the stricter of its tier's and its overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute (token bucket of this capacity, refilled continuously).
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute (reserved up front).
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent_requests: Option<u32>,
    /// Cap on a request's `max_tokens`, and its reservation when it sets none.
    pub max_tokens_per_request: Option<u32>,
    /// Prompt plus completion tokens per calendar month (UTC).
    pub tokens_per_month: Option<u64>,
}

/// The stricter (smaller) of two optional limits; absent means unlimited.
fn stricter<T: Ord + Copy>(tier: Option<T>, tenant: Option<T>) -> Option<T> {
    match (tier, tenant) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Limits {
    /// Combines a tier's limits and quota with a tenant's overrides; an override can only
    /// tighten a limit, never loosen it.
    pub fn effective(tier: &Tier, tenant: &Tenant) -> Self {
        let base = &tier.spec.limits;
        let default_limits = TierLimits::default();
        let overrides = tenant.spec.overrides.as_ref();
        let over = overrides.map_or(&default_limits, |o| &o.limits);
        let tier_month = tier.spec.quota.as_ref().and_then(|q| q.tokens_per_month);
        let tenant_month = overrides
            .and_then(|o| o.quota.as_ref())
            .and_then(|q| q.tokens_per_month);
        Self {
            requests_per_minute: stricter(base.requests_per_minute, over.requests_per_minute),
            tokens_per_minute: stricter(base.tokens_per_minute, over.tokens_per_minute),
            max_concurrent_requests: stricter(base.max_concurrent_requests, over.max_concurrent_requests),
            max_tokens_per_request: stricter(base.max_tokens_per_request, over.max_tokens_per_request),
            tokens_per_month: stricter(tier_month, tenant_month),
        }
    }
}

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

/// A served model: who may call it and where its replicas are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// The OpenAI model id.
    pub served_name: String,
    /// Tiers allowed to call it; empty means every tier.
    pub tiers: BTreeSet<String>,
    /// Base URLs (`http://host:port`) of ready replicas.
    pub replicas: Vec<String>,
    /// Requests one replica takes at once before the gateway queues (the engine's batch size).
    pub max_in_flight_per_replica: u32,
    /// Context window, reserved as completion tokens when neither the request nor the tier
    /// bounds `max_tokens`.
    pub max_context_tokens: u32,
}

impl ModelRoute {
    /// Whether a tier may call this model (the model's `tiers` and the tier's `models` both
    /// allow it; empty lists allow everything).
    pub fn allows(&self, tier: &TierPolicy) -> bool {
        (self.tiers.is_empty() || self.tiers.contains(&*tier.name))
            && (tier.models.is_empty() || tier.models.contains(&self.served_name))
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

/// Parses `sha256:<64 hex>` into bytes; anything else is not a usable hash.
pub fn parse_key_hash(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

fn tenant_id(tenant: &Tenant) -> String {
    format!(
        "{}/{}",
        tenant.metadata.namespace.as_deref().unwrap_or("default"),
        tenant.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Config {
    /// Builds a snapshot from the CRs. Key hashes come from `Tenant.status.apiKeys` (what the
    /// operator publishes) plus `extra_keys` (`(tenant id, key name, hash)`, e.g. local key
    /// files); revocation follows `spec.apiKeys[].revoked` or the status. Tenants whose tier
    /// does not exist are left out (their keys then fail as unknown). `backends` maps a served
    /// name to its replicas' base URLs.
    pub fn build(
        tiers: &[Tier],
        tenants: &[Tenant],
        models: &[InferenceModel],
        extra_keys: &[(String, String, String)],
        backends: &BTreeMap<String, Vec<String>>,
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
                budget_blocked: crate::billing::usage_status::is_blocked(tenant),
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
        // Several InferenceModels may share a served name: the name is open to every tier as
        // soon as one of them is; otherwise the allowed tiers add up.
        let mut open_to_all = BTreeSet::new();
        for model in models {
            let spec = &model.spec;
            let route = config
                .models
                .entry(spec.served_name.clone())
                .or_insert_with(|| ModelRoute {
                    served_name: spec.served_name.clone(),
                    tiers: BTreeSet::new(),
                    replicas: backends.get(&spec.served_name).cloned().unwrap_or_default(),
                    max_in_flight_per_replica: spec.engine.max_batch_size.max(1),
                    max_context_tokens: spec.engine.max_context_tokens,
                });
            if spec.tiers.is_empty() {
                open_to_all.insert(spec.served_name.clone());
            }
            route.tiers.extend(spec.tiers.iter().cloned());
        }
        for name in open_to_all {
            if let Some(route) = config.models.get_mut(&name) {
                route.tiers.clear();
            }
        }
        config
    }

    /// Builds a snapshot from local mode's loaded folder, its key files and static backends.
    pub fn from_local(
        local: &LocalConfig,
        keys: &[LocalKey],
        backends: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        let tiers: Vec<Tier> = local.tiers.iter().map(|(_, t)| t.clone()).collect();
        let tenants: Vec<Tenant> = local.tenants.iter().map(|(_, t)| t.clone()).collect();
        let models: Vec<InferenceModel> = local.models.iter().map(|(_, m)| m.clone()).collect();
        let extra: Vec<(String, String, String)> = keys
            .iter()
            .map(|k| (k.tenant.clone(), k.name.clone(), k.hash.clone()))
            .collect();
        Self::build(&tiers, &tenants, &models, &extra, backends)
    }
}

/// The current [`Config`], swapped atomically: readers take a cheap `Arc` clone and keep a
/// consistent snapshot for the whole request, writers replace it in one step.
#[derive(Debug, Clone, Default)]
pub struct ConfigHandle {
    current: Arc<RwLock<Arc<Config>>>,
}

impl ConfigHandle {
    /// A handle holding `config`.
    pub fn new(config: Config) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the snapshot; requests already admitted keep the one they started with.
    pub fn store(&self, config: Config) {
        let next = Arc::new(config);
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}
