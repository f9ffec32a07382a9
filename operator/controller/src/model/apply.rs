//! The apply step: server-side apply of each desired child, skipped when already in place,
//! and deletion of optional children that are no longer wanted.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DeleteParams;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::Children;
use super::dereference::{ChildApis, Existing};
use crate::metrics::Metrics;
use hearth_kube::error::{Error, Result};

const CONTROLLER: &str = "inferencemodel";

/// What the apply step did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The Deployment as the server now has it.
    pub deployment: Deployment,
    /// The spec asks for a KEDA ScaledObject, but the cluster does not serve KEDA's API: the
    /// rest is applied and the ScaledObject is not.
    pub keda_not_installed: bool,
}

/// True when `meta` has an owner reference to the object with `owner_uid`.
fn owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == owner_uid)
}

/// Applies or removes one optional child.
struct Optional<'a> {
    owner_uid: &'a str,
    count: &'a (dyn Fn(bool, &'static str) + Sync),
}

impl Optional<'_> {
    /// Applies `desired` when wanted; otherwise deletes `current`, but only if this model owns it.
    async fn apply_or_remove<K>(
        &self,
        api: &Api<K>,
        desired: Option<K>,
        current: Option<&K>,
        kind: &'static str,
    ) -> Result<()>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    {
        match (desired, current) {
            (Some(desired), current) => {
                let (_, written) = hearth_kube::ssa::apply_if_changed(api, &desired, current)
                    .await
                    .map_err(write_of(kind))?;
                (self.count)(written, kind);
            }
            (None, Some(current)) if owned_by(current.meta(), self.owner_uid) => {
                if let Some(name) = &current.meta().name {
                    api.delete(name, &DeleteParams::default())
                        .await
                        .map_err(|source| Error::Apply { kind, source })?;
                    (self.count)(true, kind);
                }
            }
            (None, _) => {}
        }
        Ok(())
    }
}

/// Names the child whose write failed, so the status and the log can say which.
fn write_of(kind: &'static str) -> impl FnOnce(Error) -> Error {
    move |error| match error {
        Error::Kube(source) => Error::Apply { kind, source },
        other => other,
    }
}

/// True for a 404 of any shape: the server does not serve the API (or the object is gone).
fn is_404(error: &Error) -> bool {
    matches!(error, Error::Kube(kube::Error::Api(status)) if status.code == 404)
}

/// Applies `children`. Optional children that are no longer wanted are deleted, but only when
/// this model owns them. A failed write ends the step with [`Error::Apply`] naming the child.
pub async fn apply(
    apis: &ChildApis,
    children: Children,
    existing: &Existing,
    owner_uid: &str,
    metrics: &Metrics,
) -> Result<Applied> {
    // Destructured without `..`: a new child kind cannot be forgotten here.
    let Children {
        deployment,
        service,
        pdb,
        hpa,
        scaled_object,
        meter_secret,
        network_policy,
    } = children;
    let count = |written: bool, kind: &'static str| {
        if written {
            metrics.write_issued(CONTROLLER, kind);
        }
    };
    let (_, written) =
        hearth_kube::ssa::apply_if_changed(&apis.services, &service, existing.service.as_ref())
            .await
            .map_err(write_of("Service"))?;
    count(written, "Service");
    let (_, written) = hearth_kube::ssa::apply_if_changed(&apis.pdbs, &pdb, existing.pdb.as_ref())
        .await
        .map_err(write_of("PodDisruptionBudget"))?;
    count(written, "PodDisruptionBudget");
    // The pods' Secret and NetworkPolicy go first: no pod starts without its tokens or unguarded.
    let optional = Optional {
        owner_uid,
        count: &count,
    };
    optional
        .apply_or_remove(
            &apis.secrets,
            meter_secret,
            existing.meter_secret.as_ref(),
            "Secret",
        )
        .await?;
    optional
        .apply_or_remove(
            &apis.network_policies,
            network_policy,
            existing.network_policy.as_ref(),
            "NetworkPolicy",
        )
        .await?;
    let (deployment, written) =
        hearth_kube::ssa::apply_if_changed(&apis.deployments, &deployment, existing.deployment.as_ref())
            .await
            .map_err(write_of("Deployment"))?;
    count(written, "Deployment");
    let optional = Optional {
        owner_uid,
        count: &count,
    };
    optional
        .apply_or_remove(&apis.hpas, hpa, existing.hpa.as_ref(), "HorizontalPodAutoscaler")
        .await?;
    let mut keda_not_installed = false;
    match (scaled_object, &existing.scaled_object) {
        (Some(_), _) if !existing.scaled_objects_served => keda_not_installed = true,
        (Some(object), current) => {
            match hearth_kube::ssa::apply_if_changed(&apis.scaled_objects, &object, current.as_ref()).await {
                Ok((_, written)) => count(written, "ScaledObject"),
                // KEDA was removed since the read: the same as not installed.
                Err(error) if is_404(&error) => keda_not_installed = true,
                Err(error) => return Err(write_of("ScaledObject")(error)),
            }
        }
        (None, Some(current)) if owned_by(&current.metadata, owner_uid) => {
            if let Some(name) = &current.metadata.name {
                apis.scaled_objects
                    .delete(name, &DeleteParams::default())
                    .await
                    .map_err(|source| Error::Apply {
                        kind: "ScaledObject",
                        source,
                    })?;
                count(true, "ScaledObject");
            }
        }
        (None, _) => {}
    }
    Ok(Applied {
        deployment,
        keda_not_installed,
    })
}
