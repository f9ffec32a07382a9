//! Where the engine finds the weights, and the command line each engine kind takes.

use hearth_crds::InferenceModel;
use hearth_crds::constants::PORT_ENGINE;
use hearth_crds::inference_model::EngineKind;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

/// Mount point of model volumes in the engine container.
pub const MODEL_MOUNT: &str = "/models";

/// How the engine reaches the weights of a source URI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLocation {
    /// What the engine's model argument should be.
    pub model_arg: String,
    /// Volume holding the weights (a PVC) or the download cache (an emptyDir).
    pub volume: Volume,
    /// Where that volume is mounted.
    pub mount: VolumeMount,
    /// True when the engine downloads the weights into the cache volume at start.
    pub downloads: bool,
}

/// Resolves `source.uri` to an engine argument and a volume.
/// `pvc://claim/path` mounts the claim read-only; `file://` paths are used as they are (an
/// image or node path); `hf://`, `s3://` and `http(s)://` are downloaded by the engine into
/// an emptyDir cache.
pub fn model_location(model: &InferenceModel) -> ModelLocation {
    let uri = model.spec.source.uri.as_str();
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
        return ModelLocation {
            model_arg: format!("{MODEL_MOUNT}/{path}").trim_end_matches('/').to_string(),
            volume: Volume {
                name: "model".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            },
            mount: VolumeMount {
                name: "model".into(),
                mount_path: MODEL_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            downloads: false,
        };
    }
    let cache = Volume {
        name: "model-cache".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "model-cache".into(),
        mount_path: MODEL_MOUNT.into(),
        ..VolumeMount::default()
    };
    match uri.strip_prefix("file://") {
        Some(path) => ModelLocation {
            model_arg: path.into(),
            volume: cache,
            mount,
            downloads: false,
        },
        None => ModelLocation {
            model_arg: uri.into(),
            volume: cache,
            mount,
            downloads: true,
        },
    }
}

/// `--expect-gpu-product` / `--expect-gpu-memory-gib`: what the pod was scheduled for, so
/// the engine refuses to start on a node whose GPUs are not that (a mislabelled node, a
/// smaller card). MIG slices are checked by the device plugin's resource name instead.
fn expected_gpu_args(model: &InferenceModel) -> Vec<String> {
    let Some(gpu) = &model.spec.gpu else {
        return Vec::new();
    };
    if gpu.mig_profile.is_some() {
        return Vec::new();
    }
    let mut args = vec!["--expect-gpu-product".into(), gpu.type_.clone()];
    let memory = gpu
        .memory_gib
        .map(u64::from)
        .or_else(|| hearth_crds::planner::lookup_gpu(&gpu.type_).map(|t| t.memory_gib));
    if let Some(gib) = memory {
        args.extend(["--expect-gpu-memory-gib".into(), gib.to_string()]);
    }
    args
}

/// The engine container's arguments for the model's engine kind.
pub fn engine_args(model: &InferenceModel, location: &ModelLocation) -> Vec<String> {
    let spec = &model.spec;
    let engine = &spec.engine;
    let port = PORT_ENGINE.to_string();
    let tensor = spec.parallelism.tensor.to_string();
    let mut args: Vec<String> = match engine.kind {
        EngineKind::RuntimeNode => {
            let mut args = vec![
                "serve".into(),
                "--model".into(),
                location.model_arg.clone(),
                "--served-name".into(),
                spec.served_name.clone(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
                "--device".into(),
                if spec.gpu.is_some() { "cuda" } else { "cpu" }.into(),
                "--tensor-parallel".into(),
                tensor,
                "--max-batch-size".into(),
                engine.max_batch_size.to_string(),
                "--max-context-tokens".into(),
                engine.max_context_tokens.to_string(),
                "--kv-cache-fraction".into(),
                engine.kv_cache_fraction.to_string(),
                "--dtype".into(),
                engine.dtype.clone(),
            ];
            if location.downloads {
                args.extend(["--model-cache".into(), MODEL_MOUNT.into()]);
            }
            args.extend(expected_gpu_args(model));
            if !engine.prefix_caching {
                args.push("--no-prefix-caching".into());
            }
            args
        }
        EngineKind::Vllm => {
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
                "0.0.0.0".into(),
                "--port".into(),
                port,
                "--tensor-parallel-size".into(),
                tensor,
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
            }
            args
        }
        EngineKind::LlamaCpp => vec![
            "--model".into(),
            location.model_arg.clone(),
            "--alias".into(),
            spec.served_name.clone(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            port,
            "--parallel".into(),
            engine.max_batch_size.to_string(),
            // llama.cpp splits one context across its parallel slots.
            "--ctx-size".into(),
            (u64::from(engine.max_context_tokens) * u64::from(engine.max_batch_size)).to_string(),
        ],
    };
    if let (Some(revision), true) = (&spec.source.revision, location.downloads) {
        args.extend(["--revision".into(), revision.clone()]);
    }
    // llama.cpp reads the quantization from the GGUF file itself.
    if let Some(quantization) = &engine.quantization
        && engine.kind != EngineKind::LlamaCpp
    {
        args.extend(["--quantization".into(), quantization.clone()]);
    }
    args.extend(engine.args.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    #[test]
    fn hf_source_downloads_into_cache_with_revision() {
        let model = representative();
        let location = model_location(&model);
        assert!(location.downloads);
        assert_eq!(location.model_arg, "hf://meta-llama/Llama-3.1-8B-Instruct");
        let args = engine_args(&model, &location);
        let joined = args.join(" ");
        assert!(
            joined.starts_with(
                "serve --model hf://meta-llama/Llama-3.1-8B-Instruct --served-name llama-3.1-8b"
            )
        );
        assert!(
            joined
                .contains("--device cuda --tensor-parallel 2 --max-batch-size 32 --max-context-tokens 8192")
        );
        assert!(
            joined.ends_with(
                "--model-cache /models --expect-gpu-product nvidia-a100-80gb --expect-gpu-memory-gib 80 --revision main"
            ),
            "{joined}"
        );
    }

    #[test]
    fn gpu_expectations_follow_the_spec() {
        let gpu = |gpu: &str| {
            let model = parse(&format!(
                "metadata: {{name: m, namespace: n}}\nspec: {{servedName: m, source: {{uri: 'pvc://w/m'}}, gpu: {gpu}}}\n"
            ));
            engine_args(&model, &model_location(&model)).join(" ")
        };
        // Memory from the catalog unless the spec says otherwise; none for MIG slices.
        assert!(
            gpu("{type: nvidia-l4}").contains("--expect-gpu-product nvidia-l4 --expect-gpu-memory-gib 24")
        );
        assert!(gpu("{type: nvidia-l4, memoryGiB: 20}").contains("--expect-gpu-memory-gib 20"));
        let mig = gpu("{type: nvidia-a100-80gb, migProfile: 1g.10gb}");
        assert!(!mig.contains("--expect-gpu"), "{mig}");
    }

    #[test]
    fn pvc_source_mounts_read_only() {
        let model = parse(
            "metadata: {name: m, namespace: n}\nspec: {servedName: m, source: {uri: 'pvc://weights/qwen/7b'}, engine: {kind: vllm}}\n",
        );
        let location = model_location(&model);
        assert_eq!(location.model_arg, "/models/qwen/7b");
        assert_eq!(
            location
                .volume
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("weights")
        );
        assert_eq!(location.mount.read_only, Some(true));
        let args = engine_args(&model, &location);
        assert_eq!(&args[..2], ["--model", "/models/qwen/7b"]);
        assert!(args.contains(&"--enable-prefix-caching".to_string()));
    }
}
