//! GGUF block layouts the kernels read (32 weights per block, little-endian, as stored in the
//! file) and the 8-bit activation blocks they multiply with.
//!
//! | type | bytes | layout | weight i |
//! |---|---|---|---|
//! | Q4_0 | 18 | `d: f16, qs: [u8; 16]` | `(nibble_i - 8) · d` |
//! | Q4_1 | 20 | `d: f16, m: f16, qs: [u8; 16]` | `nibble_i · d + m` |
//! | Q8_0 | 34 | `d: f16, qs: [i8; 32]` | `qs[i] · d` |
//!
//! `nibble_i` is the low nibble of `qs[i]` for i < 16 and the high nibble of `qs[i - 16]`.

use half::f16;

/// Weights (and activations) per block.
pub const BLOCK: usize = 32;

/// The weight types the kernels implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// 4-bit, symmetric around 8.
    Q4_0,
    /// 4-bit with a minimum.
    Q4_1,
    /// 8-bit.
    Q8_0,
}

impl WeightType {
    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
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
    /// `d · sum`: the block's sum in real units, for the weight types' constant terms.
    pub scaled_sum: f32,
}

impl ActivationBlock {
    /// All zeros (a placeholder before quantizing into a slice).
    pub const ZERO: Self = Self {
        qs: [0; BLOCK],
        d: 0.0,
        sum: 0,
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
    block.scaled_sum = d * block.sum as f32;
    block
}

/// The f16 at `bytes[at..at + 2]` as f32.
#[inline(always)]
pub fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes one weight block (the scalar definition the fast kernels are tested against).
pub fn dequantize_block(kind: WeightType, block: &[u8], out: &mut [f32; BLOCK]) {
    match kind {
        WeightType::Q4_0 | WeightType::Q4_1 => {
            let d = read_f16(block, 0);
            let (m, qs) = match kind {
                WeightType::Q4_0 => (-8.0 * d, &block[2..18]),
                _ => (read_f16(block, 2), &block[4..20]),
            };
            for (i, byte) in qs.iter().enumerate() {
                out[i] = f32::from(byte & 0x0F) * d + m;
                out[i + 16] = f32::from(byte >> 4) * d + m;
            }
        }
        WeightType::Q8_0 => {
            let d = read_f16(block, 0);
            for (o, q) in out.iter_mut().zip(&block[2..34]) {
                *o = f32::from(*q as i8) * d;
            }
        }
    }
}
