//! `hearth-operator gateway`: the OpenAI-compatible front door (being built; see issue 4).

/// Options of `hearth-operator gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
}

/// Runs the gateway.
pub async fn run(_args: GatewayArgs) -> anyhow::Result<()> {
    anyhow::bail!("the gateway is not built yet")
}
