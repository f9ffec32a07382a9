//! The `hearth-operator` binary's dispatch: each subcommand hands over to its crate
//! (`hearth-controller`, `hearth-gateway`, `hearth-local`).

pub mod cli;

use hearth_gateway::SourceKind;
use hearth_kube::telemetry;
use hearth_shutdown::Shutdown;

/// Runs the subcommand the user chose, until SIGTERM or Ctrl-C (listened for from the start).
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    let shutdown = Shutdown::on_signals();
    match cli.command {
        cli::Command::Controller(args) => hearth_controller::run(args, shutdown).await,
        cli::Command::Gateway(args) => match args.source {
            SourceKind::Cluster => hearth_gateway::run(args, shutdown).await,
            SourceKind::Local => hearth_local::run_gateway(args, shutdown).await,
        },
        cli::Command::Local(args) => hearth_local::run(args, shutdown).await,
    }
}
