//! Tiny random-weight models written as real GGUF files (F32, F16, Q4_0, Q5_0, Q5_1, Q8_0, Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K; Llama and Qwen2 with q/k/v biases), to check what SmolLM2 does not
//! exercise: the KV cache and batching give the same logits as recomputation, chunked prefill
//! equals one-shot prefill, and biases are applied.

mod tiny;

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use hearth_engine::model::{BlockTable, KvDtype, Llama};
use tiny::{
    check_cache_and_batching, check_prefix_cache, load_on, logits_row, max_diff, mixed_steps, write_model,
};

/// The model with an f32 KV cache: these tests compare two computations of the same logits, and
/// rounding keys and values to f16 would turn their last-bit differences into whole f16 steps.
fn load(path: &Path) -> Llama {
    load_with_kv(path, KvDtype::F32)
}

fn load_with_kv(path: &Path, kv: KvDtype) -> Llama {
    load_on(path, kv, &Device::Cpu)
}

#[test]
fn prefix_cache_matches_full_prefill() {
    let path = write_model("llama-prefix", "llama", GgmlDType::F32, false);
    check_prefix_cache(&load(&path), 1e-4);
    let _ = std::fs::remove_file(path);
}

#[test]
fn llama_f32_cache_and_batching_match_recomputation() {
    let path = write_model("llama-f32", "llama", GgmlDType::F32, false);
    check_cache_and_batching(&load(&path), 1e-4);
    let _ = std::fs::remove_file(path);
}

#[test]
fn llama_q8_0_cache_and_batching_match_recomputation() {
    let path = write_model("llama-q8", "llama", GgmlDType::Q8_0, false);
    check_cache_and_batching(&load(&path), 1e-3);
    let _ = std::fs::remove_file(path);
}

#[test]
fn llama_q4k_loads_and_runs() {
    let path = write_model("llama-q4k", "llama", GgmlDType::Q4K, false);
    check_cache_and_batching(&load(&path), 1e-3);
    let _ = std::fs::remove_file(path);
}

#[test]
fn qwen2_biases_are_applied() {
    let with = write_model("qwen2-bias", "qwen2", GgmlDType::F32, true);
    let without = write_model("qwen2-nobias", "qwen2", GgmlDType::F32, false);
    let (with_model, without_model) = (load(&with), load(&without));
    check_cache_and_batching(&with_model, 1e-4);
    let tokens = [1u32, 2, 3];
    let mut pool = with_model.new_pool(2, 4).expect("pool");
    let a = logits_row(&with_model, &tokens, &mut BlockTable::default(), &mut pool);
    let mut pool = without_model.new_pool(2, 4).expect("pool");
    let b = logits_row(&without_model, &tokens, &mut BlockTable::default(), &mut pool);
    assert!(max_diff(&a, &b) > 1e-3, "biases changed nothing");
    let _ = std::fs::remove_file(with);
    let _ = std::fs::remove_file(without);
}

/// The same steps (prefill, then batches mixing a decode with prompt chunks, crossing blocks)
/// on the fused CPU step and on candle tensor ops give the same logits: two implementations of
/// norm, rotary embedding and paged attention checked against each other. `tolerance` is a
/// fraction of the largest logit: with 8-bit activations (the quantized types), a value that
/// rounds the other way after a 1e-6 difference moves logits by ~0.5% of their range.
fn check_fused_step_matches_tensor_ops(path: &Path, tolerance: f32) {
    let fused = load(path);
    let mut tensor_ops = load(path);
    tensor_ops.set_fused_cpu_step(false);
    let (expected, got) = (mixed_steps(&tensor_ops), mixed_steps(&fused));
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        let range = e.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max_diff(e, g) <= tolerance * range,
            "{}: row {i}: {}",
            path.display(),
            max_diff(e, g)
        );
    }
}

/// Keys and values stored as f16 (the CPU default) give the logits of an f32 cache to within
/// f16's precision, on the fused step and on tensor ops alike, and do differ from them (the
/// rounding happens).
#[test]
fn f16_kv_cache_stays_within_half_precision_of_f32() {
    let largest = kv_storage_error("kv-f16", KvDtype::F16);
    assert!(largest <= 2e-3, "{largest} of the range");
}

/// Keys and values stored as FP8 E4M3 (3 mantissa bits: each rounded by up to 1/16 of itself)
/// stay within a few percent of the f32 cache's logits on both paths.
#[test]
fn fp8_kv_cache_stays_within_its_rounding_of_f32() {
    let largest = kv_storage_error("kv-fp8", KvDtype::Fp8);
    assert!(largest <= 3e-2, "{largest} of the range");
}

/// The largest difference, relative to the row's range, between the logits of `mixed_steps`
/// with an f32 KV cache and with `kv` storage, on the fused step and on tensor ops (asserting
/// that the storage changed something).
fn kv_storage_error(name: &str, kv: KvDtype) -> f32 {
    let path = write_model(name, "llama", GgmlDType::F32, false);
    let exact = mixed_steps(&load_with_kv(&path, KvDtype::F32));
    let fused = load_with_kv(&path, kv);
    let mut tensor_ops = load_with_kv(&path, kv);
    tensor_ops.set_fused_cpu_step(false);
    let mut worst = 0f32;
    for (label, rows) in [
        ("fused", mixed_steps(&fused)),
        ("tensor ops", mixed_steps(&tensor_ops)),
    ] {
        let (mut largest, mut any) = (0f32, 0f32);
        for (e, g) in exact.iter().zip(&rows) {
            let range = e.iter().fold(0f32, |m, v| m.max(v.abs()));
            largest = largest.max(max_diff(e, g) / range);
            any = any.max(max_diff(e, g));
        }
        eprintln!("{kv:?} KV, {label}: max |Δlogit| {any:e}, {largest:e} of the row's range");
        assert!(any > 0.0, "{label}: {kv:?} storage changed nothing");
        worst = worst.max(largest);
    }
    let _ = std::fs::remove_file(path);
    worst
}

#[test]
fn fused_cpu_step_matches_tensor_ops() {
    for (name, arch, dtype, biases, tolerance) in [
        ("fused-f32", "llama", GgmlDType::F32, false, 3e-6),
        ("fused-qwen2", "qwen2", GgmlDType::F32, true, 3e-6),
        ("fused-f16", "llama", GgmlDType::F16, false, 3e-6),
        ("fused-q8", "llama", GgmlDType::Q8_0, false, 1e-2),
        ("fused-q4", "llama", GgmlDType::Q4_0, false, 1e-2),
        ("fused-q5", "llama", GgmlDType::Q5_0, false, 1e-2),
        ("fused-q5_1", "llama", GgmlDType::Q5_1, false, 1e-2),
        ("fused-q4k", "llama", GgmlDType::Q4K, false, 1e-2),
        ("fused-q5k", "llama", GgmlDType::Q5K, false, 1e-2),
        ("fused-q6k", "llama", GgmlDType::Q6K, false, 1e-2),
        ("fused-q3k", "llama", GgmlDType::Q3K, false, 1e-2),
        ("fused-q2k", "llama", GgmlDType::Q2K, false, 1e-2),
    ] {
        let path = write_model(name, arch, dtype, biases);
        check_fused_step_matches_tensor_ops(&path, tolerance);
        let _ = std::fs::remove_file(path);
    }
}
