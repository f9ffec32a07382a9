//! Where weights come from. The model asks for tensors by their llama.cpp GGUF names
//! (`blk.3.attn_q.weight`); each file format maps those to its own layout.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::QTensor;
use hearth_kernels::blocks::WeightType;

use super::gguf::{GgufFile, LoadError};

/// A store of named weight tensors.
pub trait TensorSource {
    /// The file or folder the weights come from (for error messages).
    fn path(&self) -> &Path;
    /// Whether the tensor llama.cpp calls `name` exists.
    fn has(&self, name: &str) -> bool;
    /// Reads tensor `name`, checking its shape against `shape`.
    fn load(&mut self, name: &str, shape: &[usize], device: &Device) -> Result<QTensor, LoadError>;
    /// For a tensor stored in a block type only our CPU kernels take, that type and its bytes as
    /// stored (checking `shape`); `None` for the others, which [`Self::load`] reads.
    fn load_stored_blocks(
        &mut self,
        _name: &str,
        _shape: &[usize],
    ) -> Result<Option<(WeightType, Vec<u8>)>, LoadError> {
        Ok(None)
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn has(&self, name: &str) -> bool {
        self.has_tensor(name)
    }

    fn load(&mut self, name: &str, shape: &[usize], device: &Device) -> Result<QTensor, LoadError> {
        self.tensor(name, Some(shape), device)
    }

    fn load_stored_blocks(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<(WeightType, Vec<u8>)>, LoadError> {
        self.stored_blocks(name, shape)
    }
}
