//! Reading a [`ModelArchitecture`] from a Hugging Face `config.json`.

use serde_json::Value;

use super::architecture::{ModelArchitecture, default_norms_per_layer};
use super::error::PlanError;

const ORIGIN: &str = "config.json";

/// Model types whose q/k/v projections always carry biases, whatever `attention_bias` says.
const BIASED_ATTENTION_TYPES: &[&str] = &["qwen2", "qwen2_moe"];
/// Model types with four norms per layer (pre and post attention, pre and post MLP).
const FOUR_NORM_TYPES: &[&str] = &["gemma2", "gemma3", "gemma3_text"];
/// Model types whose config class defaults `tie_word_embeddings` to true.
const TIED_BY_DEFAULT_TYPES: &[&str] = &["gemma", "gemma2", "gemma3", "gemma3_text"];

/// A `config.json` whose text-model keys may sit under `text_config` (multimodal wrappers such
/// as Llava or Gemma 3) or at the top level.
struct Config<'a> {
    root: &'a Value,
    text: Option<&'a Value>,
}

impl<'a> Config<'a> {
    fn new(root: &'a Value) -> Self {
        let text = root.get("text_config").filter(|text| text.is_object());
        Self { root, text }
    }

    /// The key from `text_config` when present there, else from the top level; JSON `null`
    /// counts as absent, as transformers writes `"head_dim": null` for "use the default".
    fn get(&self, key: &str) -> Option<&'a Value> {
        let present = |value: &&'a Value| !value.is_null();
        self.text
            .and_then(|text| text.get(key))
            .filter(present)
            .or_else(|| self.root.get(key).filter(present))
    }

    fn optional_u64(&self, key: &str) -> Result<Option<u64>, PlanError> {
        self.get(key)
            .map(|value| {
                value.as_u64().ok_or_else(|| PlanError::InvalidValue {
                    origin: ORIGIN,
                    key: key.to_owned(),
                    expected: "a non-negative integer",
                    found: value.to_string(),
                })
            })
            .transpose()
    }

    fn required_u64(&self, key: &str) -> Result<u64, PlanError> {
        self.optional_u64(key)?.ok_or_else(|| PlanError::MissingKey {
            origin: ORIGIN,
            key: key.to_owned(),
        })
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, PlanError> {
        self.get(key)
            .map(|value| {
                value.as_bool().ok_or_else(|| PlanError::InvalidValue {
                    origin: ORIGIN,
                    key: key.to_owned(),
                    expected: "true or false",
                    found: value.to_string(),
                })
            })
            .transpose()
    }

    fn model_type(&self) -> String {
        self.get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// `_name_or_path`'s last segment, else the first of `architectures`, else `model_type`.
    fn name(&self) -> String {
        let from_path = self
            .root
            .get("_name_or_path")
            .and_then(Value::as_str)
            .and_then(|path| path.trim_end_matches('/').rsplit('/').next())
            .filter(|name| !name.is_empty());
        let from_architectures = || {
            self.root
                .get("architectures")
                .and_then(|list| list.get(0))
                .and_then(Value::as_str)
        };
        let from_type = || self.get("model_type").and_then(Value::as_str);
        from_path
            .or_else(from_architectures)
            .or_else(from_type)
            .unwrap_or("unknown")
            .to_owned()
    }
}

impl ModelArchitecture {
    /// Reads the architecture from a Hugging Face `config.json`.
    ///
    /// Handles the llama, qwen2, mistral, mixtral, phi3 and gemma2 key sets (and any model that
    /// uses the same names). Text-model keys are looked up under `text_config` first when that
    /// object exists. Defaults follow transformers: `num_key_value_heads` = `num_attention_heads`,
    /// `head_dim` = `hidden_size / num_attention_heads`, experts from `num_local_experts` or
    /// `num_experts` (else 1), `tie_word_embeddings` false except for Gemma. Keys the planner
    /// does not need, such as `rope_scaling` or transformers 5's `rope_parameters`, are ignored.
    pub fn from_config_json(config: &Value) -> Result<Self, PlanError> {
        let config = Config::new(config);
        let model_type = config.model_type();
        let num_attention_heads = config.required_u64("num_attention_heads")?;
        let hidden_size = config.required_u64("hidden_size")?;
        if num_attention_heads == 0 {
            return Err(PlanError::Zero {
                field: "num_attention_heads",
            });
        }
        let head_dim = match config.optional_u64("head_dim")? {
            Some(head_dim) => head_dim,
            None => hidden_size / num_attention_heads,
        };
        let num_local_experts = match config.optional_u64("num_local_experts")? {
            Some(experts) => experts,
            None => config.optional_u64("num_experts")?.unwrap_or(1),
        };
        let tied_by_default = TIED_BY_DEFAULT_TYPES.contains(&model_type.as_str());
        let biased_by_type = BIASED_ATTENTION_TYPES.contains(&model_type.as_str());
        let architecture = Self {
            name: config.name(),
            num_hidden_layers: config.required_u64("num_hidden_layers")?,
            hidden_size,
            num_attention_heads,
            num_key_value_heads: config
                .optional_u64("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            head_dim,
            vocab_size: config.required_u64("vocab_size")?,
            intermediate_size: config.required_u64("intermediate_size")?,
            num_local_experts: num_local_experts.max(1),
            tie_word_embeddings: config
                .optional_bool("tie_word_embeddings")?
                .unwrap_or(tied_by_default),
            attention_bias: biased_by_type || config.optional_bool("attention_bias")?.unwrap_or(false),
            norms_per_layer: if FOUR_NORM_TYPES.contains(&model_type.as_str()) {
                4
            } else {
                default_norms_per_layer()
            },
        };
        architecture.validate()?;
        Ok(architecture)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// meta-llama/Llama-3.1-8B-Instruct's config.json as published (transformers 4.x).
    fn llama_3_1_8b_config() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "hidden_act": "silu",
            "hidden_size": 4096,
            "initializer_range": 0.02,
            "intermediate_size": 14336,
            "max_position_embeddings": 131072,
            "mlp_bias": false,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 8,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3"
            },
            "rope_theta": 500000.0,
            "tie_word_embeddings": false,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.43.0.dev0",
            "use_cache": true,
            "vocab_size": 128256
        })
    }

    #[test]
    fn reads_llama_3_1_8b_and_matches_the_catalog_entry() {
        let architecture = ModelArchitecture::from_config_json(&llama_3_1_8b_config()).expect("valid config");
        assert_eq!(architecture.name, "LlamaForCausalLM");
        assert_eq!(architecture.head_dim, 128, "defaults to 4096 / 32");
        let catalog = super::super::lookup_model("Llama-3.1-8B").expect("in catalog");
        assert_eq!(
            architecture,
            ModelArchitecture {
                name: "LlamaForCausalLM".into(),
                ..catalog
            }
        );
        assert_eq!(architecture.parameter_count(), 8_030_261_248);
    }

    #[test]
    fn reads_transformers_5_style_qwen2_with_rope_parameters() {
        // Qwen2.5-7B-Instruct as transformers 5 writes it: `dtype` instead of `torch_dtype`,
        // rope settings nested under `rope_parameters`, `layer_types` listing every layer.
        let config = json!({
            "_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "dtype": "bfloat16",
            "hidden_act": "silu",
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "layer_types": ["full_attention", "full_attention"],
            "max_position_embeddings": 32768,
            "max_window_layers": 28,
            "model_type": "qwen2",
            "num_attention_heads": 28,
            "num_hidden_layers": 28,
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-06,
            "rope_parameters": { "rope_theta": 1000000.0, "rope_type": "default" },
            "sliding_window": null,
            "tie_word_embeddings": false,
            "transformers_version": "5.0.0",
            "use_cache": true,
            "use_sliding_window": false,
            "vocab_size": 152064
        });
        let architecture = ModelArchitecture::from_config_json(&config).expect("valid config");
        assert_eq!(architecture.name, "Qwen2.5-7B-Instruct");
        assert!(architecture.attention_bias, "qwen2 always has q/k/v biases");
        assert_eq!(architecture.parameter_count(), 7_615_616_512);
    }

    #[test]
    fn reads_gemma_2_explicit_head_dim_and_default_tying() {
        // google/gemma-2-9b: head_dim 256 ≠ 3584 / 16; no tie_word_embeddings key (tied).
        let config = json!({
            "architectures": ["Gemma2ForCausalLM"],
            "model_type": "gemma2",
            "head_dim": 256,
            "hidden_size": 3584,
            "intermediate_size": 14336,
            "num_attention_heads": 16,
            "num_hidden_layers": 42,
            "num_key_value_heads": 8,
            "query_pre_attn_scalar": 256,
            "sliding_window": 4096,
            "vocab_size": 256000
        });
        let architecture = ModelArchitecture::from_config_json(&config).expect("valid config");
        assert_eq!((architecture.head_dim, architecture.norms_per_layer), (256, 4));
        assert!(architecture.tie_word_embeddings);
        // embed 256,000 × 3,584 = 917,504,000 (tied); per layer: q, o 3,584 × 4,096 each,
        // k, v 3,584 × 2,048 each → 44,040,192; MLP 3 × 3,584 × 14,336 = 154,140,672;
        // norms 4 × 3,584 = 14,336 → 198,195,200 × 42 = 8,324,198,400; + 917,504,000 + 3,584
        assert_eq!(architecture.parameter_count(), 9_241_705_984);
    }

    #[test]
    fn reads_text_config_nesting_and_mixtral_experts() {
        let config = json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "vision_config": { "hidden_size": 1024, "num_hidden_layers": 24 },
            "text_config": {
                "model_type": "mixtral",
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_attention_heads": 32,
                "num_hidden_layers": 32,
                "num_key_value_heads": 8,
                "num_local_experts": 8,
                "num_experts_per_tok": 2,
                "head_dim": null,
                "vocab_size": 32000
            }
        });
        let architecture = ModelArchitecture::from_config_json(&config).expect("valid config");
        assert_eq!(
            (architecture.num_hidden_layers, architecture.num_local_experts),
            (32, 8)
        );
        assert_eq!(architecture.head_dim, 128);
        assert_eq!(architecture.parameter_count(), 46_702_792_704);
    }

    #[test]
    fn missing_and_mistyped_keys_are_named() {
        let mut config = llama_3_1_8b_config();
        config.as_object_mut().expect("object").remove("vocab_size");
        assert_eq!(
            ModelArchitecture::from_config_json(&config),
            Err(PlanError::MissingKey {
                origin: "config.json",
                key: "vocab_size".into()
            })
        );
        config["vocab_size"] = json!("128256");
        let error = ModelArchitecture::from_config_json(&config).expect_err("string is rejected");
        assert_eq!(
            error.to_string(),
            "config.json `vocab_size` must be a non-negative integer, found \"128256\""
        );
        config["vocab_size"] = json!(128256);
        config["num_attention_heads"] = json!(0);
        assert_eq!(
            ModelArchitecture::from_config_json(&config),
            Err(PlanError::Zero {
                field: "num_attention_heads"
            })
        );
    }
}
