//! The read step: the children that exist now.

use hearth_crds::InferenceModel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use super::build::{meter_secret_name, scaled_object_resource};
use hearth_kube::error::{Error, Result};

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
    /// False when the cluster does not serve KEDA's ScaledObject API (KEDA is not installed).
    pub scaled_objects_served: bool,
    /// The meters' token Secret.
    pub meter_secret: Option<Secret>,
    /// The NetworkPolicy.
    pub network_policy: Option<NetworkPolicy>,
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
    /// Secrets (the meters' tokens).
    pub secrets: Api<Secret>,
    /// NetworkPolicies.
    pub network_policies: Api<NetworkPolicy>,
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
            secrets: Api::namespaced(client.clone(), namespace),
            network_policies: Api::namespaced(client.clone(), namespace),
        }
    }
}

/// An object read from an API group that may not be installed.
#[derive(Debug, Clone, PartialEq)]
pub enum Optional<K> {
    /// The server serves the API; the object, if it exists.
    Served(Option<K>),
    /// The server does not serve the API at all.
    NotServed,
}

/// GETs `name` from an API group that may not be installed (KEDA's). A real API server answers
/// a GET on a group it does not serve with status 404 and the plain-text body
/// `404 page not found`; kube-client 5 turns a body that is not a `Status` into
/// `Error::Api(Status { code: 404, reason: "Failed to parse error data", .. })`, for which
/// `Status::is_not_found` is false (it matches the `NotFound` reason first), so `get_opt` would
/// fail the reconcile. Every 404 reads as "no object" here; a 404 without the `NotFound`
/// reason means the API itself is missing.
pub async fn get_optional<K>(api: &Api<K>, name: &str) -> Result<Optional<K>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Optional::Served(Some(object))),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Optional::Served(None)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Optional::NotServed),
        Err(error) => Err(error.into()),
    }
}

/// Reads every child of `model` (one GET each; a missing KEDA API reads as "no object").
/// The meter Secret and the NetworkPolicy are read even when not wanted, so the apply step can
/// remove ones this model made earlier.
pub async fn dereference(apis: &ChildApis, model: &InferenceModel) -> Result<Existing> {
    let name = model
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let deployment = apis.deployments.get_opt(name).await?;
    let service = apis.services.get_opt(name).await?;
    let pdb = apis.pdbs.get_opt(name).await?;
    let hpa = apis.hpas.get_opt(name).await?;
    let (scaled_object, scaled_objects_served) = match get_optional(&apis.scaled_objects, name).await? {
        Optional::Served(object) => (object, true),
        Optional::NotServed => (None, false),
    };
    let secret_name = meter_secret_name(model).ok_or(Error::MissingMetadata("name"))?;
    let meter_secret = apis.secrets.get_opt(&secret_name).await?;
    let network_policy = apis.network_policies.get_opt(name).await?;
    Ok(Existing {
        deployment,
        service,
        pdb,
        hpa,
        scaled_object,
        scaled_objects_served,
        meter_secret,
        network_policy,
    })
}

#[cfg(test)]
mod tests {
    use http::{Request, Response, StatusCode};
    use kube::client::Body;

    use super::*;

    /// An API whose server answers one GET as an API server does for a group it does not serve.
    fn unserved_api() -> Api<DynamicObject> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            if let Some((request, send)) = handle.next_request().await {
                assert_eq!(
                    request.uri().path(),
                    "/apis/keda.sh/v1alpha1/namespaces/ml/scaledobjects/llama"
                );
                send.send_response(
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(Body::from(b"404 page not found\n".to_vec()))
                        .expect("response"),
                );
            }
        });
        let client = Client::new(service, "ml");
        Api::namespaced_with(client, "ml", &scaled_object_resource())
    }

    #[tokio::test]
    async fn a_plain_text_404_reads_as_an_api_that_is_not_served() {
        assert_eq!(
            get_optional(&unserved_api(), "llama").await.expect("no error"),
            Optional::NotServed
        );
    }

    #[tokio::test]
    async fn kube_reports_the_plain_text_404_as_an_api_error_get_opt_does_not_absorb() {
        // What `get_optional` guards against: kube's own `get_opt` fails on this answer.
        let error = unserved_api().get_opt("llama").await.expect_err("not absorbed");
        let kube::Error::Api(status) = error else {
            panic!("expected an API error, got {error:?}")
        };
        assert_eq!(status.code, 404);
        assert!(!status.is_not_found());
        assert_eq!(status.message, "404 page not found");
    }
}
