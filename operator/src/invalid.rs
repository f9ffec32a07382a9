//! Handling of primaries that fail to deserialise (schema drift, a wrong type in a field):
//! the object gets an `InvalidObject` condition and the controller carries on.

use hearth_crds::conditions::{self, INVALID_OBJECT, reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::error::{Error, Result};

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

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
