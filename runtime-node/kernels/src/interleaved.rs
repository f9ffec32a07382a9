//! The layout weights are repacked into at load: rows in groups of 8, and for each group and
//! 32-weight block the 8 rows' scales side by side, then their quantized weights interleaved 4
//! at a time, so that one 32-byte load holds 4 consecutive weights of each of the 8 rows. A
//! `vpdpbusd` of that against 4 activation bytes broadcast to all lanes adds each row's 4
//! products into its own i32 lane: after the block, one vector holds the 8 rows' integer dot
//! products, scaled with one multiply and one FMA (per block and input, not per row).
//!
//! | type | bytes per group·block | layout |
//! |---|---|---|
//! | Q4_0 | 144 | `d: [f16; 8]`, `q: [u8; 128]` |
//! | Q4_1 | 160 | `d: [f16; 8]`, `m: [f16; 8]`, `q: [u8; 128]` |
//! | Q8_0 | 272 | `d: [f16; 8]`, `q: [i8; 256]` |
//!
//! Q4: byte `32·c + 4·j + t` (c < 4) holds row j's weight `4c + t` in its low nibble and weight
//! `4(c + 4) + t` in its high nibble (4-bit values 0..15). Q8: byte `32·c + 4·j + t` (c < 8) is
//! row j's weight `4c + t`. Rows past the matrix's last are zero padding.

use rayon::prelude::*;

use super::blocks::{ActivationBlock, BLOCK, WeightType};

/// Rows per group.
pub const GROUP: usize = 8;

/// Bytes of one group's block.
pub const fn group_block_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4_0 => 16 + 128,
        WeightType::Q4_1 => 32 + 128,
        WeightType::Q8_0 => 16 + 256,
    }
}

/// Bytes of the quantized weights' header (the scales, and Q4_1's minimums).
pub const fn header_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4_1 => 32,
        _ => 16,
    }
}

/// Bytes of quantized weights at the end of one GGUF block.
const fn gguf_quant_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q8_0 => 32,
        _ => 16,
    }
}

/// Repacks `rows × cols` GGUF blocks (`data`) into groups of [`GROUP`] rows.
pub fn repack(kind: WeightType, rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let blocks = cols / BLOCK;
    let groups = rows.div_ceil(GROUP);
    let size = group_block_bytes(kind);
    let header = header_bytes(kind);
    let mut out = vec![0u8; groups * blocks * size];
    let row_bytes = blocks * kind.block_bytes();
    // Groups are independent: repack them in parallel (a 49,152-row embedding takes a while).
    out.par_chunks_mut(blocks * size)
        .enumerate()
        .for_each(|(group, packed_group)| {
            let group_rows = data.chunks_exact(row_bytes).skip(group * GROUP).take(GROUP);
            for (j, row_data) in group_rows.enumerate() {
                for (b, block) in row_data.chunks_exact(kind.block_bytes()).enumerate() {
                    let packed = &mut packed_group[b * size..(b + 1) * size];
                    packed[2 * j..2 * j + 2].copy_from_slice(&block[..2]);
                    if kind == WeightType::Q4_1 {
                        packed[16 + 2 * j..16 + 2 * j + 2].copy_from_slice(&block[2..4]);
                    }
                    // GGUF's byte `i` of a Q4 block holds weights `i` (low nibble) and `i + 16`
                    // (high), so the layout's byte `32·c + 4·j + t` is row j's byte `4c + t`
                    // unchanged, as it is for Q8: whole 4-byte runs move.
                    let quants = &block[kind.block_bytes() - gguf_quant_bytes(kind)..];
                    for (c, run) in quants.chunks_exact(4).enumerate() {
                        packed[header + 32 * c + 4 * j..][..4].copy_from_slice(run);
                    }
                }
            }
        });
    out
}

/// Row `j`'s integer weights in a group block (the inverse of [`repack`]'s interleave).
pub fn integer_weights(kind: WeightType, packed: &[u8], j: usize) -> [i32; BLOCK] {
    let quants = &packed[header_bytes(kind)..];
    let mut values = [0i32; BLOCK];
    for (k, value) in values.iter_mut().enumerate() {
        let (chunk, t) = (k / 4, k % 4);
        *value = match kind {
            WeightType::Q8_0 => i32::from(quants[32 * chunk + 4 * j + t] as i8),
            _ if chunk < 4 => i32::from(quants[32 * chunk + 4 * j + t] & 0x0F),
            _ => i32::from(quants[32 * (chunk - 4) + 4 * j + t] >> 4),
        };
    }
    values
}

/// Row `j`'s scale and constant per unit of `Σx` (Q4_0: −8·d, Q4_1: m, Q8_0: 0).
pub fn scale_and_offset(kind: WeightType, packed: &[u8], j: usize) -> (f32, f32) {
    let d = super::blocks::read_f16(packed, 2 * j);
    let offset = match kind {
        WeightType::Q4_0 => -8.0 * d,
        WeightType::Q4_1 => super::blocks::read_f16(packed, 16 + 2 * j),
        WeightType::Q8_0 => 0.0,
    };
    (d, offset)
}

/// The portable kernel on the interleaved layout: `out[i · rows + r]` for the `rows = out.len() / n`
/// rows starting at group 0 of `packed`, and the `n` inputs in `x`.
pub fn dot_groups_scalar(kind: WeightType, packed: &[u8], x: &[ActivationBlock], n: usize, out: &mut [f32]) {
    let blocks = x.len() / n;
    let size = group_block_bytes(kind);
    let rows = out.len() / n;
    for r in 0..rows {
        let (group, j) = (r / GROUP, r % GROUP);
        for i in 0..n {
            let mut total = 0f32;
            for (b, a) in x[i * blocks..(i + 1) * blocks].iter().enumerate() {
                let block = &packed[(group * blocks + b) * size..][..size];
                let weights = integer_weights(kind, block, j);
                let sum: i32 = weights.iter().zip(&a.qs).map(|(w, q)| w * i32::from(*q)).sum();
                let (d, offset) = scale_and_offset(kind, block, j);
                total += d * a.d * sum as f32 + offset * a.scaled_sum;
            }
            out[i * rows + r] = total;
        }
    }
}
