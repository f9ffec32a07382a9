//! The InferenceModel reconciler: dereference → validate → build → apply → status.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use hearth_crds::InferenceModel;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use tracing::{info, instrument};

use self::dereference::ChildApis;
use self::status::Outcome;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::invalid::now;

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "inferencemodel";
/// Periodic resync of a healthy model (reads only unless something drifted).
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one InferenceModel.
#[instrument(skip(guarded, ctx), fields(name = guarded.0.as_ref().ok().and_then(|m| m.metadata.name.clone())))]
pub async fn reconcile(guarded: Arc<DeserializeGuard<InferenceModel>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let model = crate::invalid::accept(&guarded, &ctx, CONTROLLER).await?;
    reconcile_model(model, &ctx).await
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
    let deployment = apply::apply(&apis, children, &existing, owner_uid, &ctx.metrics).await?;
    let status = status::compute_status(model, Outcome::Deployed(&validated.fit, &deployment), now());
    if status::write_status(&ctx.client, model, status).await? {
        ctx.metrics.write_issued(CONTROLLER, "InferenceModelStatus");
    }
    Ok(Action::requeue(RESYNC))
}

/// Invalid objects and specs wait for a change; anything else retries.
pub fn error_policy(
    _guarded: Arc<DeserializeGuard<InferenceModel>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    crate::invalid::error_action(CONTROLLER, error, &ctx)
}
