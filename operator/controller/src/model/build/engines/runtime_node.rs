//! runtime-node, Hearth's own engine: its flags come from the engine's own typed command line
//! (`hearth-node-contract`), built from the spec by the same mapping local mode uses, so the
//! operator cannot render a flag the engine lacks.

use hearth_crds::InferenceModel;
use hearth_crds::constants::PORT_ENGINE;
use hearth_node_contract::spec::serve_args;

use super::{EngineLauncher, MODEL_MOUNT, ModelLocation, ProbePaths};
use crate::context::Settings;

/// runtime-node.
pub struct RuntimeNode;

impl EngineLauncher for RuntimeNode {
    fn default_image(&self, model: &InferenceModel, settings: &Settings) -> String {
        // `--device cuda` needs runtime-node's CUDA build; the meter stays on the CPU image.
        match model.spec.gpu {
            Some(_) => settings.runtime_cuda_image.clone(),
            None => settings.runtime_image.clone(),
        }
    }

    fn args(&self, model: &InferenceModel, location: &ModelLocation) -> Vec<String> {
        let mut serve = serve_args(model, location.model_arg.clone().into());
        serve.host = super::engine_host(model).into();
        serve.port = u16::try_from(PORT_ENGINE).unwrap_or(8000);
        if location.downloads {
            serve.model_cache = Some(MODEL_MOUNT.into());
        }
        serve.to_args()
    }

    fn probe_paths(&self) -> ProbePaths {
        ProbePaths {
            health: "/health",
            ready: "/ready",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hearth_node_contract::{DeviceSpec, ServeArgs};

    use super::*;
    use crate::model::build::engines::{engine_args, model_location};
    use crate::model::build::fixtures::{parse, representative};

    /// Parses rendered arguments with runtime-node's own command line.
    fn parse_with_runtime_node(args: &[String]) -> Result<ServeArgs, clap::Error> {
        let cli = runtime_node::cli::Cli::try_parse_from(
            std::iter::once("runtime-node").chain(args.iter().map(String::as_str)),
        )?;
        match cli.command {
            runtime_node::cli::Command::Serve(serve) => Ok(serve),
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn runtime_node_parses_every_argument_the_operator_renders() {
        let cpu = parse(
            "metadata: {name: c, namespace: n}\nspec: {servedName: smol, source: {uri: 'file:///models/smol.gguf'}, engine: {prefixCaching: false}}\n",
        );
        let quantized = parse(
            "metadata: {name: q, namespace: n}\nspec: {servedName: q, source: {uri: 'hf://a/b-GGUF', revision: v2}, engine: {quantization: q4_k_m}, gpu: {type: nvidia-l4}}\n",
        );
        for model in [&cpu, &representative(), &quantized] {
            let args = engine_args(model, &model_location(model));
            let parsed = parse_with_runtime_node(&args)
                .unwrap_or_else(|e| panic!("runtime-node refuses {args:?}: {e}"));
            assert_eq!(
                parsed.served_name.as_deref(),
                Some(model.spec.served_name.as_str())
            );
            // Behind the meter the engine listens on the pod's loopback only.
            assert!(model.spec.metering.enabled);
            assert_eq!((parsed.host.as_str(), parsed.port), ("127.0.0.1", 8000));
        }
        let unmetered = parse(
            "metadata: {name: u, namespace: n}\nspec: {servedName: u, source: {uri: 'file:///m.gguf'}, metering: {enabled: false}}\n",
        );
        let parsed =
            parse_with_runtime_node(&engine_args(&unmetered, &model_location(&unmetered))).expect("parses");
        assert_eq!(
            parsed.host, "0.0.0.0",
            "the Service targets an unmetered engine directly"
        );
        let exact = parse_with_runtime_node(&engine_args(&cpu, &model_location(&cpu))).expect("parses");
        assert!(exact.no_prefix_caching);
        assert_eq!(exact.model.device, DeviceSpec::Cpu);
        assert_eq!(exact.model_cache, None);
    }

    #[test]
    fn a_gpu_model_downloading_from_the_hub_gets_its_devices_cache_and_expectations() {
        let model = representative();
        let args = engine_args(&model, &model_location(&model));
        let parsed = parse_with_runtime_node(&args).expect("parses");
        assert_eq!(
            parsed.model.model.to_str(),
            Some("hf://meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(parsed.model.device, DeviceSpec::Cuda(0));
        assert_eq!(parsed.tensor_parallel, 2);
        assert_eq!(parsed.max_batch_size, 32);
        assert_eq!(parsed.model.max_context_tokens, 8192);
        assert_eq!(
            parsed.model_cache.as_deref(),
            Some(std::path::Path::new(MODEL_MOUNT))
        );
        assert_eq!(parsed.expect_gpu_product.as_deref(), Some("nvidia-a100-80gb"));
        assert_eq!(parsed.expect_gpu_memory_gib, Some(80.0));
    }

    #[test]
    fn gpu_models_get_the_cuda_image_and_cpu_models_the_cpu_image() {
        let settings = Settings {
            runtime_image: "cpu-image".into(),
            runtime_cuda_image: "cuda-image".into(),
            ..Settings::default()
        };
        let cpu = parse(
            "metadata: {name: c, namespace: n}\nspec: {servedName: c, source: {uri: 'file:///m.gguf'}}\n",
        );
        assert_eq!(RuntimeNode.default_image(&cpu, &settings), "cpu-image");
        assert_eq!(
            RuntimeNode.default_image(&representative(), &settings),
            "cuda-image"
        );
    }
}
