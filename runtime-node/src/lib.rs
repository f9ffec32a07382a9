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
    let threads = match &cli.command {
        cli::Command::Serve(args) => args.model.threads,
        cli::Command::Bench(args) => args.model.threads,
        cli::Command::Meter(_) => 0,
    };
    if threads > 0 {
        // candle sizes its worker pools from these variables on first use.
        // SAFETY: nothing else runs yet: no runtime, no engine thread, no kernel pool.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
        hearth_kernels::pool::init_global(threads);
    }
    match cli.command {
        cli::Command::Serve(args) => serve::serve(args),
        cli::Command::Bench(args) => bench::bench(args),
        cli::Command::Meter(args) => run_meter(args),
    }
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
