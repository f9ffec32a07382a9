//! The gateway's cluster source, fed through reflector stores as the watches would fill them,
//! in front of small real backends: the snapshot routes to the EndpointSlices' ready addresses,
//! a Tier edit takes effect, InferenceModels sharing a servedName split by weight, and a model
//! at zero is scaled by exactly one `PATCH .../scale` (against a scripted API server) for
//! concurrent requests, which then proceed, or time out with 503 and `Retry-After`.

mod gateway_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_support::*;
use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_gateway::cluster::{ClusterStores, rebuild_on_change, snapshot};
use hearth_gateway::config::ScaleTarget;
use hearth_gateway::wake::{KubeScaler, ScaleError, Scaler, Waker};
use hearth_gateway::{ConfigHandle, GatewayOptions, GatewayState, app};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Expect, scripted};
use tower::ServiceExt;

const KEY: &str = "key-acme";

/// Writers of the four stores, as the reflectors hold them, already past their initial list.
struct Feed {
    tiers: Writer<DeserializeGuard<Tier>>,
    tenants: Writer<DeserializeGuard<Tenant>>,
    models: Writer<DeserializeGuard<InferenceModel>>,
    slices: Writer<EndpointSlice>,
}

fn synced<K>() -> Writer<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::default();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    writer
}

impl Feed {
    fn new() -> Self {
        Self {
            tiers: synced(),
            tenants: synced(),
            models: synced(),
            slices: synced(),
        }
    }

    fn stores(&self) -> ClusterStores {
        ClusterStores {
            tiers: self.tiers.as_reader(),
            tenants: self.tenants.as_reader(),
            models: self.models.as_reader(),
            slices: self.slices.as_reader(),
        }
    }

    /// The objects every test starts from: Tier `gold` (`requestsPerMinute` as given), Tenant
    /// `acme/acme` with key [`KEY`] published in its status, and a malformed Tenant.
    fn basics(&mut self, requests_per_minute: u64) {
        self.tier(requests_per_minute, &[]);
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(KEY)));
        self.tenants.apply_watcher_event(&Event::Apply(guard(json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "namespace": "acme"},
            "spec": {"tierRef": "gold", "apiKeys": [{"name": "main"}]},
            "status": {"apiKeys": [{"name": "main", "hash": hash, "fingerprint": "x", "secretName": "acme-main"}]},
        }))));
        let broken = guard::<Tenant>(json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "broken", "namespace": "acme"},
            "spec": {"tierRef": 7, "apiKeys": "not a list"},
        }));
        assert!(broken.0.is_err(), "the malformed Tenant must not deserialise");
        self.tenants.apply_watcher_event(&Event::Apply(broken));
    }

    /// Tier `gold`; `models` is its allow-list of served names (empty: all).
    fn tier(&mut self, requests_per_minute: u64, models: &[&str]) {
        self.tiers.apply_watcher_event(&Event::Apply(guard(json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "gold"},
            "spec": {"priority": 0, "weight": 1, "limits": {"requestsPerMinute": requests_per_minute},
                "models": models},
        }))));
    }

    /// InferenceModel `acme/<name>` serving `served` with `weight`; `cold` makes it a
    /// gateway-scaled model the operator reports at zero pods.
    fn model(&mut self, name: &str, served: &str, weight: u32, cold: bool) {
        let mut model = json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": "acme"},
            "spec": {"servedName": served, "weight": weight, "source": {"uri": "hf://org/m"}},
        });
        if cold {
            model["spec"]["replicas"] = json!({"min": 0, "max": 2});
            model["spec"]["autoscaling"] = json!({"mode": "gateway"});
            model["status"] = json!({"replicas": 0, "readyReplicas": 0});
        }
        self.models.apply_watcher_event(&Event::Apply(guard(model)));
    }

    /// The EndpointSlice of Service `acme/<service>`: `(address, ready)` endpoints on `port`.
    fn slice(&mut self, service: &str, port: u16, endpoints: &[(&str, Option<bool>)]) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(address, ready)| json!({"addresses": [address], "conditions": {"ready": ready}}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-abcde"), "namespace": "acme",
                "labels": {"kubernetes.io/service-name": service, "hearth.dev/model": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("EndpointSlice");
        self.slices.apply_watcher_event(&Event::Apply(slice));
    }
}

fn guard<K>(value: Value) -> DeserializeGuard<K>
where
    DeserializeGuard<K>: serde::de::DeserializeOwned,
{
    serde_json::from_value(value).expect("a DeserializeGuard always deserialises")
}

async fn send(state: &GatewayState, model: &str) -> axum::response::Response {
    app(state.clone())
        .oneshot(chat(KEY, chat_body(model, Some(3), false)))
        .await
        .expect("response")
}

#[tokio::test]
async fn the_snapshot_routes_to_ready_endpoint_addresses_only() {
    let backend = FakeBackend::start("m").await;
    let mut feed = Feed::new();
    feed.basics(1_000);
    feed.model("m", "m", 100, false);
    // 127.0.0.2 is not ready: a request sent there would fail (nothing listens).
    feed.slice(
        "m",
        backend.addr.port(),
        &[("127.0.0.1", None), ("127.0.0.2", Some(false))],
    );
    feed.slice("other", 9, &[("10.0.0.9", Some(true))]);
    let config = snapshot(&feed.stores());
    assert_eq!(
        config.tenants.len(),
        1,
        "the malformed Tenant is left out, the rest kept"
    );
    assert_eq!(
        config.models["m"].variants[0].replicas,
        vec![format!("http://127.0.0.1:{}", backend.addr.port())]
    );
    let state = GatewayState::new(config, GatewayOptions::default());
    for _ in 0..5 {
        let response = send(&state, "m").await;
        assert_eq!(response.status(), StatusCode::OK, "{}", text(response).await);
    }
    assert_eq!(backend.seen().len(), 5);
}

#[tokio::test]
async fn a_tier_change_is_reflected_in_the_running_gateway() {
    let backend = FakeBackend::start("m").await;
    let mut feed = Feed::new();
    feed.basics(1_000);
    feed.tier(1_000, &["other"]);
    feed.model("m", "m", 100, false);
    feed.slice("m", backend.addr.port(), &[("127.0.0.1", Some(true))]);
    let state = GatewayState::with_handle(ConfigHandle::default(), GatewayOptions::default());
    state.set_ready(false);
    let (ticks, changes) = futures::channel::mpsc::unbounded::<()>();
    let rebuild = tokio::spawn(rebuild_on_change(
        feed.stores(),
        changes,
        state.clone(),
        Duration::from_millis(10),
    ));
    let mut swaps = state.config().subscribe();
    ticks.unbounded_send(()).expect("tick");
    swaps.changed().await.expect("first snapshot");
    let ready = app(state.clone())
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(ready.status(), StatusCode::OK, "ready once synced");
    assert_eq!(
        send(&state, "m").await.status(),
        StatusCode::NOT_FOUND,
        "the tier's allow-list does not name m"
    );

    feed.tier(1_000, &["other", "m"]);
    ticks.unbounded_send(()).expect("tick");
    swaps.changed().await.expect("second snapshot");
    assert_eq!(
        send(&state, "m").await.status(),
        StatusCode::OK,
        "the widened allow-list applies"
    );
    rebuild.abort();
}

#[tokio::test]
async fn models_sharing_a_served_name_split_nine_to_one() {
    let stable = FakeBackend::start("stable").await;
    let canary = FakeBackend::start("canary").await;
    let mut feed = Feed::new();
    feed.basics(100_000);
    feed.model("chat-v1", "chat", 90, false);
    feed.model("chat-v2", "chat", 10, false);
    feed.slice("chat-v1", stable.addr.port(), &[("127.0.0.1", Some(true))]);
    feed.slice("chat-v2", canary.addr.port(), &[("127.0.0.1", Some(true))]);
    let state = GatewayState::new(snapshot(&feed.stores()), GatewayOptions::default());
    for _ in 0..1_000 {
        assert_eq!(send(&state, "chat").await.status(), StatusCode::OK);
    }
    let (to_stable, to_canary) = (stable.seen().len(), canary.seen().len());
    assert_eq!(to_stable + to_canary, 1_000);
    assert!((870..=930).contains(&to_stable), "stable got {to_stable} of 1000");
}

#[tokio::test]
async fn five_concurrent_requests_for_a_model_at_zero_patch_its_scale_once_then_proceed() {
    let backend = FakeBackend::start("m").await;
    let mut feed = Feed::new();
    feed.basics(1_000);
    feed.model("m", "m", 100, true);
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "m", "namespace": "acme"}, "spec": {"replicas": 1}, "status": {"replicas": 0}});
    let (ctx, script) = scripted(vec![Expect::new(
        Method::PATCH,
        "/apis/apps/v1/namespaces/acme/deployments/m/scale",
        StatusCode::OK,
        scale,
    )]);
    let waker = Waker::new(
        Arc::new(KubeScaler::new(ctx.client.clone())),
        Duration::from_secs(30),
    );
    let state = GatewayState::with_waker(
        ConfigHandle::new(snapshot(&feed.stores())),
        GatewayOptions::default(),
        Some(Arc::new(waker)),
    );
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { send(&state, "m").await })
        })
        .collect();
    // The script ends once it has seen its one call and no other for a while.
    let seen = script.await.expect("exactly one scale patch");
    assert_eq!(seen[0].body, json!({"spec": {"replicas": 1}}));
    assert!(
        seen[0].uri.contains("fieldManager=hearth-gateway"),
        "{}",
        seen[0].uri
    );
    assert!(
        requests.iter().all(|r| !r.is_finished()),
        "requests wait for a replica"
    );

    feed.slice("m", backend.addr.port(), &[("127.0.0.1", Some(true))]);
    state.update(snapshot(&feed.stores()));
    for request in requests {
        let response = request.await.expect("request task");
        assert_eq!(response.status(), StatusCode::OK, "{}", text(response).await);
    }
    assert_eq!(backend.seen().len(), 5);
}

struct CountingScaler(Arc<AtomicUsize>);

impl Scaler for CountingScaler {
    fn scale_up(&self, _: ScaleTarget) -> BoxFuture<'static, Result<(), ScaleError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }
}

#[tokio::test]
async fn a_model_that_stays_at_zero_answers_503_with_retry_after() {
    let mut feed = Feed::new();
    feed.basics(1_000);
    feed.model("m", "m", 100, true);
    let patches = Arc::new(AtomicUsize::new(0));
    let waker = Waker::new(
        Arc::new(CountingScaler(patches.clone())),
        Duration::from_millis(100),
    );
    let state = GatewayState::with_waker(
        ConfigHandle::new(snapshot(&feed.stores())),
        GatewayOptions::default(),
        Some(Arc::new(waker)),
    );
    let response = send(&state, "m").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("10"));
    let body: Value = serde_json::from_str(&text(response).await).expect("JSON");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "model_starting");
    assert_eq!(patches.load(Ordering::SeqCst), 1);

    // Without a waker (local mode) the same model is refused at once, with nothing patched.
    let local = GatewayState::new(snapshot(&feed.stores()), GatewayOptions::default());
    let response = send(&local, "m").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text(response).await).expect("JSON");
    assert_eq!(body["error"]["code"], "no_ready_replica");
}

/// A fake API server for the real reflectors: lists answer with `lists[path]`, watches are
/// held open (never answered); returns the client and every URI asked for.
fn fake_watch_server(
    lists: Vec<(&'static str, Value)>,
) -> (kube::Client, Arc<std::sync::Mutex<Vec<String>>>) {
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let uri = request.uri().to_string();
            record.lock().expect("lock").push(uri.clone());
            if uri.contains("watch=true") {
                held.push(send);
                continue;
            }
            let path = uri.split('?').next().unwrap_or_default();
            let list = lists.iter().find(|(p, _)| *p == path).map(|(_, l)| l.clone());
            let (status, body) = match list {
                Some(list) => (200, list),
                None => (404, support::not_found()),
            };
            send.send_response(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).expect("JSON")))
                    .expect("response"),
            );
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

#[tokio::test]
async fn the_watches_fill_the_stores_and_the_first_snapshot_marks_the_gateway_ready() {
    let backend = FakeBackend::start("m").await;
    let mut feed = Feed::new();
    feed.basics(1_000);
    feed.model("m", "m", 100, false);
    feed.slice("m", backend.addr.port(), &[("127.0.0.1", Some(true))]);
    // The lists the API server answers with: what the feed holds, plus a malformed Tenant.
    let stores = feed.stores();
    let tiers = items(stores.tiers.state().iter().filter_map(|g| g.0.as_ref().ok()));
    let mut tenants = items(stores.tenants.state().iter().filter_map(|g| g.0.as_ref().ok()));
    tenants.push(json!({"apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "broken", "namespace": "acme"}, "spec": {"tierRef": 7}}));
    let models = items(stores.models.state().iter().filter_map(|g| g.0.as_ref().ok()));
    let slices = items(stores.slices.state().iter().map(|s| s.as_ref()));
    let (client, seen) = fake_watch_server(vec![
        ("/apis/hearth.dev/v1alpha1/tiers", list("Tier", tiers)),
        (
            "/apis/hearth.dev/v1alpha1/namespaces/acme/tenants",
            list("Tenant", tenants),
        ),
        (
            "/apis/hearth.dev/v1alpha1/namespaces/acme/inferencemodels",
            list("InferenceModel", models),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/acme/endpointslices",
            list("EndpointSlice", slices),
        ),
    ]);

    let state = GatewayState::with_handle(ConfigHandle::default(), GatewayOptions::default());
    state.set_ready(false);
    let readyz = |state: &GatewayState| {
        app(state.clone()).oneshot(
            axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
    };
    assert_eq!(
        readyz(&state).await.expect("response").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut swaps = state.config().subscribe();
    let (stores, changes) = hearth_gateway::cluster::watch(&client, Some("acme"));
    let rebuild = tokio::spawn(rebuild_on_change(
        stores,
        changes,
        state.clone(),
        Duration::from_millis(10),
    ));
    tokio::time::timeout(Duration::from_secs(5), swaps.changed())
        .await
        .expect("a snapshot within 5 s")
        .expect("handle alive");
    assert_eq!(readyz(&state).await.expect("response").status(), StatusCode::OK);
    let response = send(&state, "m").await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(response).await);
    assert_eq!(backend.seen().len(), 1);

    let seen = seen.lock().expect("lock").clone();
    let slice_list = seen
        .iter()
        .find(|uri| {
            uri.starts_with("/apis/discovery.k8s.io/v1/namespaces/acme/endpointslices?")
                && !uri.contains("watch=true")
        })
        .expect("EndpointSlices listed");
    assert!(
        slice_list.contains("labelSelector=kubernetes.io%2Fservice-name%2Chearth.dev%2Fmodel"),
        "{slice_list}"
    );
    assert!(
        seen.iter()
            .any(|uri| uri.contains("/tiers?") && uri.contains("watch=true")),
        "watched, not polled: {seen:#?}"
    );
    rebuild.abort();
}

/// Objects as the JSON items of a list.
fn items<'a, K: serde::Serialize + 'a>(objects: impl Iterator<Item = &'a K>) -> Vec<Value> {
    objects
        .map(|object| serde_json::to_value(object).expect("serialisable"))
        .collect()
}
