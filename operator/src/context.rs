//! What every reconcile shares: the client, metrics and the operator's settings.

use kube::Client;

use crate::metrics::Metrics;

/// Settings the builders need that do not come from a CR.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of runtime-node pods (engine and meter).
    pub runtime_image: String,
    /// Prometheus URL KEDA queries.
    pub prometheus_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runtime_image: hearth_crds::constants::DEFAULT_RUNTIME_IMAGE.to_string(),
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
}
