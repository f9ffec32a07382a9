//! `hearth-operator controller`: leader election, then one kube-runtime Controller per CRD,
//! plus the metrics/health server. The leader also runs billing (the `hearth-billing` crate), so
//! each meter record has one writer.

mod args;
pub mod backoff;
pub mod context;
pub mod http;
pub mod invalid;
pub mod metrics;
pub mod model;
pub mod tenant;
pub mod tier;

pub use args::ControllerArgs;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hearth_crds::constants::LABEL_TENANT;
use hearth_crds::{InferenceModel, Tenant, Tier};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{error, info, warn};

use hearth_billing as billing;
use hearth_billing::aggregator::{Aggregator, MeterSource};
use hearth_billing::http::BillingState;
use hearth_billing::postgres::PostgresStore;
use hearth_billing::store::{EmbeddedStore, UsageStore};
use hearth_kube::leader::{LeadershipLost, LeaseClock, LeaseLock};
use hearth_shutdown::Shutdown;
use hearth_tenancy::meter_tokens::MeterRootKey;

use crate::context::{Context, Settings};
use crate::http::{HealthState, app};
use crate::metrics::Metrics;

/// Label selector of children this operator manages.
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=hearth-operator";

/// Runs the controllers until `shutdown` fires or until leadership is lost.
pub async fn run(args: ControllerArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let meter_keys = args.meter_keys()?;
    let billing_token = args.billing_token()?;
    let client = Client::try_default().await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    serve_health(&args, metrics.clone(), ready.clone()).await?;

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("hearth-operator-{}", std::process::id()));
    let lease = |identity: &str| {
        LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            identity,
            Duration::from_secs(15),
        )
    };
    let mut lock = lease(&identity);
    if let Some(url) = &args.billing_advertise_url {
        lock = lock.with_annotation(billing::front::BILLING_URL_ANNOTATION, url);
    }
    let billing_front = serve_billing_front(&args, lease(&identity), billing_token.as_deref()).await?;
    // A standby replica is healthy and ready to take over.
    ready.store(true, Ordering::Relaxed);
    info!(%identity, "waiting for leadership");
    let acquire = || lock.try_acquire_or_renew(LeaseClock::now());
    let Some(acquired) = wait_for_leadership(acquire, lock.renew_interval(), &shutdown).await else {
        info!("shutting down before leading");
        return Ok(());
    };
    info!(%identity, "leading; starting controllers");
    let stop = keep_leading(lock, acquired, shutdown);
    let usage_key = meter_keys.as_ref().map(|keys| keys.usage.clone());
    start_billing(&args, client.clone(), &billing_front, usage_key).await?;
    let model_access = args.model_access();
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        Settings {
            runtime_image: args.runtime_image,
            runtime_cuda_image: args.runtime_cuda_image,
            model_access,
            prometheus_url: args.prometheus_url,
            meter_keys,
        },
    ));
    run_controllers(&client, ctx, stop).await;
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `--metrics-addr` in the background.
async fn serve_health(args: &ControllerArgs, metrics: Metrics, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let health = app(HealthState { metrics, ready });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, health).await {
            error!(%error, "health server stopped");
        }
    });
    Ok(())
}

/// Every replica answers on the billing port: a standby forwards to the leader.
async fn serve_billing_front(
    args: &ControllerArgs,
    lease: LeaseLock,
    token: Option<&str>,
) -> anyhow::Result<billing::front::BillingFront> {
    let mut billing_front = billing::front::BillingFront::new(Arc::new(lease));
    if let Some(token) = token {
        billing_front = billing_front.with_token(token);
    }
    let billing_listener = tokio::net::TcpListener::bind(args.billing_addr).await?;
    let front_app = billing_front.clone().app();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(billing_listener, front_app).await {
            error!(%error, "billing API stopped");
        }
    });
    Ok(billing_front)
}

/// Renews the lease in the background; the returned future resolves on shutdown or when
/// leadership ends (taken over, or not renewed in time), so a single leader writes.
fn keep_leading(
    lock: LeaseLock,
    acquired: tokio::time::Instant,
    shutdown: Shutdown,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = lost_tx.send(lock.keep_renewing(acquired).await);
    });
    async move {
        tokio::select! {
            () = shutdown.wait() => info!("shutting down"),
            lost = lost_rx => match lost {
                Ok(LeadershipLost::RenewDeadlinePassed(last_error)) => error!(
                    ?last_error,
                    "no lease renewal succeeded within the renew deadline; stepping down so a single leader writes"
                ),
                _ => error!("leadership taken over; stopping so a single leader writes"),
            },
        }
    }
    .boxed()
    .shared()
}

/// One kube-runtime Controller per CRD, each with the children it owns or watches, until `stop`.
async fn run_controllers<S>(client: &Client, ctx: Arc<Context>, stop: S)
where
    S: Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let managed = || watcher::Config::default().labels(MANAGED_SELECTOR);

    let model_controller = Controller::new(
        Api::<DeserializeGuard<InferenceModel>>::all(client.clone()),
        watcher::Config::default(),
    );
    let model_ctx = Arc::new(Context {
        models: Some(model_controller.store()),
        ..(*ctx).clone()
    });
    let models = model_controller
        .owns(Api::<Deployment>::all(client.clone()), managed())
        .owns(Api::<Service>::all(client.clone()), managed())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), managed())
        .owns(Api::<HorizontalPodAutoscaler>::all(client.clone()), managed())
        .graceful_shutdown_on(stop.clone())
        .run(model::reconcile, model::error_policy, model_ctx)
        .for_each(|_| futures::future::ready(()));

    let tenant_controller = Controller::new(
        Api::<DeserializeGuard<Tenant>>::all(client.clone()),
        watcher::Config::default(),
    );
    let tenant_store = tenant_controller.store();
    let tenants = tenant_controller
        .owns(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(LABEL_TENANT),
        )
        .watches(
            Api::<DeserializeGuard<Tier>>::all(client.clone()),
            watcher::Config::default(),
            move |tier| {
                let tier_name = tier
                    .0
                    .as_ref()
                    .ok()
                    .and_then(|t| t.metadata.name.clone())
                    .unwrap_or_default();
                tenant_store
                    .state()
                    .into_iter()
                    .filter(|t| t.0.as_ref().is_ok_and(|t| t.spec.tier_ref == tier_name))
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(tenant::reconcile, tenant::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let tiers = Controller::new(
        Api::<DeserializeGuard<Tier>>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<DeserializeGuard<Tenant>>::all(client.clone()),
        watcher::Config::default(),
        |tenant| {
            tenant
                .0
                .as_ref()
                .ok()
                .map(|t| ObjectRef::<DeserializeGuard<Tier>>::new(&t.spec.tier_ref))
        },
    )
    .graceful_shutdown_on(stop.clone())
    .run(tier::reconcile, tier::error_policy, ctx)
    .for_each(|_| futures::future::ready(()));

    futures::join!(models, tenants, tiers);
}

/// Starts the billing aggregator and serves its API through `front`; only the leader pulls
/// meters, so each record is acknowledged by one writer.
async fn start_billing(
    args: &ControllerArgs,
    client: Client,
    front: &billing::front::BillingFront,
    usage_key: Option<MeterRootKey>,
) -> anyhow::Result<()> {
    if let Some(parent) = args.billing_store.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let sink = args.billing_cloudevents_sink.as_deref();
    let export = sink.is_some();
    let store: Arc<dyn UsageStore> = match args.billing_postgres_url.clone() {
        // The PostgreSQL client blocks: connect off the async workers.
        Some(url) => {
            Arc::new(tokio::task::spawn_blocking(move || PostgresStore::connect(&url, export)).await??)
        }
        None => Arc::new(EmbeddedStore::open_with_export(&args.billing_store, export)?),
    };
    if let Some(sink) = sink {
        let exporter = billing::cloudevents::Exporter::new(store.clone(), sink, "hearth/billing");
        tokio::spawn(exporter.run(Duration::from_secs(args.billing_interval_seconds.max(1))));
    }
    let aggregator = Aggregator::new(
        store.clone(),
        MeterSource::Cluster {
            client: client.clone(),
            usage_key,
        },
        Some(client.clone()),
    )
    .keeping_raw_months(args.billing_raw_retention_months);
    let api = billing::http::app(BillingState {
        store,
        prices: aggregator.prices.clone(),
    });
    front.serve_locally(api);
    tokio::spawn(
        aggregator.run_in_cluster(client, Duration::from_secs(args.billing_interval_seconds.max(1))),
    );
    Ok(())
}

/// The Tenants to re-reconcile when `tier` changes: those whose `tierRef` names it.
pub fn tenants_of_tier(
    tenants: &[Arc<DeserializeGuard<Tenant>>],
    tier: &DeserializeGuard<Tier>,
) -> Vec<ObjectRef<DeserializeGuard<Tenant>>> {
    let Some(tier_name) = tier.0.as_ref().ok().and_then(|t| t.metadata.name.as_deref()) else {
        return Vec::new();
    };
    tenants
        .iter()
        .filter(|t| t.0.as_ref().is_ok_and(|t| t.spec.tier_ref == tier_name))
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}

/// The standby loop: tries `acquire` every `interval` until it takes the lease (the instant
/// the successful attempt was sent) or `shutdown` fires (`None`). The shutdown ends the wait as promptly during a lease call as
/// during the sleep between calls.
pub async fn wait_for_leadership<F, Fut>(
    mut acquire: F,
    interval: Duration,
    shutdown: &Shutdown,
) -> Option<tokio::time::Instant>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = hearth_kube::Result<bool>>,
{
    let attempts = async {
        loop {
            let sent = tokio::time::Instant::now();
            match acquire().await {
                Ok(true) => return sent,
                Ok(false) => {}
                Err(error) => warn!(%error, "lease check failed"),
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        biased;
        () = shutdown.wait() => None,
        acquired = attempts => Some(acquired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard<K: serde::de::DeserializeOwned + kube::Resource>(
        value: serde_json::Value,
    ) -> DeserializeGuard<K> {
        serde_json::from_value(value).expect("guard always deserialises")
    }

    #[test]
    fn a_tier_change_requeues_exactly_its_tenants() {
        let tenant = |name: &str, tier: &str| {
            Arc::new(guard::<Tenant>(serde_json::json!({
                "apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant",
                "metadata": {"name": name, "namespace": "ns"}, "spec": {"tierRef": tier}
            })))
        };
        let broken = Arc::new(guard::<Tenant>(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "broken", "namespace": "ns"}, "spec": {"tierRef": 7}
        })));
        let tenants = vec![
            tenant("a", "gold"),
            tenant("b", "free"),
            tenant("c", "gold"),
            broken,
        ];
        let gold: DeserializeGuard<Tier> = guard(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "Tier", "metadata": {"name": "gold"}, "spec": {}
        }));
        let names: Vec<String> = tenants_of_tier(&tenants, &gold)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[tokio::test]
    async fn a_standby_stops_promptly_when_shutdown_fires_during_the_sleep() {
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = attempts.clone();
        let acquire = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(false) }
        };
        // The lease call returns at once; the shutdown fires 50 ms into the minute-long sleep.
        let shutdown = Shutdown::when(tokio::time::sleep(Duration::from_millis(50)));
        let started = std::time::Instant::now();
        let leading = tokio::time::timeout(
            Duration::from_secs(1),
            wait_for_leadership(acquire, Duration::from_secs(60), &shutdown),
        )
        .await
        .expect("the standby wait ends within a second of the shutdown");
        assert!(leading.is_none());
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "it was sleeping when the shutdown fired"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_standby_that_takes_the_lease_leads() {
        let mut results = vec![Ok(true), Ok(false)];
        let acquire = move || std::future::ready(results.pop().unwrap_or(Ok(false)));
        let shutdown = Shutdown::when(std::future::pending());
        let leading = tokio::time::timeout(
            Duration::from_secs(1),
            wait_for_leadership(acquire, Duration::from_millis(10), &shutdown),
        )
        .await
        .expect("leads after the second try");
        assert!(leading.is_some());
    }
}
