//! What an InferenceModel's spec asks of runtime-node, as [`ServeArgs`]: the one mapping from
//! the CRD to the engine's flags, used by the operator's pods and by local mode alike. Where the
//! engine listens and where downloads go differ between them, so the caller sets those.

use std::path::PathBuf;

use hearth_crds::InferenceModel;

use crate::{DeviceSpec, ServeArgs};

/// The flags for serving `model` from the weights at `model_path`: its served name, device,
/// tensor parallelism, batch, context, KV cache share, dtype, prefix caching and the GPU the
/// pod was scheduled for.
pub fn serve_args(model: &InferenceModel, model_path: PathBuf) -> ServeArgs {
    let spec = &model.spec;
    let engine = &spec.engine;
    let mut args = ServeArgs::new(model_path);
    args.served_name = Some(spec.served_name.clone());
    args.model.device = match spec.gpu {
        Some(_) => DeviceSpec::Cuda(0),
        None => DeviceSpec::Cpu,
    };
    args.tensor_parallel = widen(spec.parallelism.tensor);
    args.max_batch_size = widen(engine.max_batch_size);
    args.model.max_context_tokens = widen(engine.max_context_tokens);
    args.kv_cache_fraction = engine.kv_cache_fraction;
    args.dtype = engine.dtype.clone();
    args.no_prefix_caching = !engine.prefix_caching;
    let (product, memory_gib) = expected_gpu(model);
    args.expect_gpu_product = product;
    args.expect_gpu_memory_gib = memory_gib;
    args
}

/// What the pod was scheduled for, so the engine refuses to start on a node whose GPUs are not
/// that (a mislabelled node, a smaller card): the product and its memory per GPU (the spec's,
/// else the catalog's). MIG slices are checked by the device plugin's resource name instead.
fn expected_gpu(model: &InferenceModel) -> (Option<String>, Option<f64>) {
    let Some(gpu) = &model.spec.gpu else {
        return (None, None);
    };
    if gpu.mig_profile.is_some() {
        return (None, None);
    }
    let memory = gpu
        .memory_gib
        .map(u64::from)
        .or_else(|| hearth_crds::planner::lookup_gpu(&gpu.type_).map(|t| t.memory_gib));
    // GiB counts are far below 2^53, so the conversion is exact.
    (Some(gpu.type_.clone()), memory.map(|gib| gib as f64))
}

/// A CRD count as the engine's `usize` flag (never narrower than 32 bits here).
fn widen(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> InferenceModel {
        serde_yaml::from_str(yaml).expect("model")
    }

    #[test]
    fn the_spec_reaches_the_engine_flags() {
        let gpu = model(
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: m, namespace: n}\nspec:\n  servedName: llama\n  source: {uri: 'pvc://w/m'}\n  gpu: {type: nvidia-l4}\n  parallelism: {tensor: 2}\n  engine: {maxBatchSize: 16, maxContextTokens: 8192, kvCacheFraction: 0.5, prefixCaching: false, dtype: bfloat16}\n",
        );
        let args = serve_args(&gpu, "/models/m".into());
        assert_eq!(args.served_name.as_deref(), Some("llama"));
        assert_eq!(args.model.device, DeviceSpec::Cuda(0));
        assert_eq!(args.tensor_parallel, 2);
        assert_eq!(args.max_batch_size, 16);
        assert_eq!(args.model.max_context_tokens, 8192);
        assert_eq!(args.kv_cache_fraction, 0.5);
        assert!(args.no_prefix_caching);
        assert_eq!(args.dtype, "bfloat16");
        // 24 GiB: the catalog's NVIDIA L4.
        assert_eq!(args.expect_gpu_product.as_deref(), Some("nvidia-l4"));
        assert_eq!(args.expect_gpu_memory_gib, Some(24.0));
        let cpu = model(
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: c, namespace: n}\nspec: {servedName: smol, source: {uri: 'file:///m.gguf'}}\n",
        );
        let args = serve_args(&cpu, "/m.gguf".into());
        assert_eq!(args.model.device, DeviceSpec::Cpu);
        assert_eq!(
            (args.expect_gpu_product, args.expect_gpu_memory_gib),
            (None, None)
        );
        assert!(!args.no_prefix_caching);
    }

    #[test]
    fn mig_slices_and_explicit_memory_set_the_expectations() {
        let with = |gpu: &str| {
            let yaml = format!(
                "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {{name: m, namespace: n}}\nspec: {{servedName: m, source: {{uri: 'pvc://w/m'}}, gpu: {gpu}}}\n"
            );
            let args = serve_args(&model(&yaml), "/models/m".into());
            (args.expect_gpu_product, args.expect_gpu_memory_gib)
        };
        assert_eq!(with("{type: nvidia-l4, memoryGiB: 20}").1, Some(20.0));
        assert_eq!(
            with("{type: nvidia-a100-80gb, migProfile: 1g.10gb}"),
            (None, None)
        );
    }
}
