//! `hearth-operator`: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hearth_operator::run(hearth_operator::cli::Cli::parse()).await
}
