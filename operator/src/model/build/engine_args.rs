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

/// The engine container's arguments for the model's engine kind: only flags that engine
/// defines. `source.revision` and `engine.quantization` reach vLLM alone: runtime-node and
/// llama.cpp have neither flag (a GGUF file carries its own quantization).
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
                if let Some(revision) = &spec.source.revision {
                    args.extend(["--revision".into(), revision.clone()]);
                }
            }
            if let Some(quantization) = &engine.quantization {
                args.extend(["--quantization".into(), quantization.clone()]);
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
                "--model-cache /models --expect-gpu-product nvidia-a100-80gb --expect-gpu-memory-gib 80"
            ),
            "{joined}"
        );
        assert!(
            !joined.contains("--revision"),
            "runtime-node has no --revision: {joined}"
        );
    }

    #[test]
    fn revision_and_quantization_reach_vllm_only() {
        let args = |kind: &str| {
            let model = parse(&format!(
                "metadata: {{name: m, namespace: n}}\nspec: {{servedName: m, source: {{uri: 'hf://a/b', revision: v2}}, engine: {{kind: {kind}, quantization: awq}}}}\n"
            ));
            engine_args(&model, &model_location(&model)).join(" ")
        };
        let vllm = args("vllm");
        assert!(vllm.contains("--revision v2"), "{vllm}");
        assert!(vllm.contains("--quantization awq"), "{vllm}");
        for kind in ["runtime-node", "llama-cpp"] {
            let other = args(kind);
            assert!(!other.contains("--revision"), "{kind}: {other}");
            assert!(!other.contains("--quantization"), "{kind}: {other}");
        }
    }

    /// Parses runtime-node `serve` arguments with runtime-node's own clap parser.
    fn parse_with_runtime_node(args: &[String]) -> Result<runtime_node::cli::ServeArgs, clap::Error> {
        use clap::Parser;
        let cli = runtime_node::cli::Cli::try_parse_from(
            std::iter::once("runtime-node").chain(args.iter().map(String::as_str)),
        )?;
        match cli.command {
            runtime_node::cli::Command::Serve(serve) => Ok(serve),
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn runtime_node_accepts_every_argument_the_operator_renders() {
        // This test links runtime-node's CPU build, whose parser refuses `--device cuda` (only
        // CUDA builds accept it). GPU models are therefore checked flag NAME by flag name: their
        // `--device cuda` is swapped for `--device cpu` and everything else parsed as rendered.
        // CPU models are parsed exactly as rendered.
        let cpu = parse(
            "metadata: {name: c, namespace: n}\nspec: {servedName: smol, source: {uri: 'file:///models/smol.gguf'}, engine: {prefixCaching: false}}\n",
        );
        let gpu_tp2 = crate::model::build::fixtures::representative();
        let quantized = parse(
            "metadata: {name: q, namespace: n}\nspec: {servedName: q, source: {uri: 'hf://a/b-GGUF', revision: v2}, engine: {quantization: q4_k_m}, gpu: {type: nvidia-l4}}\n",
        );
        for model in [&cpu, &gpu_tp2, &quantized] {
            let mut args = engine_args(model, &model_location(model));
            if model.spec.gpu.is_some() {
                let device = args
                    .iter()
                    .position(|a| a == "--device")
                    .expect("--device rendered");
                assert_eq!(args[device + 1], "cuda");
                args[device + 1] = "cpu".into();
            }
            let parsed = parse_with_runtime_node(&args)
                .unwrap_or_else(|e| panic!("runtime-node refuses {args:?}: {e}"));
            assert_eq!(
                parsed.served_name.as_deref(),
                Some(model.spec.served_name.as_str())
            );
            assert_eq!(parsed.port, 8000);
        }
        let exact = parse_with_runtime_node(&engine_args(&cpu, &model_location(&cpu))).expect("parses");
        assert!(exact.no_prefix_caching);
        let tp2 = engine_args(&gpu_tp2, &model_location(&gpu_tp2));
        let tp2 = tp2
            .iter()
            .map(|a| if a == "cuda" { "cpu".to_string() } else { a.clone() });
        let tp2 = parse_with_runtime_node(&tp2.collect::<Vec<_>>()).expect("parses");
        assert_eq!(tp2.tensor_parallel, 2);
        assert_eq!(tp2.expect_gpu_product.as_deref(), Some("nvidia-a100-80gb"));
        assert_eq!(tp2.max_batch_size, 32);
        assert_eq!(tp2.model.max_context_tokens, 8192);
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
