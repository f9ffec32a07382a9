//! What every reconcile shares: the client, metrics, per-object backoff and the operator's
//! settings.

use std::sync::Arc;

use kube::Client;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// Settings the builders need that do not come from a CR.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of runtime-node pods on CPU (the engine of CPU models, and every meter sidecar).
    pub runtime_image: String,
    /// Image of the runtime-node engine of models that ask for a GPU (a CUDA build).
    pub runtime_cuda_image: String,
    /// Prometheus URL KEDA queries.
    pub prometheus_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runtime_image: hearth_crds::constants::DEFAULT_RUNTIME_IMAGE.to_string(),
            runtime_cuda_image: hearth_crds::constants::DEFAULT_RUNTIME_CUDA_IMAGE.to_string(),
            prometheus_url: "http://prometheus-operated.monitoring.svc:9090".to_string(),
        }
    }
}

/// Shared reconcile context.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Controller metrics.
    pub metrics: Metrics,
    /// Operator settings.
    pub settings: Settings,
    /// Retry delays of objects whose reconcile is failing.
    pub backoff: Arc<Backoff>,
}

impl Context {
    /// A context with no failures recorded yet.
    pub fn new(client: Client, metrics: Metrics, settings: Settings) -> Self {
        Self {
            client,
            metrics,
            settings,
            backoff: Arc::new(Backoff::default()),
        }
    }
}
