//! The apply step: server-side apply of each desired child, skipped when already in place,
//! and deletion of optional children that are no longer wanted.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DeleteParams;

use super::build::Children;
use super::dereference::{ChildApis, Existing};
use crate::error::Result;
use crate::metrics::Metrics;

const CONTROLLER: &str = "inferencemodel";

/// True when `meta` has an owner reference to the object with `owner_uid`.
fn owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == owner_uid)
}

/// Applies `children`; returns the Deployment as the server now has it. Optional children that
/// are no longer wanted are deleted, but only when this model owns them.
pub async fn apply(
    apis: &ChildApis,
    children: Children,
    existing: &Existing,
    owner_uid: &str,
    metrics: &Metrics,
) -> Result<Deployment> {
    // Destructured without `..`: a new child kind cannot be forgotten here.
    let Children {
        deployment,
        service,
        pdb,
        hpa,
        scaled_object,
    } = children;
    let count = |written: bool, kind: &'static str| {
        if written {
            metrics.write_issued(CONTROLLER, kind);
        }
    };
    let (_, written) =
        crate::ssa::apply_if_changed(&apis.services, &service, existing.service.as_ref()).await?;
    count(written, "Service");
    let (_, written) = crate::ssa::apply_if_changed(&apis.pdbs, &pdb, existing.pdb.as_ref()).await?;
    count(written, "PodDisruptionBudget");
    let (deployment, written) =
        crate::ssa::apply_if_changed(&apis.deployments, &deployment, existing.deployment.as_ref()).await?;
    count(written, "Deployment");
    match (hpa, &existing.hpa) {
        (Some(hpa), current) => {
            let (_, written) = crate::ssa::apply_if_changed(&apis.hpas, &hpa, current.as_ref()).await?;
            count(written, "HorizontalPodAutoscaler");
        }
        (None, Some(current)) if owned_by(&current.metadata, owner_uid) => {
            if let Some(name) = &current.metadata.name {
                apis.hpas.delete(name, &DeleteParams::default()).await?;
                count(true, "HorizontalPodAutoscaler");
            }
        }
        (None, _) => {}
    }
    match (scaled_object, &existing.scaled_object) {
        (Some(object), current) => {
            let (_, written) =
                crate::ssa::apply_if_changed(&apis.scaled_objects, &object, current.as_ref()).await?;
            count(written, "ScaledObject");
        }
        (None, Some(current)) if owned_by(&current.metadata, owner_uid) => {
            if let Some(name) = &current.metadata.name {
                apis.scaled_objects.delete(name, &DeleteParams::default()).await?;
                count(true, "ScaledObject");
            }
        }
        (None, _) => {}
    }
    Ok(deployment)
}
