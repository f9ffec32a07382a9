//! Reading a [`ModelArchitecture`] from GGUF metadata key/values.

use std::collections::BTreeMap;

use serde_json::Value;

use super::architecture::{ModelArchitecture, default_norms_per_layer};
use super::error::PlanError;

const ORIGIN: &str = "GGUF metadata";

/// llama.cpp architectures whose q/k/v projections carry biases.
const BIASED_ATTENTION_ARCHITECTURES: &[&str] = &["qwen2", "qwen2moe"];
/// llama.cpp architectures with four norms per layer.
const FOUR_NORM_ARCHITECTURES: &[&str] = &["gemma2", "gemma3"];
/// llama.cpp architectures that always reuse `token_embd` as the output projection.
const TIED_ARCHITECTURES: &[&str] = &["gemma", "gemma2", "gemma3"];

/// GGUF metadata as decoded key/values, e.g. `"llama.block_count": 32`.
struct Metadata<'a> {
    entries: &'a BTreeMap<String, Value>,
    architecture: &'a str,
}

impl Metadata<'_> {
    /// The architecture-prefixed key, e.g. `llama.block_count` for `block_count`.
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.architecture)
    }

    /// An integer value; per-layer arrays (some architectures vary heads by layer) yield their
    /// maximum, the conservative choice for memory.
    fn optional_u64(&self, key: &str) -> Result<Option<u64>, PlanError> {
        let Some(value) = self.entries.get(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Array(items) => items
                .iter()
                .map(Value::as_u64)
                .collect::<Option<Vec<_>>>()
                .and_then(|all| all.into_iter().max()),
            other => other.as_u64(),
        };
        parsed.map(Some).ok_or_else(|| PlanError::InvalidValue {
            origin: ORIGIN,
            key: key.to_owned(),
            expected: "a non-negative integer (or an array of them)",
            found: value.to_string(),
        })
    }

    fn required_u64(&self, key: &str) -> Result<u64, PlanError> {
        self.optional_u64(key)?.ok_or_else(|| PlanError::MissingKey {
            origin: ORIGIN,
            key: key.to_owned(),
        })
    }

    /// `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    fn vocab_size(&self) -> Result<u64, PlanError> {
        let key = self.key("vocab_size");
        if let Some(vocab) = self.optional_u64(&key)? {
            return Ok(vocab);
        }
        match self.entries.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => Ok(tokens.len() as u64),
            Some(other) => Err(PlanError::InvalidValue {
                origin: ORIGIN,
                key: "tokenizer.ggml.tokens".into(),
                expected: "an array of tokens",
                found: other.to_string(),
            }),
            None => Err(PlanError::MissingKey {
                origin: ORIGIN,
                key: format!("{key} or tokenizer.ggml.tokens"),
            }),
        }
    }
}

impl ModelArchitecture {
    /// Reads the architecture from GGUF metadata key/values as a GGUF reader decodes them.
    ///
    /// Uses `general.architecture` (say `llama`) to find `llama.block_count`,
    /// `llama.embedding_length`, `llama.attention.head_count`, `llama.attention.head_count_kv`
    /// (default: head count), `llama.attention.key_length` (default: embedding / heads),
    /// `llama.feed_forward_length`, `llama.expert_count` (default 1), and the vocabulary from
    /// `llama.vocab_size` or the length of `tokenizer.ggml.tokens`. The name is `general.name`.
    ///
    /// GGUF metadata does not say whether the output projection is tied (only the tensor list
    /// does, by lacking `output.weight`), so this assumes untied — an over-estimate by one
    /// embedding matrix — except for Gemma, which llama.cpp always ties. A caller that has the
    /// tensor list may set `tie_word_embeddings` afterwards.
    pub fn from_gguf_metadata(metadata: &BTreeMap<String, Value>) -> Result<Self, PlanError> {
        let architecture = match metadata.get("general.architecture") {
            Some(Value::String(architecture)) => architecture.as_str(),
            Some(other) => {
                return Err(PlanError::InvalidValue {
                    origin: ORIGIN,
                    key: "general.architecture".into(),
                    expected: "a string such as \"llama\"",
                    found: other.to_string(),
                });
            }
            None => {
                return Err(PlanError::MissingKey {
                    origin: ORIGIN,
                    key: "general.architecture".into(),
                });
            }
        };
        let meta = Metadata {
            entries: metadata,
            architecture,
        };
        let hidden_size = meta.required_u64(&meta.key("embedding_length"))?;
        let num_attention_heads = meta.required_u64(&meta.key("attention.head_count"))?;
        if num_attention_heads == 0 {
            return Err(PlanError::Zero {
                field: "num_attention_heads",
            });
        }
        let name = metadata
            .get("general.name")
            .and_then(Value::as_str)
            .unwrap_or(architecture);
        let parsed = Self {
            name: name.to_owned(),
            num_hidden_layers: meta.required_u64(&meta.key("block_count"))?,
            hidden_size,
            num_attention_heads,
            num_key_value_heads: meta
                .optional_u64(&meta.key("attention.head_count_kv"))?
                .unwrap_or(num_attention_heads),
            head_dim: meta
                .optional_u64(&meta.key("attention.key_length"))?
                .unwrap_or(hidden_size / num_attention_heads),
            vocab_size: meta.vocab_size()?,
            intermediate_size: meta.required_u64(&meta.key("feed_forward_length"))?,
            num_local_experts: meta.optional_u64(&meta.key("expert_count"))?.unwrap_or(1).max(1),
            tie_word_embeddings: TIED_ARCHITECTURES.contains(&architecture),
            attention_bias: BIASED_ATTENTION_ARCHITECTURES.contains(&architecture),
            norms_per_layer: if FOUR_NORM_ARCHITECTURES.contains(&architecture) {
                4
            } else {
                default_norms_per_layer()
            },
        };
        parsed.validate()?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The metadata of SmolLM2-135M-Instruct.Q4_1.gguf, with the token list cut to its length.
    fn smollm2_135m_metadata() -> BTreeMap<String, Value> {
        let tokens: Vec<Value> = (0..49_152).map(|index| json!(format!("t{index}"))).collect();
        [
            ("general.architecture", json!("llama")),
            ("general.name", json!("SmolLM2 135M Instruct")),
            ("general.file_type", json!(3)),
            ("llama.block_count", json!(30)),
            ("llama.context_length", json!(8192)),
            ("llama.embedding_length", json!(576)),
            ("llama.feed_forward_length", json!(1536)),
            ("llama.attention.head_count", json!(9)),
            ("llama.attention.head_count_kv", json!(3)),
            ("llama.rope.freq_base", json!(100000.0)),
            ("llama.attention.layer_norm_rms_epsilon", json!(1e-5)),
            ("llama.rope.dimension_count", json!(64)),
            ("tokenizer.ggml.model", json!("gpt2")),
            ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    #[test]
    fn reads_smollm2_metadata_with_vocab_from_the_token_list() {
        let architecture =
            ModelArchitecture::from_gguf_metadata(&smollm2_135m_metadata()).expect("valid metadata");
        let catalog = super::super::lookup_model("SmolLM2-135M").expect("in catalog");
        // Everything matches the catalog except tying, which GGUF metadata cannot tell.
        assert_eq!(
            architecture,
            ModelArchitecture {
                name: "SmolLM2 135M Instruct".into(),
                tie_word_embeddings: false,
                ..catalog
            }
        );
        // Tied: 134,515,008 published; untied adds one 49,152 × 576 = 28,311,552 matrix.
        assert_eq!(catalog.parameter_count(), 134_515_008);
        assert_eq!(architecture.parameter_count(), 134_515_008 + 28_311_552);
    }

    #[test]
    fn reads_mixtral_experts_key_length_and_vocab_size() {
        let metadata: BTreeMap<String, Value> = [
            ("general.architecture", json!("llama")),
            ("llama.block_count", json!(32)),
            ("llama.embedding_length", json!(4096)),
            ("llama.feed_forward_length", json!(14336)),
            ("llama.attention.head_count", json!(32)),
            ("llama.attention.head_count_kv", json!(8)),
            ("llama.attention.key_length", json!(128)),
            ("llama.expert_count", json!(8)),
            ("llama.expert_used_count", json!(2)),
            ("llama.vocab_size", json!(32000)),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let architecture = ModelArchitecture::from_gguf_metadata(&metadata).expect("valid metadata");
        assert_eq!(architecture.name, "llama");
        assert_eq!(architecture.parameter_count(), 46_702_792_704);
    }

    #[test]
    fn missing_architecture_or_vocab_is_named() {
        let mut metadata = smollm2_135m_metadata();
        metadata.remove("tokenizer.ggml.tokens");
        assert_eq!(
            ModelArchitecture::from_gguf_metadata(&metadata),
            Err(PlanError::MissingKey {
                origin: "GGUF metadata",
                key: "llama.vocab_size or tokenizer.ggml.tokens".into()
            })
        );
        metadata.remove("general.architecture");
        assert_eq!(
            ModelArchitecture::from_gguf_metadata(&metadata),
            Err(PlanError::MissingKey {
                origin: "GGUF metadata",
                key: "general.architecture".into()
            })
        );
    }
}
