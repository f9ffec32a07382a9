//! The memory planner (VRAM calculator): will a model, at a given context length and batch
//! size, fit the GPUs an `InferenceModel` asks for?
//!
//! The operator sets an `InferenceModel`'s `Fits` condition from [`plan`] and creates no
//! Deployment for a model that does not fit. The inputs come from three places:
//! - the model's shape ([`ModelArchitecture`]): its `config.json` or GGUF metadata when the
//!   operator can read them, else the built-in catalog ([`lookup_model`], [`model_catalog`]);
//! - its storage format ([`WeightFormat::from_spec`] on `engine.dtype` / `engine.quantization`);
//! - the GPU ([`lookup_gpu`] on `gpu.type`, or `gpu.memoryGiB`).
//!
//! The plan counts, for the fullest GPU of one replica:
//! - **weights**: transformer blocks split by tensor parallelism (query heads, MLP and experts
//!   evenly; KV heads evenly or, when fewer than GPUs, one replicated head per GPU), layers split
//!   by pipeline parallelism (`ceil(layers / pp)` on the fullest stage), the vocabulary matrices
//!   split by rows across tensor-parallel GPUs, and norms, biases of replicated heads and MoE
//!   routers replicated on every GPU (they are a few MB);
//! - **KV cache**: every sequence at full context (`max_context_tokens × max_batch_size`), the
//!   stage's layers and the GPU's KV heads;
//! - **activations**: one forward step's peak buffers and the logits (see
//!   [`MemoryPlan::activation_bytes`]);
//! - **runtime overhead**: CUDA context and workspaces, plus NCCL when sharded.
//!
//! It is an estimate biased upwards: a plan that fits should run, while one slightly over may
//! still run with a smaller KV cache.

mod architecture;
mod catalog;
mod checked;
mod config_json;
mod error;
mod format;
mod gguf;
mod gpu;
mod lookup;
mod plan;
mod sharding;

pub use architecture::{ModelArchitecture, ParameterCounts};
pub use catalog::{CatalogModel, model_catalog};
pub use error::PlanError;
pub use format::{BlockLayout, WeightFormat};
pub use gpu::{GpuType, gpu_catalog, lookup_gpu};
pub use lookup::{lookup_catalog_model, lookup_model};
pub use plan::{
    COLLECTIVE_OVERHEAD_BYTES, LOGIT_BYTES_PER_VOCABULARY_ENTRY, MemoryPlan, PREFILL_CHUNK_TOKENS,
    PlanRequest, RUNTIME_OVERHEAD_BYTES, format_gib, plan,
};
