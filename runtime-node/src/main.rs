//! `runtime-node`: Hearth's engine binary. Everything lives in the library; this only parses
//! arguments and hands them over.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = runtime_node::cli::Cli::parse();
    match runtime_node::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("runtime-node: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
