//! InferenceModel reconciles against a scripted API server: the exact calls and patch bodies
//! for a first create, an idle second pass, a spec change, a model that does not fit, an
//! object that fails to deserialise, a cluster without KEDA and a write the server refuses.

mod support;

use std::sync::Arc;

use hearth_controller::model::{error_policy, reconcile};
use hearth_crds::InferenceModel;
use hearth_kube::error::Error;
use http::{Method, StatusCode};
use kube::core::{DeserializeGuard, ObjectList};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::{Expect, Seen, scripted, scripted_with_backoff, scripted_with_settings, writes};

const NS: &str = "/apis/apps/v1/namespaces/ml";

fn paths() -> [String; 7] {
    [
        format!("{NS}/deployments/llama"),
        "/api/v1/namespaces/ml/services/llama".to_string(),
        "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/llama".to_string(),
        "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/llama".to_string(),
        "/apis/keda.sh/v1alpha1/namespaces/ml/scaledobjects/llama".to_string(),
        "/api/v1/namespaces/ml/secrets/llama-meter".to_string(),
        "/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/llama".to_string(),
    ]
}
const STATUS: &str = "/apis/hearth.dev/v1alpha1/namespaces/ml/inferencemodels/llama/status";

/// The reads of a first reconcile in an empty namespace, with `scaled` answering the
/// ScaledObject GET, followed by the calls in `then`.
fn first_reconcile_reads(scaled: Expect, then: impl IntoIterator<Item = Expect>) -> Vec<Expect> {
    let [deployment, service, pdb, hpa, _, secret, policy] = paths();
    let mut script = vec![
        Expect::get_missing(&deployment),
        Expect::get_missing(&service),
        Expect::get_missing(&pdb),
        Expect::get_missing(&hpa),
        scaled,
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
    ];
    script.extend(then);
    script
}

fn model_json() -> Value {
    json!({
        "apiVersion": "hearth.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "llama", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {
            "servedName": "llama-3.1-8b",
            "source": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "engine": {"maxBatchSize": 32, "maxContextTokens": 8192, "dtype": "bfloat16"},
            "parallelism": {"tensor": 2},
            "gpu": {"type": "nvidia-a100-80gb"},
            "replicas": {"min": 1, "max": 4},
            "autoscaling": {"mode": "hpa", "metric": "inflightRequests", "target": 16},
            "metering": {"enabled": true}
        }
    })
}

fn guarded(value: Value) -> Arc<DeserializeGuard<InferenceModel>> {
    Arc::new(serde_json::from_value(value).expect("guard always deserialises"))
}

/// What the server holds after applying `body`: the body plus fields the server adds.
fn as_stored(body: &Value) -> Value {
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!("1");
    stored["metadata"]["generation"] = json!(1);
    if stored["kind"] == "Deployment" {
        stored["spec"]["progressDeadlineSeconds"] = json!(600);
        stored["status"] =
            json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
    }
    stored
}

/// The first reconcile of the HPA-mode model on an empty namespace; `scaled_object` answers the
/// ScaledObject GET (KEDA installed or not). Every child is applied, then the status.
async fn first_create_with(scaled_object: fn(&str) -> Expect) -> Vec<Seen> {
    let [deployment, service, pdb, hpa, scaled, _, _] = paths();
    let (ctx, script) = scripted(first_reconcile_reads(
        scaled_object(&scaled),
        [
            Expect::apply(&service),
            Expect::apply(&pdb),
            Expect::apply(&deployment),
            Expect::apply(&hpa),
            Expect::apply_status(STATUS, model_json()),
        ],
    ));
    let action = reconcile(guarded(model_json()), ctx)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));
    script.await.expect("script ran")
}

async fn first_create() -> Vec<Seen> {
    first_create_with(Expect::get_missing).await
}

#[tokio::test]
async fn first_reconcile_applies_every_child_with_our_field_manager() {
    let seen = first_create().await;
    for call in seen.iter().filter(|s| s.method == Method::PATCH) {
        assert!(call.uri.contains("fieldManager=hearth-operator"), "{}", call.uri);
        assert!(call.uri.contains("force=true"), "{}", call.uri);
    }
    let deployment = &seen[9].body;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    let engine = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(engine["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "meter"
    );
    let service = &seen[7].body;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8001);
    let hpa = &seen[10].body;
    assert_eq!(hpa["spec"]["maxReplicas"], 4);

    let status = &seen[11].body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["endpoint"], "http://llama.ml.svc:80/v1");
    let fits = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Fits")
        .expect("Fits");
    assert_eq!(fits["status"], "True");
    assert_eq!(fits["reason"], "MemoryFits");
    assert!(status["memoryPlan"]["perGpuGiB"].is_string());
}

#[tokio::test]
async fn second_reconcile_with_everything_in_place_writes_nothing() {
    let seen = first_create().await;
    let [deployment, service, pdb, hpa, scaled, secret, policy] = paths();
    // The server now holds what was applied; the model carries the status that was written.
    let mut model = model_json();
    model["status"] = seen[11].body["status"].clone();
    // The status was computed before the Deployment reported ready; recompute once with it.
    let (ctx, script) = scripted(vec![
        Expect::get(&deployment, as_stored(&seen[9].body)),
        Expect::get(&service, as_stored(&seen[7].body)),
        Expect::get(&pdb, as_stored(&seen[8].body)),
        Expect::get(&hpa, as_stored(&seen[10].body)),
        Expect::get_missing(&scaled),
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
        Expect::apply_status(STATUS, model_json()),
    ]);
    reconcile(guarded(model.clone()), ctx)
        .await
        .expect("reconcile succeeds");
    let settled = script.await.expect("script ran");
    model["status"] = settled[7].body["status"].clone();

    let (ctx, script) = scripted(vec![
        Expect::get(&deployment, as_stored(&seen[9].body)),
        Expect::get(&service, as_stored(&seen[7].body)),
        Expect::get(&pdb, as_stored(&seen[8].body)),
        Expect::get(&hpa, as_stored(&seen[10].body)),
        Expect::get_missing(&scaled),
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
    ]);
    reconcile(guarded(model), ctx.clone())
        .await
        .expect("reconcile succeeds");
    let idle = script.await.expect("script ran");
    assert_eq!(writes(&idle), 0, "an idle reconcile issues no write: {idle:#?}");
    assert!(
        !ctx.metrics.render().contains("hearth_operator_writes_total{"),
        "no write counted"
    );
}

#[tokio::test]
async fn spec_change_reapplies_only_what_changed() {
    let seen = first_create().await;
    let [deployment, service, pdb, hpa, scaled, secret, policy] = paths();
    let mut model = model_json();
    model["metadata"]["generation"] = json!(2);
    model["spec"]["engine"]["maxBatchSize"] = json!(64);
    model["status"] = seen[11].body["status"].clone();
    let (ctx, script) = scripted(vec![
        Expect::get(&deployment, as_stored(&seen[9].body)),
        Expect::get(&service, as_stored(&seen[7].body)),
        Expect::get(&pdb, as_stored(&seen[8].body)),
        Expect::get(&hpa, as_stored(&seen[10].body)),
        Expect::get_missing(&scaled),
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
        Expect::apply(&deployment),
        Expect::apply_status(STATUS, model_json()),
    ]);
    reconcile(guarded(model), ctx).await.expect("reconcile succeeds");
    let changed = script.await.expect("script ran");
    let args = changed[7].body["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .clone();
    let position = args
        .iter()
        .position(|a| a == "--max-batch-size")
        .expect("flag present");
    assert_eq!(args[position + 1], "64");
    assert_eq!(changed[8].body["status"]["observedGeneration"], 2);
}

#[tokio::test]
async fn model_that_does_not_fit_gets_fits_false_and_no_children() {
    let mut model = model_json();
    model["spec"]["source"]["uri"] = json!("hf://meta-llama/Llama-3.1-70B-Instruct");
    model["spec"]["parallelism"]["tensor"] = json!(1);
    model["spec"]["gpu"]["type"] = json!("nvidia-h100-80gb");
    let (ctx, script) = scripted(vec![Expect::apply_status(STATUS, model_json())]);
    let action = reconcile(guarded(model), ctx).await.expect("not an error");
    assert_eq!(action, Action::await_change());
    let seen = script.await.expect("script ran");
    let conditions = seen[0].body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .clone();
    let fits = conditions.iter().find(|c| c["type"] == "Fits").expect("Fits");
    assert_eq!(fits["status"], "False");
    assert_eq!(fits["reason"], "InsufficientGpuMemory");
    let message = fits["message"].as_str().expect("message");
    assert!(
        message.contains("planned 212.9 GiB per GPU") && message.contains("vs 79.6 GiB on nvidia-h100-80gb"),
        "{message}"
    );
    assert!(
        seen[0].body["status"]["memoryPlan"]["headroomGiB"]
            .as_str()
            .expect("headroom")
            .starts_with('-')
    );
}

#[tokio::test]
async fn invalid_spec_gets_a_condition_naming_the_field() {
    let mut model = model_json();
    model["spec"]["replicas"] = json!({"min": 5, "max": 2});
    let (ctx, script) = scripted(vec![Expect::apply_status(STATUS, model_json())]);
    let error = reconcile(guarded(model.clone()), ctx.clone())
        .await
        .expect_err("invalid spec");
    assert!(matches!(error, Error::InvalidSpec(_)));
    assert_eq!(error_policy(guarded(model), &error, ctx), Action::await_change());
    let seen = script.await.expect("script ran");
    let ready = &seen[0].body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        "spec.replicas.min: 5 must not exceed replicas.max (2)"
    );
}

#[tokio::test]
async fn malformed_object_gets_invalid_object_condition_and_waits_for_change() {
    let mut model = model_json();
    model["spec"]["replicas"]["min"] = json!("two");
    let guard = guarded(model);
    assert!(guard.0.is_err(), "the guard holds the deserialisation error");
    let (ctx, script) = scripted(vec![Expect::new(
        Method::PATCH,
        STATUS,
        StatusCode::OK,
        json!({}),
    )]);
    let error = reconcile(guard.clone(), ctx.clone())
        .await
        .expect_err("reported as invalid");
    assert_eq!(error_policy(guard, &error, ctx), Action::await_change());
    let seen = script.await.expect("script ran");
    assert!(
        !seen[0].uri.contains("fieldManager"),
        "a merge patch, not an apply"
    );
    let condition = &seen[0].body["status"]["conditions"][0];
    assert_eq!(condition["type"], "InvalidObject");
    assert_eq!(condition["reason"], "DeserializationFailed");
    assert!(
        condition["message"]
            .as_str()
            .expect("message")
            .to_lowercase()
            .contains("invalid type"),
        "{condition}"
    );
}

#[test]
fn a_list_with_one_malformed_object_still_yields_the_good_ones() {
    // The watcher lists into `DeserializeGuard`s: one bad object cannot break the stream.
    let mut bad = model_json();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["parallelism"]["tensor"] = json!([1]);
    let list = json!({"apiVersion": "hearth.dev/v1alpha1", "kind": "InferenceModelList", "metadata": {}, "items": [bad, model_json()]});
    let list: ObjectList<DeserializeGuard<InferenceModel>> =
        serde_json::from_value(list).expect("list parses");
    assert!(list.items[0].0.is_err());
    assert_eq!(
        list.items[1]
            .0
            .as_ref()
            .ok()
            .and_then(|m| m.metadata.name.as_deref()),
        Some("llama")
    );
}

#[tokio::test]
async fn leaving_hpa_mode_deletes_our_hpa_but_never_someone_elses() {
    let seen = first_create().await;
    let [deployment, service, pdb, hpa, scaled, secret, policy] = paths();
    let mut model = model_json();
    model["metadata"]["generation"] = json!(2);
    model["spec"]["autoscaling"]["mode"] = json!("none");
    model["status"] = seen[11].body["status"].clone();
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200});
    let (ctx, script) = scripted(vec![
        Expect::get(&deployment, as_stored(&seen[9].body)),
        Expect::get(&service, as_stored(&seen[7].body)),
        Expect::get(&pdb, as_stored(&seen[8].body)),
        Expect::get(&hpa, as_stored(&seen[10].body)),
        Expect::get_missing(&scaled),
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
        Expect::apply(&deployment),
        Expect::new(Method::DELETE, &hpa, StatusCode::OK, status),
        Expect::apply_status(STATUS, model_json()),
    ]);
    reconcile(guarded(model.clone()), ctx)
        .await
        .expect("reconcile succeeds");
    let changed = script.await.expect("script ran");
    assert_eq!(
        changed[7].body["spec"]["replicas"], 1,
        "replicas return to replicas.min"
    );

    // An HPA with the same name that this model does not own is left alone.
    let mut foreign = as_stored(&seen[10].body);
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    let mut applied = as_stored(&changed[7].body);
    applied["status"] = as_stored(&seen[9].body)["status"].clone();
    model["status"] = changed[9].body["status"].clone();
    let (ctx, script) = scripted(vec![
        Expect::get(&deployment, applied),
        Expect::get(&service, as_stored(&seen[7].body)),
        Expect::get(&pdb, as_stored(&seen[8].body)),
        Expect::get(&hpa, foreign),
        Expect::get_missing(&scaled),
        Expect::get_missing(&secret),
        Expect::get_missing(&policy),
        // Readiness changed since the last status (the Deployment now reports ready pods).
        Expect::apply_status(STATUS, model_json()),
    ]);
    reconcile(guarded(model), ctx).await.expect("reconcile succeeds");
    let seen = script.await.expect("script ran");
    assert_eq!(
        writes(&seen),
        1,
        "only the status is written: no DELETE of the foreign HPA"
    );
}

#[tokio::test]
async fn a_cluster_without_keda_still_gets_every_child() {
    // A real API server answers a GET in a group it does not serve with plain-text 404.
    let seen = first_create_with(Expect::get_unserved).await;
    let degraded = condition(&seen[11].body, "Degraded");
    assert_ne!(
        degraded["reason"], "KedaNotInstalled",
        "an HPA-mode model does not need KEDA"
    );
}

#[tokio::test]
async fn keda_mode_without_keda_deploys_the_rest_and_says_what_to_install() {
    let [deployment, service, pdb, _, scaled, _, _] = paths();
    let mut model = model_json();
    model["spec"]["autoscaling"] = json!({"mode": "keda", "metric": "queueDepth", "target": 4});
    let (ctx, script) = scripted(first_reconcile_reads(
        Expect::get_unserved(&scaled),
        [
            Expect::apply(&service),
            Expect::apply(&pdb),
            Expect::apply(&deployment),
            // No ScaledObject write: the API is not there.
            Expect::apply_status(STATUS, model_json()),
        ],
    ));
    let action = reconcile(guarded(model), ctx)
        .await
        .expect("the rest is deployed");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));
    let seen = script.await.expect("script ran");
    assert_eq!(seen[9].body["kind"], "Deployment");
    let degraded = condition(&seen[10].body, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "KedaNotInstalled");
    let message = degraded["message"].as_str().expect("message");
    assert!(
        message.contains("install KEDA") && message.contains("keda.sh/v1alpha1"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failed_write_is_named_in_the_status_and_retried_with_growing_backoff() {
    let [deployment, service, pdb, hpa, scaled, _, _] = paths();
    let denied = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "admission webhook \"policy.example\" denied the request: privileged"
    });
    let (ctx, script) = scripted(first_reconcile_reads(
        Expect::get_missing(&scaled),
        [
            Expect::apply(&service),
            Expect::apply(&pdb),
            Expect::new(Method::PATCH, &deployment, StatusCode::FORBIDDEN, denied),
            Expect::apply_status(STATUS, model_json()),
        ],
    ));
    let error = reconcile(guarded(model_json()), ctx.clone())
        .await
        .expect_err("the write failed");
    assert!(
        matches!(
            error,
            Error::Apply {
                kind: "Deployment",
                ..
            }
        ),
        "{error:?}"
    );
    let seen = script.await.expect("script ran");
    let degraded = condition(&seen[10].body, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ApplyFailed");
    assert_eq!(
        degraded["message"],
        "writing the Deployment failed: HTTP 403: admission webhook \"policy.example\" denied the request: privileged"
    );

    let retry = |ctx: &std::sync::Arc<hearth_controller::context::Context>| {
        error_policy(guarded(model_json()), &error, ctx.clone())
    };
    let delays: Vec<Action> = (0..3).map(|_| retry(&ctx)).collect();
    let seconds = |s| Action::requeue(std::time::Duration::from_secs(s));
    assert_eq!(delays, [seconds(2), seconds(4), seconds(8)]);

    // A reconcile that succeeds resets the object's backoff.
    let (ctx, script) = scripted_with_backoff(
        first_reconcile_reads(
            Expect::get_missing(&scaled),
            [
                Expect::apply(&service),
                Expect::apply(&pdb),
                Expect::apply(&deployment),
                Expect::apply(&hpa),
                Expect::apply_status(STATUS, model_json()),
            ],
        ),
        ctx.backoff.clone(),
    );
    reconcile(guarded(model_json()), ctx.clone())
        .await
        .expect("reconcile succeeds");
    script.await.expect("script ran");
    assert_eq!(retry(&ctx), seconds(2));
}

#[tokio::test]
async fn with_meter_keys_and_model_access_the_tokens_and_the_policy_come_before_the_pods() {
    use hearth_controller::context::{ModelAccess, Settings};
    use hearth_tenancy::meter_tokens::MeterKeys;
    let [deployment, service, pdb, hpa, scaled, secret, policy] = paths();
    let keys = MeterKeys::generate().expect("keys");
    let settings = Settings {
        meter_keys: Some(keys.clone()),
        model_access: Some(ModelAccess {
            namespace: "hearth-system".into(),
            metrics_namespace: None,
        }),
        ..Settings::default()
    };
    let (ctx, script) = scripted_with_settings(
        first_reconcile_reads(
            Expect::get_missing(&scaled),
            [
                Expect::apply(&service),
                Expect::apply(&pdb),
                Expect::apply(&secret),
                Expect::apply(&policy),
                Expect::apply(&deployment),
                Expect::apply(&hpa),
                Expect::apply_status(STATUS, model_json()),
            ],
        ),
        settings,
    );
    reconcile(guarded(model_json()), ctx)
        .await
        .expect("reconcile succeeds");
    let seen = script.await.expect("script ran");
    let stored = &seen[9].body;
    assert_eq!(stored["kind"], "Secret");
    let tokens = keys.tokens_for("ml/llama");
    let decoded = |key: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(stored["data"][key].as_str().expect("base64"))
            .expect("decodes")
    };
    assert_eq!(decoded("proxy-token"), tokens.proxy.into_bytes());
    assert_eq!(decoded("usage-token"), tokens.usage.into_bytes());
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    let network_policy = &seen[10].body;
    assert_eq!(network_policy["kind"], "NetworkPolicy");
    assert_eq!(
        network_policy["spec"]["podSelector"]["matchLabels"]["hearth.dev/model"],
        "llama"
    );
    let meter = &seen[11].body["spec"]["template"]["spec"]["initContainers"][0];
    assert!(
        !meter["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--unauthenticated"))
    );
}

/// The condition of `type_` in a status PATCH body.
fn condition(body: &Value, type_: &str) -> Value {
    body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {body}"))
        .clone()
}

#[tokio::test]
async fn a_served_name_held_in_another_namespace_gets_a_conflict_and_no_children() {
    let mut holder = model_json();
    holder["metadata"] = json!({"name": "llama", "namespace": "team-a", "uid": "uid-0",
        "creationTimestamp": "2026-01-01T00:00:00Z"});
    let mut model = model_json();
    model["metadata"]["creationTimestamp"] = json!("2026-06-01T00:00:00Z");
    let (writer_ctx, script) = scripted(vec![Expect::apply_status(STATUS, model_json())]);
    let (reader, mut writer) = kube::runtime::reflector::store::<DeserializeGuard<InferenceModel>>();
    for object in [holder, model.clone()] {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
            serde_json::from_value(object).expect("guard"),
        ));
    }
    let ctx = Arc::new(hearth_controller::context::Context {
        models: Some(reader),
        ..(*writer_ctx).clone()
    });
    let action = reconcile(guarded(model), ctx).await.expect("not an error");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(60)));
    let seen = script.await.expect("script ran");
    assert_eq!(seen.len(), 1, "only the status: no child is read or written");
    let ready = condition(&seen[0].body, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ServedNameConflict");
    let message = ready["message"].as_str().expect("message");
    assert!(message.contains("held by team-a/llama"), "{message}");
}
