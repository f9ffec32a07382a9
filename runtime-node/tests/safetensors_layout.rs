//! The same random Llama written two ways: a Hugging Face folder (`config.json` +
//! `model.safetensors`, q/k in HF order, half-split RoPE) and a GGUF file with q/k permuted the way
//! llama.cpp's converter does (interleaved RoPE). Both loaders must give the same logits, which
//! checks the safetensors name mapping, the config reader and both RoPE layouts at once.

mod common;
// Shared tiny-model helpers; this file uses their random values.
#[allow(dead_code)]
mod tiny;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hearth_engine::model::safetensors::{SafetensorsDir, read_hf_config};
use hearth_engine::model::{BlockTable, GgufFile, Llama, ModelConfig, StepInput, WeightFormat};
use tiny::random;

const HIDDEN: usize = 128;
const FF: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 2;
const VOCAB: usize = 48;
const THETA: f32 = 10_000.0;

/// Hugging Face weights by name.
fn hf_weights() -> HashMap<String, Tensor> {
    let hd = HIDDEN / HEADS;
    let mut seed = 0;
    let mut next = |shape: &[usize], scale: f32, offset: f32| {
        seed += 1;
        (random(shape, scale, seed) + f64::from(offset)).expect("tensor")
    };
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".to_string(),
        next(&[VOCAB, HIDDEN], 2.0, 0.0),
    );
    w.insert("model.norm.weight".to_string(), next(&[HIDDEN], 0.2, 1.0));
    w.insert("lm_head.weight".to_string(), next(&[VOCAB, HIDDEN], 0.5, 0.0));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        w.insert(format!("{p}.input_layernorm.weight"), next(&[HIDDEN], 0.2, 1.0));
        w.insert(
            format!("{p}.post_attention_layernorm.weight"),
            next(&[HIDDEN], 0.2, 1.0),
        );
        w.insert(
            format!("{p}.self_attn.q_proj.weight"),
            next(&[HEADS * hd, HIDDEN], 0.3, 0.0),
        );
        w.insert(
            format!("{p}.self_attn.k_proj.weight"),
            next(&[KV_HEADS * hd, HIDDEN], 0.3, 0.0),
        );
        w.insert(
            format!("{p}.self_attn.v_proj.weight"),
            next(&[KV_HEADS * hd, HIDDEN], 0.3, 0.0),
        );
        w.insert(
            format!("{p}.self_attn.o_proj.weight"),
            next(&[HIDDEN, HEADS * hd], 0.3, 0.0),
        );
        w.insert(format!("{p}.mlp.gate_proj.weight"), next(&[FF, HIDDEN], 0.3, 0.0));
        w.insert(format!("{p}.mlp.up_proj.weight"), next(&[FF, HIDDEN], 0.3, 0.0));
        w.insert(format!("{p}.mlp.down_proj.weight"), next(&[HIDDEN, FF], 0.3, 0.0));
    }
    w
}

/// llama.cpp's `permute`: within each head, rows (i, i + d/2) become (2i, 2i + 1).
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().expect("2d");
    w.reshape((heads, 2, out / heads / 2, inp))
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.reshape((out, inp)))
        .expect("permute")
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hearth-layout-{}-{name}", std::process::id()))
}

fn write_hf_dir(name: &str, weights: &HashMap<String, Tensor>) -> PathBuf {
    let dir = temp_path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FF,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 128,
        // transformers 5 layout: theta under rope_parameters.
        "rope_parameters": {"rope_theta": THETA, "rope_type": "default"},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).expect("safetensors");
    dir
}

fn write_gguf(weights: &HashMap<String, Tensor>) -> PathBuf {
    let rename = |hf: &str| -> String {
        let fixed = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return f.to_string();
        }
        let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
        let (layer, tail) = rest.split_once('.').expect("layer index");
        let part = match tail.trim_end_matches(".weight") {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            other => panic!("unexpected {other}"),
        };
        format!("blk.{layer}.{part}.weight")
    };
    let tensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(name, t)| {
            let t = if name.ends_with("q_proj.weight") {
                permute(t, HEADS)
            } else if name.ends_with("k_proj.weight") {
                permute(t, KV_HEADS)
            } else {
                t.clone()
            };
            (rename(name), QTensor::quantize(&t, GgmlDType::F32).expect("f32"))
        })
        .collect();
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.embedding_length".into(), Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length".into(), Value::U32(FF as u32)),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        ("llama.attention.head_count".into(), Value::U32(HEADS as u32)),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-5)),
        ("llama.rope.freq_base".into(), Value::F32(THETA)),
        ("llama.vocab_size".into(), Value::U32(VOCAB as u32)),
    ];
    let path = temp_path("model.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).expect("write gguf");
    path
}

fn logits(model: &Llama, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut pool = model.new_pool(8, 16).expect("pool");
    let mut table = BlockTable::default();
    // The prompt, then three decode steps: both RoPE paths at several positions.
    let mut rows = Vec::new();
    let mut input = tokens[..5].to_vec();
    for next in &tokens[5..] {
        let out = model
            .forward(
                &mut [StepInput {
                    tokens: &input,
                    table: &mut table,
                }],
                &mut pool,
            )
            .expect("forward");
        rows.push(out.get(0).and_then(|r| r.to_vec1::<f32>()).expect("row"));
        input = vec![*next];
    }
    rows
}

#[test]
fn safetensors_folder_and_permuted_gguf_agree() {
    let weights = hf_weights();
    let dir = write_hf_dir("hf-layout", &weights);
    let gguf_path = write_gguf(&weights);

    let cfg = read_hf_config(&dir).expect("config.json");
    assert_eq!(cfg.rope_theta, f64::from(THETA));
    let mut hf = SafetensorsDir::open(&dir).expect("safetensors");
    let from_hf = Llama::load(&mut hf, &cfg, 128, WeightFormat::AsStored, &Device::Cpu).expect("hf loads");

    let mut gguf = GgufFile::open(&gguf_path).expect("gguf");
    let gguf_cfg = ModelConfig::from_gguf(&gguf).expect("gguf config");
    let from_gguf =
        Llama::load(&mut gguf, &gguf_cfg, 128, WeightFormat::AsStored, &Device::Cpu).expect("gguf loads");

    let tokens = [3u32, 17, 42, 5, 9, 30, 1, 11];
    let (a, b) = (logits(&from_hf, &tokens), logits(&from_gguf, &tokens));
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "max |Δlogit| between layouts: {diff}");
    // Negative control: the wrong RoPE layout for HF weights must change the logits.
    let mut wrong = cfg.clone();
    wrong.rope_style = hearth_engine::model::config::RopeStyle::Interleaved;
    let mut hf = SafetensorsDir::open(&dir).expect("safetensors");
    let miswired = Llama::load(&mut hf, &wrong, 128, WeightFormat::AsStored, &Device::Cpu).expect("loads");
    let c = logits(&miswired, &tokens);
    let wrong_diff = a
        .iter()
        .flatten()
        .zip(c.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        wrong_diff > 1e-2,
        "the comparison cannot tell RoPE layouts apart ({wrong_diff})"
    );

    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(gguf_path);
}

#[test]
fn hugging_face_folder_loads_with_tokenizer_and_template() {
    // A real tokenizer.json: the SmolLM2 vocabulary rebuilt from its GGUF.
    let Some(smol) = common::smollm2_gguf() else {
        return;
    };
    let tokenizer = hearth_engine::tokenizer::TextTokenizer::from_gguf(&GgufFile::open(&smol).expect("gguf"))
        .expect("tokenizer");
    let dir = write_hf_dir("hf-full", &hf_weights());
    tokenizer
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .expect("save tokenizer");
    let tokenizer_config = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": false,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    });
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string()).expect("write");
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": [2, 0]}"#).expect("write");

    let options = hearth_engine::loader::LoadOptions {
        max_context_tokens: 64,
        weights: Default::default(),
        tensor_parallel: 1,
        kv_cache: None,
    };
    let loaded = hearth_engine::loader::load_model(&dir, &options, &Device::Cpu).expect("folder loads");
    assert_eq!(loaded.config().num_layers, LAYERS);
    assert_eq!(loaded.max_context_tokens, 64);
    let eog = loaded.tokenizer.end_of_generation();
    assert!(eog.contains(&2) && eog.contains(&0), "{eog:?}");
    let template = loaded
        .chat_template
        .as_ref()
        .expect("template from tokenizer_config.json");
    let message = hearth_engine::chat_template::TemplateMessage {
        role: "user".into(),
        content: "Hi".into(),
    };
    let text = template.render(&[message], true).expect("renders");
    let ids = loaded.tokenizer.encode(&text, true).expect("encodes");
    assert_eq!(ids.first(), Some(&1), "<|im_start|> is a single special token");
    let _ = std::fs::remove_dir_all(dir);
}
