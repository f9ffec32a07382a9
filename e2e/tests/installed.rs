//! Hearth as a user installs it: `make e2e` (`e2e/run.sh`) creates a kind cluster, loads the
//! images, installs the chart (Helm, or the equivalent kustomize base without it) and mounts
//! the SmolLM2 GGUF into the node. This test then serves the model from a PVC, calls the
//! gateway with a tenant's key through a port-forward, waits for the usage to reach
//! `Tenant.status.usage`, and deletes the model. Ignored in `cargo test`: no Docker here.

use hearth_crds::conditions::READY;
use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_e2e::{TestNamespace, WAIT, apply, cluster_client, has_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::wait::{await_condition, conditions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the chart is installed (`e2e/run.sh`).
const SYSTEM_NAMESPACE: &str = "hearth-system";

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn is_available(deployment: Option<&Deployment>) -> bool {
    deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Available" && c.status == "True"))
}

/// Sends one HTTP/1.1 request to port 8080 of `pod` through a port-forward; returns the
/// status code and body.
async fn call_gateway(pods: &Api<Pod>, pod: &str, key: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut forward = pods.portforward(pod, &[8080]).await?;
    let mut stream = forward
        .take_stream(8080)
        .ok_or_else(|| anyhow::anyhow!("no stream for port 8080"))?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    drop(stream);
    forward.join().await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {text:.200}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

#[tokio::test]
#[ignore = "needs a kind cluster with Hearth installed: run `make e2e`"]
async fn installed_chart_serves_a_tenant_and_bills_its_usage() -> anyhow::Result<()> {
    let client = cluster_client().await?;
    let system: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    for name in ["hearth-operator", "hearth-gateway"] {
        tokio::time::timeout(WAIT, await_condition(system.clone(), name, is_available))
            .await
            .map_err(|_| {
                anyhow::anyhow!("{SYSTEM_NAMESPACE}/{name} not Available: is the chart installed (make e2e)?")
            })??;
    }
    let ns = TestNamespace::create(&client, "installed").await?;

    // The GGUF that e2e/run.sh mounted into the node, offered as a read-only PVC.
    let model_dir = env("HEARTH_E2E_MODEL_DIR", "/hearth-models");
    let gguf = env("HEARTH_E2E_GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf");
    let volume = format!("{}-models", ns.name);
    apply(
        &Api::<PersistentVolume>::all(client.clone()),
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {volume}}}\nspec: {{capacity: {{storage: 1Gi}}, accessModes: [ReadOnlyMany], storageClassName: '', persistentVolumeReclaimPolicy: Retain, hostPath: {{path: {model_dir}, type: Directory}}}}\n"
        ),
    )
    .await?;
    apply(
        &Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns.name),
        &format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: models}}\nspec: {{accessModes: [ReadOnlyMany], storageClassName: '', volumeName: {volume}, resources: {{requests: {{storage: 1Gi}}}}}}\n"
        ),
    )
    .await?;

    let tier = format!("{}-gold", ns.name);
    apply(
        &Api::<Tier>::all(client.clone()),
        &format!(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {{name: {tier}}}\nspec: {{priority: 1, pricing: {{inputPerMillionTokens: '1.00', outputPerMillionTokens: '2.00'}}}}\n"
        ),
    )
    .await?;
    apply(
        &Api::<Tenant>::namespaced(client.clone(), &ns.name),
        &format!("apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: acme}}\nspec: {{tierRef: {tier}, apiKeys: [{{name: main}}]}}\n"),
    )
    .await?;
    apply(
        &Api::<InferenceModel>::namespaced(client.clone(), &ns.name),
        &format!(
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {{name: smollm2}}\nspec: {{servedName: e2e-smollm2, source: {{uri: 'pvc://models/{gguf}', format: gguf}}, engine: {{maxContextTokens: 2048}}, replicas: {{min: 1, max: 1}}}}\n"
        ),
    )
    .await?;
    let models: Api<InferenceModel> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(
        WAIT * 3,
        await_condition(models.clone(), "smollm2", has_condition(READY, "True")),
    )
    .await??;
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::timeout(
        WAIT,
        await_condition(tenants.clone(), "acme", has_condition(READY, "True")),
    )
    .await??;

    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("acme.apikey.main")
        .await?;
    let key = String::from_utf8(secret.data.unwrap_or_default()["api-key"].0.clone())?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let gateway = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=gateway"))
        .await?
        .items
        .into_iter()
        .find_map(|p| p.metadata.name)
        .ok_or_else(|| anyhow::anyhow!("no gateway pod"))?;
    let body = r#"{"model":"e2e-smollm2","messages":[{"role":"user","content":"Say yes."}],"max_tokens":8}"#;
    let (status, answer) = call_gateway(&pods, &gateway, &key, body).await?;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let completion_tokens = answer["usage"]["completion_tokens"].as_u64().unwrap_or_default();
    assert!(completion_tokens > 0, "{answer}");
    let (status, _) = call_gateway(&pods, &gateway, "hth_not-a-key", body).await?;
    assert_eq!(status, 401);

    // The meter recorded it, billing pulled it, and the Tenant shows it.
    let billed = move |tenant: Option<&Tenant>| {
        tenant
            .and_then(|t| t.status.as_ref())
            .and_then(|s| s.usage.as_ref())
            .is_some_and(|u| u.requests >= 1 && u.completion_tokens >= completion_tokens)
    };
    tokio::time::timeout(WAIT, await_condition(tenants, "acme", billed)).await??;

    // Deleting the model takes its children with it.
    let uid = models.get("smollm2").await?.metadata.uid.unwrap_or_default();
    models.delete("smollm2", &DeleteParams::foreground()).await?;
    tokio::time::timeout(
        WAIT,
        await_condition(models, "smollm2", conditions::is_deleted(&uid)),
    )
    .await??;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let children = deployments
        .list(&ListParams::default().labels(&format!("{}=smollm2", hearth_crds::constants::LABEL_MODEL)))
        .await?;
    let left: Vec<_> = children
        .items
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    assert!(left.is_empty(), "children left: {left:?}");
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(&volume, &DeleteParams::default())
        .await;
    Ok(())
}
