//! The operator against a real cluster: run `make e2e` (kind). Ignored in `cargo test`
//! because this machine type has no Docker engine to run kind.

use hearth_crds::conditions::{FITS, READY, TIER_RESOLVED};
use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_e2e::{TestNamespace, WAIT, cluster_client, install_crds};
use hearth_operator::cli::ControllerArgs;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

fn has_condition<K>(type_: &'static str, status: &'static str) -> impl kube::runtime::wait::Condition<K>
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

async fn start_operator() {
    let args = ControllerArgs {
        metrics_addr: "127.0.0.1:0".parse().expect("address"),
        runtime_image: hearth_crds::constants::DEFAULT_RUNTIME_IMAGE.into(),
        prometheus_url: "http://prometheus:9090".into(),
        lease_namespace: "default".into(),
        lease_name: "hearth-e2e-leader".into(),
        identity: Some("e2e".into()),
        billing_store: std::env::temp_dir().join("hearth-e2e-billing.redb"),
        billing_addr: "127.0.0.1:0".parse().expect("address"),
        billing_advertise_url: None,
        billing_interval_seconds: 5,
        billing_postgres_url: None,
        billing_cloudevents_sink: None,
    };
    tokio::spawn(async move { hearth_operator::controller::run(args).await });
}

async fn apply<K>(api: &Api<K>, yaml: &str) -> anyhow::Result<()>
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

#[tokio::test]
#[ignore = "needs a kind cluster and Docker: run `make e2e`"]
async fn tenant_gets_a_key_and_model_gets_children_that_go_away_with_it() -> anyhow::Result<()> {
    let client = cluster_client().await?;
    install_crds(&client).await?;
    start_operator().await;
    let ns = TestNamespace::create(&client, "tenant-model").await?;

    apply(
        &Api::<Tier>::all(client.clone()),
        "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {name: e2e-gold}\nspec: {priority: 1}\n",
    )
    .await?;
    apply(
        &Api::<Tenant>::namespaced(client.clone(), &ns.name),
        "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec: {tierRef: e2e-gold, apiKeys: [{name: prod}]}\n",
    )
    .await?;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(
        WAIT,
        await_condition(tenants.clone(), "acme", has_condition(READY, "True")),
    )
    .await??;
    let tenant = tenants.get("acme").await?;
    let hash = tenant
        .status
        .as_ref()
        .map(|s| s.api_keys[0].hash.clone())
        .unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = secrets.get("acme.apikey.prod").await?;
    let key = String::from_utf8(secret.data.unwrap_or_default()["api-key"].0.clone())?;
    assert_eq!(hash, hearth_operator::tenant::keys::hash_key(&key));

    apply(
        &Api::<InferenceModel>::namespaced(client.clone(), &ns.name),
        "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: tiny}\nspec: {servedName: tiny, source: {uri: 'file:///models/tiny.gguf'}}\n",
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(
        WAIT,
        await_condition(deployments.clone(), "tiny", |d: Option<&Deployment>| d.is_some()),
    )
    .await??;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert!(services.get_opt("tiny").await?.is_some());

    let models: Api<InferenceModel> = Api::namespaced(client.clone(), &ns.name);
    let uid = models.get("tiny").await?.metadata.uid.unwrap_or_default();
    models.delete("tiny", &DeleteParams::foreground()).await?;
    tokio::time::timeout(
        WAIT,
        await_condition(models, "tiny", conditions::is_deleted(&uid)),
    )
    .await??;
    tokio::time::timeout(
        WAIT,
        await_condition(deployments, "tiny", |d: Option<&Deployment>| d.is_none()),
    )
    .await??;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kind cluster and Docker: run `make e2e`"]
async fn oversized_model_reports_fits_false_and_missing_tier_is_reported() -> anyhow::Result<()> {
    let client = cluster_client().await?;
    install_crds(&client).await?;
    start_operator().await;
    let ns = TestNamespace::create(&client, "conditions").await?;
    apply(
        &Api::<InferenceModel>::namespaced(client.clone(), &ns.name),
        "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: big}\nspec: {servedName: big, source: {uri: 'hf://meta-llama/Llama-3.1-70B-Instruct'}, engine: {dtype: bfloat16}, gpu: {type: nvidia-h100-80gb}}\n",
    )
    .await?;
    let models: Api<InferenceModel> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(WAIT, await_condition(models, "big", has_condition(FITS, "False"))).await??;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments.get_opt("big").await?.is_none(),
        "no Deployment for a model that does not fit"
    );

    apply(
        &Api::<Tenant>::namespaced(client.clone(), &ns.name),
        "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: orphan}\nspec: {tierRef: no-such-tier}\n",
    )
    .await?;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(
        WAIT,
        await_condition(tenants, "orphan", has_condition(TIER_RESOLVED, "False")),
    )
    .await??;
    Ok(())
}
