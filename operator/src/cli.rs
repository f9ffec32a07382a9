//! Command-line interface of `hearth-operator`.

use clap::{Parser, Subcommand};
use hearth_controller::ControllerArgs;
use hearth_gateway::GatewayArgs;
use hearth_kube::telemetry::LogFormat;
use hearth_local::LocalArgs;

/// Hearth's operator binary.
#[derive(Debug, Parser)]
#[command(name = "hearth-operator", version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, env = "HEARTH_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile InferenceModels, Tenants and Tiers in a cluster.
    Controller(ControllerArgs),
    /// Serve the OpenAI-compatible gateway in front of the models.
    Gateway(GatewayArgs),
    /// Run the same CRs on this machine without a cluster.
    Local(LocalArgs),
}
