//! The model's NetworkPolicy: its pods take connections only from the gateway and the operator
//! (billing's pulls) in Hearth's namespace, on the port the Service targets, plus metric
//! scrapes from the monitoring namespace when one is named.

use std::collections::BTreeMap;

use hearth_crds::InferenceModel;
use hearth_crds::constants::{LABEL_MODEL_ACCESS, PORT_ENGINE, PORT_METER};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels};
use crate::context::ModelAccess;
use hearth_kube::error::Result;

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            name.to_string(),
        )])),
        ..LabelSelector::default()
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// Builds the NetworkPolicy admitting only `access` to `model`'s pods.
pub fn build_network_policy(model: &InferenceModel, access: &ModelAccess) -> Result<NetworkPolicy> {
    let served_port = if model.spec.metering.enabled {
        PORT_METER
    } else {
        PORT_ENGINE
    };
    let hearth = NetworkPolicyPeer {
        namespace_selector: Some(namespace_named(&access.namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_MODEL_ACCESS.to_string(),
                "true".to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![hearth]),
        ports: Some(vec![tcp(served_port)]),
    }];
    if let Some(metrics) = &access.metrics_namespace {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(metrics)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(PORT_ENGINE), tcp(PORT_METER)]),
        });
    }
    Ok(NetworkPolicy {
        metadata: child_meta(model)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(model)?),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    fn access(metrics: Option<&str>) -> ModelAccess {
        ModelAccess {
            namespace: "hearth-system".into(),
            metrics_namespace: metrics.map(String::from),
        }
    }

    #[test]
    fn only_hearth_pods_reach_the_meter_port() {
        let policy = build_network_policy(&representative(), &access(None)).expect("builds");
        let spec = policy.spec.expect("spec");
        let selected = spec.pod_selector.and_then(|s| s.match_labels).expect("selector");
        assert_eq!(selected["hearth.dev/model"], "llama");
        let ingress = spec.ingress.expect("ingress");
        assert_eq!(ingress.len(), 1);
        let peer = &ingress[0].from.as_ref().expect("from")[0];
        let namespace = peer
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref());
        assert_eq!(
            namespace.expect("namespace")["kubernetes.io/metadata.name"],
            "hearth-system"
        );
        let pods = peer.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref());
        assert_eq!(pods.expect("pods")["hearth.dev/model-access"], "true");
        assert_eq!(
            ingress[0].ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(8001))
        );
    }

    #[test]
    fn unmetered_models_admit_the_engine_port_and_scrapers_when_named() {
        let unmetered = parse(
            "metadata: {name: m, namespace: n, uid: u}\nspec: {servedName: m, source: {uri: 'hf://a/b'}, metering: {enabled: false}}\n",
        );
        let policy = build_network_policy(&unmetered, &access(Some("monitoring"))).expect("builds");
        let ingress = policy.spec.and_then(|s| s.ingress).expect("ingress");
        assert_eq!(
            ingress[0].ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(8000))
        );
        assert_eq!(ingress.len(), 2);
        assert!(ingress[1].from.as_ref().expect("from")[0].pod_selector.is_none());
    }
}
