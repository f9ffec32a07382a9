//! `hearth-operator gateway`: the OpenAI-compatible front door. Every request is authenticated
//! to a Tenant, admitted against its Tier's limits with an atomic token reservation, queued per
//! model by priority and fair share when the replicas are saturated, and proxied to the least
//! loaded replica with the response streamed back as it comes.
//!
//! [`run`] serves it from the cluster's CRs and EndpointSlices (`--source cluster`, what the
//! chart starts). Local mode (the `hearth-local` crate) builds a [`Config`] from a folder of CR
//! YAML and serves it with [`GatewayState::new`] and [`serve`] (`--source local`, and inside
//! `hearth-operator local`).

pub mod admission;
pub mod auth;
pub mod backends;
pub mod bucket;
pub mod canary;
pub mod cluster;
pub mod config;
pub mod error;
pub mod limiter;
pub mod metrics;
pub mod proxy;
pub mod queue;
pub mod rate_limit;
pub mod redis_limiter;
pub mod request;
pub mod router;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod stream;
pub mod wake;

use hearth_tenancy::meter_tokens::{MeterCredential, MeterRootKey};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, ConfigHandle};
pub use error::GatewayError;
pub use limiter::Limiter;
pub use redis_limiter::{RedisLimiter, RedisLimiterOptions};
pub use server::{GatewayOptions, GatewayState, app, metrics_app};

use scheduler::QueueLimits;

/// Where the gateway's configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Watch Tiers, Tenants, InferenceModels and EndpointSlices in the cluster (in-cluster
    /// config or the kubeconfig); wakes models at zero replicas.
    Cluster,
    /// Poll a folder of CR YAML, key files and static `--backend` URLs; no scale from zero.
    Local,
}

/// Options of `hearth-operator gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Address of `/metrics`, apart from the public port: its labels name tenants and replica
    /// addresses.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: std::net::SocketAddr,
    /// Configuration source: `cluster` (the default, what the chart runs: watches the API
    /// server, needs a kubeconfig or in-cluster service account) or `local` (`--config`,
    /// `--keys-dir` and `--backend`, for running next to local engines without a cluster).
    #[arg(long, value_enum, default_value_t = SourceKind::Cluster, env = "HEARTH_GATEWAY_SOURCE")]
    pub source: SourceKind,
    /// Cluster source: watch Tenants, InferenceModels and EndpointSlices in this namespace only
    /// (Tiers are cluster-scoped); all namespaces when absent.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Cluster source: patch a model's `deployments/<name>/scale` when a request finds it at
    /// zero replicas (`autoscaling.mode: gateway`); off, such requests get 503 at once.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub scale_from_zero: bool,
    /// Cluster source: longest wait, in seconds, for a model at zero to get a ready replica
    /// before a 503 with `Retry-After`.
    #[arg(long, default_value_t = 120)]
    pub scale_from_zero_timeout_seconds: u64,
    /// Cluster source: quiet time in milliseconds after a change before the snapshot is
    /// rebuilt (a burst of events makes one snapshot).
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
    /// Local source: folder of Tier, Tenant and InferenceModel YAML (as local mode reads it);
    /// watched for changes.
    #[arg(long, default_value = "examples/local")]
    pub config: PathBuf,
    /// Local source: replica of a served model, `<servedName>=<http://host:port>`; repeat for
    /// more.
    #[arg(long = "backend", value_parser = backends::parse_backend)]
    pub backends: Vec<(String, String)>,
    /// Local source: folder of key files `<namespace>.<tenant>.<key name>` (local mode's
    /// `<state>/keys`).
    #[arg(long)]
    pub keys_dir: Option<PathBuf>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Requests waiting per model before new ones are shed with 503.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Longest wait in a model's queue, in milliseconds, before a 503.
    #[arg(long, default_value_t = 30_000)]
    pub max_queue_wait_ms: u64,
    /// Wait in milliseconds after which a lower priority band is served ahead of higher ones.
    #[arg(long, default_value_t = 5_000)]
    pub aging_ms: u64,
    /// Longest wait in seconds for an engine's response head.
    #[arg(long, default_value_t = 600)]
    pub upstream_timeout_seconds: u64,
    /// How a model's replica is chosen: `prefix-affinity` (requests sharing a prompt prefix go
    /// to the same replica unless it is clearly busier) or `least-outstanding`.
    #[arg(long, default_value = "prefix-affinity", value_parser = router::router_named)]
    pub router: Arc<dyn router::Router>,
    /// Local source: how often the config and keys folders are checked for changes, in
    /// milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub reload_interval_ms: u64,
    /// Redis holding the limiter state that every gateway replica shares
    /// (`redis://[:password@]host:port[/db]`); without it each replica limits on its own, in
    /// memory. Fails closed: while Redis does not answer within `--redis-timeout-ms`,
    /// completion requests are refused with 503 `limiter_unavailable` and `Retry-After: 1`
    /// rather than admitted past the tenants' limits and quotas.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// First part of every Redis key, so several installs can share one Redis.
    #[arg(long, default_value = "hearth")]
    pub redis_key_prefix: String,
    /// Longest wait for Redis per admission, in milliseconds, before failing closed.
    #[arg(long, default_value_t = 250)]
    pub redis_timeout_ms: u64,
    /// File holding the root key the meters' proxy tokens derive from (the chart mounts it from
    /// its meter-keys Secret); without it no token is sent and meters that need one answer 401.
    #[arg(long, env = "HEARTH_METER_PROXY_KEY_FILE")]
    pub meter_proxy_key_file: Option<PathBuf>,
}

impl GatewayArgs {
    /// The tunables these flags describe; fails on an unreadable or too short meter key.
    pub fn options(&self) -> anyhow::Result<GatewayOptions> {
        let meter_key = self
            .meter_proxy_key_file
            .as_deref()
            .map(|path| MeterRootKey::read(MeterCredential::Proxy, path))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(GatewayOptions {
            max_body_bytes: self.max_body_bytes,
            queue: QueueLimits {
                max_queue: self.max_queue,
                max_wait: Duration::from_millis(self.max_queue_wait_ms),
                aging: Duration::from_millis(self.aging_ms),
            },
            upstream_timeout: Duration::from_secs(self.upstream_timeout_seconds),
            router: self.router.clone(),
            meter_key,
        })
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight responses (streams included) finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Streamed chunks go out at once: without TCP_NODELAY a small write can wait for a
    // delayed ACK (40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the gateway from the cluster source until `shutdown` fires. The local source is local
/// mode's (`hearth_local::run_gateway`), which builds the same gateway from a folder.
pub async fn run(args: GatewayArgs, shutdown: hearth_shutdown::Shutdown) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.source == SourceKind::Cluster,
        "--source local is served by local mode's gateway, not this one"
    );
    let (state, source_task) = start_cluster(&args).await?;
    serve_until(&args, state, source_task, shutdown).await
}

/// Listens on `--listen` and serves `state` until `shutdown` fires, then stops the task that
/// feeds it new snapshots.
pub async fn serve_until(
    args: &GatewayArgs,
    state: GatewayState,
    source_task: tokio::task::JoinHandle<()>,
    shutdown: hearth_shutdown::Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-listen {}: {e}", args.metrics_listen))?;
    tracing::info!(listen = %args.listen, metrics = %args.metrics_listen, source = ?args.source, "gateway listening");
    let metrics_server = axum::serve(metrics_listener, metrics_app(state.clone()));
    let metrics = tokio::spawn(async move { metrics_server.await });
    let served = serve(listener, state, async move { shutdown.wait().await }).await;
    metrics.abort();
    source_task.abort();
    Ok(served?)
}

/// The cluster source: reflectors feeding snapshots, and a scaler when scale from zero is on.
/// The gateway reports not ready until every store has synced.
async fn start_cluster(args: &GatewayArgs) -> anyhow::Result<(GatewayState, tokio::task::JoinHandle<()>)> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "no Kubernetes client for --source cluster ({e}); run with --source local to serve a folder of YAML"
            )
        })?;
    let waker = args.scale_from_zero.then(|| {
        Arc::new(wake::Waker::new(
            Arc::new(wake::KubeScaler::new(client.clone())),
            Duration::from_secs(args.scale_from_zero_timeout_seconds),
        ))
    });
    let state = GatewayState::with_parts(ConfigHandle::default(), args.options()?, limiter(args)?, waker);
    state.set_ready(false);
    let (stores, changes) = cluster::watch(&client, args.namespace.as_deref());
    let task = tokio::spawn(cluster::rebuild_on_change(
        stores,
        changes,
        state.clone(),
        Duration::from_millis(args.debounce_ms),
    ));
    Ok((state, task))
}

/// Where admission state lives: in this gateway's memory, or in Redis with `--redis-url`.
pub fn limiter(args: &GatewayArgs) -> anyhow::Result<Arc<dyn Limiter>> {
    let Some(url) = &args.redis_url else {
        return Ok(Arc::new(admission::Admission::new()));
    };
    let options = RedisLimiterOptions {
        key_prefix: args.redis_key_prefix.clone(),
        timeout: Duration::from_millis(args.redis_timeout_ms),
        ..RedisLimiterOptions::new(url.clone())
    };
    let limiter = RedisLimiter::new(options)
        .map_err(|e| anyhow::anyhow!("--redis-url is not a usable Redis URL: {e}"))?;
    // Checked in the background: a Redis that is still starting must not stop the gateway.
    let probe = limiter.clone();
    tokio::spawn(async move {
        match probe.ping().await {
            Ok(()) => tracing::info!("limits shared through Redis"),
            Err(error) => {
                tracing::warn!(%error, "Redis does not answer yet; requests are refused until it does")
            }
        }
    });
    Ok(Arc::new(limiter))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    #[test]
    fn the_router_flag_names_a_registered_router() {
        let default = Cli::try_parse_from(["gateway"]).expect("parses");
        assert_eq!(
            format!("{:?}", default.args.router),
            "PrefixAffinity { slack: 2 }"
        );
        let chosen = Cli::try_parse_from(["gateway", "--router", "least-outstanding"]).expect("parses");
        assert_eq!(
            format!("{:?}", chosen.args.options().unwrap().router),
            "LeastOutstanding"
        );
        let refused = Cli::try_parse_from(["gateway", "--router", "random"])
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("least-outstanding"), "{refused}");
    }
}
