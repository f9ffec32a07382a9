//! vLLM's OpenAI server. It downloads Hub models itself (into the model cache volume), so
//! `source.revision` and `engine.quantization` reach it as flags.

use hearth_crds::InferenceModel;
use hearth_crds::constants::{DEFAULT_VLLM_IMAGE, PORT_ENGINE};

use super::{EngineLauncher, MODEL_MOUNT, ModelLocation, ProbePaths};
use crate::context::Settings;

/// vLLM.
pub struct Vllm;

impl EngineLauncher for Vllm {
    fn default_image(&self, _model: &InferenceModel, _settings: &Settings) -> String {
        DEFAULT_VLLM_IMAGE.into()
    }

    fn args(&self, model: &InferenceModel, location: &ModelLocation) -> Vec<String> {
        let spec = &model.spec;
        let engine = &spec.engine;
        let model_arg = location
            .model_arg
            .strip_prefix("hf://")
            .unwrap_or(&location.model_arg);
        let mut args = vec![
            "--model".into(),
            model_arg.into(),
            "--served-model-name".into(),
            spec.served_name.clone(),
            "--host".into(),
            super::engine_host(model).into(),
            "--port".into(),
            PORT_ENGINE.to_string(),
            "--tensor-parallel-size".into(),
            spec.parallelism.tensor.to_string(),
            "--pipeline-parallel-size".into(),
            spec.parallelism.pipeline.to_string(),
            "--max-num-seqs".into(),
            engine.max_batch_size.to_string(),
            "--max-model-len".into(),
            engine.max_context_tokens.to_string(),
            "--gpu-memory-utilization".into(),
            engine.kv_cache_fraction.to_string(),
            "--dtype".into(),
            engine.dtype.clone(),
        ];
        if engine.prefix_caching {
            args.push("--enable-prefix-caching".into());
        }
        if location.downloads {
            args.extend(["--download-dir".into(), MODEL_MOUNT.into()]);
            if let Some(revision) = &spec.source.revision {
                args.extend(["--revision".into(), revision.clone()]);
            }
        }
        if let Some(quantization) = &engine.quantization {
            args.extend(["--quantization".into(), quantization.clone()]);
        }
        args
    }

    fn probe_paths(&self) -> ProbePaths {
        ProbePaths::HEALTH_ONLY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::engines::model_location;
    use crate::model::build::fixtures::parse;

    #[test]
    fn a_pvc_model_is_served_from_its_mount_with_prefix_caching() {
        let model = parse(
            "metadata: {name: m, namespace: n}\nspec: {servedName: m, source: {uri: 'pvc://weights/qwen/7b'}, engine: {kind: vllm}}\n",
        );
        let args = Vllm.args(&model, &model_location(&model));
        assert_eq!(&args[..2], ["--model", "/models/qwen/7b"]);
        assert!(args.contains(&"--enable-prefix-caching".to_string()));
        assert!(!args.contains(&"--download-dir".to_string()));
    }
}
