//! llama.cpp's `llama-server`, serving a GGUF file.

use hearth_crds::InferenceModel;
use hearth_crds::constants::{DEFAULT_LLAMA_CPP_IMAGE, PORT_ENGINE};

use super::{EngineLauncher, ModelLocation, ProbePaths};
use crate::context::Settings;

/// llama.cpp.
pub struct LlamaCpp;

impl EngineLauncher for LlamaCpp {
    fn default_image(&self, _model: &InferenceModel, _settings: &Settings) -> String {
        DEFAULT_LLAMA_CPP_IMAGE.into()
    }

    fn args(&self, model: &InferenceModel, location: &ModelLocation) -> Vec<String> {
        let spec = &model.spec;
        let engine = &spec.engine;
        vec![
            "--model".into(),
            location.model_arg.clone(),
            "--alias".into(),
            spec.served_name.clone(),
            "--host".into(),
            super::engine_host(model).into(),
            "--port".into(),
            PORT_ENGINE.to_string(),
            "--parallel".into(),
            engine.max_batch_size.to_string(),
            // llama.cpp splits one context across its parallel slots.
            "--ctx-size".into(),
            (u64::from(engine.max_context_tokens) * u64::from(engine.max_batch_size)).to_string(),
        ]
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
    fn every_parallel_slot_gets_the_whole_context() {
        let model = parse(
            "metadata: {name: m, namespace: n}\nspec: {servedName: m, source: {uri: 'pvc://w/m.gguf'}, engine: {kind: llama-cpp, maxBatchSize: 4, maxContextTokens: 2048}}\n",
        );
        let args = LlamaCpp.args(&model, &model_location(&model)).join(" ");
        assert!(args.contains("--alias m"), "{args}");
        assert!(args.ends_with("--parallel 4 --ctx-size 8192"), "{args}");
    }
}
