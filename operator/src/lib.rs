//! Hearth's control plane: the reconcilers for `InferenceModel`, `Tenant` and `Tier`, leader
//! election, the gateway, local mode, and the operator's metrics and health endpoints.

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
pub mod ssa;
pub mod telemetry;
pub mod tenant;
pub mod tier;

pub use error::{Error, Result};

/// Runs the subcommand the user chose.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        cli::Command::Controller(args) => controller::run(args).await,
        cli::Command::Gateway(args) => gateway::run(args).await,
        cli::Command::Local(args) => local::run(args).await,
    }
}
