//! The Tier reconciler: validate the spec and count the Tenants that reference the tier.

use std::sync::Arc;
use std::time::Duration;

use hearth_crds::conditions::{self, READY, reason};
use hearth_crds::constants::FIELD_MANAGER;
use hearth_crds::tier::TierStatus;
use hearth_crds::validation::{SpecError, validate_tier};
use hearth_crds::{Tenant, Tier};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::instrument;

use crate::context::Context;
use hearth_kube::error::{Error, Result};
use hearth_kube::now;

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "tier";

/// Computes a Tier's status from its validation result and tenant count.
pub fn compute_status(tier: &Tier, errors: &[SpecError], tenants: u32, now: Time) -> TierStatus {
    let previous = tier.status.clone().unwrap_or_default();
    let (ready, why, message) = if errors.is_empty() {
        (
            true,
            reason::RECONCILED,
            format!("{tenants} tenant(s) reference this tier"),
        )
    } else {
        (
            false,
            reason::INVALID_SPEC,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    TierStatus {
        conditions: vec![conditions::condition(
            &previous.conditions,
            READY,
            ready,
            why,
            message,
            tier.metadata.generation,
            now,
        )],
        tenants,
        observed_generation: tier.metadata.generation,
    }
}

/// Reconciles one Tier.
#[instrument(skip(guarded, ctx), fields(name = guarded.0.as_ref().ok().map(|t| t.name_any())))]
pub async fn reconcile(guarded: Arc<DeserializeGuard<Tier>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let tier = crate::invalid::accept(&guarded, &ctx, CONTROLLER).await?;
    let name = tier
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let tenants: Api<Tenant> = Api::all(ctx.client.clone());
    let count = tenants
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|t| t.spec.tier_ref == name)
        .count();
    let errors = validate_tier(&tier.spec);
    let status = compute_status(tier, &errors, u32::try_from(count).unwrap_or(u32::MAX), now());
    if tier.status.as_ref() != Some(&status) {
        let body = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            kind: "status",
            source,
        })?;
        hearth_kube::ssa::apply_status(&ctx.client, tier, body, FIELD_MANAGER).await?;
        ctx.metrics.write_issued(CONTROLLER, "TierStatus");
    }
    if errors.is_empty() {
        crate::invalid::reconciled(CONTROLLER, tier, &ctx);
        Ok(Action::requeue(Duration::from_secs(300)))
    } else {
        Err(Error::InvalidSpec(errors))
    }
}

/// Invalid objects and specs wait for a change; anything else retries.
pub fn error_policy(guarded: Arc<DeserializeGuard<Tier>>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::invalid::error_action(CONTROLLER, &*guarded, error, &ctx)
}
