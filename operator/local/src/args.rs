//! Flags of `hearth-operator local`.

use std::path::PathBuf;

/// Options of `hearth-operator local`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Folder of Tier, Tenant and InferenceModel YAML files.
    #[arg(long, default_value = "examples/local")]
    pub config: PathBuf,
    /// Validate and plan, print the result and exit without starting engines.
    #[arg(long)]
    pub check: bool,
    /// Path of the runtime-node binary; by default the one next to this binary.
    #[arg(long, env = "HEARTH_RUNTIME_NODE_BIN")]
    pub runtime_node_bin: Option<PathBuf>,
    /// First port handed to engines and meters on 127.0.0.1 (two per model).
    #[arg(long, default_value_t = 8100)]
    pub base_port: u16,
    /// Port of the gateway (the OpenAI endpoint clients use) on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// Port of the billing API on 127.0.0.1.
    #[arg(long, default_value_t = 8090)]
    pub billing_port: u16,
    /// Where state (generated keys) is written.
    #[arg(long, default_value = ".hearth-local")]
    pub state_dir: PathBuf,
}
