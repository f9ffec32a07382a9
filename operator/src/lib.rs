//! Hearth's control plane: the reconcilers for `InferenceModel`, `Tenant` and `Tier`, leader
//! election, the gateway, local mode, and the operator's metrics and health endpoints.

pub mod backoff;
pub mod billing;
pub mod cli;
pub mod context;
pub mod controller;
pub mod error;
pub mod gateway;
pub mod http;
pub mod invalid;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod model;
pub mod shutdown;
pub mod ssa;
pub mod telemetry;
pub mod tenant;
pub mod tier;

pub use error::{Error, Result};

/// Runs the subcommand the user chose, until SIGTERM or Ctrl-C (listened for from the start).
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    let shutdown = shutdown::Shutdown::on_signals();
    match cli.command {
        cli::Command::Controller(args) => controller::run(args, shutdown).await,
        cli::Command::Gateway(args) => gateway::run(args, shutdown).await,
        cli::Command::Local(args) => local::run(args, shutdown).await,
    }
}
