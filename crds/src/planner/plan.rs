//! The memory plan: whether a model, at a context length and batch size, fits a GPU.

use serde::{Deserialize, Serialize};

use super::architecture::ModelArchitecture;
use super::checked::{product, sum};
use super::error::PlanError;
use super::format::WeightFormat;
use super::sharding::Sharding;

/// Bytes in one GiB.
const GIB: u64 = 1 << 30;
/// Fixed per-GPU cost of the CUDA context, cuBLAS/cuDNN workspaces and allocator slack: 1 GiB.
/// It also absorbs the gap between a GPU's nominal memory and what the driver leaves visible.
pub const RUNTIME_OVERHEAD_BYTES: u64 = GIB;
/// Extra per-GPU cost when a replica spans GPUs: NCCL communicators and their buffers, 512 MiB.
pub const COLLECTIVE_OVERHEAD_BYTES: u64 = GIB / 2;
/// Tokens one forward step processes at most during chunked prefill (vLLM's long-standing
/// default for `max_num_batched_tokens` with chunked prefill); decode steps take one per sequence.
pub const PREFILL_CHUNK_TOKENS: u64 = 2048;
/// Logit bytes per vocabulary entry per sequence: fp32 logits plus the fp32 probabilities the
/// sampler derives from them.
pub const LOGIT_BYTES_PER_VOCABULARY_ENTRY: u64 = 8;

/// What to plan: a model, how its weights are stored, the engine's limits and the GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// The model's shape.
    pub architecture: ModelArchitecture,
    /// How the weights are stored (from `engine.dtype` and `engine.quantization`).
    pub weights: WeightFormat,
    /// Bytes per KV-cache element: 2 for fp16/bf16, 1 for an fp8 KV cache.
    pub kv_cache_bytes_per_element: u64,
    /// The longest sequence, prompt plus completion (`engine.maxContextTokens`).
    pub max_context_tokens: u64,
    /// Sequences served at once (`engine.maxBatchSize`).
    pub max_batch_size: u64,
    /// GPUs each layer is split across (`parallelism.tensor`).
    pub tensor_parallel: u64,
    /// Pipeline stages the layers are split into (`parallelism.pipeline`).
    pub pipeline_parallel: u64,
    /// Memory of one GPU in bytes, e.g. [`super::GpuType::usable_memory_bytes`].
    pub gpu_memory_bytes: u64,
}

/// The planned memory of one replica, whole-model totals and the fullest GPU's share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Parameters of the model.
    pub parameter_count: u64,
    /// Weight bytes of the whole model in its storage format.
    pub weight_bytes: u64,
    /// Weight bytes on the fullest GPU; the module docs say how sharding and replication count.
    pub weight_bytes_per_gpu: u64,
    /// KV-cache bytes one token needs across the whole model:
    /// `2 (K and V) × layers × kv_heads × head_dim × kv_cache_bytes_per_element`.
    pub kv_bytes_per_token: u64,
    /// KV cache for every sequence at full length, whole model:
    /// `kv_bytes_per_token × max_context_tokens × max_batch_size`.
    pub kv_cache_bytes: u64,
    /// The fullest GPU's share of the KV cache: its stage's layers and its KV heads (replicated
    /// KV heads counted on every GPU that holds one).
    pub kv_cache_bytes_per_gpu: u64,
    /// Peak transient activations on one GPU, an estimate of two terms:
    /// - one layer's buffers for one forward step: `tokens × 2 bytes × width` (4 bytes under
    ///   F32), with `tokens = min(max(max_batch_size, 2048), max_batch_size ×
    ///   max_context_tokens)` (one chunked-prefill step) and `width = 4 × hidden (residual,
    ///   norm, attention output, MLP output) + (heads + 2 × kv_heads) / tp × head_dim (q/k/v) +
    ///   3 × min(experts, 2) × intermediate / tp (gate, up, activated product; top-2 routing)`;
    /// - logits: `max_batch_size × vocab × 8` for fp32 logits and probabilities of each
    ///   sequence's last token over the full vocabulary.
    pub activation_bytes: u64,
    /// Fixed per-GPU cost: [`RUNTIME_OVERHEAD_BYTES`] plus [`COLLECTIVE_OVERHEAD_BYTES`] when
    /// a replica spans several GPUs.
    pub runtime_overhead_bytes: u64,
    /// The fullest GPU's total: weights + KV cache per GPU + activations + runtime overhead.
    pub per_gpu_bytes: u64,
    /// Memory of one GPU, from the request.
    pub gpu_memory_bytes: u64,
    /// `gpu_memory_bytes - per_gpu_bytes`; negative when the model does not fit.
    pub headroom_bytes: i64,
    /// Whether `per_gpu_bytes` fits in `gpu_memory_bytes`.
    pub fits: bool,
}

impl MemoryPlan {
    /// A one-line account for the `Fits` condition message, with every figure in GiB.
    pub fn summary(&self) -> String {
        let breakdown = format!(
            "weights {}, KV cache {}, activations {}, runtime {}",
            format_gib(self.weight_bytes_per_gpu),
            format_gib(self.kv_cache_bytes_per_gpu),
            format_gib(self.activation_bytes),
            format_gib(self.runtime_overhead_bytes),
        );
        let planned = format_gib(self.per_gpu_bytes);
        let available = format_gib(self.gpu_memory_bytes);
        let headroom = format_gib(self.headroom_bytes.unsigned_abs());
        if self.fits {
            format!("planned {planned} GiB per GPU of {available} GiB ({breakdown}); {headroom} GiB spare")
        } else {
            format!("planned {planned} GiB per GPU exceeds {available} GiB by {headroom} GiB ({breakdown})")
        }
    }
}

/// Plans one replica's memory. Every field is checked first: zero sizes, a tensor-parallel
/// degree that does not split the heads, or more pipeline stages than layers are errors that
/// name the field; byte counts that overflow 64 bits are errors rather than wrapped numbers.
pub fn plan(request: &PlanRequest) -> Result<MemoryPlan, PlanError> {
    let architecture = &request.architecture;
    architecture.validate()?;
    let positive = [
        ("kv_cache_bytes_per_element", request.kv_cache_bytes_per_element),
        ("engine.maxContextTokens", request.max_context_tokens),
        ("engine.maxBatchSize", request.max_batch_size),
        ("gpu_memory_bytes", request.gpu_memory_bytes),
    ];
    if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(PlanError::Zero { field });
    }
    let parameter_count = architecture.parameter_count();
    if parameter_count == u64::MAX {
        return Err(PlanError::Overflow {
            quantity: "parameter_count",
        });
    }
    let sharding = Sharding::new(architecture, request.tensor_parallel, request.pipeline_parallel)?;
    let weights = sharding.weight_bytes(architecture, request.weights)?;

    let kv_bytes_per_token = product(
        "kv_bytes_per_token",
        &[
            2,
            architecture.num_hidden_layers,
            architecture.num_key_value_heads,
            architecture.head_dim,
            request.kv_cache_bytes_per_element,
        ],
    )?;
    let kv_cache_bytes = product(
        "kv_cache_bytes",
        &[
            kv_bytes_per_token,
            request.max_context_tokens,
            request.max_batch_size,
        ],
    )?;
    let kv_cache_bytes_per_gpu = product(
        "kv_cache_bytes_per_gpu",
        &[
            2,
            sharding.layers_per_stage,
            sharding.key_value_heads_per_gpu,
            architecture.head_dim,
            request.kv_cache_bytes_per_element,
            request.max_context_tokens,
            request.max_batch_size,
        ],
    )?;
    let activation_bytes = activation_bytes(request, &sharding)?;
    let runtime_overhead_bytes = RUNTIME_OVERHEAD_BYTES
        + if sharding.is_distributed() {
            COLLECTIVE_OVERHEAD_BYTES
        } else {
            0
        };
    let per_gpu_bytes = sum(
        "per_gpu_bytes",
        &[
            weights.per_gpu,
            kv_cache_bytes_per_gpu,
            activation_bytes,
            runtime_overhead_bytes,
        ],
    )?;
    let headroom = i128::from(request.gpu_memory_bytes) - i128::from(per_gpu_bytes);
    let headroom_bytes = i64::try_from(headroom).map_err(|_| PlanError::Overflow {
        quantity: "headroom_bytes",
    })?;
    Ok(MemoryPlan {
        parameter_count,
        weight_bytes: weights.whole_model,
        weight_bytes_per_gpu: weights.per_gpu,
        kv_bytes_per_token,
        kv_cache_bytes,
        kv_cache_bytes_per_gpu,
        activation_bytes,
        runtime_overhead_bytes,
        per_gpu_bytes,
        gpu_memory_bytes: request.gpu_memory_bytes,
        headroom_bytes,
        fits: headroom_bytes >= 0,
    })
}

/// The activation estimate documented on [`MemoryPlan::activation_bytes`].
fn activation_bytes(request: &PlanRequest, sharding: &Sharding) -> Result<u64, PlanError> {
    const QUANTITY: &str = "activation_bytes";
    let architecture = &request.architecture;
    let all_tokens = product(QUANTITY, &[request.max_batch_size, request.max_context_tokens])?;
    let step_tokens = request.max_batch_size.max(PREFILL_CHUNK_TOKENS).min(all_tokens);
    let key_value_heads = product(QUANTITY, &[2, sharding.key_value_heads_per_gpu])?;
    let attention_heads = sum(QUANTITY, &[sharding.attention_heads_per_gpu, key_value_heads])?;
    let routed_experts = architecture.num_local_experts.min(2);
    let intermediate_per_gpu = architecture.intermediate_size.div_ceil(sharding.tensor_parallel);
    let width = sum(
        QUANTITY,
        &[
            product(QUANTITY, &[4, architecture.hidden_size])?,
            product(QUANTITY, &[attention_heads, architecture.head_dim])?,
            product(QUANTITY, &[3, routed_experts, intermediate_per_gpu])?,
        ],
    )?;
    let layer_buffers = product(
        QUANTITY,
        &[step_tokens, width, request.weights.compute_bytes_per_element()],
    )?;
    let logits = product(
        QUANTITY,
        &[
            request.max_batch_size,
            architecture.vocab_size,
            LOGIT_BYTES_PER_VOCABULARY_ENTRY,
        ],
    )?;
    sum(QUANTITY, &[layer_buffers, logits])
}

/// Bytes as GiB with one decimal, rounded half up, for status messages: `15.2`.
pub fn format_gib(bytes: u64) -> String {
    let tenths = (u128::from(bytes) * 10 + u128::from(GIB / 2)) / u128::from(GIB);
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests;
