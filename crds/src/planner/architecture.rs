//! The shape of a decoder-only transformer, and the parameters that shape implies.

use serde::{Deserialize, Serialize};

use super::error::PlanError;

/// The dimensions of a decoder-only transformer that decide how much memory it needs.
///
/// Read from a model's `config.json` ([`ModelArchitecture::from_config_json`]), from GGUF
/// metadata ([`ModelArchitecture::from_gguf_metadata`]) or from the built-in catalog
/// ([`super::lookup_model`]). Field names follow Hugging Face's `config.json` keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelArchitecture {
    /// A human-readable name, e.g. `Llama-3.1-8B`.
    pub name: String,
    /// Transformer blocks (decoder layers).
    pub num_hidden_layers: u64,
    /// Width of the residual stream (the embedding dimension).
    pub hidden_size: u64,
    /// Query heads per layer.
    pub num_attention_heads: u64,
    /// Key/value heads per layer; fewer than query heads under grouped-query attention.
    pub num_key_value_heads: u64,
    /// Width of one attention head; not always `hidden_size / num_attention_heads` (Gemma 2).
    pub head_dim: u64,
    /// Rows of the token embedding (and of the output projection).
    pub vocab_size: u64,
    /// Width of the gated MLP's hidden layer (per expert for mixture-of-experts models).
    pub intermediate_size: u64,
    /// Experts per MLP: 1 for dense models, 8 for Mixtral 8x7B.
    pub num_local_experts: u64,
    /// Whether the output projection reuses the token embedding instead of its own matrix.
    pub tie_word_embeddings: bool,
    /// Whether the q/k/v projections carry biases (Qwen2 does); a few thousand parameters per
    /// layer, counted so that parameter counts land on the published numbers.
    #[serde(default)]
    pub attention_bias: bool,
    /// RMSNorm weight vectors per layer: 2 for most models, 4 for Gemma 2, which also normalises
    /// after attention and after the MLP.
    #[serde(default = "default_norms_per_layer")]
    pub norms_per_layer: u64,
}

/// The usual two norms per layer: one before attention, one before the MLP.
pub(crate) fn default_norms_per_layer() -> u64 {
    2
}

/// A model's parameters split by role, because roles are stored, quantized and sharded
/// differently (embeddings stay 16-bit under AWQ; norms are replicated under tensor parallelism).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParameterCounts {
    /// Token embedding: `vocab_size × hidden_size`.
    pub embedding: u64,
    /// Output projection: `vocab_size × hidden_size`, or 0 when tied to the embedding.
    pub lm_head: u64,
    /// Attention projection matrices of one layer: q and o are
    /// `hidden × heads × head_dim` each, k and v `hidden × kv_heads × head_dim` each.
    pub attention_per_layer: u64,
    /// q/k/v biases of one layer: `(heads + 2 × kv_heads) × head_dim`, or 0.
    pub attention_bias_per_layer: u64,
    /// Gated MLP matrices of one layer: `experts × 3 × hidden × intermediate` (gate, up, down).
    pub mlp_per_layer: u64,
    /// Expert router of one layer: `experts × hidden` for mixture-of-experts models, else 0.
    pub router_per_layer: u64,
    /// Norm weights of one layer: `norms_per_layer × hidden`.
    pub norms_per_layer: u64,
    /// The final norm before the output projection: `hidden`.
    pub final_norm: u64,
    /// Transformer layers.
    pub layers: u64,
}

impl ParameterCounts {
    /// Parameters of one transformer layer, all roles together.
    pub fn per_layer(&self) -> u64 {
        self.attention_per_layer
            .saturating_add(self.attention_bias_per_layer)
            .saturating_add(self.mlp_per_layer)
            .saturating_add(self.router_per_layer)
            .saturating_add(self.norms_per_layer)
    }

    /// Every parameter of the model, saturating at `u64::MAX` for absurd shapes.
    pub fn total(&self) -> u64 {
        self.layers
            .saturating_mul(self.per_layer())
            .saturating_add(self.embedding)
            .saturating_add(self.lm_head)
            .saturating_add(self.final_norm)
    }
}

impl ModelArchitecture {
    /// Counts parameters by role; see [`ParameterCounts`] for each formula. Arithmetic saturates,
    /// so an absurd shape yields `u64::MAX` rather than a panic.
    pub fn parameter_counts(&self) -> ParameterCounts {
        let hidden = self.hidden_size;
        let query_width = self.num_attention_heads.saturating_mul(self.head_dim);
        let key_value_width = self.num_key_value_heads.saturating_mul(self.head_dim);
        let embedding = self.vocab_size.saturating_mul(hidden);
        let moe = self.num_local_experts > 1;
        ParameterCounts {
            embedding,
            lm_head: if self.tie_word_embeddings { 0 } else { embedding },
            attention_per_layer: hidden
                .saturating_mul(query_width.saturating_add(key_value_width).saturating_mul(2)),
            attention_bias_per_layer: if self.attention_bias {
                query_width.saturating_add(key_value_width.saturating_mul(2))
            } else {
                0
            },
            mlp_per_layer: self
                .num_local_experts
                .saturating_mul(3)
                .saturating_mul(hidden)
                .saturating_mul(self.intermediate_size),
            router_per_layer: if moe {
                self.num_local_experts.saturating_mul(hidden)
            } else {
                0
            },
            norms_per_layer: self.norms_per_layer.saturating_mul(hidden),
            final_norm: hidden,
            layers: self.num_hidden_layers,
        }
    }

    /// Total parameter count: embeddings, attention q/k/v/o (and biases), MLP gate/up/down
    /// times experts, routers, norms, and the output projection unless tied.
    pub fn parameter_count(&self) -> u64 {
        self.parameter_counts().total()
    }

    /// Checks the shape is usable for planning: every dimension positive and query heads a
    /// multiple of key/value heads.
    pub fn validate(&self) -> Result<(), PlanError> {
        let dimensions = [
            ("num_hidden_layers", self.num_hidden_layers),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("intermediate_size", self.intermediate_size),
            ("num_local_experts", self.num_local_experts),
        ];
        if let Some((field, _)) = dimensions.iter().find(|(_, value)| *value == 0) {
            return Err(PlanError::Zero { field });
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(PlanError::UngroupedHeads {
                attention_heads: self.num_attention_heads,
                key_value_heads: self.num_key_value_heads,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::lookup_model;
    use super::*;

    fn catalog(name: &str) -> ModelArchitecture {
        lookup_model(name).unwrap_or_else(|| panic!("{name} is in the catalog"))
    }

    #[test]
    fn llama_3_1_8b_parameter_count_matches_published() {
        // embed 128,256 × 4,096 = 525,336,576 (lm_head untied: the same again)
        // per layer: q 4,096×4,096 = 16,777,216; k, v 4,096×1,024 = 4,194,304 each;
        //   o 16,777,216 → attention 41,943,040
        //   MLP 3 × 4,096 × 14,336 = 176,160,768; norms 2 × 4,096 = 8,192 → 218,112,000
        // 32 layers = 6,979,584,000; + 2 × 525,336,576 + final norm 4,096 = 8,030,261,248
        let counts = catalog("Llama-3.1-8B").parameter_counts();
        assert_eq!(counts.embedding, 525_336_576);
        assert_eq!(counts.attention_per_layer, 41_943_040);
        assert_eq!(counts.per_layer(), 218_112_000);
        assert_eq!(counts.total(), 8_030_261_248);
    }

    #[test]
    fn qwen2_5_7b_parameter_count_matches_published() {
        // embed 152,064 × 3,584 = 544,997,376, untied → ×2 = 1,089,994,752
        // per layer: q, o 3,584×3,584 = 12,845,056 each; k, v 3,584×512 = 1,835,008 each
        //   → 29,360,128; q/k/v biases 3,584 + 512 + 512 = 4,608
        //   MLP 3 × 3,584 × 18,944 = 203,685,888; norms 7,168 → 233,057,792
        // 28 layers = 6,525,618,176; + 1,089,994,752 + 3,584 = 7,615,616,512
        let counts = catalog("Qwen2.5-7B").parameter_counts();
        assert_eq!(counts.attention_bias_per_layer, 4_608);
        assert_eq!(counts.per_layer(), 233_057_792);
        assert_eq!(counts.total(), 7_615_616_512);
    }

    #[test]
    fn mixtral_8x7b_parameter_count_matches_published() {
        // embed 32,000 × 4,096 = 131,072,000, untied → ×2 = 262,144,000
        // per layer: attention 41,943,040 (as Llama-3.1-8B); experts 8 × 176,160,768 =
        //   1,409,286,144; router 8 × 4,096 = 32,768; norms 8,192 → 1,451,270,144
        // 32 layers = 46,440,644,608; + 262,144,000 + 4,096 = 46,702,792,704
        let counts = catalog("Mixtral-8x7B").parameter_counts();
        assert_eq!(counts.router_per_layer, 32_768);
        assert_eq!(counts.per_layer(), 1_451_270_144);
        assert_eq!(counts.total(), 46_702_792_704);
    }

    #[test]
    fn llama_3_1_70b_parameter_count_matches_published() {
        // embed 128,256 × 8,192 = 1,050,673,152, untied → ×2 = 2,101,346,304
        // per layer: q, o 8,192² = 67,108,864 each; k, v 8,192×1,024 = 8,388,608 each
        //   → 150,994,944; MLP 3 × 8,192 × 28,672 = 704,643,072; norms 16,384 → 855,654,400
        // 80 layers = 68,452,352,000; + 2,101,346,304 + 8,192 = 70,553,706,496
        assert_eq!(catalog("Llama-3.1-70B").parameter_count(), 70_553_706_496);
    }

    #[test]
    fn gemma_2_2b_counts_four_norms_per_layer_and_ties_embeddings() {
        // embed 256,000 × 2,304 = 589,824,000, tied (counted once)
        // per layer: q, o 2,304 × 8×256 = 4,718,592 each; k, v 2,304 × 4×256 = 2,359,296 each
        //   → 14,155,776; MLP 3 × 2,304 × 9,216 = 63,700,992; norms 4 × 2,304 = 9,216
        //   → 77,865,984; 26 layers = 2,024,515,584; + 589,824,000 + 2,304 = 2,614,341,888
        assert_eq!(catalog("gemma-2-2b").parameter_count(), 2_614_341_888);
    }

    #[test]
    fn validate_names_the_zero_field_and_ungrouped_heads() {
        let mut model = catalog("Llama-3.1-8B");
        model.head_dim = 0;
        assert_eq!(model.validate(), Err(PlanError::Zero { field: "head_dim" }));
        model.head_dim = 128;
        model.num_key_value_heads = 5;
        assert_eq!(
            model.validate(),
            Err(PlanError::UngroupedHeads {
                attention_heads: 32,
                key_value_heads: 5
            })
        );
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_panicking() {
        let mut model = catalog("Llama-3.1-8B");
        model.hidden_size = u64::MAX;
        assert_eq!(model.parameter_count(), u64::MAX);
    }
}
