//! Pure builders: one `build_*` function per Kubernetes kind, each returning the desired
//! object for an InferenceModel. Nothing here touches the API.

mod deployment;
mod engines;
mod hpa;
mod meter_secret;
mod network_policy;
mod pdb;
mod scaled_object;
mod service;

use std::collections::BTreeMap;

use hearth_crds::InferenceModel;
use hearth_crds::constants::{APP_NAME, LABEL_METERED, LABEL_MODEL, LABEL_SERVED_NAME, MANAGED_BY};
use hearth_crds::inference_model::AutoscalingMode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;

pub use deployment::build_runtime_deployment;
pub use engines::{
    EngineLauncher, ModelLocation, ProbePaths, engine_args, engine_image, launcher, model_location,
};
pub use hpa::build_hpa;
pub use meter_secret::{PROXY_TOKEN_KEY, USAGE_TOKEN_KEY, build_meter_secret, meter_secret_name};
pub use network_policy::build_network_policy;
pub use pdb::build_pdb;
pub use scaled_object::{build_scaled_object, scaled_object_resource};
pub use service::{build_service, endpoint_url};

use hearth_tenancy::child_name;

use crate::context::Settings;
use hearth_kube::error::{Error, Result};

/// Every child of an InferenceModel; `None` means "must not exist".
#[derive(Debug, Clone)]
pub struct Children {
    /// The runtime pods.
    pub deployment: Deployment,
    /// The Service the gateway and meter discovery use.
    pub service: Service,
    /// Keeps at least all-but-one replica through voluntary disruptions.
    pub pdb: PodDisruptionBudget,
    /// Present in `hpa` mode.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Present in `keda` mode.
    pub scaled_object: Option<DynamicObject>,
    /// The meters' tokens; present when metering is on and the operator has meter keys.
    pub meter_secret: Option<Secret>,
    /// Admits only Hearth's pods; present when the operator is told who they are.
    pub network_policy: Option<NetworkPolicy>,
}

/// Builds every child; `current_replicas` is the Deployment's replica count as the cluster has
/// it (the gateway autoscaler may have changed it).
pub fn build_children(
    model: &InferenceModel,
    settings: &Settings,
    current_replicas: Option<i32>,
) -> Result<Children> {
    let mode = model.spec.autoscaling.mode;
    Ok(Children {
        deployment: build_runtime_deployment(model, settings, current_replicas)?,
        service: build_service(model)?,
        pdb: build_pdb(model)?,
        hpa: (mode == AutoscalingMode::Hpa)
            .then(|| build_hpa(model))
            .transpose()?,
        scaled_object: (mode == AutoscalingMode::Keda)
            .then(|| build_scaled_object(model, settings))
            .transpose()?,
        meter_secret: match &settings.meter_keys {
            Some(keys) if model.spec.metering.enabled => Some(build_meter_secret(model, keys)?),
            _ => None,
        },
        network_policy: settings
            .model_access
            .as_ref()
            .map(|access| build_network_policy(model, access))
            .transpose()?,
    })
}

/// Labels every child and pod carries; the selector uses the `hearth.dev/model` label.
pub fn labels(model: &InferenceModel) -> Result<BTreeMap<String, String>> {
    let name = model
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok(BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
        (LABEL_MODEL.to_string(), name),
        (LABEL_SERVED_NAME.to_string(), model.spec.served_name.clone()),
        (LABEL_METERED.to_string(), model.spec.metering.enabled.to_string()),
    ]))
}

/// The pod selector: only the model label, which never changes for an object's lifetime.
pub fn selector_labels(model: &InferenceModel) -> Result<BTreeMap<String, String>> {
    let name = model
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok(BTreeMap::from([(LABEL_MODEL.to_string(), name)]))
}

/// Metadata of a child: same name and namespace as the model, our labels, owned by the model.
pub fn child_meta(model: &InferenceModel) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(
            child_name(model)
                .ok_or(Error::MissingMetadata("name"))?
                .to_string(),
        ),
        namespace: Some(
            model
                .metadata
                .namespace
                .clone()
                .ok_or(Error::MissingMetadata("namespace"))?,
        ),
        labels: Some(labels(model)?),
        owner_references: Some(vec![owner_reference(model)?]),
        ..ObjectMeta::default()
    })
}

/// Controller owner reference to the model, so children are garbage-collected with it.
pub fn owner_reference(model: &InferenceModel) -> Result<OwnerReference> {
    model
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use hearth_crds::InferenceModel;

    /// The representative model of the issue: TP=2 on A100-80GB, metered, HPA mode.
    pub fn representative() -> InferenceModel {
        parse(
            r#"
apiVersion: hearth.dev/v1alpha1
kind: InferenceModel
metadata: {name: llama, namespace: ml, uid: 0000-1111, generation: 3}
spec:
  servedName: llama-3.1-8b
  source: {uri: "hf://meta-llama/Llama-3.1-8B-Instruct", revision: main}
  engine: {maxBatchSize: 32, maxContextTokens: 8192, dtype: bfloat16}
  parallelism: {tensor: 2}
  gpu: {type: nvidia-a100-80gb}
  replicas: {min: 1, max: 4}
  autoscaling: {mode: hpa, metric: inflightRequests, target: 16}
  metering: {enabled: true}
"#,
        )
    }

    /// Parses a model from YAML.
    pub fn parse(yaml: &str) -> InferenceModel {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }
}
