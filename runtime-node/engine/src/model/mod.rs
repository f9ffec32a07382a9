//! Model loading and the transformer itself.

pub mod config;
pub mod gguf;
pub mod gguf_header;
pub mod gguf_rewrite;
pub mod group;
mod host_step;
pub mod kv_cache;
mod layers;
pub mod llama;
pub mod rope;
pub mod safetensors;
pub mod source;

pub use config::{Architecture, ModelConfig};
pub use gguf::{GgufFile, LoadError};
pub use kv_cache::{BlockTable, KvDtype, KvPool};
pub use llama::{Llama, StepInput, WeightFormat};
