//! How tensor and pipeline parallelism divide a model across GPUs, and the weight bytes that
//! land on the fullest GPU.

use super::architecture::ModelArchitecture;
use super::checked::{product, sum};
use super::error::PlanError;
use super::format::WeightFormat;

/// The quantity named when a weight byte count overflows.
const WEIGHTS: &str = "weight_bytes";

/// The share of a model one GPU holds under tensor parallelism `tp` and pipeline parallelism
/// `pp`, following vLLM's layout:
/// - query heads split evenly (`heads / tp` per GPU);
/// - KV heads split evenly when there are at least `tp` of them, otherwise replicated so each
///   GPU holds one (`max(kv_heads / tp, 1)`), which is why `tp` must divide them or be a
///   multiple of them;
/// - MLP (and expert) matrices and the vocabulary split evenly, rounded up;
/// - norms, biases of replicated heads and MoE routers are replicated on every GPU;
/// - pipeline stages get `ceil(layers / pp)` layers at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sharding {
    pub(crate) tensor_parallel: u64,
    pub(crate) pipeline_parallel: u64,
    pub(crate) attention_heads_per_gpu: u64,
    pub(crate) key_value_heads_per_gpu: u64,
    pub(crate) layers_per_stage: u64,
}

/// Weight bytes of the whole model and of the fullest GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WeightBytes {
    pub(crate) whole_model: u64,
    pub(crate) per_gpu: u64,
}

impl Sharding {
    /// Checks the degrees against the architecture and computes the per-GPU share.
    pub(crate) fn new(
        architecture: &ModelArchitecture,
        tensor_parallel: u64,
        pipeline_parallel: u64,
    ) -> Result<Self, PlanError> {
        let heads = architecture.num_attention_heads;
        let key_value_heads = architecture.num_key_value_heads;
        let layers = architecture.num_hidden_layers;
        if tensor_parallel == 0 {
            return Err(PlanError::Zero {
                field: "parallelism.tensor",
            });
        }
        if pipeline_parallel == 0 {
            return Err(PlanError::Zero {
                field: "parallelism.pipeline",
            });
        }
        if pipeline_parallel > layers {
            return Err(PlanError::PipelineExceedsLayers {
                pipeline_parallel,
                layers,
            });
        }
        if !heads.is_multiple_of(tensor_parallel) {
            return Err(PlanError::TensorParallelHeads {
                tensor_parallel,
                attention_heads: heads,
            });
        }
        let key_value_heads_split = if key_value_heads >= tensor_parallel {
            key_value_heads.is_multiple_of(tensor_parallel)
        } else {
            tensor_parallel.is_multiple_of(key_value_heads)
        };
        if !key_value_heads_split {
            return Err(PlanError::TensorParallelKeyValueHeads {
                tensor_parallel,
                key_value_heads,
            });
        }
        Ok(Self {
            tensor_parallel,
            pipeline_parallel,
            attention_heads_per_gpu: heads / tensor_parallel,
            key_value_heads_per_gpu: (key_value_heads / tensor_parallel).max(1),
            layers_per_stage: layers.div_ceil(pipeline_parallel),
        })
    }

    /// Whether more than one GPU serves a replica, so collectives (NCCL) are in play.
    pub(crate) fn is_distributed(&self) -> bool {
        self.tensor_parallel > 1 || self.pipeline_parallel > 1
    }

    /// Weight bytes of the whole model and of the fullest GPU.
    ///
    /// Transformer-block matrices (q/k/v/o, MLP, experts) are stored in `weights`. Embeddings
    /// and the output projection are too in GGUF files; vLLM-style quantized checkpoints keep
    /// them at 16 bits. Norms, biases and routers use [`WeightFormat::unquantized_companion`].
    ///
    /// Per GPU: the stage's layers at this GPU's share, plus the vocabulary matrices split
    /// `ceil(vocab / tp)` rows each. With one stage that is the embedding and, unless tied, the
    /// output projection; with several, the first stage holds the embedding and the last the
    /// output projection (a copy when tied), so the fullest stage is counted with one of them.
    pub(crate) fn weight_bytes(
        &self,
        architecture: &ModelArchitecture,
        weights: WeightFormat,
    ) -> Result<WeightBytes, PlanError> {
        let counts = architecture.parameter_counts();
        let hidden = architecture.hidden_size;
        let head_dim = architecture.head_dim;
        let vocabulary_format = if weights.is_gguf() {
            weights
        } else {
            weights.unquantized_companion()
        };
        let small_format = weights.unquantized_companion();

        let matrices_per_layer = sum(WEIGHTS, &[counts.attention_per_layer, counts.mlp_per_layer])?;
        let small_per_layer = sum(
            WEIGHTS,
            &[
                counts.attention_bias_per_layer,
                counts.router_per_layer,
                counts.norms_per_layer,
            ],
        )?;
        let whole_model = sum_bytes(&[
            (weights, product(WEIGHTS, &[counts.layers, matrices_per_layer])?),
            (
                vocabulary_format,
                sum(WEIGHTS, &[counts.embedding, counts.lm_head])?,
            ),
            (
                small_format,
                sum(
                    WEIGHTS,
                    &[
                        product(WEIGHTS, &[counts.layers, small_per_layer])?,
                        counts.final_norm,
                    ],
                )?,
            ),
        ])?;

        let heads_width = product(WEIGHTS, &[self.attention_heads_per_gpu, head_dim])?;
        let key_value_width = product(WEIGHTS, &[self.key_value_heads_per_gpu, head_dim])?;
        let attention_per_gpu = product(
            WEIGHTS,
            &[2, hidden, sum(WEIGHTS, &[heads_width, key_value_width])?],
        )?;
        let mlp_per_gpu = counts.mlp_per_layer.div_ceil(self.tensor_parallel);
        let bias_per_gpu = if architecture.attention_bias {
            sum(WEIGHTS, &[heads_width, key_value_width, key_value_width])?
        } else {
            0
        };
        let matrices_per_gpu_layer = sum(WEIGHTS, &[attention_per_gpu, mlp_per_gpu])?;
        let small_per_gpu_layer = sum(
            WEIGHTS,
            &[bias_per_gpu, counts.router_per_layer, counts.norms_per_layer],
        )?;
        let vocabulary_rows = architecture.vocab_size.div_ceil(self.tensor_parallel);
        let vocabulary_matrices = if self.pipeline_parallel == 1 && !architecture.tie_word_embeddings {
            2
        } else {
            1
        };
        let per_gpu = sum_bytes(&[
            (
                weights,
                product(WEIGHTS, &[self.layers_per_stage, matrices_per_gpu_layer])?,
            ),
            (
                vocabulary_format,
                product(WEIGHTS, &[vocabulary_matrices, vocabulary_rows, hidden])?,
            ),
            (
                small_format,
                sum(
                    WEIGHTS,
                    &[
                        product(WEIGHTS, &[self.layers_per_stage, small_per_gpu_layer])?,
                        counts.final_norm,
                    ],
                )?,
            ),
        ])?;
        Ok(WeightBytes { whole_model, per_gpu })
    }
}

/// The bytes of each `(format, elements)` group, summed, or an overflow error.
fn sum_bytes(groups: &[(WeightFormat, u64)]) -> Result<u64, PlanError> {
    let bytes = groups
        .iter()
        .map(|(format, elements)| {
            format
                .bytes_for(*elements)
                .ok_or(PlanError::Overflow { quantity: WEIGHTS })
        })
        .collect::<Result<Vec<_>, _>>()?;
    sum(WEIGHTS, &bytes)
}
