//! Tenant status: key hashes and the `TierResolved`, `KeysReady` and `Ready` conditions.

use hearth_crds::conditions::{self, KEYS_READY, READY, TIER_RESOLVED, reason};
use hearth_crds::constants::FIELD_MANAGER;
use hearth_crds::tenant::{ApiKey, ApiKeyStatus, TenantStatus};
use hearth_crds::validation::SpecError;
use hearth_crds::{Tenant, Tier};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;

use hearth_kube::error::{Error, Result};
use hearth_tenancy::keys::fingerprint;

/// Condition types this controller writes.
const OWNED_CONDITIONS: [&str; 3] = [READY, TIER_RESOLVED, KEYS_READY];

/// One key as the reconcile found it.
pub struct KeyState {
    /// The spec entry.
    pub spec: ApiKey,
    /// The Secret holding it.
    pub secret_name: String,
    /// `sha256:<hex>` when the Secret holds a key.
    pub hash: Option<String>,
}

/// Status for a spec that failed validation (usage is kept; it belongs to billing).
pub fn invalid_status(tenant: &Tenant, errors: &[SpecError], now: Time) -> TenantStatus {
    let previous = tenant.status.clone().unwrap_or_default();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    TenantStatus {
        conditions: vec![conditions::condition(
            &previous.conditions,
            READY,
            false,
            reason::INVALID_SPEC,
            message,
            tenant.metadata.generation,
            now,
        )],
        observed_generation: tenant.metadata.generation,
        usage: previous.usage,
        api_keys: Vec::new(),
    }
}

/// Computes the status from the Tier lookup and the keys.
pub fn compute_status(tenant: &Tenant, tier: Option<&Tier>, keys: &[KeyState], now: Time) -> TenantStatus {
    let previous = tenant.status.clone().unwrap_or_default();
    let old = previous.conditions.as_slice();
    let generation = tenant.metadata.generation;
    let condition = |type_: &str, status: bool, why: &str, message: String| {
        conditions::condition(old, type_, status, why, message, generation, now.clone())
    };
    let tier_ref = &tenant.spec.tier_ref;
    let tier_condition = match tier {
        Some(_) => condition(
            TIER_RESOLVED,
            true,
            reason::TIER_FOUND,
            format!("Tier {tier_ref} found"),
        ),
        None => condition(
            TIER_RESOLVED,
            false,
            reason::TIER_NOT_FOUND,
            format!("Tier {tier_ref} does not exist"),
        ),
    };
    let missing: Vec<&str> = keys
        .iter()
        .filter(|k| k.hash.is_none())
        .map(|k| k.secret_name.as_str())
        .collect();
    let keys_condition = if missing.is_empty() {
        condition(
            KEYS_READY,
            true,
            reason::KEYS_AVAILABLE,
            format!("{} key(s) available", keys.len()),
        )
    } else {
        condition(
            KEYS_READY,
            false,
            reason::SECRET_MISSING,
            format!(
                "Secret(s) missing or without the key field: {}",
                missing.join(", ")
            ),
        )
    };
    let ready_condition = if tenant.spec.suspended {
        condition(READY, false, reason::SUSPENDED, "tenant is suspended".to_string())
    } else if tier.is_none() {
        condition(
            READY,
            false,
            reason::TIER_NOT_FOUND,
            tier_condition.message.clone(),
        )
    } else if !missing.is_empty() {
        condition(
            READY,
            false,
            reason::SECRET_MISSING,
            keys_condition.message.clone(),
        )
    } else {
        condition(
            READY,
            true,
            reason::RECONCILED,
            "tenant can call its tier's models".to_string(),
        )
    };
    // Conditions owned by other writers (the billing aggregator's BudgetExceeded) are kept.
    let mut all = vec![ready_condition, tier_condition, keys_condition];
    all.extend(
        old.iter()
            .filter(|c| {
                !OWNED_CONDITIONS.contains(&c.type_.as_str()) && c.type_ != conditions::INVALID_OBJECT
            })
            .cloned(),
    );
    TenantStatus {
        conditions: all,
        observed_generation: generation,
        usage: previous.usage,
        api_keys: keys
            .iter()
            .filter_map(|k| {
                let hash = k.hash.clone()?;
                Some(ApiKeyStatus {
                    name: k.spec.name.clone(),
                    fingerprint: fingerprint(&hash),
                    hash,
                    secret_name: k.secret_name.clone(),
                    revoked: k.spec.revoked,
                })
            })
            .collect(),
    }
}

/// Writes the status with server-side apply unless it is already exactly that.
pub async fn write_status(client: &Client, tenant: &Tenant, status: TenantStatus) -> Result<bool> {
    if tenant.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    // Apply only the fields this controller owns; usage and budget conditions belong to billing.
    let mut owned = status;
    owned.usage = None;
    owned
        .conditions
        .retain(|c| OWNED_CONDITIONS.contains(&c.type_.as_str()));
    let body = serde_json::to_value(&owned).map_err(|source| Error::Serialize {
        kind: "status",
        source,
    })?;
    hearth_kube::ssa::apply_status(client, tenant, body, FIELD_MANAGER).await?;
    Ok(true)
}
