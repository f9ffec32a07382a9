//! The PodDisruptionBudget: voluntary disruptions (node drains) take one replica at a time.

use hearth_crds::InferenceModel;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels};
use hearth_kube::error::Result;

/// Builds the PDB allowing at most one unavailable replica.
pub fn build_pdb(model: &InferenceModel) -> Result<PodDisruptionBudget> {
    Ok(PodDisruptionBudget {
        metadata: child_meta(model)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(model)?),
                ..LabelSelector::default()
            }),
            // Pods that never became ready may be evicted even when the budget is spent.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
