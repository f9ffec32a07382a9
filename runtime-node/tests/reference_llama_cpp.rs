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

mod common;

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use runtime_node::loader::{LoadOptions, LoadedModel, load_gguf};
use runtime_node::model::llama::argmax_rows;
use runtime_node::model::{BlockTable, StepInput, WeightFormat};
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

fn read_fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(weights: WeightFormat) -> Option<LoadedModel> {
    let path = common::smollm2_gguf()?;
    let options = LoadOptions {
        max_context_tokens: 256,
        weights,
        tensor_parallel: 1,
        kv_cache: None,
    };
    Some(load_gguf(&path, &options, &Device::Cpu).expect("model loads"))
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
                let step = &case.steps[i];
                let sampled = fixture
                    .sample_ids
                    .iter()
                    .copied()
                    .zip(step.sampled.iter().copied());
                for (id, reference) in step.top.iter().copied().chain(sampled) {
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
    compare_with_llama_cpp(
        &loaded,
        "Q4_1 as stored",
        LLAMA_CPP_TOLERANCE,
        LLAMA_CPP_RMS_TOLERANCE,
    );
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
    let fixture: ExactFixture = read_fixture("smollm2_exact_logits.json");
    let mut max_diff = 0f32;
    for case in &fixture.cases {
        let (prompt, forced) = case.tokens.split_at(case.prompt_len);
        teacher_forced(&loaded, prompt, forced, case.steps.len(), |i, ours| {
            let step = &case.steps[i];
            for (&id, &exact) in step.ids.iter().zip(&step.exact) {
                max_diff = max_diff.max((ours[id as usize] - exact).abs());
            }
        });
    }
    eprintln!("vs exact float64 numpy: max |Δlogit| {max_diff:.5} (tolerance {EXACT_TOLERANCE})");
    assert!(max_diff <= EXACT_TOLERANCE, "max |Δlogit| {max_diff}");
}
