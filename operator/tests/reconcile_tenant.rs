//! Tenant and Tier reconciles against a scripted API server: a missing Tier, key generation
//! (hash published, key only in the Secret), and the idle pass.

mod support;

use std::sync::Arc;

use hearth_crds::{Tenant, Tier};
use hearth_tenancy::keys::hash_key;
use http::{Method, StatusCode};
use kube::core::DeserializeGuard;
use serde_json::{Value, json};
use support::{Expect, scripted, writes};

const TIER: &str = "/apis/hearth.dev/v1alpha1/tiers/gold";
const SECRET: &str = "/api/v1/namespaces/acme-ns/secrets/acme.apikey.prod";
const SECRETS: &str = "/api/v1/namespaces/acme-ns/secrets";
const STATUS: &str = "/apis/hearth.dev/v1alpha1/namespaces/acme-ns/tenants/acme/status";

fn tenant_json() -> Value {
    json!({
        "apiVersion": "hearth.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "acme", "namespace": "acme-ns", "uid": "tenant-uid", "generation": 1},
        "spec": {"tierRef": "gold", "apiKeys": [{"name": "prod"}]}
    })
}

fn tier_json() -> Value {
    json!({"apiVersion": "hearth.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "gold", "generation": 1}, "spec": {"priority": 1}})
}

fn guarded<K: serde::de::DeserializeOwned + kube::Resource>(value: Value) -> Arc<DeserializeGuard<K>> {
    Arc::new(serde_json::from_value(value).expect("guard always deserialises"))
}

#[tokio::test]
async fn tenant_with_missing_tier_gets_tier_resolved_false() {
    let existing_secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme.apikey.prod"}, "data": {"api-key": "aHRoX2tleQ=="}});
    let (ctx, script) = scripted(vec![
        Expect::get_missing(TIER),
        Expect::get(SECRET, existing_secret),
        Expect::apply_status(STATUS, tenant_json()),
    ]);
    hearth_controller::tenant::reconcile(guarded::<Tenant>(tenant_json()), ctx)
        .await
        .expect("reconciles");
    let seen = script.await.expect("script ran");
    let conditions = seen[2].body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .clone();
    let find = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .expect("condition present")
            .clone()
    };
    assert_eq!(find("TierResolved")["status"], "False");
    assert_eq!(find("TierResolved")["reason"], "TierNotFound");
    assert_eq!(find("TierResolved")["message"], "Tier gold does not exist");
    assert_eq!(find("Ready")["status"], "False");
    // The key already existed: its hash (of "hth_key") is published, no Secret is created.
    assert_eq!(seen[2].body["status"]["apiKeys"][0]["hash"], hash_key("hth_key"));
}

#[tokio::test]
async fn tenant_key_is_generated_once_and_only_its_hash_is_published() {
    let (ctx, script) = scripted(vec![
        Expect::get(TIER, tier_json()),
        Expect::get_missing(SECRET),
        Expect::new(Method::POST, SECRETS, StatusCode::CREATED, Value::Null),
        Expect::apply_status(STATUS, tenant_json()),
    ]);
    hearth_controller::tenant::reconcile(guarded::<Tenant>(tenant_json()), ctx)
        .await
        .expect("reconciles");
    let seen = script.await.expect("script ran");
    let secret = &seen[2].body;
    assert_eq!(secret["immutable"], true);
    assert_eq!(secret["metadata"]["labels"]["hearth.dev/tenant"], "acme");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "tenant-uid");
    let encoded = secret["data"]["api-key"].as_str().expect("key data");
    let key = String::from_utf8(base64_decode(encoded)).expect("utf8 key");
    assert!(key.starts_with("hth_") && key.len() == 4 + 43, "{key}");

    let status = &seen[3].body["status"];
    assert_eq!(status["apiKeys"][0]["hash"], hash_key(&key));
    assert_eq!(
        status["apiKeys"][0]["fingerprint"].as_str().map(str::len),
        Some(8)
    );
    assert!(
        !seen[3].body.to_string().contains(&key),
        "the key never leaves its Secret"
    );
    let ready = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned();
    assert_eq!(ready.expect("Ready")["status"], "True");

    // Second pass: the Secret exists and the status is in place, so nothing is written.
    let mut tenant = tenant_json();
    tenant["status"] = status.clone();
    let mut stored = secret.clone();
    stored["metadata"]["resourceVersion"] = json!("5");
    let (ctx, script) = scripted(vec![Expect::get(TIER, tier_json()), Expect::get(SECRET, stored)]);
    hearth_controller::tenant::reconcile(guarded::<Tenant>(tenant), ctx)
        .await
        .expect("reconciles");
    assert_eq!(writes(&script.await.expect("script ran")), 0);
}

#[tokio::test]
async fn tier_counts_its_tenants() {
    let tenants = json!({"apiVersion": "hearth.dev/v1alpha1", "kind": "TenantList", "metadata": {}, "items": [
        tenant_json(),
        {"apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "other", "namespace": "x"}, "spec": {"tierRef": "silver"}},
    ]});
    let (ctx, script) = scripted(vec![
        Expect::get("/apis/hearth.dev/v1alpha1/tenants", tenants),
        Expect::apply_status("/apis/hearth.dev/v1alpha1/tiers/gold/status", tier_json()),
    ]);
    hearth_controller::tier::reconcile(guarded::<Tier>(tier_json()), ctx)
        .await
        .expect("reconciles");
    let seen = script.await.expect("script ran");
    assert_eq!(seen[1].body["status"]["tenants"], 1);
    assert_eq!(seen[1].body["status"]["conditions"][0]["status"], "True");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[tokio::test]
async fn billing_writes_only_usage_and_its_condition_under_its_own_manager() {
    use hearth_crds::tenant::TenantUsage;
    let tenant: Tenant = serde_json::from_value(tenant_json()).expect("tenant");
    let usage = TenantUsage {
        period: "2026-11".into(),
        requests: 3,
        prompt_tokens: 30,
        completion_tokens: 9,
        cost: "0.01".into(),
    };
    let condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "BudgetExceeded".into(),
        status: "False".into(),
        reason: "WithinBudget".into(),
        message: "ok".into(),
        observed_generation: Some(1),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
    };
    let (ctx, script) = scripted(vec![Expect::apply_status(STATUS, tenant_json())]);
    let written =
        hearth_billing::usage_status::write_usage(&ctx.client, &tenant, usage.clone(), condition.clone())
            .await
            .expect("written");
    assert!(written);
    let seen = script.await.expect("script ran");
    assert!(
        seen[0].uri.contains("fieldManager=hearth-billing"),
        "{}",
        seen[0].uri
    );
    let status = &seen[0].body["status"];
    assert_eq!(status["usage"]["cost"], "0.01");
    assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
    assert!(
        status.get("apiKeys").is_none(),
        "the Tenant controller owns apiKeys"
    );

    // Already in place: no write.
    let mut current = tenant.clone();
    current.status = Some(hearth_crds::tenant::TenantStatus {
        usage: Some(usage.clone()),
        conditions: vec![condition.clone()],
        ..Default::default()
    });
    let (ctx, script) = scripted(vec![]);
    let written = hearth_billing::usage_status::write_usage(&ctx.client, &current, usage, condition)
        .await
        .expect("no-op");
    assert!(!written);
    assert_eq!(writes(&script.await.expect("script ran")), 0);
}
