//! `hearth-operator gateway`: the OpenAI-compatible front door. Every request is authenticated
//! to a Tenant, admitted against its Tier's limits with an atomic token reservation, queued per
//! model by priority and fair share when the replicas are saturated, and proxied to the least
//! loaded replica with the response streamed back as it comes.
//!
//! Local mode embeds it with [`GatewayState::from_local`], [`app`] and [`serve`]; the binary
//! runs it from a folder of CR YAML with [`run`].

pub mod admission;
pub mod auth;
pub mod bucket;
pub mod config;
pub mod error;
pub mod limiter;
pub mod metrics;
pub mod proxy;
pub mod queue;
pub mod redis_limiter;
pub mod request;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod source;
pub mod stream;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use config::{Config, ConfigHandle};
pub use error::GatewayError;
pub use limiter::Limiter;
pub use redis_limiter::{RedisLimiter, RedisLimiterOptions};
pub use server::{GatewayOptions, GatewayState, app};
pub use source::LocalSource;

use crate::local::config::LocalConfig;
use crate::local::keys::LocalKey;
use scheduler::QueueLimits;

/// Options of `hearth-operator gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Folder of Tier, Tenant and InferenceModel YAML (as local mode reads it); watched for
    /// changes.
    #[arg(long, default_value = "examples/local")]
    pub config: PathBuf,
    /// Replica of a served model, `<servedName>=<http://host:port>`; repeat for more.
    #[arg(long = "backend", value_parser = source::parse_backend)]
    pub backends: Vec<(String, String)>,
    /// Folder of key files `<namespace>.<tenant>.<key name>` (local mode's `<state>/keys`).
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
    /// How often the config and keys folders are checked for changes, in milliseconds.
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
}

impl GatewayArgs {
    /// The tunables these flags describe.
    pub fn options(&self) -> GatewayOptions {
        GatewayOptions {
            max_body_bytes: self.max_body_bytes,
            queue: QueueLimits {
                max_queue: self.max_queue,
                max_wait: Duration::from_millis(self.max_queue_wait_ms),
                aging: Duration::from_millis(self.aging_ms),
            },
            upstream_timeout: Duration::from_secs(self.upstream_timeout_seconds),
        }
    }
}

impl GatewayState {
    /// A gateway for local mode: the loaded folder, its keys and the engines' addresses
    /// (`servedName` → `http://host:port` base URLs).
    pub fn from_local(
        local: &LocalConfig,
        keys: &[LocalKey],
        backends: &BTreeMap<String, Vec<String>>,
        options: GatewayOptions,
    ) -> Self {
        Self::new(Config::from_local(local, keys, backends), options)
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

/// Runs the gateway from a config folder until Ctrl-C or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let source = LocalSource {
        config_dir: args.config.clone(),
        keys_dir: args.keys_dir.clone(),
        backends: source::group_backends(&args.backends),
    };
    let config = source.load()?;
    for name in source
        .backends
        .keys()
        .filter(|name| !config.models.contains_key(*name))
    {
        tracing::warn!(model = %name, "--backend names a servedName no InferenceModel declares; ignored");
    }
    let state = match &args.redis_url {
        None => GatewayState::new(config, args.options()),
        Some(url) => {
            let options = RedisLimiterOptions {
                key_prefix: args.redis_key_prefix.clone(),
                timeout: Duration::from_millis(args.redis_timeout_ms),
                ..RedisLimiterOptions::new(url.clone())
            };
            let limiter = RedisLimiter::new(options)
                .map_err(|e| anyhow::anyhow!("--redis-url is not a usable Redis URL: {e}"))?;
            match limiter.ping().await {
                Ok(()) => tracing::info!("limits shared through Redis"),
                Err(error) => {
                    tracing::warn!(error = %error, "Redis does not answer yet; requests are refused until it does")
                }
            }
            GatewayState::with_limiter(
                ConfigHandle::new(config),
                args.options(),
                std::sync::Arc::new(limiter),
            )
        }
    };
    let watcher = tokio::spawn(source.watch(state.clone(), Duration::from_millis(args.reload_interval_ms)));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, "gateway listening");
    let served = serve(listener, state, crate::controller::shutdown_signal()).await;
    watcher.abort();
    Ok(served?)
}
