//! Scale from zero: a request for a served name with no ready replica asks for one and waits,
//! bounded, for a ready endpoint to appear in the Config snapshot. The ask is a patch of the
//! Deployment's `scale` subresource behind the [`Scaler`] trait (kube in a cluster, a fake in
//! tests; local mode has none). Requests for the same cold model share one patch: the first
//! starts it as a task of its own (a client hanging up does not cancel it), the others await
//! the same result, and no new patch is sent for that model until it has been seen ready or
//! the wait bound has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::config::{Config, ConfigHandle, ScaleTarget, Variant};

/// Field manager of the gateway's scale patches.
pub const FIELD_MANAGER: &str = "hearth-gateway";

/// A failed scale patch.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The API server refused or could not be reached.
    #[error("patching deployments/{deployment}/scale in namespace {namespace}: {source}")]
    Patch {
        /// Namespace of the Deployment.
        namespace: String,
        /// The Deployment.
        deployment: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Asks for replicas of a model's Deployment.
pub trait Scaler: Send + Sync + 'static {
    /// Sets the Deployment's replica count to `target.replicas`.
    fn scale_up(&self, target: ScaleTarget) -> BoxFuture<'static, Result<(), ScaleError>>;
}

/// The real scaler: a merge patch of `deployments/<name>/scale` with the gateway's field manager.
#[derive(Clone)]
pub struct KubeScaler {
    client: kube::Client,
}

impl KubeScaler {
    /// A scaler using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl Scaler for KubeScaler {
    fn scale_up(&self, target: ScaleTarget) -> BoxFuture<'static, Result<(), ScaleError>> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &target.namespace);
        async move {
            let body = serde_json::json!({"spec": {"replicas": target.replicas}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            api.patch_scale(&target.deployment, &params, &Patch::Merge(&body))
                .await
                .map(|_| ())
                .map_err(|source| ScaleError::Patch {
                    namespace: target.namespace.clone(),
                    deployment: target.deployment.clone(),
                    source,
                })
        }
        .boxed()
    }
}

/// Why a cold model did not become ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WakeError {
    /// No ready endpoint appeared within the bound.
    #[error("no ready replica within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The scale patch failed (the message names the Deployment).
    #[error("{0}")]
    Scale(String),
}

impl WakeError {
    /// Bounded label for metrics and the error body.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "wake_timeout",
            Self::Scale(_) => "scale_failed",
        }
    }
}

type PatchFuture = Shared<BoxFuture<'static, Result<(), String>>>;

struct Pending {
    since: Instant,
    patch: PatchFuture,
}

/// Wakes cold models: one scale patch per model per cold period, and a bounded wait.
pub struct Waker {
    scaler: Arc<dyn Scaler>,
    timeout: Duration,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Waker {
    /// A waker that patches through `scaler` and waits at most `timeout` for a replica.
    pub fn new(scaler: Arc<dyn Scaler>, timeout: Duration) -> Self {
        Self {
            scaler,
            timeout,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The wait bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks for a replica of `variant` if the operator reports it at zero pods, sharing the
    /// patch with every other request for it in this cold period. Variants the gateway does
    /// not scale, or whose pods are already starting, need no patch.
    pub async fn request(&self, variant: &Variant) -> Result<(), WakeError> {
        let Some(target) = variant.scale.clone().filter(|t| t.at_zero) else {
            return Ok(());
        };
        let patch = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(&variant.id) {
                Some(p) if p.since.elapsed() < self.timeout => p.patch.clone(),
                _ => {
                    tracing::info!(model = %variant.id, replicas = target.replicas, "model at zero replicas; asking for a replica");
                    let task = tokio::spawn(self.scaler.scale_up(target));
                    let patch = async move {
                        match task.await {
                            Ok(result) => result.map_err(|e| e.to_string()),
                            Err(join) => Err(format!("scale task failed: {join}")),
                        }
                    }
                    .boxed()
                    .shared();
                    pending.insert(
                        variant.id.clone(),
                        Pending {
                            since: Instant::now(),
                            patch: patch.clone(),
                        },
                    );
                    patch
                }
            }
        };
        patch.await.map_err(|message| {
            tracing::warn!(model = %variant.id, %message, "scale from zero failed");
            self.forget(&variant.id);
            WakeError::Scale(message)
        })
    }

    /// Starts [`Self::request`] in the background (a cold canary chosen while another variant
    /// of the name can serve the request).
    pub fn nudge(self: &Arc<Self>, variant: &Variant) {
        let waker = self.clone();
        let variant = variant.clone();
        tokio::spawn(async move {
            let _ = waker.request(&variant).await;
        });
    }

    /// Wakes `variant` and waits until the served name has a ready replica in the snapshot;
    /// returns that snapshot.
    pub async fn wake_and_wait(
        &self,
        config: &ConfigHandle,
        served_name: &str,
        variant: &Variant,
    ) -> Result<Arc<Config>, WakeError> {
        // Subscribe before looking, so a swap between the look and the wait is not missed.
        let mut updates = config.subscribe();
        let ready = |snapshot: &Config| {
            snapshot
                .models
                .get(served_name)
                .is_some_and(|route| route.replica_count() > 0)
        };
        let wait = async {
            loop {
                let snapshot = updates.borrow_and_update().clone();
                if ready(&snapshot) {
                    return snapshot;
                }
                if updates.changed().await.is_err() {
                    // The handle is gone: nothing will ever swap a snapshot in.
                    std::future::pending::<()>().await;
                }
            }
        };
        let waited = async {
            self.request(variant).await?;
            Ok(wait.await)
        };
        match tokio::time::timeout(self.timeout, waited).await {
            Ok(Ok(snapshot)) => {
                self.forget(&variant.id);
                Ok(snapshot)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(WakeError::Timeout(self.timeout)),
        }
    }

    fn forget(&self, variant_id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(variant_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingScaler(Arc<AtomicUsize>);

    impl Scaler for CountingScaler {
        fn scale_up(&self, _: ScaleTarget) -> BoxFuture<'static, Result<(), ScaleError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }.boxed()
        }
    }

    fn cold(at_zero: bool) -> Variant {
        Variant {
            id: "ns/m".into(),
            weight: 100,
            replicas: Vec::new(),
            scale: Some(ScaleTarget {
                namespace: "ns".into(),
                deployment: "m".into(),
                replicas: 1,
                at_zero,
            }),
            tiers: Default::default(),
        }
    }

    #[tokio::test]
    async fn one_patch_per_cold_period_and_none_while_pods_start() {
        let calls = Arc::new(AtomicUsize::new(0));
        let waker = Waker::new(Arc::new(CountingScaler(calls.clone())), Duration::from_secs(60));
        for _ in 0..3 {
            waker.request(&cold(true)).await.expect("patched");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        waker.forget("ns/m");
        waker.request(&cold(false)).await.expect("no patch needed");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        waker.request(&cold(true)).await.expect("patched again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let waker = Waker::new(Arc::new(CountingScaler(calls)), Duration::from_millis(50));
        let handle = ConfigHandle::default();
        let result = waker.wake_and_wait(&handle, "m", &cold(true)).await;
        assert_eq!(result.err(), Some(WakeError::Timeout(Duration::from_millis(50))));
    }
}
