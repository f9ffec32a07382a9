//! The engine kinds a model may run (`spec.engine.kind`). Each kind is one file implementing
//! [`EngineLauncher`]: the image it runs when the spec names none, its command line, and the
//! paths its probes call. [`launcher`] maps the CRD's enum to them; `engine.args` are appended
//! for every kind.

mod llama_cpp;
mod location;
mod runtime_node;
mod vllm;

use hearth_crds::InferenceModel;
use hearth_crds::inference_model::EngineKind;

pub use location::{MODEL_MOUNT, ModelLocation, model_location};

use crate::context::Settings;

/// The HTTP paths the engine container's probes call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePaths {
    /// Startup and liveness: the process is up.
    pub health: &'static str,
    /// Readiness: the model is loaded and takes requests.
    pub ready: &'static str,
}

impl ProbePaths {
    /// One `/health` endpoint for both: the server answers it only once the model is loaded.
    pub const HEALTH_ONLY: Self = Self {
        health: "/health",
        ready: "/health",
    };
}

/// How the operator runs one engine kind in a model's engine container.
pub trait EngineLauncher: Sync {
    /// The image when `engine.image` is not set.
    fn default_image(&self, model: &InferenceModel, settings: &Settings) -> String;
    /// The engine's arguments (before `engine.args`): only flags that engine defines, with the
    /// weights at `location`, listening on [`engine_host`] at the engine port.
    fn args(&self, model: &InferenceModel, location: &ModelLocation) -> Vec<String>;
    /// Where its probes look.
    fn probe_paths(&self) -> ProbePaths;
}

/// The launcher of an engine kind.
pub fn launcher(kind: EngineKind) -> &'static dyn EngineLauncher {
    match kind {
        EngineKind::RuntimeNode => &runtime_node::RuntimeNode,
        EngineKind::Vllm => &vllm::Vllm,
        EngineKind::LlamaCpp => &llama_cpp::LlamaCpp,
    }
}

/// The engine container's arguments: its kind's, then the spec's `engine.args`.
pub fn engine_args(model: &InferenceModel, location: &ModelLocation) -> Vec<String> {
    let mut args = launcher(model.spec.engine.kind).args(model, location);
    args.extend(model.spec.engine.args.iter().cloned());
    args
}

/// The address the engine listens on: only the pod's loopback behind a meter, so the meter is
/// the one way in; every address when unmetered (the Service targets the engine then).
pub fn engine_host(model: &InferenceModel) -> &'static str {
    if model.spec.metering.enabled {
        "127.0.0.1"
    } else {
        "0.0.0.0"
    }
}

/// The engine container's image: the spec's `engine.image`, else its kind's default.
pub fn engine_image(model: &InferenceModel, settings: &Settings) -> String {
    model
        .spec
        .engine
        .image
        .clone()
        .unwrap_or_else(|| launcher(model.spec.engine.kind).default_image(model, settings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::parse;

    #[test]
    fn revision_and_quantization_reach_vllm_only_and_extra_args_come_last() {
        let args = |kind: &str| {
            let model = parse(&format!(
                "metadata: {{name: m, namespace: n}}\nspec: {{servedName: m, source: {{uri: 'hf://a/b', revision: v2}}, engine: {{kind: {kind}, quantization: awq, args: ['--extra', '1']}}}}\n"
            ));
            engine_args(&model, &model_location(&model))
        };
        let vllm = args("vllm").join(" ");
        assert!(vllm.contains("--revision v2"), "{vllm}");
        assert!(vllm.contains("--quantization awq"), "{vllm}");
        for kind in ["runtime-node", "llama-cpp"] {
            let other = args(kind);
            let joined = other.join(" ");
            assert!(!joined.contains("--revision"), "{kind}: {joined}");
            assert!(!joined.contains("--quantization"), "{kind}: {joined}");
            assert_eq!(other[other.len() - 2..], ["--extra", "1"], "{kind}");
        }
    }
}
