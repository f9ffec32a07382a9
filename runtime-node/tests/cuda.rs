//! The CUDA backend on a real GPU (feature `cuda`): the tiny models' logits on `cuda:0` against
//! exact f32 math, and the KV cache, batching and prefix cache on the GPU against
//! recomputation. These run only in CUDA builds, and there a missing GPU fails them: a CUDA
//! test binary is run on a GPU machine on purpose (CI has none and only lints this build).
#![cfg(feature = "cuda")]

mod tiny;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::cuda::set_force_dmmv;
use hearth_engine::model::{BlockTable, KvDtype, StepInput, WeightFormat};
use tiny::{
    check_cache_and_batching, check_prefix_cache, load_as, load_on, logits_row, max_diff, mixed_steps,
    write_model,
};

/// One test at a time on the GPU: [`exact_matmuls`] flips candle's process-wide kernel choice.
static GPU: Mutex<()> = Mutex::new(());

fn gpu() -> (Device, MutexGuard<'static, ()>) {
    let guard = GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = hearth_engine::cuda::new_device(0).expect("CUDA device 0 (CUDA tests need a GPU)");
    (device, guard)
}

/// Runs `f` with candle's exact quantized matmuls (dequantizing kernels, f32 activations)
/// instead of its default ones (activations rounded to 8 bits as Q8_1, as llama.cpp's CUDA
/// backend does).
fn exact_matmuls<T>(f: impl FnOnce() -> T) -> T {
    set_force_dmmv(true);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set_force_dmmv(false);
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The tiny model's logits over [`mixed_steps`] as exact f32 math computes them: weights
/// dequantized, on the CPU.
fn exact_logits(path: &Path) -> Vec<Vec<f32>> {
    mixed_steps(&load_as(
        path,
        WeightFormat::Dequantized,
        KvDtype::F32,
        &Device::Cpu,
    ))
}

/// Largest |Δlogit| between row sets, as a fraction of each reference row's largest logit.
fn worst_relative(reference: &[Vec<f32>], got: &[Vec<f32>]) -> f32 {
    assert_eq!(reference.len(), got.len(), "rows");
    reference
        .iter()
        .zip(got)
        .map(|(r, g)| max_diff(r, g) / r.iter().fold(0f32, |m, v| m.max(v.abs())))
        .fold(0f32, f32::max)
}

/// Whether `value` is at most `bound` (a NaN is not).
fn within(value: f32, bound: f32) -> bool {
    value <= bound
}

/// Every weight type on `cuda:0`, over prefills and batched decodes crossing blocks, against the
/// exact f32 forward pass. With candle's exact matmuls the GPU must reproduce it to f32
/// rounding (measured ≤ 8e-7 of the row's range on an H200): weight decoding, attention, norms
/// and RoPE on the GPU are right. With the default kernels the 8-bit activations cost up to 3%
/// (measured 2.3e-2 for Q5_1, 1.7e-2 Q4_0; our CPU kernels 5e-3 to 8e-3), so that bound is 3e-2.
#[test]
fn tiny_models_on_cuda_match_exact_math() {
    let (gpu, _guard) = gpu();
    let mut failures = Vec::new();
    for (name, arch, dtype, biases, default_bound) in [
        ("cuda-f32", "llama", GgmlDType::F32, false, 1e-5),
        ("cuda-qwen2", "qwen2", GgmlDType::F32, true, 1e-5),
        ("cuda-f16", "llama", GgmlDType::F16, false, 1e-5),
        ("cuda-q8", "llama", GgmlDType::Q8_0, false, 3e-2),
        ("cuda-q4", "llama", GgmlDType::Q4_0, false, 3e-2),
        ("cuda-q4_1", "llama", GgmlDType::Q4_1, false, 3e-2),
        ("cuda-q5", "llama", GgmlDType::Q5_0, false, 3e-2),
        ("cuda-q5_1", "llama", GgmlDType::Q5_1, false, 3e-2),
        ("cuda-q2k", "llama", GgmlDType::Q2K, false, 3e-2),
        ("cuda-q3k", "llama", GgmlDType::Q3K, false, 3e-2),
        ("cuda-q4k", "llama", GgmlDType::Q4K, false, 3e-2),
        ("cuda-q5k", "llama", GgmlDType::Q5K, false, 3e-2),
        ("cuda-q6k", "llama", GgmlDType::Q6K, false, 3e-2),
    ] {
        let path = write_model(name, arch, dtype, biases);
        let exact = exact_logits(&path);
        let default = worst_relative(&exact, &mixed_steps(&load_on(&path, KvDtype::F32, &gpu)));
        let exact_kernels =
            exact_matmuls(|| worst_relative(&exact, &mixed_steps(&load_on(&path, KvDtype::F32, &gpu))));
        let _ = std::fs::remove_file(&path);
        eprintln!(
            "{name}: from exact, default kernels {default:.1e}, exact kernels {exact_kernels:.1e} of the row's range"
        );
        if !within(default, default_bound) {
            failures.push(format!(
                "{name}, default kernels: {default:e} > {default_bound:e}"
            ));
        }
        if !within(exact_kernels, 1e-5) {
            failures.push(format!("{name}, exact kernels: {exact_kernels:e} > 1e-5"));
        }
    }
    assert!(
        failures.is_empty(),
        "CUDA logits off the exact ones: {failures:?}"
    );
}

/// On the GPU, cached decoding, chunked prefill and batching give the logits of recomputing
/// without a cache, and a prompt resumed from cached prefix blocks those of computing it all.
/// Quantized types run on the exact kernels: the default ones round activations differently for
/// one row (MMVQ) and for nine (MMQ), which moves logits by ~1% whatever the cache does.
#[test]
fn cuda_cache_batching_and_prefix_cache_match_recomputation() {
    let (gpu, _guard) = gpu();
    for (name, dtype, tolerance) in [
        ("cuda-cache-f32", GgmlDType::F32, 1e-4),
        ("cuda-cache-q8", GgmlDType::Q8_0, 1e-4),
        ("cuda-cache-q4k", GgmlDType::Q4K, 1e-4),
    ] {
        let path = write_model(name, "llama", dtype, false);
        let model = load_on(&path, KvDtype::F32, &gpu);
        exact_matmuls(|| {
            check_cache_and_batching(&model, tolerance);
            check_prefix_cache(&model, tolerance);
        });
        let _ = std::fs::remove_file(&path);
    }
}

/// The GPU model really computes there: its KV pool lives on the device, not in host memory,
/// and the logits come back as a CUDA tensor.
#[test]
fn cuda_model_computes_on_the_gpu() {
    let (gpu, _guard) = gpu();
    let path = write_model("cuda-where", "llama", GgmlDType::Q8_0, false);
    let model = load_on(&path, KvDtype::F32, &gpu);
    let _ = std::fs::remove_file(&path);
    assert!(model.device().is_cuda(), "model device");
    let mut pool = model.new_pool(4, 4).expect("pool");
    assert!(!pool.is_host(), "KV pool in host memory");
    let mut table = BlockTable::default();
    let logits = model
        .forward(
            &mut [StepInput {
                tokens: &[1, 2, 3],
                table: &mut table,
            }],
            &mut pool,
        )
        .expect("forward");
    assert!(logits.device().is_cuda(), "logits on {:?}", logits.device());
    let row = logits_row(&model, &[4], &mut table, &mut pool);
    assert!(row.iter().all(|v| v.is_finite()), "finite logits");
}
