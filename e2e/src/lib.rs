//! End-to-end helpers for tests against a real cluster (kind): a namespace per test, CRD
//! installation, and waiting on conditions (never sleeping).

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// A client for the current kube context, or a clear reason why there is none.
pub async fn cluster_client() -> anyhow::Result<Client> {
    Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no cluster reachable (run `make e2e`, which creates a kind cluster): {e}")
    })
}

/// Applies the three CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        hearth_crds::InferenceModel::crd(),
        hearth_crds::Tenant::crd(),
        hearth_crds::Tier::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("hearth-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await??;
    }
    Ok(())
}

/// A namespace that is deleted when the guard drops.
pub struct TestNamespace {
    client: Client,
    /// The namespace's name.
    pub name: String,
}

impl TestNamespace {
    /// Creates `hearth-e2e-<suffix>`.
    pub async fn create(client: &Client, suffix: &str) -> anyhow::Result<Self> {
        let name = format!("hearth-e2e-{suffix}");
        let api: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &namespace).await?;
        Ok(Self {
            client: client.clone(),
            name,
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        tokio::spawn(async move {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}

/// True once the object has condition `type_` with `status`.
pub fn has_condition<K>(type_: &'static str, status: &'static str) -> impl kube::runtime::wait::Condition<K>
where
    K: serde::Serialize,
{
    move |object: Option<&K>| {
        object
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| v["status"]["conditions"].as_array().cloned())
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == status))
    }
}

/// Server-side applies one object from YAML.
pub async fn apply<K>(api: &Api<K>, yaml: &str) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let object: K = serde_yaml::from_str(yaml)?;
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("hearth-e2e").force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}
