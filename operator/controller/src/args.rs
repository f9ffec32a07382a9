//! Flags of `hearth-operator controller`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `hearth-operator controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Address of the `/metrics`, `/healthz` and `/readyz` server.
    #[arg(long, default_value = "0.0.0.0:8080", env = "HEARTH_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Image of runtime-node pods on CPU: the engine of CPU models and every meter sidecar.
    #[arg(long, default_value = hearth_crds::constants::DEFAULT_RUNTIME_IMAGE, env = "HEARTH_RUNTIME_IMAGE")]
    pub runtime_image: String,
    /// Image of the runtime-node engine of models with `spec.gpu` (a CUDA build: the CPU image
    /// refuses `--device cuda`), unless the model sets `engine.image`.
    #[arg(
        long,
        default_value = hearth_crds::constants::DEFAULT_RUNTIME_CUDA_IMAGE,
        env = "HEARTH_RUNTIME_CUDA_IMAGE"
    )]
    pub runtime_cuda_image: String,
    /// Prometheus URL that KEDA ScaledObjects query.
    #[arg(
        long,
        default_value = "http://prometheus-operated.monitoring.svc:9090",
        env = "HEARTH_PROMETHEUS_URL"
    )]
    pub prometheus_url: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "hearth-system", env = "POD_NAMESPACE")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "hearth-operator-leader")]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// File of the billing aggregator's embedded store (on the operator's volume).
    #[arg(
        long,
        default_value = "/var/lib/hearth/billing.redb",
        env = "HEARTH_BILLING_STORE"
    )]
    pub billing_store: PathBuf,
    /// Address of the billing API (`/billing/invoices/...`).
    #[arg(long, default_value = "0.0.0.0:8090", env = "HEARTH_BILLING_ADDR")]
    pub billing_addr: SocketAddr,
    /// URL at which other replicas reach this replica's billing API, advertised in the Lease
    /// while leading so standbys can forward invoice requests (the chart sets
    /// `http://$(POD_IP):<port>`).
    #[arg(long, env = "HEARTH_BILLING_ADVERTISE_URL")]
    pub billing_advertise_url: Option<String>,
    /// Seconds between billing passes (pull meters, publish usage).
    #[arg(long, default_value_t = 30)]
    pub billing_interval_seconds: u64,
    /// PostgreSQL connection string for the billing store (instead of the embedded file), e.g.
    /// `host=db port=5432 user=hearth password=… dbname=billing`.
    #[arg(long, env = "HEARTH_BILLING_POSTGRES_URL")]
    pub billing_postgres_url: Option<String>,
    /// URL that receives every usage record as a CloudEvent (e.g. OpenMeter's
    /// `/api/v1/events`); unset, nothing is exported.
    #[arg(long, env = "HEARTH_BILLING_CLOUDEVENTS_SINK")]
    pub billing_cloudevents_sink: Option<String>,
}
