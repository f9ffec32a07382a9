//! The read step: the children that exist now.

use hearth_crds::InferenceModel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::{Api, Client};

use super::build::scaled_object_resource;
use crate::error::{Error, Result};

/// The model's children as the cluster has them.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// The runtime Deployment.
    pub deployment: Option<Deployment>,
    /// The Service.
    pub service: Option<Service>,
    /// The PodDisruptionBudget.
    pub pdb: Option<PodDisruptionBudget>,
    /// The HPA, if one exists.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The KEDA ScaledObject, if KEDA is installed and one exists.
    pub scaled_object: Option<DynamicObject>,
}

/// Typed and dynamic APIs for every child kind in the model's namespace.
pub struct ChildApis {
    /// Deployments.
    pub deployments: Api<Deployment>,
    /// Services.
    pub services: Api<Service>,
    /// PodDisruptionBudgets.
    pub pdbs: Api<PodDisruptionBudget>,
    /// HorizontalPodAutoscalers.
    pub hpas: Api<HorizontalPodAutoscaler>,
    /// KEDA ScaledObjects.
    pub scaled_objects: Api<DynamicObject>,
}

impl ChildApis {
    /// APIs in `namespace`.
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            pdbs: Api::namespaced(client.clone(), namespace),
            hpas: Api::namespaced(client.clone(), namespace),
            scaled_objects: Api::namespaced_with(client.clone(), namespace, &scaled_object_resource()),
        }
    }
}

/// Reads every child of `model` (one GET each; a missing KEDA CRD reads as "no object").
pub async fn dereference(apis: &ChildApis, model: &InferenceModel) -> Result<Existing> {
    let name = model
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok(Existing {
        deployment: apis.deployments.get_opt(name).await?,
        service: apis.services.get_opt(name).await?,
        pdb: apis.pdbs.get_opt(name).await?,
        hpa: apis.hpas.get_opt(name).await?,
        scaled_object: apis.scaled_objects.get_opt(name).await?,
    })
}
