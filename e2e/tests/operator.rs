//! The installed operator (its image, its RBAC) against a real cluster: run `make e2e`, which
//! creates a kind cluster and installs the chart. Ignored in `cargo test` because this machine
//! type has no Docker engine to run kind.

use hearth_crds::conditions::{FITS, READY, TIER_RESOLVED};
use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_e2e::{TestNamespace, WAIT, apply, cluster_client, has_condition, install_crds};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::wait::{await_condition, conditions};

#[tokio::test]
#[ignore = "needs a kind cluster and Docker: run `make e2e`"]
async fn tenant_gets_a_key_and_model_gets_children_that_go_away_with_it() -> anyhow::Result<()> {
    let client = cluster_client().await?;
    install_crds(&client).await?;
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
    assert_eq!(hash, hearth_tenancy::keys::hash_key(&key));

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
