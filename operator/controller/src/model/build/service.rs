//! The model's Service: targets the meter when metering is on, the engine otherwise.

use hearth_crds::InferenceModel;
use hearth_crds::constants::{PORT_ENGINE, PORT_METER, PORT_NAME_HTTP};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels};
use hearth_kube::error::Result;

/// Port the Service exposes.
pub const SERVICE_PORT: i32 = 80;

/// Builds the ClusterIP Service in front of the runtime pods.
pub fn build_service(model: &InferenceModel) -> Result<Service> {
    let target = if model.spec.metering.enabled {
        PORT_METER
    } else {
        PORT_ENGINE
    };
    Ok(Service {
        metadata: child_meta(model)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(model)?),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME_HTTP.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(target)),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The in-cluster URL of the model's OpenAI API.
pub fn endpoint_url(model: &InferenceModel) -> Option<String> {
    let name = hearth_tenancy::child_name(model)?;
    let namespace = model.metadata.namespace.as_deref()?;
    Some(format!("http://{name}.{namespace}.svc:{SERVICE_PORT}/v1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    #[test]
    fn metered_models_route_through_the_meter() {
        let service = build_service(&representative()).expect("builds");
        let port = &service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports")[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(8001)));
        let unmetered = parse(
            "metadata: {name: m, namespace: n, uid: u}\nspec: {servedName: m, source: {uri: 'hf://a/b'}, metering: {enabled: false}}\n",
        );
        let service = build_service(&unmetered).expect("builds");
        let port = &service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports")[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(8000)));
        assert_eq!(endpoint_url(&unmetered).as_deref(), Some("http://m.n.svc:80/v1"));
    }
}
