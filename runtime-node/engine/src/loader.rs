//! Loads everything a model ships: weights, tokenizer and chat template, from one GGUF file or
//! a Hugging Face folder.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::chat_template::{ChatTemplate, TemplateError};
use crate::model::group::load_tensor_parallel;
use crate::model::safetensors::{SafetensorsDir, read_hf_config};
use crate::model::{GgufFile, KvDtype, Llama, LoadError, ModelConfig, WeightFormat};
use crate::tokenizer::{TextTokenizer, read_json};

/// A model ready to serve, with the text-side pieces that came in the same file.
#[derive(Debug)]
pub struct LoadedModel {
    /// The transformer.
    pub model: Llama,
    /// The tokenizer built from the file's metadata.
    pub tokenizer: TextTokenizer,
    /// The chat template, or why there is none (chat requests then fail with that reason).
    pub chat_template: Result<ChatTemplate, std::sync::Arc<TemplateError>>,
    /// Longest sequence (prompt + completion) this load accepts.
    pub max_context_tokens: usize,
    /// How long loading took.
    pub load_time: Duration,
}

impl LoadedModel {
    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Longest sequence accepted, in tokens (0 = the model's trained context).
    pub max_context_tokens: usize,
    /// How weights are kept in memory.
    pub weights: WeightFormat,
    /// Tensor-parallel ranks (0 or 1: one rank). Each rank thread loads only its shard.
    pub tensor_parallel: usize,
    /// How host KV pools store keys and values; `None`: f32 with dequantized weights, else f16.
    pub kv_cache: Option<KvDtype>,
}

/// Loads a model: a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`) when
/// `path` is a directory, else a GGUF file.
pub fn load_model(path: &Path, options: &LoadOptions, device: &Device) -> Result<LoadedModel, LoadError> {
    if path.is_dir() {
        load_hf_dir(path, options, device)
    } else {
        load_gguf(path, options, device)
    }
}

/// Loads a Hugging Face model folder.
pub fn load_hf_dir(dir: &Path, options: &LoadOptions, device: &Device) -> Result<LoadedModel, LoadError> {
    let started = Instant::now();
    let cfg = read_hf_config(dir)?;
    let max_context_tokens = match options.max_context_tokens {
        0 => cfg.max_position_embeddings,
        n => n,
    };
    let tokenizer = TextTokenizer::from_hf(dir)?;
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"));
    // `chat_template` is a string, or a list of named templates of which `default` is the one.
    let template_source = match &tokenizer_config["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    let chat_template = ChatTemplate::new(
        template_source.as_deref(),
        tokenizer.bos_token(),
        tokenizer.eos_token(),
    )
    .map_err(std::sync::Arc::new);
    let (dir_owned, format, kv_cache) = (dir.to_path_buf(), options.weights, options.kv_cache);
    let model = load_tensor_parallel(options.tensor_parallel, device, dir, move |shard, device| {
        let mut weights = SafetensorsDir::open(&dir_owned)?;
        let mut model = Llama::load_shard(&mut weights, &cfg, max_context_tokens, format, device, shard)?;
        if let Some(dtype) = kv_cache {
            model.set_kv_dtype(dtype);
        }
        Ok(model)
    })?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        max_context_tokens,
        load_time: started.elapsed(),
    })
}

/// Loads the GGUF model at `path`.
pub fn load_gguf(path: &Path, options: &LoadOptions, device: &Device) -> Result<LoadedModel, LoadError> {
    let started = Instant::now();
    let max_context_tokens = options.max_context_tokens;
    let gguf = GgufFile::open(path)?;
    let cfg = ModelConfig::from_gguf(&gguf)?;
    let max_context_tokens = match max_context_tokens {
        0 => cfg.max_position_embeddings,
        n => n,
    };
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let chat_template = ChatTemplate::new(
        gguf.opt_string("tokenizer.chat_template")?,
        tokenizer.bos_token(),
        tokenizer.eos_token(),
    )
    .map_err(std::sync::Arc::new);
    drop(gguf);
    let (path_owned, format, kv_cache) = (path.to_path_buf(), options.weights, options.kv_cache);
    let model = load_tensor_parallel(options.tensor_parallel, device, path, move |shard, device| {
        // One reader per rank thread; each keeps only its slice of every matrix.
        let mut gguf = GgufFile::open(&path_owned)?;
        let mut model = Llama::load_shard(&mut gguf, &cfg, max_context_tokens, format, device, shard)?;
        if let Some(dtype) = kv_cache {
            model.set_kv_dtype(dtype);
        }
        Ok(model)
    })?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        max_context_tokens,
        load_time: started.elapsed(),
    })
}
