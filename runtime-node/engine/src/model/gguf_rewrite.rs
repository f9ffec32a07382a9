//! GGUF tensor types candle does not hold: the reader rewrites their blocks at load into a type
//! it does, exactly, so every later stage (candle's CPU and CUDA matmuls, embeddings) sees an
//! ordinary tensor. Matrices on CPU skip the rewrite: our kernels take these types as stored
//! ([`Rewrite::native`]).

use candle_core::quantized::GgmlDType;
use hearth_kernels::blocks::WeightType;
use hearth_kernels::formats::dequantize;
use hearth_kernels::widen::iq4nl_as_q8_0;

/// How a tensor's stored blocks are rewritten when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// IQ4_NL (ggml type 20) as Q8_0: its 16 levels are 8-bit integers under the same `f16`
    /// scale ([`hearth_kernels::widen`]).
    Iq4NlAsQ8_0,
    /// IQ4_XS (ggml type 23) as F32: each 32 weights' scale `d·(ls − 32)` needs more bits than
    /// any candle block type's f16 scale has, so only f32 holds it exactly (8× the bytes).
    Iq4XsAsF32,
}

impl Rewrite {
    /// The rewrite for a ggml type code, if it has one.
    pub fn for_code(code: u32) -> Option<Self> {
        match code {
            20 => Some(Self::Iq4NlAsQ8_0),
            23 => Some(Self::Iq4XsAsF32),
            _ => None,
        }
    }

    /// The stored type, as our kernels name it.
    pub fn native(self) -> WeightType {
        match self {
            Self::Iq4NlAsQ8_0 => WeightType::IQ4NL,
            Self::Iq4XsAsF32 => WeightType::IQ4XS,
        }
    }

    /// Weights and bytes of one block as stored in the file.
    pub fn stored_block(self) -> (usize, usize) {
        let kind = self.native();
        (kind.block_weights(), kind.block_bytes())
    }

    /// The type the tensor is read as.
    pub fn target(self) -> GgmlDType {
        match self {
            Self::Iq4NlAsQ8_0 => GgmlDType::Q8_0,
            Self::Iq4XsAsF32 => GgmlDType::F32,
        }
    }

    /// The stored bytes as the target type's; `None` when they are not whole blocks.
    pub fn apply(self, stored: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Iq4NlAsQ8_0 => iq4nl_as_q8_0(stored),
            Self::Iq4XsAsF32 => {
                let values = dequantize(WeightType::IQ4XS, stored)?;
                Some(values.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
        }
    }
}
