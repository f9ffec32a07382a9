//! Hugging Face model folders: `config.json` for the hyper-parameters and `*.safetensors` shards
//! (one file, an index, or every shard in the folder) for the weights, served to the model under
//! llama.cpp's tensor names. Weights are expanded to f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::config::{Architecture, Llama3RopeScaling, ModelConfig, RopeStyle};
use super::gguf::LoadError;
use super::source::TensorSource;

/// The weights of a Hugging Face model folder.
#[derive(Debug)]
pub struct SafetensorsDir {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl SafetensorsDir {
    /// Reads every weight shard of `dir` (via `model.safetensors.index.json` when present).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let io = |path: &Path, source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let index = dir.join("model.safetensors.index.json");
        let mut files: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| bad_json(&index, e))?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| LoadError::BadValue {
                    path: index.clone(),
                    key: "weight_map".into(),
                    message: "expected an object of tensor name to file".into(),
                })?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(Value::as_str)
                .map(|f| dir.join(f))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect()
        };
        files.sort();
        if files.is_empty() {
            return Err(LoadError::MissingTensor {
                path: dir.to_path_buf(),
                name: "*.safetensors (no weight files in the folder)".into(),
            });
        }
        let mut tensors = HashMap::new();
        for file in &files {
            let bytes = std::fs::read(file).map_err(|e| io(file, e))?;
            tensors.extend(parse_shard(file, &bytes)?);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }
}

/// The tensors of one `.safetensors` file's `bytes` (`path` names it in errors). The header's
/// offsets, dtypes and shapes are checked against the data before anything is allocated.
pub fn parse_shard(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>, LoadError> {
    candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|source| LoadError::Malformed {
        path: path.to_path_buf(),
        what: "safetensors".into(),
        source: Box::new(source),
    })
}

/// `tensor` as the f32 weights the model is built from (`path` names the source in errors).
pub fn to_f32_weights(path: &Path, tensor: &Tensor, device: &Device) -> Result<QTensor, LoadError> {
    let build = |source| LoadError::Build {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let tensor = tensor
        .to_dtype(DType::F32)
        .and_then(|t| t.to_device(device))
        .map_err(build)?;
    QTensor::quantize(&tensor, GgmlDType::F32).map_err(build)
}

/// The Hugging Face name of the tensor llama.cpp calls `name`.
pub fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return Some(fixed.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let (part, kind) = tail.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

impl TensorSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn has(&self, name: &str) -> bool {
        hf_name(name).is_some_and(|n| self.tensors.contains_key(&n))
    }

    fn load(&mut self, name: &str, shape: &[usize], device: &Device) -> Result<QTensor, LoadError> {
        let missing = || LoadError::MissingTensor {
            path: self.dir.clone(),
            name: hf_name(name).unwrap_or_else(|| name.to_string()),
        };
        let hf = hf_name(name).ok_or_else(missing)?;
        // Tied embeddings are read twice (embedding and output head), so clone, not remove.
        let tensor = self.tensors.get(&hf).ok_or_else(missing)?.clone();
        if tensor.dims() != shape {
            return Err(LoadError::TensorShape {
                path: self.dir.clone(),
                name: hf,
                actual: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        to_f32_weights(&self.dir, &tensor, device)
    }
}

fn bad_json(path: &Path, err: serde_json::Error) -> LoadError {
    LoadError::BadValue {
        path: path.to_path_buf(),
        key: "(file)".into(),
        message: format!("not valid JSON: {err}"),
    }
}

/// Reads `config.json` of a Hugging Face model folder.
pub fn read_hf_config(dir: &Path) -> Result<ModelConfig, LoadError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad_json(&path, e))?;
    hf_config(&path, &json)
}

/// Model hyper-parameters from a parsed `config.json` (`path` names it in errors).
pub fn hf_config(path: &Path, json: &Value) -> Result<ModelConfig, LoadError> {
    let bad = |key: &str, message: String| LoadError::BadValue {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let usize_key = |key: &str| -> Result<Option<usize>, LoadError> {
        match &json[key] {
            Value::Null => Ok(None),
            v => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(key, format!("expected a non-negative integer, found {v}"))),
        }
    };
    let required = |key: &str| -> Result<usize, LoadError> {
        usize_key(key)?.ok_or_else(|| LoadError::MissingKey {
            path: path.to_path_buf(),
            key: key.to_string(),
        })
    };
    let arch = match json["model_type"].as_str() {
        Some("llama") => Architecture::Llama,
        Some("mistral") => Architecture::Mistral,
        Some("qwen2") => Architecture::Qwen2,
        other => {
            return Err(LoadError::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: other.unwrap_or("(no model_type)").to_string(),
            });
        }
    };
    let hidden_size = required("hidden_size")?;
    let num_heads = required("num_attention_heads")?;
    let num_kv_heads = usize_key("num_key_value_heads")?.unwrap_or(num_heads);
    if num_heads == 0 || hidden_size % num_heads != 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(bad(
            "num_key_value_heads",
            format!("{num_heads} heads / {num_kv_heads} KV heads do not fit hidden size {hidden_size}"),
        ));
    }
    // transformers 5 moved these under `rope_parameters`; read both or silently get defaults.
    let rope = |key: &str| json[key].clone();
    let params = if json["rope_parameters"].is_object() {
        rope("rope_parameters")
    } else {
        rope("rope_scaling")
    };
    let rope_theta = json["rope_theta"]
        .as_f64()
        .or_else(|| json["rope_parameters"]["rope_theta"].as_f64())
        .unwrap_or(10_000.0);
    let rope_type = params["rope_type"].as_str().or_else(|| params["type"].as_str());
    let rope_scaling = match rope_type {
        Some("llama3") => Some(Llama3RopeScaling {
            factor: params["factor"].as_f64().unwrap_or(8.0),
            low_freq_factor: params["low_freq_factor"].as_f64().unwrap_or(1.0),
            high_freq_factor: params["high_freq_factor"].as_f64().unwrap_or(4.0),
            original_context: params["original_max_position_embeddings"]
                .as_u64()
                .unwrap_or(8192) as usize,
        }),
        None | Some("default") => None,
        Some(other) => {
            return Err(bad(
                "rope_scaling",
                format!("rope type `{other}` is not implemented"),
            ));
        }
    };
    Ok(ModelConfig {
        arch,
        hidden_size,
        intermediate_size: required("intermediate_size")?,
        num_layers: required("num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim: usize_key("head_dim")?.unwrap_or(hidden_size / num_heads),
        vocab_size: required("vocab_size")?,
        rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        rope_theta,
        // Hugging Face checkpoints keep q/k unpermuted: rotate halves, not adjacent pairs.
        rope_style: RopeStyle::HalfSplit,
        rope_scaling,
        max_position_embeddings: usize_key("max_position_embeddings")?.unwrap_or(4096),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_q.bias").as_deref(),
            Some("model.layers.12.self_attn.q_proj.bias")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn reads_rope_theta_from_either_place() {
        let base = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        });
        let mut old = base.clone();
        old["rope_theta"] = serde_json::json!(500000.0);
        old["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 32.0});
        let mut new = base.clone();
        new["rope_parameters"] =
            serde_json::json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0});
        for json in [old, new] {
            let cfg = hf_config(Path::new("config.json"), &json).expect("config");
            assert_eq!(cfg.rope_theta, 500_000.0);
            assert_eq!(cfg.rope_scaling.map(|s| s.factor), Some(32.0));
            assert_eq!(cfg.rope_style, RopeStyle::HalfSplit);
        }
        let mut unknown = base;
        unknown["model_type"] = serde_json::json!("gpt2");
        let err = hf_config(Path::new("config.json"), &unknown).expect_err("unknown");
        assert!(err.to_string().contains("gpt2"), "{err}");
    }
}
