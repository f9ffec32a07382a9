//! Handling of primaries that fail to deserialise (schema drift, a wrong type in a field):
//! the object gets an `InvalidObject` condition and the controller carries on.

use hearth_crds::conditions::{self, INVALID_OBJECT, reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::{Api, Client, Resource};
use serde_json::json;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use tracing::warn;

use crate::context::Context;
use hearth_kube::error::{Error, Result};

/// Records on an object of kind `K` that failed to deserialise why, through an untyped API
/// (the typed one could not read the object back).
pub async fn report_invalid_object<K>(client: &Client, invalid: &InvalidObject, now: Time) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let name = invalid
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match invalid.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let condition = conditions::condition(
        &[],
        INVALID_OBJECT,
        true,
        reason::DESERIALIZATION_FAILED,
        invalid.error.clone(),
        invalid.metadata.generation,
        now,
    );
    let patch = json!({"status": {"conditions": [condition]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The object inside a guard; for an object that failed to deserialise, records why on it and
/// returns `Error::InvalidObject`, which the error policy turns into "wait for a change".
pub async fn accept<'a, K>(
    guarded: &'a DeserializeGuard<K>,
    ctx: &Context,
    controller: &'static str,
) -> Result<&'a K>
where
    K: Resource<DynamicType = ()>,
{
    match &guarded.0 {
        Ok(object) => Ok(object),
        Err(invalid) => {
            warn!(controller, error = %invalid.error, "object failed to deserialise");
            report_invalid_object::<K>(&ctx.client, invalid, hearth_kube::now()).await?;
            ctx.metrics.write_issued(controller, "status");
            Err(Error::InvalidObject(invalid.error.clone()))
        }
    }
}

/// The error policy every controller shares: invalid objects and specs wait for the user to
/// change them; anything else is counted and retried after a delay that doubles with each
/// failure of the same object (see [`crate::backoff`]), reset by its next success.
pub fn error_action(
    controller: &'static str,
    object: &impl Resource,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_failed(controller, error.category());
    match error {
        Error::InvalidObject(_) | Error::InvalidSpec(_) => Action::await_change(),
        _ => {
            let delay = ctx
                .backoff
                .next_delay(&crate::backoff::key(controller, object.meta()));
            warn!(controller, %error, retry_in_seconds = delay.as_secs(), "reconcile failed; retrying");
            Action::requeue(delay)
        }
    }
}

/// Records that `object` reconciled: its next failure starts the backoff afresh.
pub fn reconciled(controller: &'static str, object: &impl Resource, ctx: &Context) {
    ctx.backoff.reset(&crate::backoff::key(controller, object.meta()));
}
