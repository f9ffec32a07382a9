//! The Tenant reconciler: resolve the Tier, make sure every API key exists (generating a Secret
//! for keys without `secretRef`), publish key hashes and conditions.

pub mod build;

pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hearth_crds::constants::SECRET_KEY_FIELD;
use hearth_crds::validation::validate_tenant;
use hearth_crds::{Tenant, Tier};
use hearth_tenancy::keys;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::instrument;

use self::status::KeyState;
use crate::context::Context;
use hearth_kube::error::{Error, Result};
use hearth_kube::now;

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "tenant";
/// Periodic resync, which also picks up rotated user-provided key Secrets.
const RESYNC: Duration = Duration::from_secs(300);

/// What the reconcile read from the cluster.
pub struct Dereferenced {
    /// The Tier named by `tierRef`, if it exists.
    pub tier: Option<Tier>,
    /// Each `apiKeys[]` entry's Secret, by key name (absent when missing).
    pub secrets: BTreeMap<String, Secret>,
}

/// Reads the Tier and every key Secret.
async fn dereference(ctx: &Context, tenant: &Tenant, namespace: &str) -> Result<Dereferenced> {
    let tiers: Api<Tier> = Api::all(ctx.client.clone());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let tier = tiers.get_opt(&tenant.spec.tier_ref).await?;
    let mut found = BTreeMap::new();
    for key in &tenant.spec.api_keys {
        let secret_name = build::secret_name(tenant, key);
        if let Some(secret) = secrets.get_opt(&secret_name).await? {
            found.insert(key.name.clone(), secret);
        }
    }
    Ok(Dereferenced { tier, secrets: found })
}

/// Reads the key out of a Secret's data.
fn key_in(secret: &Secret, field: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(field)?;
    let key = String::from_utf8(bytes.0.clone()).ok()?;
    let key = key.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// Reconciles one Tenant.
#[instrument(skip(guarded, ctx), fields(name = guarded.0.as_ref().ok().map(|t| t.name_any())))]
pub async fn reconcile(guarded: Arc<DeserializeGuard<Tenant>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let tenant = crate::invalid::accept(&guarded, &ctx, CONTROLLER).await?;
    let namespace = tenant
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let errors = validate_tenant(&tenant.spec);
    if !errors.is_empty() {
        let status = status::invalid_status(tenant, &errors, now());
        if status::write_status(&ctx.client, tenant, status).await? {
            ctx.metrics.write_issued(CONTROLLER, "TenantStatus");
        }
        return Err(Error::InvalidSpec(errors));
    }
    let Dereferenced { tier, mut secrets } = dereference(&ctx, tenant, namespace).await?;

    // Generate Secrets for keys that have none. `create` (never apply) so an existing key can
    // never be overwritten; a conflict means another writer made it first, so retry.
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for key in tenant.spec.api_keys.iter().filter(|k| k.secret_ref.is_none()) {
        if secrets.contains_key(&key.name) {
            continue;
        }
        let value =
            keys::generate_key().map_err(|e| Error::SecretMissing(format!("random source failed: {e}")))?;
        let secret = build::build_key_secret(tenant, key, &value)?;
        let created = secret_api.create(&PostParams::default(), &secret).await?;
        ctx.metrics.write_issued(CONTROLLER, "Secret");
        secrets.insert(key.name.clone(), created);
    }

    let key_states: Vec<KeyState> = tenant
        .spec
        .api_keys
        .iter()
        .map(|key| {
            let field = key
                .secret_ref
                .as_ref()
                .map_or(SECRET_KEY_FIELD, |r| r.key.as_str());
            KeyState {
                spec: key.clone(),
                secret_name: build::secret_name(tenant, key),
                hash: secrets
                    .get(&key.name)
                    .and_then(|s| key_in(s, field))
                    .map(|k| keys::hash_key(&k)),
            }
        })
        .collect();
    let status = status::compute_status(tenant, tier.as_ref(), &key_states, now());
    if status::write_status(&ctx.client, tenant, status).await? {
        ctx.metrics.write_issued(CONTROLLER, "TenantStatus");
    }
    crate::invalid::reconciled(CONTROLLER, tenant, &ctx);
    Ok(Action::requeue(if tier.is_some() {
        RESYNC
    } else {
        Duration::from_secs(60)
    }))
}

/// Invalid objects and specs wait for a change; anything else retries.
pub fn error_policy(guarded: Arc<DeserializeGuard<Tenant>>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::invalid::error_action(CONTROLLER, &*guarded, error, &ctx)
}
