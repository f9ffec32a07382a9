//! How Hearth names and identifies objects across its parts.

use hearth_crds::InferenceModel;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `namespace/name` of an object.
pub fn object_id(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Name of every child of a model (its Deployment, Service, PDB, HPA): the model's own name.
/// The gateway finds a model's EndpointSlices and scales its Deployment by this name.
pub fn child_name(model: &InferenceModel) -> Option<&str> {
    model.metadata.name.as_deref()
}
