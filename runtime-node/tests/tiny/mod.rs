//! Tiny random-weight models written as real GGUF files, and the checks the CPU and CUDA tests
//! run on them: the KV cache and batching give the logits of recomputation, a cached prefix
//! those of computing it all, and [`mixed_steps`] records the logits of a fixed mix of steps.
//! The tensor-parallel and safetensors tests use the writer and the random values.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hearth_engine::model::{
    BlockTable, GgufFile, KvDtype, KvPool, Llama, ModelConfig, StepInput, WeightFormat,
};

const HIDDEN: usize = 256;
const FF: usize = 512;
const LAYERS: usize = 2;
pub const VOCAB: usize = 64;

/// Deterministic values in `[-scale/2, scale/2)`, different for each `seed`: a small generator,
/// so the tests do not depend on an RNG crate's stream.
pub fn random(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let x = ((i as u64 + 1) * 2_654_435_761 + seed * 40_503) % 10_007;
            (x as f32 / 10_007.0 - 0.5) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor")
}

/// A tiny model with 4 attention heads sharing 2 KV heads.
pub fn write_model(name: &str, arch: &str, dtype: GgmlDType, biases: bool) -> PathBuf {
    write_model_with_heads(name, arch, dtype, biases, (4, 2))
}

/// A tiny model with `heads` attention heads sharing `kv_heads` KV heads, written to a temporary
/// GGUF file named after `name`: deterministic weights of `dtype` (norms f32), q/k/v biases when
/// `biases`.
pub fn write_model_with_heads(
    name: &str,
    arch: &str,
    dtype: GgmlDType,
    biases: bool,
    (heads, kv_heads): (usize, usize),
) -> PathBuf {
    let head_dim = HIDDEN / heads;
    let mut seed = 0u64;
    let mut random = |shape: &[usize], scale: f32| -> Tensor {
        seed += 1;
        random(shape, scale, seed)
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut push = |name: String, t: Tensor, dtype: GgmlDType| {
        tensors.push((name, QTensor::quantize(&t, dtype).expect("quantize")));
    };
    push("token_embd.weight".into(), random(&[VOCAB, HIDDEN], 2.0), dtype);
    push(
        "output_norm.weight".into(),
        (random(&[HIDDEN], 0.2) + 1.0).expect("norm"),
        GgmlDType::F32,
    );
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        push(
            format!("{p}.attn_norm.weight"),
            (random(&[HIDDEN], 0.2) + 1.0).expect("norm"),
            GgmlDType::F32,
        );
        push(
            format!("{p}.ffn_norm.weight"),
            (random(&[HIDDEN], 0.2) + 1.0).expect("norm"),
            GgmlDType::F32,
        );
        push(
            format!("{p}.attn_q.weight"),
            random(&[heads * head_dim, HIDDEN], 0.2),
            dtype,
        );
        push(
            format!("{p}.attn_k.weight"),
            random(&[kv_heads * head_dim, HIDDEN], 0.2),
            dtype,
        );
        push(
            format!("{p}.attn_v.weight"),
            random(&[kv_heads * head_dim, HIDDEN], 0.2),
            dtype,
        );
        push(
            format!("{p}.attn_output.weight"),
            random(&[HIDDEN, heads * head_dim], 0.2),
            dtype,
        );
        push(format!("{p}.ffn_gate.weight"), random(&[FF, HIDDEN], 0.2), dtype);
        push(format!("{p}.ffn_up.weight"), random(&[FF, HIDDEN], 0.2), dtype);
        push(format!("{p}.ffn_down.weight"), random(&[HIDDEN, FF], 0.2), dtype);
        if biases {
            push(
                format!("{p}.attn_q.bias"),
                random(&[heads * head_dim], 1.0),
                GgmlDType::F32,
            );
            push(
                format!("{p}.attn_k.bias"),
                random(&[kv_heads * head_dim], 1.0),
                GgmlDType::F32,
            );
            push(
                format!("{p}.attn_v.bias"),
                random(&[kv_heads * head_dim], 1.0),
                GgmlDType::F32,
            );
        }
    }
    let key = |k: &str| format!("{arch}.{k}");
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("feed_forward_length"), Value::U32(FF as u32)),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("attention.head_count"), Value::U32(heads as u32)),
        (key("attention.head_count_kv"), Value::U32(kv_heads as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("vocab_size"), Value::U32(VOCAB as u32)),
        (key("context_length"), Value::U32(128)),
    ];
    let path = std::env::temp_dir().join(format!("hearth-tiny-{}-{name}.gguf", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("create");
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).expect("write gguf");
    path
}

/// The model on `device` with its weights as stored, its KV cache in `kv`.
pub fn load_on(path: &Path, kv: KvDtype, device: &Device) -> Llama {
    load_as(path, WeightFormat::AsStored, kv, device)
}

/// The model on `device` with its weights in `format`, its KV cache in `kv`.
pub fn load_as(path: &Path, format: WeightFormat, kv: KvDtype, device: &Device) -> Llama {
    let mut gguf = GgufFile::open(path).expect("opens");
    let cfg = ModelConfig::from_gguf(&gguf).expect("config");
    let mut model = Llama::load(&mut gguf, &cfg, 128, format, device).expect("loads");
    model.set_kv_dtype(kv);
    model
}

pub fn logits_row(model: &Llama, tokens: &[u32], table: &mut BlockTable, pool: &mut KvPool) -> Vec<f32> {
    let logits = model
        .forward(&mut [StepInput { tokens, table }], pool)
        .expect("forward");
    logits.get(0).and_then(|r| r.to_vec1::<f32>()).expect("row")
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Logits after each token, computed with the cache (prefill 3, then one at a time), must equal
/// full recomputation of the prefix without a cache; two sequences batched must equal each alone.
pub fn check_cache_and_batching(model: &Llama, tolerance: f32) {
    // Blocks of 4 tokens, so sequences cross block boundaries mid-prefill and mid-decode.
    let mut pool = model.new_pool(64, 4).expect("pool");
    let tokens: Vec<u32> = vec![3, 17, 42, 5, 9, 60, 1, 33, 21, 8];
    let mut table = BlockTable::default();
    let mut incremental = vec![logits_row(model, &tokens[..3], &mut table, &mut pool)];
    for t in &tokens[3..] {
        incremental.push(logits_row(model, std::slice::from_ref(t), &mut table, &mut pool));
    }
    for (i, row) in incremental.iter().enumerate() {
        let mut fresh = BlockTable::default();
        let full = logits_row(model, &tokens[..3 + i], &mut fresh, &mut pool);
        pool.release(&mut fresh);
        assert!(
            max_diff(row, &full) <= tolerance,
            "position {}: {}",
            3 + i,
            max_diff(row, &full)
        );
    }
    pool.release(&mut table);

    // Chunked prefill (5 + 5) equals one-shot prefill.
    let mut chunked = BlockTable::default();
    logits_row(model, &tokens[..5], &mut chunked, &mut pool);
    let last = logits_row(model, &tokens[5..], &mut chunked, &mut pool);
    assert!(max_diff(&last, incremental.last().expect("rows")) <= tolerance);
    pool.release(&mut chunked);

    // A batch mixing a decode and a prefill equals each alone.
    let other: Vec<u32> = vec![7, 7, 2, 50, 11];
    let mut alone = BlockTable::default();
    logits_row(model, &tokens[..5], &mut alone, &mut pool);
    let alone_a = logits_row(model, &tokens[5..6], &mut alone, &mut pool);
    let mut alone = BlockTable::default();
    let alone_b = logits_row(model, &other, &mut alone, &mut pool);
    let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
    logits_row(model, &tokens[..5], &mut a, &mut pool);
    let batched = model
        .forward(
            &mut [
                StepInput {
                    tokens: &tokens[5..6],
                    table: &mut a,
                },
                StepInput {
                    tokens: &other,
                    table: &mut b,
                },
            ],
            &mut pool,
        )
        .expect("batched")
        .to_vec2::<f32>()
        .expect("rows");
    assert!(
        max_diff(&batched[0], &alone_a) <= tolerance,
        "{}",
        max_diff(&batched[0], &alone_a)
    );
    assert!(
        max_diff(&batched[1], &alone_b) <= tolerance,
        "{}",
        max_diff(&batched[1], &alone_b)
    );
}

/// A prompt whose first blocks come from the prefix cache gives the logits of computing it all.
pub fn check_prefix_cache(model: &Llama, tolerance: f32) {
    let mut pool = model.new_pool(32, 4).expect("pool");
    let shared: Vec<u32> = vec![3, 17, 42, 5, 9, 60, 1, 33, 21];
    let mut first = BlockTable::default();
    logits_row(model, &shared, &mut first, &mut pool);
    pool.register_prefix(&mut first, &shared);
    pool.release(&mut first);

    let mut prompt = shared.clone();
    prompt.extend([8, 12, 40]);
    let mut cached = BlockTable::default();
    let hit = pool.match_prefix(&mut cached, &prompt);
    assert_eq!(hit, 8, "two full blocks of the shared prefix");
    let with_cache = logits_row(model, &prompt[hit..], &mut cached, &mut pool);
    let mut fresh_pool = model.new_pool(32, 4).expect("pool");
    let without = logits_row(model, &prompt, &mut BlockTable::default(), &mut fresh_pool);
    assert!(
        max_diff(&with_cache, &without) <= tolerance,
        "{}",
        max_diff(&with_cache, &without)
    );
}

/// Logit rows of a prefill, then batches mixing a decode with prompt chunks, crossing blocks.
pub fn mixed_steps(model: &Llama) -> Vec<Vec<f32>> {
    {
        let mut pool = model.new_pool(32, 4).expect("pool");
        let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
        let mut rows = vec![logits_row(model, &[3, 17, 42, 5, 9], &mut a, &mut pool)];
        // A 40-token prompt chunk: past the rows where F16 turns to a dense GEMM without AVX-512.
        let long: Vec<u32> = (0..40).map(|i| (i * 13 + 5) % 60).collect();
        let steps: [(&[u32], &[u32]); 4] = [
            (&[60], &[7, 7, 2, 50, 11, 1, 30]),
            (&[1], &[4]),
            (&[33], &[8]),
            (&[12], &long),
        ];
        let mut step = |batch: &mut [StepInput<'_>]| {
            let logits = model.forward(batch, &mut pool).expect("step");
            rows.extend(logits.to_vec2::<f32>().expect("rows"));
        };
        for (next_a, next_b) in steps {
            step(&mut [
                StepInput {
                    tokens: next_a,
                    table: &mut a,
                },
                StepInput {
                    tokens: next_b,
                    table: &mut b,
                },
            ]);
        }
        // One sequence alone past 64 positions (89, then 90): a single decoding sequence has
        // too few query groups for the threads, so the fused step splits its context into runs
        // and merges them.
        for tokens in [&long[..], &[21]] {
            step(&mut [StepInput {
                tokens,
                table: &mut b,
            }]);
        }
        rows
    }
}
