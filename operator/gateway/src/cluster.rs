//! Cluster config source: kube-runtime reflectors (watches, not polls) on Tiers, Tenants,
//! InferenceModels and the models' EndpointSlices. Every change rebuilds one [`Config`]
//! snapshot from the stores (the same type local mode builds) and swaps it in, at the end of a
//! short window opened by the change, so a burst of events (a rollout) makes one snapshot.
//!
//! Key hashes come from `Tenant.status.apiKeys`, which the operator maintains, so the gateway
//! never reads Secrets. A model's replicas are the ready endpoints (`conditions.ready` not
//! false) of the EndpointSlices of its Service, named by [`child_name`]; the EndpointSlice
//! controller copies the Service's labels onto its slices, so the watch selects slices carrying
//! [`LABEL_MODEL`] and never sees the rest of the cluster's. The CRs are watched as
//! [`DeserializeGuard`]s: a malformed object is logged and left out, never fatal.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use hearth_crds::constants::{LABEL_MODEL, PORT_NAME_HTTP};
use hearth_crds::{InferenceModel, Tenant, Tier};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::config::Config;
use super::server::GatewayState;
use hearth_tenancy::child_name;

/// The label the EndpointSlice controller puts on each slice: its Service's name.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The reflector stores a snapshot is built from.
#[derive(Clone)]
pub struct ClusterStores {
    /// Tiers (cluster-scoped).
    pub tiers: Store<DeserializeGuard<Tier>>,
    /// Tenants.
    pub tenants: Store<DeserializeGuard<Tenant>>,
    /// InferenceModels.
    pub models: Store<DeserializeGuard<InferenceModel>>,
    /// EndpointSlices of the models' Services.
    pub slices: Store<EndpointSlice>,
}

/// The well-formed objects of a store; malformed ones were logged when they arrived.
fn valid<K: Clone + Resource<DynamicType = ()> + 'static>(store: &Store<DeserializeGuard<K>>) -> Vec<K> {
    store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok().cloned())
        .collect()
}

/// `http://host:port` of one address; IPv6 addresses are bracketed.
fn base_url(address: &str, port: i32) -> String {
    if address.contains(':') {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    }
}

/// Ready endpoint URLs by `(namespace, service name)`. The port is the slice's `http` port (the
/// name the controller's Service builder gives it), or its only port; FQDN slices and
/// endpoints whose `ready` condition is false are skipped (absent means ready, as the API
/// documents).
pub fn ready_endpoints(slices: &[impl AsRef<EndpointSlice>]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for slice in slices.iter().map(AsRef::as_ref) {
        let labels = slice.metadata.labels.as_ref();
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.clone(),
            labels.and_then(|l| l.get(LABEL_SERVICE_NAME)).cloned(),
        ) else {
            continue;
        };
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(PORT_NAME_HTTP))
            .or_else(|| ports.first().filter(|_| ports.len() == 1))
            .and_then(|p| p.port);
        let Some(port) = port else {
            continue;
        };
        let urls = out.entry((namespace, service)).or_default();
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if ready {
                urls.extend(endpoint.addresses.iter().map(|a| base_url(a, port)));
            }
        }
    }
    for urls in out.values_mut() {
        urls.sort();
        urls.dedup();
    }
    out
}

/// Builds the snapshot from the stores' current contents.
pub fn snapshot(stores: &ClusterStores) -> Config {
    let tiers = valid(&stores.tiers);
    let tenants = valid(&stores.tenants);
    let models = valid(&stores.models);
    let endpoints = ready_endpoints(&stores.slices.state());
    let replicas_of = |model: &InferenceModel| {
        let key = (
            model.metadata.namespace.clone().unwrap_or_default(),
            child_name(model).unwrap_or_default().to_string(),
        );
        endpoints.get(&key).cloned().unwrap_or_default()
    };
    Config::build(&tiers, &tenants, &models, &[], &replicas_of)
}

/// Logs an object that does not deserialise (once per event, never per snapshot).
fn log_invalid<K>(event: &watcher::Event<DeserializeGuard<K>>) {
    if let watcher::Event::Apply(guard) | watcher::Event::InitApply(guard) = event
        && let Err(invalid) = &guard.0
    {
        tracing::warn!(
            kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or("object"),
            namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
            name = invalid.metadata.name.as_deref().unwrap_or_default(),
            error = %invalid.error,
            "malformed object left out of the gateway's configuration"
        );
    }
}

/// A reflector feeding `writer` from `api`, as a stream of change ticks.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    inspect: fn(&watcher::Event<K>),
) -> BoxStream<'static, ()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflector::reflector(writer, watcher(api, config).default_backoff())
        .filter_map(move |event| async move {
            match event {
                Ok(event) => {
                    inspect(&event);
                    Some(())
                }
                Err(error) => {
                    tracing::warn!(%error, kind = K::kind(&()).as_ref(), "watch failed; retrying");
                    None
                }
            }
        })
        .boxed()
}

/// Starts the four reflectors (`namespace` limits Tenants, InferenceModels and EndpointSlices;
/// Tiers are cluster-scoped) and returns their stores and one stream of change ticks.
pub fn watch(client: &Client, namespace: Option<&str>) -> (ClusterStores, SelectAll<BoxStream<'static, ()>>) {
    fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
        client: &Client,
        namespace: Option<&str>,
    ) -> Api<K> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (tiers, tier_writer) = reflector::store();
    let (tenants, tenant_writer) = reflector::store();
    let (models, model_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let slice_selector = format!("{LABEL_SERVICE_NAME},{LABEL_MODEL}");
    let streams = futures::stream::select_all([
        reflect(
            Api::<DeserializeGuard<Tier>>::all(client.clone()),
            watcher::Config::default(),
            tier_writer,
            log_invalid::<Tier>,
        ),
        reflect(
            api::<DeserializeGuard<Tenant>>(client, namespace),
            watcher::Config::default(),
            tenant_writer,
            log_invalid::<Tenant>,
        ),
        reflect(
            api::<DeserializeGuard<InferenceModel>>(client, namespace),
            watcher::Config::default(),
            model_writer,
            log_invalid::<InferenceModel>,
        ),
        reflect(
            api::<EndpointSlice>(client, namespace),
            watcher::Config::default().labels(&slice_selector),
            slice_writer,
            |_| {},
        ),
    ]);
    let stores = ClusterStores {
        tiers,
        tenants,
        models,
        slices,
    };
    (stores, streams)
}

impl ClusterStores {
    /// Whether every store has had its initial list.
    fn synced(&self) -> bool {
        self.tiers
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
            && self
                .tenants
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
            && self
                .models
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
            && self
                .slices
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
    }
}

/// Rebuilds and swaps in a snapshot `debounce` after a change (the changes arriving in that
/// window make the same snapshot; a steady stream of events cannot postpone it further), once
/// every store has synced; marks the gateway ready after the first. Runs until `changes` ends.
pub async fn rebuild_on_change(
    stores: ClusterStores,
    mut changes: impl Stream<Item = ()> + Unpin,
    state: GatewayState,
    debounce: Duration,
) {
    while changes.next().await.is_some() {
        let quiet = tokio::time::sleep(debounce);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => break,
                more = changes.next() => {
                    if more.is_none() {
                        break;
                    }
                }
            }
        }
        if !stores.synced() {
            continue;
        }
        let config = snapshot(&stores);
        tracing::debug!(
            tenants = config.tenants.len(),
            models = config.models.len(),
            "cluster configuration changed; new snapshot in force"
        );
        state.update(config);
        state.set_ready(true);
    }
}
