//! Flags of `hearth-operator controller`.

use std::net::SocketAddr;
use std::path::PathBuf;

use hearth_tenancy::meter_tokens::MeterKeys;

use crate::context::ModelAccess;

/// Shortest invoice token accepted, in bytes.
const MIN_BILLING_TOKEN_BYTES: usize = 16;

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
    /// Months of raw usage records kept, the current one included; older ones are compacted
    /// into their monthly totals.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub billing_raw_retention_months: u32,
    /// PostgreSQL connection string for the billing store (instead of the embedded file), e.g.
    /// `host=db port=5432 user=hearth password=… dbname=billing`.
    #[arg(long, env = "HEARTH_BILLING_POSTGRES_URL")]
    pub billing_postgres_url: Option<String>,
    /// URL that receives every usage record as a CloudEvent (e.g. OpenMeter's
    /// `/api/v1/events`); unset, nothing is exported.
    #[arg(long, env = "HEARTH_BILLING_CLOUDEVENTS_SINK")]
    pub billing_cloudevents_sink: Option<String>,
    /// Folder holding the meters' root keys, files `proxy` and `usage` (the chart mounts its
    /// meter-keys Secret there): each model's meter tokens derive from them.
    #[arg(long, env = "HEARTH_METER_KEYS_DIR")]
    pub meter_keys_dir: Option<PathBuf>,
    /// Run meters without tokens (only where nothing but the gateway and billing can reach
    /// model pods); without it `--meter-keys-dir` is required.
    #[arg(long)]
    pub unauthenticated_meters: bool,
    /// Namespace of the gateway and the operator: each model gets a NetworkPolicy admitting
    /// only pods there labelled `hearth.dev/model-access: "true"`. Unset, no policy is made.
    #[arg(long, env = "HEARTH_MODEL_ACCESS_NAMESPACE")]
    pub model_access_namespace: Option<String>,
    /// Namespace whose pods may also scrape models' metrics through that policy (Prometheus).
    #[arg(long, env = "HEARTH_METRICS_NAMESPACE")]
    pub metrics_namespace: Option<String>,
    /// File holding the token invoice readers send as `Authorization: Bearer` (the chart mounts
    /// its billing-token Secret there).
    #[arg(long, env = "HEARTH_BILLING_TOKEN_FILE")]
    pub billing_token_file: Option<PathBuf>,
    /// Serve invoices to anyone who reaches the billing port; without it `--billing-token-file`
    /// is required.
    #[arg(long)]
    pub unauthenticated_invoices: bool,
}

impl ControllerArgs {
    /// The meters' root keys: read from `--meter-keys-dir`, or none with
    /// `--unauthenticated-meters`.
    pub fn meter_keys(&self) -> anyhow::Result<Option<MeterKeys>> {
        match (&self.meter_keys_dir, self.unauthenticated_meters) {
            (Some(dir), _) => Ok(Some(MeterKeys::read_dir(dir).map_err(anyhow::Error::msg)?)),
            (None, true) => Ok(None),
            (None, false) => anyhow::bail!(
                "--meter-keys-dir (HEARTH_METER_KEYS_DIR) is required: meters check tokens derived from its keys; pass --unauthenticated-meters only where nothing else can reach model pods"
            ),
        }
    }

    /// The invoice readers' token: read from `--billing-token-file`, or none with
    /// `--unauthenticated-invoices`.
    pub fn billing_token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.billing_token_file else {
            anyhow::ensure!(
                self.unauthenticated_invoices,
                "--billing-token-file (HEARTH_BILLING_TOKEN_FILE) is required: invoices name tenants and their spend; pass --unauthenticated-invoices only where nothing else reaches the billing port"
            );
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --billing-token-file {}: {e}", path.display()))?;
        let token = text.trim();
        anyhow::ensure!(
            token.len() >= MIN_BILLING_TOKEN_BYTES,
            "--billing-token-file {} holds {} bytes; at least {MIN_BILLING_TOKEN_BYTES} are required",
            path.display(),
            token.len()
        );
        Ok(Some(token.to_string()))
    }

    /// Who models' NetworkPolicies admit, if policies are on.
    pub fn model_access(&self) -> Option<ModelAccess> {
        self.model_access_namespace.as_ref().map(|namespace| ModelAccess {
            namespace: namespace.clone(),
            metrics_namespace: self.metrics_namespace.clone(),
        })
    }
}
