//! What every reconcile shares: the client, metrics, per-object backoff and the operator's
//! settings.

use std::sync::Arc;

use hearth_crds::InferenceModel;
use hearth_tenancy::meter_tokens::MeterKeys;
use kube::Client;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// Who may reach models through their NetworkPolicies, as the operator is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAccess {
    /// Namespace of the gateway and the operator (pods labelled `hearth.dev/model-access`).
    pub namespace: String,
    /// Namespace whose pods may scrape the engine's and the meter's metrics, if any.
    pub metrics_namespace: Option<String>,
}

/// Settings the builders need that do not come from a CR.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of runtime-node pods on CPU (the engine of CPU models, and every meter sidecar).
    pub runtime_image: String,
    /// Image of the runtime-node engine of models that ask for a GPU (a CUDA build).
    pub runtime_cuda_image: String,
    /// Prometheus URL KEDA queries.
    pub prometheus_url: String,
    /// Root keys of the meters' tokens; `None` runs meters unauthenticated.
    pub meter_keys: Option<MeterKeys>,
    /// Who a model's NetworkPolicy admits; `None` creates no policy.
    pub model_access: Option<ModelAccess>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runtime_image: hearth_crds::constants::DEFAULT_RUNTIME_IMAGE.to_string(),
            runtime_cuda_image: hearth_crds::constants::DEFAULT_RUNTIME_CUDA_IMAGE.to_string(),
            prometheus_url: "http://prometheus-operated.monitoring.svc:9090".to_string(),
            meter_keys: None,
            model_access: None,
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
    /// Every InferenceModel, as the model controller's watch sees them, to settle who holds a
    /// served name; without it each model counts as its name's holder.
    pub models: Option<Store<DeserializeGuard<InferenceModel>>>,
}

impl Context {
    /// A context with no failures recorded yet.
    pub fn new(client: Client, metrics: Metrics, settings: Settings) -> Self {
        Self {
            client,
            metrics,
            settings,
            backoff: Arc::new(Backoff::default()),
            models: None,
        }
    }
}
