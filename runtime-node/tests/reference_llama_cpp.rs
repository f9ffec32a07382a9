//! Engine numerics against implementations we did not write, on the SmolLM2-135M Q4_1 GGUF.
//!
//! 1. **llama.cpp** (through `llama-cpp-python`, f32 KV cache, no flash attention): fixture
//!    `tests/data/smollm2_llama_cpp_logits.json`, written by `scripts/reference_logits.py`. For each
//!    prompt it holds llama.cpp's tokenization, its 32 greedy tokens, and at each of the 33 steps the
//!    top-20 logits plus every 499th vocabulary logit. We check that our tokenizer gives llama.cpp's
//!    ids, that fed llama.cpp's greedy path our argmax equals llama.cpp's at every step (100% top-1
//!    agreement, so our own greedy decode reproduces its 32 tokens), and that every compared logit
//!    is within [`LLAMA_CPP_TOLERANCE`].
//! 2. **Exact float64 numpy** on weights dequantized by the `gguf` package: fixture
//!    `tests/data/smollm2_exact_logits.json`, written by `scripts/numpy_reference.py`. Loading our
//!    model with dequantized f32 weights must reproduce it within [`EXACT_TOLERANCE`]: this checks
//!    the model's math (RoPE layout, GQA grouping, masking, norms) independently of kernels.
//! 3. **Both against exact**: over the steps both fixtures hold, our quantized kernels (f32 KV
//!    cache, like llama.cpp's fixture) must be no farther from the exact logits than llama.cpp
//!    is. Measured: Q4_1 ours 0.59, llama.cpp 0.77 (with our default f16 KV cache ours is 0.97).
//!
//! Other files by hand: write both fixtures for a GGUF with the scripts, put them in one folder
//! and run this file with `HEARTH_REFERENCE_FIXTURES=<folder> HEARTH_SMOLLM2_GGUF=<file>`. On
//! `make bench`'s Q4_K_M (Q5_0/Q8_0/Q4_K/Q6_K tensors; 2026-12-03): top-1 132/132 against
//! llama.cpp, max |Δlogit| 1.67 / rms 0.34 (over the Q4_1 bounds below, as expected: llama.cpp
//! itself is 1.35 from exact there), ours 0.79 from exact, dequantized 3e-5 from exact. On the
//! bench's Q5_K_M (Q5_1/Q5_K/Q6_K/Q8_0 tensors; 2026-12-04): top-1 131/132, the one step a
//! near-tie we break for the runner-up (llama.cpp's margin 0.035, exact float64's 0.086); max
//! |Δlogit| 1.57 / rms 0.36; ours 0.91 from exact against llama.cpp's 1.24; dequantized 3e-5.
//! On SmolLM2 quantized from F16 by llama-quantize to IQ4_NL (207 IQ4_NL tensors) and IQ4_XS (180
//! IQ4_NL, 27 IQ4_XS; 2026-12-04): top-1 131/132 each, the miss a near-tie in "a, b, c, ..."
//! (llama.cpp's margins 0.043 and 0.041); max |Δlogit| 1.04 / rms 0.24 and 1.29 / 0.28; ours
//! 0.78 and 0.85 from exact against llama.cpp's 1.23 and 0.99; dequantized 3e-5 and 5e-5 (the
//! exact reference dequantizes with gguf-py, an implementation of the IQ types apart from ours).
//! Same day, llama-quantize's Q2_K of SmolLM2 (Q4_0, and Q3_K for the 30 `ffn_down`): top-1
//! 132/132, max |Δlogit| 1.67 / rms 0.35, ours 0.92 from exact against llama.cpp's 1.77; with
//! `--tensor-type ffn_down=q2_k` (30 Q2_K): 130/132, both misses near-ties (margins 0.080 and
//! 0.007), max 1.98 / rms 0.38, ours 1.23 from exact against llama.cpp's 1.56.
//!
//! Why the quantized tolerance is ~1 logit: llama.cpp quantizes activations to 8 bits (Q8_1) for
//! Q4_1 dot products; so does runtime-node for decode, while prompt chunks of 32+ tokens run as a
//! dense f32 GEMM on dequantized weights. Rounding therefore differs wherever the paths differ,
//! and this small model amplifies it. Measured on this fixture (x86-64, AVX-512): llama.cpp itself
//! is up to 0.77 from the exact forward pass (first 9 steps per prompt); runtime-node vs llama.cpp
//! max 0.98, rms 0.21 over 15,708 logits; llama.cpp's own default f16 KV cache moves its logits by
//! 0.66. The prompts keep a top-1 margin of at least 0.98 at every step, so top-1 agreement is
//! still a strict check.
//! With dequantized weights runtime-node matches the exact reference to 4e-5.
//!
//! `HEARTH_TEST_DEVICE=cuda:N` runs all of it on a GPU instead (CUDA builds, on a GPU machine).
//! There candle's default quantized kernels round activations to 8 bits (Q8_1) for prompts too,
//! as llama.cpp's CUDA backend does, so the GPU has bounds of its own (measured on an H200,
//! 2026-12-04): against llama.cpp top-1 132/132, max |Δlogit| 2.51, rms 0.41; from exact 1.48
//! against llama.cpp's 0.77. With candle's exact kernels (`set_force_dmmv`) the quantized model
//! on the GPU is 2e-5 from exact, like dequantized weights: the GPU's model math is right.

mod common;

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use hearth_engine::loader::{LoadOptions, LoadedModel, load_gguf};
use hearth_engine::model::llama::argmax_rows;
use hearth_engine::model::{BlockTable, KvDtype, StepInput, WeightFormat};
use hearth_node_contract::DeviceSpec;
use serde::Deserialize;

/// Largest |our logit - llama.cpp's logit| accepted on SmolLM2-135M Q4_1 (quantized kernels).
const LLAMA_CPP_TOLERANCE: f32 = 1.25;
/// Largest root-mean-square difference over all compared logits against llama.cpp.
const LLAMA_CPP_RMS_TOLERANCE: f32 = 0.3;
/// Same bounds for `--requantize q8_0` (the Q4_1 weights rounded again to 8 bits): measured max
/// 1.81, rms 0.38, top-1 still 100%.
const REQUANTIZED_TOLERANCE: f32 = 2.25;
const REQUANTIZED_RMS_TOLERANCE: f32 = 0.5;
/// Largest |our logit - exact logit| with dequantized f32 weights (f32 vs f64 rounding only).
const EXACT_TOLERANCE: f32 = 1e-3;
/// With an FP8 KV cache (3 mantissa bits per key and value) against llama.cpp's f32 cache:
/// measured 1.83 / rms 0.38 (our default f16 cache: 1.10 / 0.22).
const FP8_KV_TOLERANCE: f32 = 2.25;
const FP8_KV_RMS_TOLERANCE: f32 = 0.5;
/// The GPU's bounds against llama.cpp (see the module doc: Q8_1 activations for prompts too).
const CUDA_LLAMA_CPP_TOLERANCE: f32 = 2.75;
const CUDA_LLAMA_CPP_RMS_TOLERANCE: f32 = 0.45;
/// How much farther from exact than llama.cpp's CPU path the GPU's default kernels may be.
const CUDA_EXACT_DISTANCE_FACTOR: f32 = 2.0;

#[derive(Deserialize)]
struct LlamaCppFixture {
    reference: String,
    sample_ids: Vec<u32>,
    cases: Vec<LlamaCppCase>,
    tokenizer: Vec<TokenizerCase>,
}

#[derive(Deserialize)]
struct LlamaCppCase {
    text: String,
    prompt: Vec<u32>,
    generated: Vec<u32>,
    steps: Vec<LlamaCppStep>,
}

#[derive(Deserialize)]
struct LlamaCppStep {
    top: Vec<(u32, f32)>,
    sampled: Vec<f32>,
}

impl LlamaCppStep {
    /// Every logit the fixture holds for this step: the top ones, then one per sampled id.
    fn logits<'a>(&'a self, sample_ids: &'a [u32]) -> impl Iterator<Item = (u32, f32)> + 'a {
        self.top
            .iter()
            .copied()
            .chain(sample_ids.iter().copied().zip(self.sampled.iter().copied()))
    }
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ExactFixture {
    cases: Vec<ExactCase>,
}

#[derive(Deserialize)]
struct ExactCase {
    tokens: Vec<u32>,
    prompt_len: usize,
    steps: Vec<ExactStep>,
}

#[derive(Deserialize)]
struct ExactStep {
    ids: Vec<u32>,
    exact: Vec<f32>,
}

/// Reads `tests/data/{name}`, or `$HEARTH_REFERENCE_FIXTURES/{name}` when set (fixtures written by
/// the scripts for another GGUF, run with `HEARTH_SMOLLM2_GGUF` naming that file).
fn read_fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let dir = std::env::var("HEARTH_REFERENCE_FIXTURES")
        .unwrap_or_else(|_| format!("{}/tests/data", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(weights: WeightFormat) -> Option<LoadedModel> {
    load_with_kv_cache(weights, None)
}

fn load_with_kv_cache(weights: WeightFormat, kv_cache: Option<KvDtype>) -> Option<LoadedModel> {
    let path = common::smollm2_gguf()?;
    let options = LoadOptions {
        max_context_tokens: 256,
        weights,
        tensor_parallel: 1,
        kv_cache,
    };
    Some(load_gguf(&path, &options, &test_device()).expect("model loads"))
}

/// `$HEARTH_TEST_DEVICE` (`cpu`, or `cuda:N` in CUDA builds), else the CPU.
fn test_device() -> Device {
    let Ok(name) = std::env::var("HEARTH_TEST_DEVICE") else {
        return Device::Cpu;
    };
    let spec: DeviceSpec = name
        .parse()
        .unwrap_or_else(|e| panic!("HEARTH_TEST_DEVICE={name}: {e}"));
    hearth_engine::serve::device(spec).unwrap_or_else(|e| panic!("HEARTH_TEST_DEVICE={name}: {e:#}"))
}

/// Feeds `prompt` then each of `forced` one token at a time; calls `check(step, logits)` after
/// every step (step 0 = after the prompt) and returns our argmax at each step.
fn teacher_forced(
    loaded: &LoadedModel,
    prompt: &[u32],
    forced: &[u32],
    steps: usize,
    mut check: impl FnMut(usize, &[f32]),
) -> Vec<u32> {
    // Block size 16 over 256 tokens: the reference also exercises block boundaries.
    let mut pool = loaded.model.new_pool(16, 16).expect("pool");
    let mut table = BlockTable::default();
    let mut input = prompt.to_vec();
    let mut top1 = Vec::with_capacity(steps);
    for step in 0..steps {
        let logits = loaded
            .model
            .forward(
                &mut [StepInput {
                    tokens: &input,
                    table: &mut table,
                }],
                &mut pool,
            )
            .expect("forward");
        top1.push(argmax_rows(&logits).expect("argmax")[0]);
        let row = logits.get(0).and_then(|t| t.to_vec1::<f32>()).expect("logits");
        check(step, &row);
        match forced.get(step) {
            Some(&next) => input = vec![next],
            None => break,
        }
    }
    top1
}

/// Runs every fixture prompt teacher-forced on llama.cpp's greedy path and asserts 100% top-1
/// agreement and the two logit tolerances; `label` names the weight format in the report line.
fn compare_with_llama_cpp(loaded: &LoadedModel, label: &str, max_tolerance: f32, rms_tolerance: f32) {
    let fixture: LlamaCppFixture = read_fixture("smollm2_llama_cpp_logits.json");
    let (mut max_diff, mut sum_sq, mut count) = (0f32, 0f64, 0usize);
    let (mut agreed, mut compared) = (0usize, 0usize);
    for case in &fixture.cases {
        let ids = loaded.tokenizer.encode(&case.text, true).expect("encodes");
        assert_eq!(ids, case.prompt, "tokenization of {:?}", case.text);
        let ours_top1 = teacher_forced(
            loaded,
            &case.prompt,
            &case.generated,
            case.steps.len(),
            |i, ours| {
                for (id, reference) in case.steps[i].logits(&fixture.sample_ids) {
                    let diff = (ours[id as usize] - reference).abs();
                    max_diff = max_diff.max(diff);
                    sum_sq += f64::from(diff * diff);
                    count += 1;
                }
            },
        );
        for (i, (ours, step)) in ours_top1.iter().zip(&case.steps).enumerate() {
            compared += 1;
            if *ours == step.top[0].0 {
                agreed += 1;
            } else {
                eprintln!(
                    "{:?} step {i}: our top-1 {ours} vs llama.cpp's {}",
                    case.text, step.top[0].0
                );
            }
        }
    }
    let rms = (sum_sq / count.max(1) as f64).sqrt() as f32;
    eprintln!(
        "{label} vs {}: top-1 agreement {agreed}/{compared} steps; max |Δlogit| {max_diff:.4} (tolerance {max_tolerance}), rms {rms:.4} (tolerance {rms_tolerance}) over {count} logits",
        fixture.reference
    );
    assert_eq!(agreed, compared, "top-1 disagreement with llama.cpp");
    assert!(max_diff <= max_tolerance, "max |Δlogit| {max_diff}");
    assert!(rms <= rms_tolerance, "rms Δlogit {rms}");
}

#[test]
fn matches_llama_cpp_tokens_and_logits() {
    let Some(loaded) = load(WeightFormat::AsStored) else {
        return;
    };
    let fixture: LlamaCppFixture = read_fixture("smollm2_llama_cpp_logits.json");
    for case in &fixture.tokenizer {
        let ids = loaded.tokenizer.encode(&case.text, true).expect("encodes");
        assert_eq!(ids, case.ids, "tokenization of {:?}", case.text);
    }
    let (max_tolerance, rms_tolerance) = if loaded.model.device().is_cuda() {
        (CUDA_LLAMA_CPP_TOLERANCE, CUDA_LLAMA_CPP_RMS_TOLERANCE)
    } else {
        (LLAMA_CPP_TOLERANCE, LLAMA_CPP_RMS_TOLERANCE)
    };
    compare_with_llama_cpp(&loaded, "Q4_1 as stored", max_tolerance, rms_tolerance);
}

#[test]
fn requantized_q8_0_keeps_llama_cpp_top1() {
    let Some(loaded) = load(WeightFormat::Requantized(GgmlDType::Q8_0)) else {
        return;
    };
    compare_with_llama_cpp(
        &loaded,
        "Q4_1 requantized to Q8_0",
        REQUANTIZED_TOLERANCE,
        REQUANTIZED_RMS_TOLERANCE,
    );
}

#[test]
fn dequantized_weights_match_exact_reference() {
    let Some(loaded) = load(WeightFormat::Dequantized) else {
        return;
    };
    let max_diff = our_distance_from_exact(&loaded, &read_fixture("smollm2_exact_logits.json"));
    eprintln!("vs exact float64 numpy: max |Δlogit| {max_diff:.5} (tolerance {EXACT_TOLERANCE})");
    assert!(max_diff <= EXACT_TOLERANCE, "max |Δlogit| {max_diff}");
}

/// Largest |our logit - exact logit| over the exact fixture, teacher-forced on its tokens.
fn our_distance_from_exact(loaded: &LoadedModel, exact: &ExactFixture) -> f32 {
    let mut max_diff = 0f32;
    for case in &exact.cases {
        let (prompt, forced) = case.tokens.split_at(case.prompt_len);
        teacher_forced(loaded, prompt, forced, case.steps.len(), |i, ours| {
            let step = &case.steps[i];
            for (&id, &exact) in step.ids.iter().zip(&step.exact) {
                max_diff = max_diff.max((ours[id as usize] - exact).abs());
            }
        });
    }
    max_diff
}

/// Largest |llama.cpp's logit - exact logit| over the steps both fixtures hold.
fn llama_cpps_distance_from_exact(llama: &LlamaCppFixture, exact: &ExactFixture) -> f32 {
    let mut theirs = 0f32;
    for (case, exact_case) in llama.cases.iter().zip(&exact.cases) {
        assert_eq!(
            case.prompt.len(),
            exact_case.prompt_len,
            "the fixtures are for the same prompts"
        );
        for (step, exact_step) in case.steps.iter().zip(&exact_case.steps) {
            let logits: std::collections::HashMap<u32, f32> = step.logits(&llama.sample_ids).collect();
            for (id, exact) in exact_step.ids.iter().zip(&exact_step.exact) {
                let theirs_here = logits
                    .get(id)
                    .expect("the exact fixture's ids come from llama.cpp's");
                theirs = theirs.max((theirs_here - exact).abs());
            }
        }
    }
    theirs
}

/// Our quantized kernels (8-bit activations) are no farther from the exact float64 forward pass
/// than llama.cpp's (8-bit activations) is, both with an f32 KV cache as in llama.cpp's fixture:
/// this bounds our rounding by the reference implementation's, independently of how the two
/// differ from each other.
#[test]
fn quantized_logits_are_as_close_to_exact_as_llama_cpps() {
    let Some(loaded) = load_with_kv_cache(WeightFormat::AsStored, Some(KvDtype::F32)) else {
        return;
    };
    let exact: ExactFixture = read_fixture("smollm2_exact_logits.json");
    let theirs = llama_cpps_distance_from_exact(&read_fixture("smollm2_llama_cpp_logits.json"), &exact);
    let ours = our_distance_from_exact(&loaded, &exact);
    eprintln!("max |Δlogit| from exact float64 numpy: ours {ours:.4}, llama.cpp {theirs:.4}");
    if !loaded.model.device().is_cuda() {
        assert!(ours <= theirs, "ours {ours} vs llama.cpp {theirs}");
        return;
    }
    assert!(
        ours <= CUDA_EXACT_DISTANCE_FACTOR * theirs,
        "GPU, default kernels: ours {ours} vs llama.cpp {theirs}"
    );
    #[cfg(feature = "cuda")]
    {
        candle_core::quantized::cuda::set_force_dmmv(true);
        let exact_kernels = our_distance_from_exact(&loaded, &exact);
        candle_core::quantized::cuda::set_force_dmmv(false);
        eprintln!("GPU with candle's exact kernels: {exact_kernels:.5} from exact");
        assert!(
            exact_kernels <= EXACT_TOLERANCE,
            "GPU, exact kernels: {exact_kernels}"
        );
    }
}

/// An FP8 KV cache (`--kv-cache-dtype fp8`) keeps llama.cpp's greedy path on SmolLM2: 100% top-1
/// agreement, with the logits within [`FP8_KV_TOLERANCE`] / [`FP8_KV_RMS_TOLERANCE`].
#[test]
fn fp8_kv_cache_keeps_llama_cpps_top1() {
    if test_device().is_cuda() {
        return;
    }
    let Some(loaded) = load_with_kv_cache(WeightFormat::AsStored, Some(KvDtype::Fp8)) else {
        return;
    };
    compare_with_llama_cpp(
        &loaded,
        "Q4_1 with an FP8 KV cache",
        FP8_KV_TOLERANCE,
        FP8_KV_RMS_TOLERANCE,
    );
}
