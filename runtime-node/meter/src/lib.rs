//! `runtime-node meter`: the billing sidecar. A reverse proxy in front of the engine that
//! records every metered response's usage in a crash-safe ledger and serves the records to the
//! billing aggregator by cursor.

pub mod auth;
pub mod gpu_time;
pub mod ledger;
pub mod proxy;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hearth_shutdown::Shutdown;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde_json::json;

use self::auth::MeterAuth;
use self::ledger::Ledger;

pub use hearth_crds::constants::{HEADER_REQUEST_ID, HEADER_TENANT, HEADER_TIER};

/// Options of `runtime-node meter`.
#[derive(Debug, Clone, clap::Args)]
pub struct MeterArgs {
    /// Address the meter listens on (the Service targets it).
    #[arg(long, default_value = "0.0.0.0:8001")]
    pub listen: SocketAddr,
    /// The engine's base URL inside the pod.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub upstream: String,
    /// Folder of the ledger's segment files (the pod's volume).
    #[arg(long, default_value = "/var/lib/hearth/ledger")]
    pub ledger_dir: PathBuf,
    /// Segment size before rolling over, in bytes.
    #[arg(long, default_value_t = ledger::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// GPUs the pod holds; above 0 the meter records GPU time for `gpuHour` pricing.
    #[arg(long, env = "HEARTH_GPUS", default_value_t = 0)]
    pub gpus: u32,
    /// Served model name GPU time is billed to.
    #[arg(long, env = "HEARTH_SERVED_NAME", default_value = "")]
    pub served_name: String,
    /// This pod's name (unique GPU-time record ids across replicas).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Seconds of GPU time per record (a crash loses at most one interval).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gpu_record_seconds: u64,
    /// The gateway's token: requests without it in `x-hearth-gateway-token` get 401 (the
    /// operator mounts it from the model's meter Secret).
    #[arg(long, env = "HEARTH_METER_PROXY_TOKEN", hide_env_values = true)]
    pub proxy_token: Option<String>,
    /// Billing's token: `/usage` and `/usage/ack` need it as `Authorization: Bearer`.
    #[arg(long, env = "HEARTH_METER_USAGE_TOKEN", hide_env_values = true)]
    pub usage_token: Option<String>,
    /// Serve without tokens, for a meter that only trusted callers can reach.
    #[arg(long)]
    pub unauthenticated: bool,
    /// After SIGTERM, the longest the meter keeps serving `/usage` so billing can pull what it
    /// has not acknowledged (its ledger goes with the pod); it stops as soon as all is acked.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_seconds: u64,
}

impl MeterArgs {
    /// The tokens the meter checks: both are required unless `--unauthenticated`.
    fn auth(&self) -> anyhow::Result<MeterAuth> {
        let token = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Arc::from)
        };
        let auth = MeterAuth {
            proxy: token(&self.proxy_token),
            usage: token(&self.usage_token),
        };
        if !self.unauthenticated && (auth.proxy.is_none() || auth.usage.is_none()) {
            anyhow::bail!(
                "the meter needs HEARTH_METER_PROXY_TOKEN and HEARTH_METER_USAGE_TOKEN (the operator mounts them from the model's meter Secret), or --unauthenticated where only trusted callers can reach it"
            );
        }
        Ok(auth)
    }
}

/// The meter's metrics.
#[derive(Clone)]
pub struct MeterMetrics {
    registry: Registry,
    /// Usage records by outcome (`durable`, `duplicate`, or an error category).
    pub records: IntCounterVec,
    /// Requests the engine could not be reached for.
    pub upstream_errors: IntCounter,
}

impl MeterMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let records = IntCounterVec::new(
            Opts::new("hearth_meter_records_total", "Usage records by outcome."),
            &["result"],
        )
        .expect("static metric definition is valid");
        let upstream_errors = IntCounter::new(
            "hearth_meter_upstream_errors_total",
            "Requests the engine did not answer.",
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(records.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(upstream_errors.clone()))
            .expect("unique metric");
        Self {
            registry,
            records,
            upstream_errors,
        }
    }
}

/// Shared state of the meter.
#[derive(Clone)]
pub struct MeterState {
    /// The engine's base URL without a trailing slash.
    pub upstream: Arc<str>,
    /// HTTP client to the engine.
    pub client: Client<HttpConnector, axum::body::Body>,
    /// The ledger.
    pub ledger: Ledger,
    /// Metrics.
    pub metrics: MeterMetrics,
    /// Who may call it.
    pub auth: MeterAuth,
    request_counter: Arc<AtomicU64>,
}

impl MeterState {
    /// State for an engine at `upstream` with `ledger`.
    pub fn new(upstream: &str, ledger: Ledger) -> Self {
        Self {
            upstream: upstream.trim_end_matches('/').into(),
            client: Client::builder(TokioExecutor::new()).build(no_delay_connector()),
            ledger,
            metrics: MeterMetrics::new(),
            auth: MeterAuth::default(),
            request_counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same state, checking `auth`'s tokens.
    pub fn with_auth(self, auth: MeterAuth) -> Self {
        Self { auth, ..self }
    }

    /// A request id for requests that arrive without one (not through the gateway).
    fn new_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("meter-{started:x}-{}-{n}", std::process::id())
    }
}

/// An HTTP connector with Nagle's algorithm off (see [`serve`]).
fn no_delay_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

#[derive(Deserialize)]
struct UsageQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

async fn usage(
    State(state): State<MeterState>,
    headers: HeaderMap,
    Query(query): Query<UsageQuery>,
) -> Response {
    if let Err(refused) = state.auth.check_usage(&headers) {
        return refused.into_response();
    }
    match state.ledger.read_after(query.after, query.limit.clamp(1, 10_000)) {
        Ok(records) => {
            let next = records.last().map_or(query.after, |r| r.sequence);
            axum::Json(json!({
                "records": records,
                "next": next,
                "durable": state.ledger.durable_sequence(),
                "acked": state.ledger.acked_sequence(),
            }))
            .into_response()
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct AckBody {
    cursor: u64,
}

async fn ack(
    State(state): State<MeterState>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<AckBody>,
) -> Response {
    if let Err(refused) = state.auth.check_usage(&headers) {
        return refused.into_response();
    }
    match state.ledger.ack(body.cursor).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn metrics(State(state): State<MeterState>) -> String {
    let mut text = String::new();
    let _ = prometheus::TextEncoder::new().encode_utf8(&state.metrics.registry.gather(), &mut text);
    text
}

/// The meter's routes: its own under `/usage` and `/meter/*`, everything else proxied.
pub fn app(state: MeterState) -> Router {
    Router::new()
        .route("/usage", get(usage))
        .route("/usage/ack", post(ack))
        .route("/meter/health", get(|| async { "ok" }))
        .route("/meter/metrics", get(metrics))
        .fallback(proxy::forward)
        .with_state(state)
}

/// Runs the meter on its own multi-threaded runtime (see [`serve`]).
pub fn run(args: MeterArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

/// Runs the meter until SIGTERM/Ctrl-C, then drains (see [`serve_until`]).
pub async fn serve(args: MeterArgs) -> anyhow::Result<()> {
    serve_until(args, Shutdown::on_signals()).await
}

/// Runs the meter until `shutdown`; then it records the GPU interval in progress, keeps
/// serving until billing has acknowledged every record or `--drain-seconds` pass, and drains
/// in-flight responses.
pub async fn serve_until(args: MeterArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    if args.gpus > 0 && args.served_name.is_empty() {
        anyhow::bail!(
            "--served-name (HEARTH_SERVED_NAME) is required when --gpus is above 0: GPU time is billed to it"
        );
    }
    let auth = args.auth()?;
    let ledger = Ledger::open(&args.ledger_dir, args.segment_bytes)?;
    let state = MeterState::new(&args.upstream, ledger).with_auth(auth);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, upstream = %args.upstream, "meter listening");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // The last chunk of a response leaves as a small write after the ledger commit: without
        // TCP_NODELAY, Nagle plus delayed ACKs would hold it for ~40 ms.
        let _ = tcp.set_nodelay(true);
    });
    let (stop_clock, clock_stopped) = tokio::sync::oneshot::channel::<()>();
    let clock = gpu_time::GpuClock {
        pod: if args.pod_name.is_empty() {
            format!("pid-{}", std::process::id())
        } else {
            args.pod_name.clone()
        },
        model: args.served_name.clone(),
        gpus: args.gpus,
        interval: std::time::Duration::from_secs(args.gpu_record_seconds),
    };
    let clock = tokio::spawn(clock.run(state.ledger.clone(), async move {
        let _ = clock_stopped.await;
    }));
    let ledger = state.ledger.clone();
    let drain = std::time::Duration::from_secs(args.drain_seconds);
    let drained = async move {
        shutdown.wait().await;
        // The GPUs are held until the pod stops: record the interval in progress.
        let _ = stop_clock.send(());
        let _ = clock.await;
        wait_until_acked(&ledger, drain).await;
    };
    Ok(axum::serve(listener, app(state))
        .with_graceful_shutdown(drained)
        .await?)
}

/// Returns once billing has acknowledged every durable record, or after `bound`.
async fn wait_until_acked(ledger: &Ledger, bound: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let unacked = ledger.durable_sequence().saturating_sub(ledger.acked_sequence());
        if unacked == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                unacked,
                "stopping with usage records billing has not acknowledged"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
