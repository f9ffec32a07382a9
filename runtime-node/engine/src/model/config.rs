//! Model hyper-parameters, read from the model's own GGUF metadata (`<arch>.*` keys).

use super::gguf::{GgufFile, LoadError};

/// The Llama-family variants this engine implements; they differ in small, named ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3 (and SmolLM, which is Llama-shaped).
    Llama,
    /// Mistral: Llama with its own metadata prefix.
    Mistral,
    /// Qwen2: Llama with q/k/v biases and NeoX-style (half-split) rotary embeddings.
    Qwen2,
}

impl Architecture {
    /// The GGUF `general.architecture` value, also the prefix of its hyper-parameter keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// How rotary embeddings pair up dimensions inside a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's layout for Llama GGUFs.
    Interleaved,
    /// Pairs (i, i + d/2): the NeoX/Hugging Face layout, used by Qwen2 GGUFs.
    HalfSplit,
}

/// Llama 3.x frequency scaling ("rope_type": "llama3").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// Overall scale factor (8 for Llama 3.1).
    pub factor: f64,
    /// Wavelength boundary below which frequencies are kept.
    pub low_freq_factor: f64,
    /// Wavelength boundary above which frequencies are divided by `factor`.
    pub high_freq_factor: f64,
    /// Context length the model was originally trained with.
    pub original_context: usize,
}

/// Everything the model code needs to know about a checkpoint's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which Llama-family variant.
    pub arch: Architecture,
    /// Hidden size (`embedding_length`).
    pub hidden_size: usize,
    /// MLP inner size (`feed_forward_length`).
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than query heads under grouped-query attention).
    pub num_kv_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency (`rope.freq_base`).
    pub rope_theta: f64,
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
    /// Llama 3 frequency scaling, when the checkpoint declares it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
}

impl ModelConfig {
    /// The dimensions tensor parallelism splits.
    pub fn split_dims(&self) -> crate::parallel::SplitDims {
        crate::parallel::SplitDims {
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            mlp_width: self.intermediate_size,
        }
    }

    /// Reads the hyper-parameters from `gguf`'s metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LoadError> {
        let arch_name = gguf.string("general.architecture")?;
        let arch = match arch_name {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(LoadError::UnknownArchitecture {
                    path: gguf.path().to_path_buf(),
                    arch: other.to_string(),
                });
            }
        };
        let key = |name: &str| format!("{arch_name}.{name}");
        let hidden_size = gguf.usize(&key("embedding_length"))?;
        let num_heads = gguf.usize(&key("attention.head_count"))?;
        let num_kv_heads = gguf
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let bad = |k: &str, message: String| LoadError::BadValue {
            path: gguf.path().to_path_buf(),
            key: key(k),
            message,
        };
        if num_heads == 0 || hidden_size % num_heads != 0 {
            return Err(bad(
                "attention.head_count",
                format!("{num_heads} heads do not divide the hidden size {hidden_size}"),
            ));
        }
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(
                "attention.head_count_kv",
                format!("{num_kv_heads} KV heads do not divide {num_heads} query heads"),
            ));
        }
        let head_dim = gguf
            .opt_usize(&key("attention.key_length"))?
            .unwrap_or(hidden_size / num_heads);
        if head_dim % 2 != 0 {
            return Err(bad(
                "attention.key_length",
                format!("head dimension {head_dim} is odd"),
            ));
        }
        let vocab_size = match gguf.opt_usize(&key("vocab_size"))? {
            Some(v) => v,
            None => gguf.strings("tokenizer.ggml.tokens")?.len(),
        };
        let rope_scaling = match gguf.opt_string(&key("rope.scaling.type"))? {
            Some("llama3") => Some(Llama3RopeScaling {
                factor: gguf.opt_f64(&key("rope.scaling.factor"))?.unwrap_or(8.0),
                low_freq_factor: gguf.opt_f64(&key("rope.scaling.low_freq_factor"))?.unwrap_or(1.0),
                high_freq_factor: gguf
                    .opt_f64(&key("rope.scaling.high_freq_factor"))?
                    .unwrap_or(4.0),
                original_context: gguf
                    .opt_usize(&key("rope.scaling.original_context_length"))?
                    .unwrap_or(8192),
            }),
            Some("none") | None => None,
            Some(other) => {
                return Err(bad(
                    "rope.scaling.type",
                    format!("rope scaling `{other}` is not implemented (only llama3)"),
                ));
            }
        };
        Ok(Self {
            arch,
            hidden_size,
            intermediate_size: gguf.usize(&key("feed_forward_length"))?,
            num_layers: gguf.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: gguf
                .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: gguf.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_style: match arch {
                Architecture::Qwen2 => RopeStyle::HalfSplit,
                Architecture::Llama | Architecture::Mistral => RopeStyle::Interleaved,
            },
            rope_scaling,
            max_position_embeddings: gguf.opt_usize(&key("context_length"))?.unwrap_or(4096),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::quantized::gguf_file::{self, Value};

    use super::*;

    fn write_gguf(name: &str, metadata: &[(&str, Value)]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("hearth-config-{}-{name}.gguf", std::process::id()));
        let mut file = std::fs::File::create(&path).expect("create");
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut file, &metadata, &[]).expect("write gguf");
        path
    }

    fn llama_metadata() -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(64)),
            ("llama.feed_forward_length", Value::U32(128)),
            ("llama.block_count", Value::U32(2)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.vocab_size", Value::U32(100)),
            ("llama.rope.freq_base", Value::F32(500_000.0)),
            ("llama.rope.scaling.type", Value::String("llama3".into())),
            ("llama.rope.scaling.factor", Value::F32(32.0)),
        ]
    }

    #[test]
    fn reads_llama_hyper_parameters() {
        let path = write_gguf("llama", &llama_metadata());
        let cfg = ModelConfig::from_gguf(&GgufFile::open(&path).expect("opens")).expect("config");
        assert_eq!(cfg.arch, Architecture::Llama);
        assert_eq!((cfg.num_heads, cfg.num_kv_heads, cfg.head_dim), (4, 2, 16));
        assert_eq!(cfg.rope_theta, 500_000.0);
        assert_eq!(cfg.rope_style, RopeStyle::Interleaved);
        assert_eq!(cfg.rope_scaling.map(|s| s.factor), Some(32.0));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let mut metadata = llama_metadata();
        metadata[0].1 = Value::String("gptneox".into());
        let path = write_gguf("arch", &metadata);
        let err = ModelConfig::from_gguf(&GgufFile::open(&path).expect("opens")).expect_err("unknown");
        let message = err.to_string();
        assert!(
            message.contains("gptneox") && message.contains(&path.display().to_string()),
            "{message}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn impossible_head_counts_are_refused() {
        let mut metadata = llama_metadata();
        metadata[5].1 = Value::U32(3);
        let path = write_gguf("heads", &metadata);
        let err = ModelConfig::from_gguf(&GgufFile::open(&path).expect("opens")).expect_err("bad kv heads");
        assert!(err.to_string().contains("head_count_kv"), "{err}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn missing_key_is_named() {
        let metadata: Vec<_> = llama_metadata()
            .into_iter()
            .filter(|(k, _)| *k != "llama.block_count")
            .collect();
        let path = write_gguf("missing", &metadata);
        let err = ModelConfig::from_gguf(&GgufFile::open(&path).expect("opens")).expect_err("missing");
        assert!(err.to_string().contains("llama.block_count"), "{err}");
        let _ = std::fs::remove_file(path);
    }
}
