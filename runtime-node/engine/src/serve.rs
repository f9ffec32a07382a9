//! `runtime-node serve`: load the model, start the engine, serve HTTP until SIGTERM/Ctrl-C, then
//! drain in-flight requests (bounded by `--drain-timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Device;
use hearth_node_contract::{DeviceSpec, ServeArgs};
use hearth_shutdown::Shutdown;
use prometheus::Registry;

use crate::args::{kv_cache, weight_format};
use crate::engine::{Engine, EngineConfig, GenerateRequest, GenerationEvent, LocalEngine, Prompt};
use crate::loader::{LoadOptions, load_model};
use crate::metrics::EngineMetrics;
use crate::model::kv_cache::DEFAULT_BLOCK_SIZE;
use crate::server::{AppState, app};

/// Tokens per forward pass: bounds prefill chunks so running decodes are not starved.
const MAX_STEP_TOKENS: usize = 512;

/// Maps the command line's device to candle's; a missing GPU is an error, not a panic.
pub fn device(spec: DeviceSpec) -> anyhow::Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(ordinal) => Ok(crate::cuda::new_device(ordinal)?),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(crate::args::UnsupportedDevice(spec).into()),
    }
}

/// How often the GPU gauges are refreshed.
#[cfg(feature = "cuda")]
const GPU_TELEMETRY_INTERVAL: Duration = Duration::from_secs(5);

/// On CUDA, checks the visible GPUs against what the pod asked for and starts the NVML gauges;
/// on CPU, says that the expectation flags are ignored.
fn check_gpus(args: &ServeArgs, registry: &Registry) -> anyhow::Result<()> {
    let expect = crate::gpu::GpuExpectation {
        product: args.expect_gpu_product.clone(),
        memory_gib: args.expect_gpu_memory_gib,
    };
    match args.model.device {
        DeviceSpec::Cpu => {
            if expect != crate::gpu::GpuExpectation::default() {
                tracing::warn!("ignoring --expect-gpu-*: the device is the CPU");
            }
            let _ = registry;
            Ok(())
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(ordinal) => {
            let nvml = crate::cuda::verify_gpus(ordinal + args.tensor_parallel.max(1), &expect)?;
            let metrics = crate::gpu::GpuMetrics::new(registry).context("registering GPU metrics")?;
            crate::cuda::spawn_telemetry(nvml, metrics, GPU_TELEMETRY_INTERVAL)?;
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(crate::args::UnsupportedDevice(args.model.device).into()),
    }
}

/// Runs the server; returns after a signal and the drain.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.tensor_parallel == 0 {
        anyhow::bail!("--tensor-parallel must be at least 1");
    }
    if !matches!(args.dtype.as_str(), "auto" | "f32" | "float32") {
        tracing::warn!(dtype = %args.dtype, "ignoring --dtype: GGUF weights keep their own types, activations are f32");
    }
    if let Some(cache) = &args.model_cache {
        tracing::info!(path = %cache.display(), "--model-cache given; this build only loads local files");
    }
    let registry = Registry::new();
    let metrics = EngineMetrics::new(&registry).context("registering metrics")?;
    check_gpus(&args, &registry)?;
    let options = LoadOptions {
        max_context_tokens: args.model.max_context_tokens,
        weights: weight_format(&args.model),
        kv_cache: kv_cache(&args.model),
        tensor_parallel: args.tensor_parallel,
    };
    let loaded = load_model(&args.model.model, &options, &device(args.model.device)?)?;
    let cfg = loaded.config().clone();
    tracing::info!(
        model = %args.model.model.display(),
        load_ms = loaded.load_time.as_millis() as u64,
        arch = ?cfg.arch,
        layers = cfg.num_layers,
        hidden = cfg.hidden_size,
        tensor_parallel = args.tensor_parallel,
        max_context_tokens = loaded.max_context_tokens,
        "model loaded"
    );
    let served_name = args.served_name.clone().unwrap_or_else(|| {
        args.model
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let config = EngineConfig {
        served_name,
        max_batch_size: args.max_batch_size,
        max_step_tokens: MAX_STEP_TOKENS,
        kv_cache_tokens: args.kv_cache_tokens,
        kv_cache_memory_bytes: kv_memory_cap(args.kv_cache_fraction),
        prefix_caching: !args.no_prefix_caching,
        kv_block_size: DEFAULT_BLOCK_SIZE,
    };
    let engine =
        Arc::new(LocalEngine::start(loaded, config, metrics).context("starting the scheduler thread")?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("hearth-http")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        warm_up(engine.as_ref()).await?;
        let state = AppState::new(engine.clone(), registry, args.max_request_bytes);
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, model = engine.model_id(), "serving the OpenAI API");
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        });
        let mut server = tokio::spawn(async move { server.await });
        let shutdown = Shutdown::on_signals();
        tokio::select! {
            result = &mut server => return result.context("server task")?.context("serving"),
            () = shutdown.wait() => {}
        }
        tracing::info!(
            drain_timeout_s = args.drain_timeout,
            "shutting down: draining in-flight requests"
        );
        let _ = stop_tx.send(true);
        match tokio::time::timeout(Duration::from_secs(args.drain_timeout), &mut server).await {
            Ok(result) => result.context("server task")?.context("serving"),
            Err(_) => {
                tracing::warn!("drain timeout reached; closing remaining connections");
                server.abort();
                Ok(())
            }
        }
    });
    engine.shutdown();
    result
}

/// `fraction` of the memory available now (`MemAvailable` in /proc/meminfo), if both are known.
fn kv_memory_cap(fraction: f64) -> Option<usize> {
    if fraction <= 0.0 {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib * 1024.0 * fraction.min(1.0)) as usize)
}

/// Generates one token so the first real request does not pay for lazy initialisation.
async fn warm_up(engine: &dyn Engine) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut request = GenerateRequest::new("warm-up", Prompt::Text("Hello".into()));
    request.max_tokens = Some(1);
    request.sampling.temperature = 0.0;
    let mut stream = engine.submit(request).context("warm-up request")?;
    while let Some(event) = stream.events.recv().await {
        match event {
            GenerationEvent::Delta { .. } => {}
            GenerationEvent::Finished { .. } => break,
            GenerationEvent::Failed(message) => anyhow::bail!("warm-up failed: {message}"),
        }
    }
    tracing::info!(ms = started.elapsed().as_millis() as u64, "warmed up");
    Ok(())
}
