//! `hearth-operator local`: the same Tier/Tenant/InferenceModel YAML a cluster takes, served on
//! this machine: validated as the API server would, then per InferenceModel one runtime-node
//! engine and one meter in front of it on 127.0.0.1, the gateway in front of the meters, and the
//! billing aggregator.

mod args;
pub mod config;
pub mod engines;
pub mod keys;
pub mod source;
pub mod statuses;
pub mod supervise;

pub use args::LocalArgs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_billing::aggregator::{Aggregator, MeterSource, TenantStatuses};
use hearth_billing::discovery::Meter;
use hearth_billing::http::BillingState;
use hearth_billing::sanity::{KnownTenants, RecordBounds};
use hearth_billing::store::{EmbeddedStore, UsageStore};
use hearth_gateway::{ConfigHandle, GatewayArgs, GatewayOptions, GatewayState};
use hearth_shutdown::Shutdown;
use hearth_tenancy::meter_tokens::MeterKeys;

use source::LocalSource;
use supervise::{DownModels, Restart, supervise};

/// How often local billing pulls the meters.
const BILLING_INTERVAL: Duration = Duration::from_secs(5);
/// Months of raw usage records local billing keeps (the current one included).
const RAW_RETENTION_MONTHS: u32 = 3;

/// A model served locally: its engine, the meter in front, and where clients reach it.
pub struct LocalModel {
    /// `namespace/name` of its InferenceModel (what its meter tokens derive from).
    pub id: String,
    /// The engine process.
    pub engine: engines::Engine,
    /// The meter process.
    pub meter: engines::Engine,
    /// How to start the engine again.
    pub restart_engine: Restart,
    /// How to start the meter again.
    pub restart_meter: Restart,
}

/// `hearth-operator gateway --source local`: the gateway alone, serving a polled folder of CR
/// YAML, its key files and the static `--backend` replicas, until `shutdown` fires.
pub async fn run_gateway(args: GatewayArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let source = LocalSource {
        config_dir: args.config.clone(),
        keys_dir: args.keys_dir.clone(),
        backends: hearth_gateway::backends::group_backends(&args.backends),
        statuses: None,
        down: None,
    };
    let config = source.load()?;
    for name in source
        .backends
        .keys()
        .filter(|name| !config.models.contains_key(*name))
    {
        tracing::warn!(model = %name, "--backend names a servedName no InferenceModel declares; ignored");
    }
    let limiter = hearth_gateway::limiter(&args)?;
    let state = GatewayState::with_parts(ConfigHandle::new(config), args.options()?, limiter, None);
    let interval = Duration::from_millis(args.reload_interval_ms);
    let task = tokio::spawn(source.watch(state.clone(), interval));
    hearth_gateway::serve_until(&args, state, task, shutdown).await
}

/// Runs local mode until `shutdown` fires (or, with `--check`, validates and exits).
pub async fn run(args: LocalArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let config = config::load(&args.config)?;
    let mut all_keys = Vec::new();
    for (_, tenant) in &config.tenants {
        all_keys.extend(keys::ensure_keys(&args.state_dir, tenant)?);
    }
    println!(
        "hearth local: {} tier(s), {} tenant(s), {} model(s) from {}",
        config.tiers.len(),
        config.tenants.len(),
        config.models.len(),
        args.config.display()
    );
    if args.check {
        for (_, model) in &config.models {
            engines::local_model_path(model)?;
        }
        println!("configuration is valid");
        return Ok(());
    }
    let binary = engines::runtime_node_binary(args.runtime_node_bin.as_deref())?;
    // Loading can take minutes; a Ctrl-C meanwhile stops the processes started so far (they
    // are killed when dropped).
    let keys = MeterKeys::generate().map_err(anyhow::Error::msg)?;
    let models = tokio::select! {
        started = start_models(&args, &binary, &config, &keys) => started?,
        () = shutdown.wait() => {
            println!("stopped before every model was ready");
            return Ok(());
        }
    };

    let statuses = start_billing(&args, &models, &config, &keys).await?;
    let down = Arc::new(DownModels::default());
    let gateway_parts = GatewayParts {
        statuses,
        meter_keys: &keys,
        down: down.clone(),
    };
    let (gateway, stop_gateway) = start_gateway(&args, &models, &config, &all_keys, gateway_parts).await?;
    print_usage(&args, &models, &all_keys);
    let (stop_processes, processes_stopped) = tokio::sync::oneshot::channel::<()>();
    let processes_stop = Shutdown::when(async move {
        let _ = processes_stopped.await;
    });
    let supervisors: Vec<_> = models
        .into_iter()
        .flat_map(|m| {
            [
                tokio::spawn(supervise(
                    m.engine,
                    m.restart_engine,
                    down.clone(),
                    processes_stop.clone(),
                )),
                tokio::spawn(supervise(
                    m.meter,
                    m.restart_meter,
                    down.clone(),
                    processes_stop.clone(),
                )),
            ]
        })
        .collect();
    shutdown.wait().await;
    // Stop taking requests, let in-flight ones finish, then stop the engines and meters.
    let _ = stop_gateway.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), gateway).await;
    let _ = stop_processes.send(());
    futures::future::join_all(supervisors).await;
    println!("stopped");
    Ok(())
}

/// Local billing: pulls the meters into the embedded store, serves invoices on the billing
/// port and publishes usage and budget conditions, which the gateway reads from the returned
/// statuses.
async fn start_billing(
    args: &LocalArgs,
    models: &[LocalModel],
    config: &config::LocalConfig,
    keys: &MeterKeys,
) -> anyhow::Result<Arc<statuses::LocalStatuses>> {
    std::fs::create_dir_all(&args.state_dir)?;
    let store: Arc<dyn UsageStore> = Arc::new(EmbeddedStore::open(&args.state_dir.join("billing.redb"))?);
    let meters = models
        .iter()
        .map(|m| Meter {
            id: format!("local/{}", m.engine.served_name),
            url: format!("http://127.0.0.1:{}", m.meter.port),
            token: Some(keys.usage.token_for(&m.id)),
            bounds: config
                .models
                .iter()
                .find(|(_, model)| hearth_tenancy::object_id(&model.metadata) == m.id)
                .map(|(_, model)| RecordBounds::of(model)),
        })
        .collect();
    let aggregator = Aggregator::new(store.clone(), MeterSource::Static(meters), None)
        .keeping_raw_months(RAW_RETENTION_MONTHS);
    let statuses = Arc::new(statuses::LocalStatuses::default());
    statuses.publish(publish_from(&aggregator, &statuses, config.clone()).await?);
    let billing_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.billing_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "billing port {} on 127.0.0.1 is not available: {e}",
                args.billing_port
            )
        })?;
    let billing_api = hearth_billing::http::app(BillingState {
        store,
        prices: aggregator.prices.clone(),
    });
    tokio::spawn(async move { axum::serve(billing_listener, billing_api).await });
    tokio::spawn(billing_passes(aggregator, args.config.clone(), statuses.clone()));
    Ok(statuses)
}

/// What the local gateway shares with the rest of local mode.
struct GatewayParts<'a> {
    /// Usage and budget conditions from local billing.
    statuses: Arc<statuses::LocalStatuses>,
    /// Root keys of the meters' tokens.
    meter_keys: &'a MeterKeys,
    /// Models with a process down, routed nothing until it is back.
    down: Arc<DownModels>,
}

/// The gateway in front of the meters: tenant keys, tier limits and priority; edits to the YAML
/// folder (a Tier's limits, a new key) are picked up while it runs. Returns its task and the
/// sender that stops it.
async fn start_gateway(
    args: &LocalArgs,
    models: &[LocalModel],
    config: &config::LocalConfig,
    all_keys: &[keys::LocalKey],
    parts: GatewayParts<'_>,
) -> anyhow::Result<(
    tokio::task::JoinHandle<std::io::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let backends: BTreeMap<String, Vec<String>> = models
        .iter()
        .map(|m| {
            (
                m.engine.served_name.clone(),
                vec![format!("http://127.0.0.1:{}", m.meter.port)],
            )
        })
        .collect();
    let mut gateway_config = config.clone();
    parts.statuses.apply(&mut gateway_config);
    let state = GatewayState::new(
        source::gateway_config(&gateway_config, all_keys, &backends),
        GatewayOptions {
            meter_key: Some(parts.meter_keys.proxy.clone()),
            ..GatewayOptions::default()
        },
    );
    let gateway_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.gateway_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "gateway port {} on 127.0.0.1 is not available (choose another with --gateway-port): {e}",
                args.gateway_port
            )
        })?;
    let source = LocalSource {
        config_dir: args.config.clone(),
        keys_dir: Some(args.state_dir.join("keys")),
        backends,
        statuses: Some(parts.statuses),
        down: Some(parts.down),
    };
    tokio::spawn(source.watch(state.clone(), Duration::from_secs(1)));
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(hearth_gateway::serve(gateway_listener, state, async move {
        let _ = gateway_stopped.await;
    }));
    Ok((gateway, stop_gateway))
}

/// Prints how to call the first model: the base URL, a key and a curl line.
fn print_usage(args: &LocalArgs, models: &[LocalModel], all_keys: &[keys::LocalKey]) {
    println!();
    println!("export OPENAI_BASE_URL=http://127.0.0.1:{}/v1", args.gateway_port);
    if let Some(key) = all_keys.first() {
        println!("export OPENAI_API_KEY={}", key.key);
        println!(
            "# key of tenant {} ({}) stored in {}",
            key.tenant,
            key.name,
            key.path.display()
        );
    }
    if let Some(first) = models.first() {
        println!(
            "curl -s $OPENAI_BASE_URL/chat/completions -H \"Authorization: Bearer $OPENAI_API_KEY\" -H 'content-type: application/json' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'",
            first.engine.served_name
        );
    }
    println!(
        "invoices: http://127.0.0.1:{}/billing/invoices/<namespace>/<tenant>?format=csv",
        args.billing_port
    );
    println!("Ctrl-C stops everything.");
}

/// Starts one engine and its meter per InferenceModel, each ready before the next starts.
async fn start_models(
    args: &LocalArgs,
    binary: &std::path::Path,
    config: &config::LocalConfig,
    keys: &MeterKeys,
) -> anyhow::Result<Vec<LocalModel>> {
    let mut models = Vec::new();
    for (index, (_, model)) in config.models.iter().enumerate() {
        let offset = u16::try_from(index).unwrap_or(u16::MAX);
        let engine_port = args.base_port.saturating_add(2 * offset);
        let meter_port = engine_port.saturating_add(1);
        let served_name = model.spec.served_name.clone();
        let restart_engine = Restart {
            what: format!("engine of {served_name}"),
            served_name: served_name.clone(),
            start: {
                let (binary, model) = (binary.to_path_buf(), model.clone());
                Box::new(move || engines::start_engine(&binary, &model, engine_port))
            },
            ready_path: "/ready",
            ready_timeout: Duration::from_secs(300),
        };
        let mut engine = (restart_engine.start)()?;
        engines::wait_ready(
            &mut engine,
            restart_engine.ready_path,
            restart_engine.ready_timeout,
        )
        .await?;
        let ledger = args
            .state_dir
            .join("ledger")
            .join(model.metadata.name.as_deref().unwrap_or("model"));
        let id = hearth_tenancy::object_id(&model.metadata);
        let restart_meter = Restart {
            what: format!("meter of {served_name}"),
            served_name: served_name.clone(),
            start: {
                let (binary, name, tokens) =
                    (binary.to_path_buf(), served_name.clone(), keys.tokens_for(&id));
                Box::new(move || {
                    let ports = engines::MeterPorts {
                        served_name: &name,
                        port: meter_port,
                        engine_port,
                    };
                    engines::start_meter(&binary, &ports, &ledger, &tokens)
                })
            },
            ready_path: "/meter/health",
            ready_timeout: Duration::from_secs(30),
        };
        let mut meter = (restart_meter.start)()?;
        engines::wait_ready(&mut meter, restart_meter.ready_path, restart_meter.ready_timeout).await?;
        println!("model {served_name} ready: engine 127.0.0.1:{engine_port}, meter 127.0.0.1:{meter_port}");
        models.push(LocalModel {
            id,
            engine,
            meter,
            restart_engine,
            restart_meter,
        });
    }
    Ok(models)
}

/// Evaluates every tenant of `config` against its stored usage, each with the status billing
/// last published for it (YAML tenants have none): a condition whose status did not change keeps
/// its transition time, so a pass with the same outcome publishes nothing new and the gateway
/// does not reload.
async fn publish_from(
    aggregator: &Aggregator,
    statuses: &statuses::LocalStatuses,
    mut config: config::LocalConfig,
) -> kube::Result<TenantStatuses> {
    statuses.apply(&mut config);
    let tenants: Vec<_> = config.tenants.iter().map(|(_, t)| t.clone()).collect();
    let tiers: Vec<_> = config.tiers.iter().map(|(_, t)| t.clone()).collect();
    aggregator.publish(&tenants, &tiers).await
}

/// Every interval: pull the meters, re-read the YAML (a Tier's prices or a budget may have
/// changed) and publish usage and budget conditions to the gateway. Runs until dropped.
async fn billing_passes(aggregator: Aggregator, config_dir: PathBuf, statuses: Arc<statuses::LocalStatuses>) {
    loop {
        tokio::time::sleep(BILLING_INTERVAL).await;
        let Ok(config) = config::load(&config_dir) else {
            // The gateway's source logs the invalid edit; billing waits for a valid one.
            continue;
        };
        let tenants: Vec<_> = config.tenants.iter().map(|(_, t)| t.clone()).collect();
        let _ = aggregator.pull_all(&KnownTenants::listed_now(&tenants)).await;
        aggregator.compact().await;
        match publish_from(&aggregator, &statuses, config).await {
            Ok(published) => statuses.publish(published),
            Err(error) => tracing::warn!(%error, "local billing pass failed; retrying next pass"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two billing passes over the same usage, at different times: the second publishes nothing
    /// new (the condition keeps its transition time), so the gateway's source sees no change and
    /// does not reload every pass.
    #[tokio::test]
    async fn a_pass_with_the_same_outcome_publishes_nothing_new() {
        let path = std::env::temp_dir().join(format!("hearth-local-passes-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(EmbeddedStore::open(&path).expect("store"));
        let aggregator = Aggregator::new(store, MeterSource::Static(Vec::new()), None);
        let tenant = serde_yaml::from_str(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme, namespace: default}\nspec: {tierRef: t, budget: {monthlyLimit: \"1\", action: Block}}\n",
        )
        .expect("tenant YAML");
        let config = config::LocalConfig {
            tenants: vec![("acme.yaml".into(), tenant)],
            ..Default::default()
        };
        let statuses = statuses::LocalStatuses::default();
        statuses.publish(
            publish_from(&aggregator, &statuses, config.clone())
                .await
                .expect("first pass"),
        );
        let after_first = statuses.version();
        tokio::time::sleep(Duration::from_millis(5)).await;
        statuses.publish(
            publish_from(&aggregator, &statuses, config)
                .await
                .expect("second pass"),
        );
        assert_eq!(
            statuses.version(),
            after_first,
            "an unchanged pass moved the version"
        );
        let _ = std::fs::remove_file(&path);
    }
}
