//! The InferenceModel reconciler: dereference → validate → build → apply → status.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use hearth_crds::InferenceModel;
use k8s_openapi::api::apps::v1::Deployment;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use tracing::{info, instrument, warn};

use self::dereference::ChildApis;
use self::status::{Outcome, Shortfall};
use crate::context::Context;
use hearth_kube::error::{Error, Result};
use hearth_kube::now;
use hearth_tenancy::served_names::{Holder, holders};

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "inferencemodel";
/// Periodic resync of a healthy model (reads only unless something drifted).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a model refused its served name looks again (the holder may have gone).
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// Reconciles one InferenceModel.
#[instrument(skip(guarded, ctx), fields(name = guarded.0.as_ref().ok().and_then(|m| m.metadata.name.clone())))]
pub async fn reconcile(guarded: Arc<DeserializeGuard<InferenceModel>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let model = crate::invalid::accept(&guarded, &ctx, CONTROLLER).await?;
    let action = reconcile_model(model, &ctx).await?;
    crate::invalid::reconciled(CONTROLLER, model, &ctx);
    Ok(action)
}

async fn reconcile_model(model: &InferenceModel, ctx: &Context) -> Result<Action> {
    let namespace = model
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let owner_uid = model
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingMetadata("uid"))?;
    let validated = match validate::validate(model) {
        Ok(validated) => validated,
        Err(errors) => {
            let status = status::compute_status(model, Outcome::InvalidSpec(&errors), now());
            if status::write_status(&ctx.client, model, status).await? {
                ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus");
            }
            return Err(Error::InvalidSpec(errors));
        }
    };
    if let Some(holder) = served_name_holder_elsewhere(model, ctx) {
        info!(holder = %holder.model, "servedName held in another namespace; nothing deployed");
        let status = status::compute_status(model, Outcome::ServedNameConflict(&holder), now());
        if status::write_status(&ctx.client, model, status).await? {
            ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus");
        }
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }
    if !validated.fit.allows_deployment() {
        info!("model does not fit its GPU; nothing deployed");
        let status = status::compute_status(model, Outcome::DoesNotFit(&validated.fit), now());
        if status::write_status(&ctx.client, model, status).await? {
            ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus");
        }
        return Ok(Action::await_change());
    }
    let apis = ChildApis::new(&ctx.client, namespace);
    let existing = dereference::dereference(&apis, model).await?;
    let current_replicas = existing
        .deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas);
    let children = build::build_children(model, &ctx.settings, current_replicas)?;
    let applied = match apply::apply(&apis, children, &existing, owner_uid, &ctx.metrics).await {
        Ok(applied) => applied,
        Err(error) => {
            if let Error::Apply { kind, source } = &error {
                report_failed_write(model, ctx, &validated.fit, &existing, kind, source).await;
            }
            return Err(error);
        }
    };
    if applied.keda_not_installed {
        warn!("autoscaling.mode is keda but KEDA is not installed; deployed without a ScaledObject");
    }
    let shortfall = applied.keda_not_installed.then_some(Shortfall::KedaNotInstalled);
    let outcome = Outcome::Deployed {
        fit: &validated.fit,
        deployment: &applied.deployment,
        shortfall: shortfall.as_ref(),
    };
    let status = status::compute_status(model, outcome, now());
    if status::write_status(&ctx.client, model, status).await? {
        ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus");
    }
    Ok(Action::requeue(RESYNC))
}

/// The holder of `model`'s served name when it is in another namespace (see
/// [`hearth_tenancy::served_names`]), judged over every InferenceModel the controller sees.
fn served_name_holder_elsewhere(model: &InferenceModel, ctx: &Context) -> Option<Holder> {
    let watched = ctx.models.as_ref()?.state();
    let same_name = watched
        .iter()
        .filter_map(|guarded| guarded.0.as_ref().ok())
        .filter(|other| {
            other.spec.served_name == model.spec.served_name && other.metadata.uid != model.metadata.uid
        });
    let holder = holders(same_name.chain([model])).remove(&model.spec.served_name)?;
    (!holder.admits(model)).then_some(holder)
}

/// Says on the model which write failed and why, when its status can still be written; the
/// reconcile fails either way and the error policy backs off.
async fn report_failed_write(
    model: &InferenceModel,
    ctx: &Context,
    fit: &validate::Fit,
    existing: &dereference::Existing,
    kind: &'static str,
    source: &kube::Error,
) {
    let shortfall = Shortfall::apply_failed(kind, source);
    let no_deployment = Deployment::default();
    let outcome = Outcome::Deployed {
        fit,
        deployment: existing.deployment.as_ref().unwrap_or(&no_deployment),
        shortfall: Some(&shortfall),
    };
    let status = status::compute_status(model, outcome, now());
    match status::write_status(&ctx.client, model, status).await {
        Ok(true) => ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus"),
        Ok(false) => {}
        Err(error) => warn!(%error, "could not record the failed write in the status"),
    }
}

/// Invalid objects and specs wait for a change; anything else retries with per-object backoff.
pub fn error_policy(
    guarded: Arc<DeserializeGuard<InferenceModel>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    crate::invalid::error_action(CONTROLLER, &*guarded, error, &ctx)
}
