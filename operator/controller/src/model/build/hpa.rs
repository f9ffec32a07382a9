//! The HorizontalPodAutoscaler (autoscaling/v2) on a per-pod custom metric.

use hearth_crds::InferenceModel;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricIdentifier,
    MetricSpec, MetricTarget, PodsMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::child_meta;
use hearth_kube::error::{Error, Result};

/// Builds an HPA scaling the runtime Deployment on the model's metric (served through a
/// Prometheus adapter as a Pods metric). HPA cannot go below one replica, so `min: 0` becomes 1.
pub fn build_hpa(model: &InferenceModel) -> Result<HorizontalPodAutoscaler> {
    let spec = &model.spec;
    let name = model
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok(HorizontalPodAutoscaler {
        metadata: child_meta(model)?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(i32::try_from(spec.replicas.min.max(1)).unwrap_or(i32::MAX)),
            max_replicas: i32::try_from(spec.replicas.max).unwrap_or(i32::MAX),
            metrics: Some(vec![MetricSpec {
                type_: "Pods".into(),
                pods: Some(PodsMetricSource {
                    metric: MetricIdentifier {
                        name: spec.autoscaling.metric.prometheus_name().into(),
                        selector: None,
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(spec.autoscaling.target.to_string())),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::representative;

    #[test]
    fn hpa_targets_the_deployment_on_the_chosen_metric() {
        let hpa = build_hpa(&representative()).expect("builds");
        let spec = hpa.spec.expect("spec");
        assert_eq!(spec.scale_target_ref.name, "llama");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4));
        let pods = spec.metrics.expect("metrics")[0]
            .pods
            .clone()
            .expect("pods metric");
        assert_eq!(pods.metric.name, "hearth_engine_running_sequences");
        assert_eq!(pods.target.average_value, Some(Quantity("16".into())));
    }
}
