//! Hearth's engine: loads a Llama-family model, batches requests, serves the OpenAI API.

pub mod bandwidth;
pub mod bench;
pub mod chat_template;
pub mod cli;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod engine;
pub mod gpu;
pub mod loader;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod parallel;
pub mod sampler;
pub mod serve;
pub mod server;
pub mod tokenizer;
mod tokenizer_spm;

/// Runs the parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    init_tracing();
    let model_args = match &cli.command {
        cli::Command::Serve(args) => Some(&args.model),
        cli::Command::Bench(args) => Some(&args.model),
        cli::Command::Meter(_) => None,
    };
    if let Some(model_args) = model_args {
        init_kernel_threads(model_args.threads, model_args.pin_threads.into());
    }
    match cli.command {
        cli::Command::Serve(args) => serve::serve(args),
        cli::Command::Bench(args) => bench::bench(args),
        cli::Command::Meter(args) => run_meter(args),
    }
}

/// Sizes candle's and our kernel pools (`threads`, 0 = one per available CPU) and pins ours.
fn init_kernel_threads(threads: usize, pinning: hearth_kernels::affinity::Pinning) {
    if threads > 0 {
        // candle sizes its worker pools from these variables on first use.
        // SAFETY: nothing else runs yet: no runtime, no engine thread, no kernel pool.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }
    if let Err(error) = hearth_kernels::pool::init_global(threads, pinning) {
        tracing::warn!(%error, "could not pin the kernel threads; the OS places them");
    }
    let pool = hearth_kernels::pool::global();
    let threads = pool.threads();
    match pool.pinned_cpus() {
        Some(cpus) => tracing::info!(threads, ?cpus, "kernel threads pinned to CPUs"),
        None => tracing::info!(threads, "kernel threads not pinned"),
    }
}

/// Pins the calling thread, the one that runs the model's steps, to the kernel pool's first CPU
/// when the pool is pinned, until the guard is dropped.
pub(crate) fn pin_step_thread() -> Option<hearth_kernels::pool::PinnedCaller> {
    // New threads inherit their creator's CPUs: rayon's global pool (candle's CPU ops) must
    // exist before this thread is confined to one CPU, or all of its threads would share it.
    let _ = rayon::current_num_threads();
    hearth_kernels::pool::global()
        .pin_caller()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not pin the step thread; the OS places it");
            None
        })
}

/// Runs the meter on its own multi-threaded runtime.
fn run_meter(args: meter::MeterArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(meter::run(args))
}

/// Logs to stderr: JSON when `HEARTH_LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("HEARTH_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(err) = result {
        eprintln!("logging already initialised: {err}");
    }
}
