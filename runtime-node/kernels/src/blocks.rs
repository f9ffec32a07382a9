//! The weight types the kernels implement (their GGUF layouts: [`crate::formats`]) and the
//! 8-bit activation blocks they multiply with.

/// Weights (and activations) per block.
pub const BLOCK: usize = 32;

/// The weight types the kernels implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// 4-bit, symmetric around 8.
    Q4_0,
    /// 4-bit with a minimum.
    Q4_1,
    /// 5-bit, symmetric around 16.
    Q5_0,
    /// 5-bit with a minimum.
    Q5_1,
    /// 8-bit.
    Q8_0,
    /// 4-bit in superblocks of 256: per 32 weights a 6-bit scale and minimum.
    Q4K,
    /// 5-bit in superblocks of 256: per 32 weights a 6-bit scale and minimum.
    Q5K,
    /// 6-bit in superblocks of 256: per 16 weights an 8-bit scale.
    Q6K,
    /// 4-bit indices into 16 fixed non-uniform levels ([`crate::formats::IQ4_LEVELS`]).
    IQ4NL,
    /// IQ4_NL's levels in superblocks of 256: per 32 weights a signed 6-bit scale.
    IQ4XS,
    /// 2-bit in superblocks of 256: per 16 weights a 4-bit scale and a 4-bit minimum.
    Q2K,
    /// 3-bit in superblocks of 256: per 16 weights a signed 6-bit scale.
    Q3K,
}

impl WeightType {
    /// Bytes of one GGUF block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::IQ4NL => 18,
            Self::IQ4XS => 136,
            Self::Q2K => 84,
            Self::Q3K => 110,
        }
    }

    /// Weights in one GGUF block (a row's length must be a multiple).
    pub const fn block_weights(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K | Self::IQ4XS | Self::Q2K | Self::Q3K => 256,
            _ => BLOCK,
        }
    }
}

/// One block of activations quantized to 8 bits: `x_i ≈ qs[i] · d`, with `sum = Σ qs[i]`
/// kept for the weight types whose dequantization adds a constant (Q4_0's −8, Q4_1's m).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct ActivationBlock {
    /// The 8-bit values.
    pub qs: [i8; BLOCK],
    /// Scale.
    pub d: f32,
    /// Sum of `qs`.
    pub sum: i32,
    /// Sum of `qs[..16]` (for Q6_K, whose scales cover 16 weights).
    pub low_sum: i32,
    /// `d · sum`: the block's sum in real units, for the weight types' constant terms.
    pub scaled_sum: f32,
}

impl ActivationBlock {
    /// All zeros (a placeholder before quantizing into a slice).
    pub const ZERO: Self = Self {
        qs: [0; BLOCK],
        d: 0.0,
        sum: 0,
        low_sum: 0,
        scaled_sum: 0.0,
    };
}

/// Quantizes `x` (length a multiple of [`BLOCK`]) block by block to the nearest 8-bit value,
/// scaled so each block's largest magnitude maps to 127.
#[inline(always)]
pub fn quantize_activations(x: &[f32], out: &mut Vec<ActivationBlock>) {
    out.clear();
    out.extend(x.chunks_exact(BLOCK).map(quantize_block));
}

/// One block of [`quantize_activations`].
#[inline(always)]
pub fn quantize_block(chunk: &[f32]) -> ActivationBlock {
    let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut block = ActivationBlock {
        d,
        ..ActivationBlock::ZERO
    };
    for (q, v) in block.qs.iter_mut().zip(chunk) {
        // |v · inverse| ≤ 127 by construction, so the cast cannot saturate.
        *q = (v * inverse).round() as i8;
    }
    block.sum = block.qs.iter().map(|&q| i32::from(q)).sum();
    block.low_sum = block.qs[..16].iter().map(|&q| i32::from(q)).sum();
    block.scaled_sum = d * block.sum as f32;
    block
}
