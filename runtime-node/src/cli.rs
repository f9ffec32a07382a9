//! Command-line interface. The operator renders `serve` flags into the pod spec; their names are
//! `hearth_node_contract`'s (rename them only there, together with `operator/`).

use clap::{Parser, Subcommand};
use hearth_engine::bench::BenchArgs;
use hearth_meter::MeterArgs;
use hearth_node_contract::ServeArgs;

/// Top-level arguments of the `runtime-node` binary.
#[derive(Debug, Parser)]
#[command(name = "runtime-node", version, about = "Hearth's LLM inference engine")]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `runtime-node`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(ServeArgs),
    /// Measure prefill and decode throughput of a model on this machine.
    Bench(BenchArgs),
    /// Run the billing sidecar: a metering proxy in front of the engine with a crash-safe ledger.
    Meter(MeterArgs),
}

#[cfg(test)]
mod tests {
    use hearth_engine::model::WeightFormat;
    use hearth_node_contract::{DeviceSpec, KvCacheDtype, ModelArgs, PinThreads, Requantize};

    use super::*;

    #[test]
    fn serve_accepts_the_operator_flags() {
        let cli = Cli::try_parse_from([
            "runtime-node",
            "serve",
            "--model",
            "/m.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--served-name",
            "smol",
            "--threads",
            "2",
            "--max-batch-size",
            "4",
            "--max-context-tokens",
            "2048",
            "--device",
            "cpu",
            "--tensor-parallel",
            "1",
            "--kv-cache-fraction",
            "0.5",
            "--dtype",
            "auto",
            "--no-prefix-caching",
            "--requantize",
            "q8_0",
            "--pin-threads",
            "never",
        ])
        .expect("flags parse");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.port, 9000);
        assert_eq!(args.served_name.as_deref(), Some("smol"));
        assert_eq!(args.model.threads, 2);
        assert_eq!(args.model.pin_threads, PinThreads::Never);
        assert_eq!(args.max_batch_size, 4);
        assert_eq!(args.model.max_context_tokens, 2048);
        assert_eq!(
            hearth_engine::args::weight_format(&args.model),
            WeightFormat::Requantized(candle_core::quantized::GgmlDType::Q8_0)
        );
    }

    /// The contract's own rendering, parsed by this binary's parser (not the contract's).
    #[test]
    fn contract_arguments_parse_back_to_the_same_flags() {
        let mut serve = ServeArgs::new("/models/m.gguf".into());
        let parse = |serve: &ServeArgs| {
            let cli = Cli::try_parse_from(std::iter::once("runtime-node".to_string()).chain(serve.to_args()))
                .expect("rendered flags parse");
            match cli.command {
                Command::Serve(parsed) => parsed,
                other => panic!("expected serve, got {other:?}"),
            }
        };
        assert_eq!(parse(&serve), serve);
        serve = ServeArgs {
            model: ModelArgs {
                device: DeviceSpec::Cuda(1),
                threads: 4,
                pin_threads: PinThreads::Always,
                requantize: Some(Requantize::Q8_0),
                kv_cache_dtype: Some(KvCacheDtype::F32),
                max_context_tokens: 8192,
                ..serve.model
            },
            host: "0.0.0.0".into(),
            port: 8080,
            served_name: Some("smol".into()),
            tensor_parallel: 2,
            kv_cache_fraction: 0.9,
            no_prefix_caching: true,
            expect_gpu_memory_gib: Some(80.0),
            ..serve
        };
        assert_eq!(parse(&serve), serve);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_device_is_refused_with_a_reason() {
        // Parsed (the contract names every device), then refused at the engine's start, before
        // the model (which does not exist) is looked at.
        let cli = Cli::try_parse_from(["runtime-node", "serve", "--model", "m", "--device", "cuda:0"])
            .expect("cuda parses");
        let err = crate::run(cli).expect_err("cuda refused");
        assert!(err.to_string().contains("needs the CUDA backend"), "{err}");
    }
}
