//! `runtime-node`: the command line of Hearth's engine binary, over the crates that do the work:
//! `hearth_engine` (`serve`, `bench`) and `hearth_meter` (`meter`).

pub mod cli;

/// Runs the parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    init_tracing();
    match cli.command {
        cli::Command::Serve(args) => {
            hearth_engine::start(&args.model)?;
            hearth_engine::serve::serve(args)
        }
        cli::Command::Bench(args) => {
            hearth_engine::start(&args.model)?;
            hearth_engine::bench::bench(args)
        }
        cli::Command::Meter(args) => hearth_meter::run(args),
    }
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
