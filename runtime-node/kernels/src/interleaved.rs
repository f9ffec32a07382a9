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
//! | Q5_0 | 176 | `d: [f16; 8]`, `high: [u8; 32]`, `q: [u8; 128]` |
//! | Q5_1 | 192 | `d: [f16; 8]`, `m: [f16; 8]`, `high: [u8; 32]`, `q: [u8; 128]` |
//! | Q8_0 | 272 | `d: [f16; 8]`, `q: [u8; 256]` |
//! | IQ4_NL | 144 | as Q4_0, the nibbles level indices |
//!
//! Q4 (and the low 4 bits of Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): byte `32·c + 4·j + t` (c < 4) holds
//! row j's weight `4c + t` in its low nibble and weight `4(c + 4) + t` in its high nibble. Q8:
//! byte `32·c + 4·j + t` (c < 8) is row j's weight `4c + t` plus 128, unsigned (the operand
//! `vpdpbusd` takes unsigned: the kernel takes 128 · Σx off the integer sum, once per block).
//! Q5's fifth bits: byte `4·j + t` of `high` holds weight `4c + t`'s at bit c and weight
//! `16 + 4c + t`'s at bit `4 + c`.
//!
//! Q4_K, Q5_K and Q6_K keep their superblocks of 256 weights (8 blocks) so that the 6- and 8-bit
//! sub-block scales stay integers beside one f16 per row, exact and as small as in the file:
//!
//! | type | bytes per group·superblock | layout |
//! |---|---|---|
//! | Q4_K | 1184 | `d, dmin: [f16; 8]`, `scale, min: [[u8; 8]; 8]` (block, row), 8 × `q: [u8; 128]` |
//! | Q5_K | 1440 | as Q4_K, with 8 × (`q: [u8; 128]`, `high: [u8; 32]`) |
//! | Q6_K | 1680 | `d: [f16; 8]`, `scale: [[i8; 8]; 16]` (half block, row), 8 × (`q: [u8; 128]`, `high: [[u8; 32]; 2]`) |
//! | IQ4_XS | 1104 | `d: [f16; 8]`, `scale: [[i8; 8]; 8]` (block, row), 8 × `q: [u8; 128]` |
//! | Q2_K | 800 | `d, dmin: [f16; 8]`, `scale, min: [[u8; 8]; 16]` (half block, row), 8 × `q: [[u8; 32]; 2]` |
//! | Q3_K | 912 | `d: [f16; 8]`, `scale: [[i8; 8]; 16]` (half block, row), 8 × (`q: [[u8; 32]; 2]`, `high: [u8; 32]`) |
//!
//! Q2_K's and Q3_K's 2-bit weights (Q3_K's low 2 bits): byte `4·j + t` of `q[h]` holds row j's
//! weight `16h + 4c + t` at bits `2c` (c < 4), so one shift and one mask give a chunk of 4
//! weights of each row. Q3_K's third bits: as the Q5 types' fifth bits.
//!
//! Q6_K's top 2 bits: byte `4·j + t` of `high[0]` holds those of weight `4c + t` at bits
//! `(4 + 2c) mod 8` (so chunk c needs at most one shift to reach bits 4–5), `high[1]` those of
//! weight `16 + 4c + t`. Rows past the matrix's last are zero padding.

use rayon::prelude::*;

use super::blocks::{ActivationBlock, BLOCK, WeightType};
use super::formats::{SubBlock, decode, f16_fields};

/// Rows per group.
pub const GROUP: usize = 8;

/// Blocks per Q4_K / Q6_K superblock.
pub const SUPER: usize = 8;

/// For Q4_K / Q6_K, the bytes of a group's superblock header (Q4_K: d, dmin, scales, minimums;
/// Q6_K: d, 16 half-block scales) and of each block's weights after it (Q6_K: low nibbles, then
/// the two top-bit planes); `None` for the 32-weight types.
pub const fn superblock_parts(kind: WeightType) -> Option<(usize, usize)> {
    match kind {
        WeightType::Q4K => Some((32 + 64 + 64, 128)),
        WeightType::Q5K => Some((32 + 64 + 64, 128 + 32)),
        WeightType::Q6K => Some((16 + 128, 128 + 64)),
        WeightType::IQ4XS => Some((16 + 64, 128)),
        WeightType::Q2K => Some((32 + 128 + 128, 64)),
        WeightType::Q3K => Some((16 + 128, 64 + 32)),
        _ => None,
    }
}

/// Bytes of one group's block (for Q4_K / Q6_K: an eighth of a superblock, which is whole).
pub const fn group_block_bytes(kind: WeightType) -> usize {
    match (kind, superblock_parts(kind)) {
        (_, Some((header, block))) => (header + SUPER * block) / SUPER,
        (WeightType::Q4_1, _) => 32 + 128,
        (WeightType::Q5_0, _) => 16 + 32 + 128,
        (WeightType::Q5_1, _) => 32 + 32 + 128,
        (WeightType::Q8_0, _) => 16 + 256,
        _ => 16 + 128,
    }
}

/// Offset in a group's superblock of row 0's byte scale for block `sub` (Q6_K: for its half
/// `half`); row j's is `j` further on.
pub(crate) const fn scales_at(kind: WeightType, sub: usize, half: usize) -> usize {
    match kind {
        WeightType::Q4K | WeightType::Q5K => 32 + 8 * sub,
        WeightType::IQ4XS => 16 + 8 * sub,
        WeightType::Q2K => 32 + 8 * (2 * sub + half),
        _ => 16 + 8 * (2 * sub + half),
    }
}

/// Offset in a group's Q4_K or Q5_K superblock of row 0's 6-bit minimum for block `sub` (Q2_K:
/// its 4-bit minimum for half `half`); row j's is `j` further on.
pub(crate) const fn minimums_at(kind: WeightType, sub: usize, half: usize) -> usize {
    match kind {
        WeightType::Q2K => 160 + 8 * (2 * sub + half),
        _ => 96 + 8 * sub,
    }
}

/// Whether a type stores a second f16 per row and (super)block (Q4_1's and Q5_1's minimum, the
/// K types' scale of the minimums), beside `d` at offset 16.
const fn has_second_f16(kind: WeightType) -> bool {
    f16_fields(kind).len() == 2
}

/// Whether a superblock type stores byte minimums beside its byte scales ([`minimums_at`]).
const fn has_byte_minimums(kind: WeightType) -> bool {
    matches!(kind, WeightType::Q4K | WeightType::Q5K | WeightType::Q2K)
}

/// Bytes of a 32-weight type's block header (the scales, and Q4_1's minimums or Q5_0's fifth
/// bits) before its quantized weights.
pub const fn header_bytes(kind: WeightType) -> usize {
    match kind {
        WeightType::Q4_1 => 32,
        WeightType::Q5_0 => 48,
        WeightType::Q5_1 => 64,
        _ => 16,
    }
}

/// Offset in a group of a Q5 block's plane of fifth bits, from [`locate`]'s start of the
/// (super)block and of the block's weights.
#[inline(always)]
pub(crate) const fn fifth_bits_at(kind: WeightType, start: usize, weights: usize) -> usize {
    match kind {
        WeightType::Q5_1 => start + 32,
        WeightType::Q5K => weights + 128,
        WeightType::Q3K => weights + 64,
        _ => start + 16,
    }
}

/// Where block `b`'s fields lie in a group's bytes: the start of its (super)block and, for
/// Q4_K/Q6_K, the block's index in the superblock and the start of its weights.
#[inline(always)]
pub(crate) const fn locate(kind: WeightType, b: usize) -> (usize, usize, usize) {
    match superblock_parts(kind) {
        Some((header, block)) => {
            let start = b / SUPER * SUPER * group_block_bytes(kind);
            let sub = b % SUPER;
            (start, sub, start + header + block * sub)
        }
        None => {
            let start = b * group_block_bytes(kind);
            (start, 0, start + header_bytes(kind))
        }
    }
}

/// Writes row `j`'s block `b` into `group` (all of a group's blocks).
fn write(kind: WeightType, group: &mut [u8], b: usize, j: usize, block: &SubBlock) {
    let (start, sub, weights) = locate(kind, b);
    group[start + 2 * j..][..2].copy_from_slice(&block.d);
    if has_second_f16(kind) {
        group[start + 16 + 2 * j..][..2].copy_from_slice(&block.m);
    }
    // Superblock types keep a byte scale (and minimum) per half block; where one covers the
    // whole block both halves name the same byte and hold the same value.
    if superblock_parts(kind).is_some() {
        for h in 0..2 {
            group[start + scales_at(kind, sub, h) + j] = block.scale[h] as u8;
            if has_byte_minimums(kind) {
                group[start + minimums_at(kind, sub, h) + j] = block.min[h];
            }
        }
    }
    if kind == WeightType::Q8_0 {
        for (k, q) in block.q.iter().enumerate() {
            group[weights + 32 * (k / 4) + 4 * j + k % 4] = *q ^ 0x80;
        }
        return;
    }
    if matches!(kind, WeightType::Q2K | WeightType::Q3K) {
        for (k, q) in block.q.iter().enumerate() {
            let (half, c, t) = (k / 16, k % 16 / 4, k % 4);
            group[weights + 32 * half + 4 * j + t] |= (q & 3) << (2 * c);
            if kind == WeightType::Q3K {
                group[fifth_bits_at(kind, start, weights) + 4 * j + t] |= (q >> 2) << (c + 4 * half);
            }
        }
        return;
    }
    for k in 0..16 {
        let (c, t) = (k / 4, k % 4);
        let (low, high) = (block.q[k], block.q[k + 16]);
        group[weights + 32 * c + 4 * j + t] = (low & 0x0F) | ((high & 0x0F) << 4);
        match kind {
            WeightType::Q5_0 | WeightType::Q5_1 | WeightType::Q5K => {
                let bits = ((low >> 4) << c) | ((high >> 4) << (4 + c));
                group[fifth_bits_at(kind, start, weights) + 4 * j + t] |= bits;
            }
            WeightType::Q6K => {
                let at = (4 + 2 * c) % 8;
                group[weights + 128 + 4 * j + t] |= (low >> 4) << at;
                group[weights + 160 + 4 * j + t] |= (high >> 4) << at;
            }
            _ => {}
        }
    }
}

/// Row `j`'s block `b` read back from `group` (the inverse of [`repack`]).
pub fn unpack(kind: WeightType, group: &[u8], b: usize, j: usize) -> SubBlock {
    let (start, sub, weights) = locate(kind, b);
    let mut block = SubBlock {
        q: [0; BLOCK],
        d: [group[start + 2 * j], group[start + 2 * j + 1]],
        m: [0; 2],
        scale: [0; 2],
        min: [0; 2],
    };
    if has_second_f16(kind) {
        block.m = [group[start + 16 + 2 * j], group[start + 17 + 2 * j]];
    }
    if superblock_parts(kind).is_some() {
        for h in 0..2 {
            block.scale[h] = group[start + scales_at(kind, sub, h) + j] as i8;
            if has_byte_minimums(kind) {
                block.min[h] = group[start + minimums_at(kind, sub, h) + j];
            }
        }
    }
    for k in 0..BLOCK {
        let (c, t) = (k / 4, k % 4);
        block.q[k] = match kind {
            WeightType::Q8_0 => group[weights + 32 * c + 4 * j + t] ^ 0x80,
            WeightType::Q2K | WeightType::Q3K => {
                (group[weights + 32 * (k / 16) + 4 * j + t] >> (2 * (c % 4))) & 3
            }
            _ if c < 4 => group[weights + 32 * c + 4 * j + t] & 0x0F,
            _ => group[weights + 32 * (c - 4) + 4 * j + t] >> 4,
        };
        let (c4, upper) = (c % 4, usize::from(c >= 4));
        match kind {
            WeightType::Q5_0 | WeightType::Q5_1 | WeightType::Q5K | WeightType::Q3K => {
                // The Q5 types' fifth bit, Q3_K's third.
                let bit = if kind == WeightType::Q3K { 2 } else { 4 };
                let plane = group[fifth_bits_at(kind, start, weights) + 4 * j + t];
                block.q[k] |= ((plane >> (c4 + 4 * upper)) & 1) << bit;
            }
            WeightType::Q6K => {
                let plane = group[weights + 128 + 32 * upper + 4 * j + t];
                block.q[k] |= ((plane >> ((4 + 2 * c4) % 8)) & 3) << 4;
            }
            _ => {}
        }
    }
    block
}

/// Repacks `rows × cols` GGUF blocks (`data`) into groups of [`GROUP`] rows.
pub fn repack(kind: WeightType, rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let blocks = cols / BLOCK;
    let groups = rows.div_ceil(GROUP);
    let group_bytes = blocks * group_block_bytes(kind);
    let mut out = vec![0u8; groups * group_bytes];
    let row_bytes = cols / kind.block_weights() * kind.block_bytes();
    // Groups are independent: repack them in parallel (a 49,152-row embedding takes a while).
    out.par_chunks_mut(group_bytes)
        .enumerate()
        .for_each(|(g, group)| {
            let group_rows = data.chunks_exact(row_bytes).skip(g * GROUP).take(GROUP);
            for (j, row) in group_rows.enumerate() {
                for b in 0..blocks {
                    write(kind, group, b, j, &decode(kind, row, b));
                }
            }
        });
    out
}

/// The dot product of one weight block with one activation block, from its integer weights and
/// per-half scales (the definition every kernel is checked against).
pub fn block_dot(kind: WeightType, block: &SubBlock, a: &ActivationBlock) -> f32 {
    let integers = block.integers(kind);
    let halves = block.scale_and_offset(kind);
    let mut total = 0f32;
    for (h, (scale, offset)) in halves.iter().enumerate() {
        let range = 16 * h..16 * h + 16;
        let products: i32 = integers[range.clone()]
            .iter()
            .zip(&a.qs[range.clone()])
            .map(|(w, x)| w * i32::from(*x))
            .sum();
        let x_sum: i32 = a.qs[range].iter().map(|&x| i32::from(x)).sum();
        total += a.d * (scale * products as f32 + offset * x_sum as f32);
    }
    total
}

/// The portable kernel on the interleaved layout: `out[i · rows + r]` for the `rows = out.len() / n`
/// rows starting at group 0 of `packed`, and the `n` inputs in `x`.
pub fn dot_groups_scalar(kind: WeightType, packed: &[u8], x: &[ActivationBlock], n: usize, out: &mut [f32]) {
    let blocks = x.len() / n;
    let group_bytes = blocks * group_block_bytes(kind);
    let rows = out.len() / n;
    for r in 0..rows {
        let group = &packed[r / GROUP * group_bytes..][..group_bytes];
        for i in 0..n {
            out[i * rows + r] = x[i * blocks..(i + 1) * blocks]
                .iter()
                .enumerate()
                .map(|(b, a)| block_dot(kind, &unpack(kind, group, b, r % GROUP), a))
                .sum();
        }
    }
}
