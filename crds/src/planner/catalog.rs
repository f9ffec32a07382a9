//! Built-in architectures of popular open models, for sources whose `config.json` the operator
//! cannot read before scheduling.

use serde::Serialize;

use super::architecture::ModelArchitecture;

/// One built-in model: its canonical name, other names it is published under, and its shape
/// as in the model's published `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogModel {
    /// Canonical name, e.g. `Llama-3.1-8B`.
    pub name: &'static str,
    /// Other names with the same architecture, e.g. `Llama-3.3-70B` for `Llama-3.1-70B`.
    pub aliases: &'static [&'static str],
    /// See [`ModelArchitecture::num_hidden_layers`].
    pub num_hidden_layers: u64,
    /// See [`ModelArchitecture::hidden_size`].
    pub hidden_size: u64,
    /// See [`ModelArchitecture::num_attention_heads`].
    pub num_attention_heads: u64,
    /// See [`ModelArchitecture::num_key_value_heads`].
    pub num_key_value_heads: u64,
    /// See [`ModelArchitecture::head_dim`].
    pub head_dim: u64,
    /// See [`ModelArchitecture::vocab_size`].
    pub vocab_size: u64,
    /// See [`ModelArchitecture::intermediate_size`].
    pub intermediate_size: u64,
    /// See [`ModelArchitecture::num_local_experts`].
    pub num_local_experts: u64,
    /// See [`ModelArchitecture::tie_word_embeddings`].
    pub tie_word_embeddings: bool,
    /// See [`ModelArchitecture::attention_bias`].
    pub attention_bias: bool,
    /// See [`ModelArchitecture::norms_per_layer`].
    pub norms_per_layer: u64,
}

impl CatalogModel {
    /// The entry as a [`ModelArchitecture`] named by its canonical name.
    pub fn architecture(&self) -> ModelArchitecture {
        ModelArchitecture {
            name: self.name.to_owned(),
            num_hidden_layers: self.num_hidden_layers,
            hidden_size: self.hidden_size,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            intermediate_size: self.intermediate_size,
            num_local_experts: self.num_local_experts,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias,
            norms_per_layer: self.norms_per_layer,
        }
    }
}

/// Llama 3 family defaults: 128,256-token vocabulary, 8 KV heads of width 128, untied.
const LLAMA_3: CatalogModel = CatalogModel {
    name: "",
    aliases: &[],
    num_hidden_layers: 0,
    hidden_size: 0,
    num_attention_heads: 0,
    num_key_value_heads: 8,
    head_dim: 128,
    vocab_size: 128_256,
    intermediate_size: 0,
    num_local_experts: 1,
    tie_word_embeddings: false,
    attention_bias: false,
    norms_per_layer: 2,
};

/// Qwen2.5 family defaults: q/k/v biases, 152,064-token vocabulary (151,936 up to 3B, which
/// also tie embeddings), head width 128 (64 for 0.5B).
const QWEN_2_5: CatalogModel = CatalogModel {
    vocab_size: 152_064,
    attention_bias: true,
    tie_word_embeddings: false,
    ..LLAMA_3
};

/// Gemma 2 family defaults: 256,000-token vocabulary, tied, four norms per layer.
const GEMMA_2: CatalogModel = CatalogModel {
    vocab_size: 256_000,
    tie_word_embeddings: true,
    norms_per_layer: 4,
    ..LLAMA_3
};

/// SmolLM2 family defaults: 49,152-token vocabulary, head width 64, tied.
const SMOLLM_2: CatalogModel = CatalogModel {
    vocab_size: 49_152,
    head_dim: 64,
    tie_word_embeddings: true,
    ..LLAMA_3
};

/// Phi-3 family defaults: 32,064-token vocabulary, untied.
const PHI_3: CatalogModel = CatalogModel {
    vocab_size: 32_064,
    ..LLAMA_3
};

/// Every built-in model, with the numbers of its published `config.json`.
static CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "Llama-3.2-1B",
        num_hidden_layers: 16,
        hidden_size: 2048,
        num_attention_heads: 32,
        head_dim: 64,
        intermediate_size: 8192,
        tie_word_embeddings: true,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Llama-3.2-3B",
        num_hidden_layers: 28,
        hidden_size: 3072,
        num_attention_heads: 24,
        intermediate_size: 8192,
        tie_word_embeddings: true,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Llama-3.1-8B",
        aliases: &["Llama-3-8B"],
        num_hidden_layers: 32,
        hidden_size: 4096,
        num_attention_heads: 32,
        intermediate_size: 14_336,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Llama-3.1-70B",
        aliases: &["Llama-3.3-70B", "Llama-3-70B"],
        num_hidden_layers: 80,
        hidden_size: 8192,
        num_attention_heads: 64,
        intermediate_size: 28_672,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Llama-3.1-405B",
        num_hidden_layers: 126,
        hidden_size: 16_384,
        num_attention_heads: 128,
        intermediate_size: 53_248,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Qwen2.5-0.5B",
        num_hidden_layers: 24,
        hidden_size: 896,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        head_dim: 64,
        intermediate_size: 4864,
        vocab_size: 151_936,
        tie_word_embeddings: true,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-1.5B",
        num_hidden_layers: 28,
        hidden_size: 1536,
        num_attention_heads: 12,
        num_key_value_heads: 2,
        intermediate_size: 8960,
        vocab_size: 151_936,
        tie_word_embeddings: true,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-3B",
        num_hidden_layers: 36,
        hidden_size: 2048,
        num_attention_heads: 16,
        num_key_value_heads: 2,
        intermediate_size: 11_008,
        vocab_size: 151_936,
        tie_word_embeddings: true,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-7B",
        num_hidden_layers: 28,
        hidden_size: 3584,
        num_attention_heads: 28,
        num_key_value_heads: 4,
        intermediate_size: 18_944,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-14B",
        num_hidden_layers: 48,
        hidden_size: 5120,
        num_attention_heads: 40,
        intermediate_size: 13_824,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-32B",
        num_hidden_layers: 64,
        hidden_size: 5120,
        num_attention_heads: 40,
        intermediate_size: 27_648,
        ..QWEN_2_5
    },
    CatalogModel {
        name: "Qwen2.5-72B",
        num_hidden_layers: 80,
        hidden_size: 8192,
        num_attention_heads: 64,
        intermediate_size: 29_568,
        ..QWEN_2_5
    },
    // v0.3's 32,768-token vocabulary; v0.1 and v0.2 have 32,000 (6 MB less at 16 bits).
    CatalogModel {
        name: "Mistral-7B",
        num_hidden_layers: 32,
        hidden_size: 4096,
        num_attention_heads: 32,
        intermediate_size: 14_336,
        vocab_size: 32_768,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Mixtral-8x7B",
        num_hidden_layers: 32,
        hidden_size: 4096,
        num_attention_heads: 32,
        intermediate_size: 14_336,
        vocab_size: 32_000,
        num_local_experts: 8,
        ..LLAMA_3
    },
    CatalogModel {
        name: "Phi-3-mini",
        aliases: &["Phi-3.5-mini"],
        num_hidden_layers: 32,
        hidden_size: 3072,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        head_dim: 96,
        intermediate_size: 8192,
        ..PHI_3
    },
    CatalogModel {
        name: "Phi-3-medium",
        num_hidden_layers: 40,
        hidden_size: 5120,
        num_attention_heads: 40,
        num_key_value_heads: 10,
        intermediate_size: 17_920,
        ..PHI_3
    },
    CatalogModel {
        name: "gemma-2-2b",
        num_hidden_layers: 26,
        hidden_size: 2304,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        head_dim: 256,
        intermediate_size: 9216,
        ..GEMMA_2
    },
    CatalogModel {
        name: "gemma-2-9b",
        num_hidden_layers: 42,
        hidden_size: 3584,
        num_attention_heads: 16,
        num_key_value_heads: 8,
        head_dim: 256,
        intermediate_size: 14_336,
        ..GEMMA_2
    },
    CatalogModel {
        name: "gemma-2-27b",
        num_hidden_layers: 46,
        hidden_size: 4608,
        num_attention_heads: 32,
        num_key_value_heads: 16,
        head_dim: 128,
        intermediate_size: 36_864,
        ..GEMMA_2
    },
    CatalogModel {
        name: "SmolLM2-135M",
        num_hidden_layers: 30,
        hidden_size: 576,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        intermediate_size: 1536,
        ..SMOLLM_2
    },
    CatalogModel {
        name: "SmolLM2-360M",
        num_hidden_layers: 32,
        hidden_size: 960,
        num_attention_heads: 15,
        num_key_value_heads: 5,
        intermediate_size: 2560,
        ..SMOLLM_2
    },
    CatalogModel {
        name: "SmolLM2-1.7B",
        num_hidden_layers: 24,
        hidden_size: 2048,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        intermediate_size: 8192,
        ..SMOLLM_2
    },
];

/// Every built-in model, for documentation and error messages.
pub fn model_catalog() -> &'static [CatalogModel] {
    CATALOG
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameter counts as the models' Hugging Face pages (safetensors metadata) report them.
    /// Mistral-7B is v0.3 (v0.1's 32,000-token vocabulary gives 7,241,732,096).
    const PUBLISHED_PARAMETERS: &[(&str, u64)] = &[
        ("Llama-3.2-1B", 1_235_814_400),
        ("Llama-3.2-3B", 3_212_749_824),
        ("Llama-3.1-8B", 8_030_261_248),
        ("Llama-3.1-70B", 70_553_706_496),
        ("Llama-3.1-405B", 405_853_388_800),
        ("Qwen2.5-0.5B", 494_032_768),
        ("Qwen2.5-1.5B", 1_543_714_304),
        ("Qwen2.5-3B", 3_085_938_688),
        ("Qwen2.5-7B", 7_615_616_512),
        ("Qwen2.5-14B", 14_770_033_664),
        ("Qwen2.5-32B", 32_763_876_352),
        ("Qwen2.5-72B", 72_706_203_648),
        ("Mistral-7B", 7_248_023_552),
        ("Mixtral-8x7B", 46_702_792_704),
        ("Phi-3-mini", 3_821_079_552),
        ("Phi-3-medium", 13_960_238_080),
        ("gemma-2-2b", 2_614_341_888),
        ("gemma-2-9b", 9_241_705_984),
        ("gemma-2-27b", 27_227_128_320),
        ("SmolLM2-135M", 134_515_008),
        ("SmolLM2-360M", 361_821_120),
        ("SmolLM2-1.7B", 1_711_376_384),
    ];

    #[test]
    fn every_entry_lands_on_its_published_parameter_count() {
        assert_eq!(model_catalog().len(), PUBLISHED_PARAMETERS.len());
        for (model, (name, parameters)) in model_catalog().iter().zip(PUBLISHED_PARAMETERS) {
            assert_eq!(model.name, *name);
            assert_eq!(model.architecture().parameter_count(), *parameters, "{name}");
        }
    }
}
