//! A KEDA ScaledObject, built as a dynamic object so the operator needs no KEDA crate.

use hearth_crds::InferenceModel;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::child_meta;
use crate::context::Settings;
use hearth_kube::error::{Error, Result};

/// KEDA's ScaledObject type.
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// Seconds in a `10m`-style duration (s, m or h).
fn duration_seconds(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: u64 = number.parse().ok()?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Builds a ScaledObject scaling the runtime Deployment on a Prometheus query of the model's
/// metric, down to `replicas.min` (zero allowed) after `scaleToZeroAfter` of idleness.
pub fn build_scaled_object(model: &InferenceModel, settings: &Settings) -> Result<DynamicObject> {
    let spec = &model.spec;
    let name = model
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let namespace = model
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let metric = spec.autoscaling.metric.prometheus_name();
    let cooldown = spec
        .autoscaling
        .scale_to_zero_after
        .as_deref()
        .and_then(duration_seconds)
        .unwrap_or(300);
    let mut object = DynamicObject::new(&name, &scaled_object_resource()).within(&namespace);
    object.metadata = child_meta(model)?;
    object.data = json!({
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": spec.replicas.min,
            "maxReplicaCount": spec.replicas.max,
            "cooldownPeriod": cooldown,
            "triggers": [{
                "type": "prometheus",
                "metadata": {
                    "serverAddress": settings.prometheus_url,
                    "query": format!("sum({metric}{{namespace=\"{namespace}\",model=\"{name}\"}})"),
                    "threshold": spec.autoscaling.target.to_string(),
                },
            }],
        }
    });
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::parse;

    #[test]
    fn keda_object_scales_to_zero_after_the_idle_time() {
        let model = parse(
            "metadata: {name: q, namespace: n, uid: u}\nspec: {servedName: q, source: {uri: 'hf://a/b'}, replicas: {min: 0, max: 3}, autoscaling: {mode: keda, metric: queueDepth, target: 4, scaleToZeroAfter: 10m}}\n",
        );
        let object = build_scaled_object(&model, &Settings::default()).expect("builds");
        assert_eq!(
            object.types.as_ref().map(|t| t.api_version.as_str()),
            Some("keda.sh/v1alpha1")
        );
        let spec = &object.data["spec"];
        assert_eq!(spec["minReplicaCount"], 0);
        assert_eq!(spec["cooldownPeriod"], 600);
        assert_eq!(
            spec["triggers"][0]["metadata"]["query"],
            "sum(hearth_engine_waiting_requests{namespace=\"n\",model=\"q\"})"
        );
        assert_eq!(duration_seconds("2h"), Some(7200));
        assert_eq!(duration_seconds("x"), None);
    }
}
