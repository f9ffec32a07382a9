//! The planner's one error type.

use thiserror::Error;

/// Why a model description could not be read or a memory plan could not be made.
///
/// Every message names the offending field (the CR path, such as `parallelism.tensor`, where the
/// value comes from an `InferenceModel`; the `config.json` key otherwise) and the limit it broke,
/// because these messages end up verbatim in the `Fits` condition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A required key is absent from a `config.json` or from GGUF metadata.
    #[error("{origin} has no `{key}`, which the memory planner needs")]
    MissingKey {
        /// Where the key was looked for: `config.json` or `GGUF metadata`.
        origin: &'static str,
        /// The key, e.g. `num_hidden_layers` or `llama.block_count`.
        key: String,
    },
    /// A key is present but its value has the wrong type or range.
    #[error("{origin} `{key}` must be {expected}, found {found}")]
    InvalidValue {
        /// Where the key was read: `config.json` or `GGUF metadata`.
        origin: &'static str,
        /// The key whose value was rejected.
        key: String,
        /// What the value must be, e.g. `a non-negative integer`.
        expected: &'static str,
        /// The value as found, rendered as JSON.
        found: String,
    },
    /// A size or count that must be positive is zero.
    #[error("`{field}` must be at least 1, found 0")]
    Zero {
        /// The field, e.g. `engine.maxBatchSize` or `num_key_value_heads`.
        field: &'static str,
    },
    /// Grouped-query attention needs every KV head to serve the same number of query heads.
    #[error(
        "`num_attention_heads` ({attention_heads}) must be a multiple of `num_key_value_heads` \
         ({key_value_heads})"
    )]
    UngroupedHeads {
        /// The model's query heads.
        attention_heads: u64,
        /// The model's key/value heads.
        key_value_heads: u64,
    },
    /// `engine.dtype` is not one the planner knows the width of.
    #[error("`engine.dtype` {value:?} is not supported; accepted values: {accepted}")]
    UnknownDtype {
        /// The rejected value.
        value: String,
        /// The accepted values, comma-separated.
        accepted: &'static str,
    },
    /// `engine.quantization` is not one the planner knows the width of.
    #[error("`engine.quantization` {value:?} is not supported; accepted values: {accepted}")]
    UnknownQuantization {
        /// The rejected value.
        value: String,
        /// The accepted values, comma-separated.
        accepted: &'static str,
    },
    /// Tensor parallelism splits attention heads evenly across GPUs, so it must divide them.
    #[error(
        "`parallelism.tensor` ({tensor_parallel}) must divide the model's \
         `num_attention_heads` ({attention_heads})"
    )]
    TensorParallelHeads {
        /// The requested tensor-parallel degree.
        tensor_parallel: u64,
        /// The model's query heads.
        attention_heads: u64,
    },
    /// KV heads are either split evenly or, when fewer than GPUs, replicated evenly.
    #[error(
        "`parallelism.tensor` ({tensor_parallel}) must divide the model's `num_key_value_heads` \
         ({key_value_heads}) or, when larger, be a multiple of it"
    )]
    TensorParallelKeyValueHeads {
        /// The requested tensor-parallel degree.
        tensor_parallel: u64,
        /// The model's key/value heads.
        key_value_heads: u64,
    },
    /// Pipeline parallelism gives every stage at least one layer.
    #[error(
        "`parallelism.pipeline` ({pipeline_parallel}) must not exceed the model's \
         `num_hidden_layers` ({layers})"
    )]
    PipelineExceedsLayers {
        /// The requested pipeline-parallel degree.
        pipeline_parallel: u64,
        /// The model's transformer layers.
        layers: u64,
    },
    /// A byte count does not fit in 64 bits: the request's sizes are unrealistically large.
    #[error("`{quantity}` overflows 64 bits; check the model dimensions and engine limits")]
    Overflow {
        /// The quantity being computed, e.g. `kv_cache_bytes`.
        quantity: &'static str,
    },
}

impl PlanError {
    /// A bounded label for metrics: one per variant, never carrying user input.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingKey { .. } => "missing_key",
            Self::InvalidValue { .. } => "invalid_value",
            Self::Zero { .. } => "zero_field",
            Self::UngroupedHeads { .. } => "ungrouped_heads",
            Self::UnknownDtype { .. } => "unknown_dtype",
            Self::UnknownQuantization { .. } => "unknown_quantization",
            Self::TensorParallelHeads { .. } => "tensor_parallel_heads",
            Self::TensorParallelKeyValueHeads { .. } => "tensor_parallel_kv_heads",
            Self::PipelineExceedsLayers { .. } => "pipeline_exceeds_layers",
            Self::Overflow { .. } => "overflow",
        }
    }
}
