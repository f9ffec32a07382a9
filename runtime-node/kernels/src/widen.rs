//! GGUF types our kernels read by rewriting them at load, exactly, into a wider type they
//! implement.
//!
//! Q3_K (110 bytes per 256 weights: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`)
//! has, like Q6_K, one scale per 16 weights and a superblock scale `d`: weight `w` is
//! `d·(s[w / 16] − 32)·q` with the 6-bit scale `s` and the 3-bit `q = low2 − 4·(1 − high)`.
//! Stored as Q6_K with `q + 32` and the scale `s − 32` it dequantizes to the same floats
//! (Q6_K's `d·scale·(q − 32)`), at 210 bytes per block instead of 110: the price of reusing the
//! Q6_K kernels until Q3_K has its own.
//!
//! IQ4_NL (18 bytes per 32 weights: `d: f16, qs: [u8; 16]`, byte `i` holding weight `i` in its
//! low nibble and `i + 16` in its high one) maps each 4-bit index through a fixed table of 16
//! signed 8-bit levels ([`IQ4_LEVELS`]): weight = `d·IQ4_LEVELS[index]`. Stored as Q8_0 (`d: f16, qs: [i8; 32]`) with
//! the levels themselves it dequantizes to the same floats, at 34 bytes per block instead of 18:
//! how the GGUF reader gives IQ4_NL tensors to candle, which does not hold the type (our CPU
//! kernels take IQ4_NL as stored).

use super::blocks::WeightType;
use super::formats::IQ4_LEVELS;

/// Bytes of one IQ4_NL block.
pub const IQ4NL_BLOCK_BYTES: usize = 18;

/// IQ4_NL blocks rewritten as Q8_0 blocks (see the module documentation); `None` when
/// `blocks` is not a whole number of IQ4_NL blocks.
pub fn iq4nl_as_q8_0(blocks: &[u8]) -> Option<Vec<u8>> {
    if !blocks.len().is_multiple_of(IQ4NL_BLOCK_BYTES) {
        return None;
    }
    let q8_bytes = WeightType::Q8_0.block_bytes();
    let mut out = vec![0u8; blocks.len() / IQ4NL_BLOCK_BYTES * q8_bytes];
    for (nl, q8) in blocks
        .chunks_exact(IQ4NL_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(q8_bytes))
    {
        q8[..2].copy_from_slice(&nl[..2]);
        for (i, byte) in nl[2..].iter().enumerate() {
            q8[2 + i] = IQ4_LEVELS[usize::from(byte & 0x0F)] as u8;
            q8[2 + 16 + i] = IQ4_LEVELS[usize::from(byte >> 4)] as u8;
        }
    }
    Some(out)
}

/// Bytes of one Q3_K block.
pub const Q3K_BLOCK_BYTES: usize = 110;

/// Q3_K blocks rewritten as Q6_K blocks (see the module documentation); `None` when `blocks`
/// is not a whole number of Q3_K blocks.
pub fn q3k_as_q6k(blocks: &[u8]) -> Option<Vec<u8>> {
    if !blocks.len().is_multiple_of(Q3K_BLOCK_BYTES) {
        return None;
    }
    let mut out = vec![0u8; blocks.len() / Q3K_BLOCK_BYTES * WeightType::Q6K.block_bytes()];
    for (q3, q6) in blocks
        .chunks_exact(Q3K_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(WeightType::Q6K.block_bytes()))
    {
        widen_block(q3, q6);
    }
    Some(out)
}

/// One Q3_K block into one (zeroed) Q6_K block.
fn widen_block(q3: &[u8], q6: &mut [u8]) {
    let (hmask, low, packed, d) = (&q3[..32], &q3[32..96], &q3[96..108], &q3[108..110]);
    for w in 0..256 {
        let value = q3k_weight(hmask, low, w) + 32;
        // Q6_K: the low nibble in ql[64h + l + 32(k mod 2)] (nibble k / 2), the top 2 bits at
        // bit 2k of qh[32h + l], for w = 128h + 32k + l.
        let (h, k, l) = (w / 128, w % 128 / 32, w % 32);
        let nibble = (value & 0x0F) as u8;
        q6[64 * h + l + 32 * (k % 2)] |= if k < 2 { nibble } else { nibble << 4 };
        q6[128 + 32 * h + l] |= ((value >> 4) as u8) << (2 * k);
    }
    for (sub, scale) in q6[192..208].iter_mut().enumerate() {
        *scale = (q3k_scale(packed, sub) as i8 - 32) as u8;
    }
    q6[208..210].copy_from_slice(d);
}

/// Weight `w`'s 3-bit value, −4..=3: its low 2 bits at bit `2k` of `qs[32h + l]`, its high bit
/// (set means no −4) at bit `4h + k` of `hmask[l]`, for `w = 128h + 32k + l`.
fn q3k_weight(hmask: &[u8], low: &[u8], w: usize) -> i32 {
    let (h, k, l) = (w / 128, w % 128 / 32, w % 32);
    let two = i32::from((low[32 * h + l] >> (2 * k)) & 3);
    let high = (hmask[l] >> (4 * h + k)) & 1;
    two - if high == 1 { 0 } else { 4 }
}

/// Sub-block `sub`'s 6-bit scale from Q3_K's 12 packed bytes: the low 4 bits in a nibble of
/// byte `sub mod 8` (low nibble for sub-blocks 0–7, high for 8–15), the top 2 bits at bit
/// `2·(sub / 4)` of byte `8 + sub mod 4`.
fn q3k_scale(packed: &[u8], sub: usize) -> u8 {
    let nibble = if sub < 8 {
        packed[sub % 8] & 0x0F
    } else {
        packed[sub % 8] >> 4
    };
    let top = (packed[8 + sub % 4] >> (2 * (sub / 4))) & 3;
    nibble | (top << 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::decode;

    fn random_bytes(count: usize, state: &mut u64) -> Vec<u8> {
        (0..count)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn widened_blocks_hold_every_q3k_weight_and_scale() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut blocks = random_bytes(3 * Q3K_BLOCK_BYTES, &mut state);
        for block in blocks.chunks_exact_mut(Q3K_BLOCK_BYTES) {
            block[108..110].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
        let widened = q3k_as_q6k(&blocks).expect("whole blocks");
        assert_eq!(widened.len(), 3 * 210);
        for (b, q3) in blocks.chunks_exact(Q3K_BLOCK_BYTES).enumerate() {
            let d = half::f16::from_le_bytes([q3[108], q3[109]]).to_f32();
            for sub in 0..8 {
                let values =
                    decode(WeightType::Q6K, &widened[210 * b..210 * (b + 1)], sub).values(WeightType::Q6K);
                for (i, got) in values.iter().enumerate() {
                    let w = 32 * sub + i;
                    // ggml's reading of the block: scales unpacked as four u32 words, weights
                    // run by run (16 per scale) through qs and hmask.
                    let word = |at: usize| u32::from_le_bytes(q3[96 + at..100 + at].try_into().unwrap());
                    let (a0, a1, tmp) = (word(0), word(4), word(8));
                    let aux = [
                        (a0 & 0x0F0F_0F0F) | ((tmp & 0x0303_0303) << 4),
                        (a1 & 0x0F0F_0F0F) | (((tmp >> 2) & 0x0303_0303) << 4),
                        ((a0 >> 4) & 0x0F0F_0F0F) | (((tmp >> 4) & 0x0303_0303) << 4),
                        ((a1 >> 4) & 0x0F0F_0F0F) | (((tmp >> 6) & 0x0303_0303) << 4),
                    ];
                    let scale = (aux[w / 16 / 4] >> (8 * (w / 16 % 4))) as u8 as i32 - 32;
                    let (half_block, run) = (w / 128, w % 128);
                    let (shift, l) = (run / 32, run % 32);
                    let two = i32::from((q3[32 + 32 * half_block + l] >> (2 * shift)) & 3);
                    let high = q3[l] & (1 << (4 * half_block + shift)) != 0;
                    let want = d * scale as f32 * (two - if high { 0 } else { 4 }) as f32;
                    assert_eq!(*got, want, "block {b} weight {w}");
                }
            }
        }
        assert!(q3k_as_q6k(&blocks[..109]).is_none());
    }

    #[test]
    fn widened_iq4nl_blocks_hold_every_level_and_scale() {
        let mut state = 0x2545_F491_4F6C_DD1D;
        let mut blocks = random_bytes(4 * IQ4NL_BLOCK_BYTES, &mut state);
        for (b, block) in blocks.chunks_exact_mut(IQ4NL_BLOCK_BYTES).enumerate() {
            block[..2].copy_from_slice(&half::f16::from_f32(0.003 * (b + 1) as f32).to_le_bytes());
        }
        let widened = iq4nl_as_q8_0(&blocks).expect("whole blocks");
        assert_eq!(widened.len(), 4 * 34);
        // Every level appears, so a wrong table entry cannot hide.
        let indices: std::collections::HashSet<u8> = blocks
            .chunks_exact(IQ4NL_BLOCK_BYTES)
            .flat_map(|b| b[2..].iter().flat_map(|q| [q & 15, q >> 4]))
            .collect();
        assert_eq!(indices.len(), 16);
        for (b, nl) in blocks.chunks_exact(IQ4NL_BLOCK_BYTES).enumerate() {
            let d = half::f16::from_le_bytes([nl[0], nl[1]]).to_f32();
            let values = decode(WeightType::Q8_0, &widened[34 * b..34 * (b + 1)], 0).values(WeightType::Q8_0);
            for (w, got) in values.iter().enumerate() {
                // GGUF's definition: weight j < 16 from qs[j]'s low nibble, j ≥ 16 from
                // qs[j − 16]'s high nibble, through kvalues_iq4nl.
                let table = [
                    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                ];
                let index = if w < 16 {
                    nl[2 + w] & 15
                } else {
                    nl[2 + w - 16] >> 4
                };
                assert_eq!(*got, d * table[usize::from(index)] as f32, "block {b} weight {w}");
            }
        }
        assert!(iq4nl_as_q8_0(&blocks[..17]).is_none());
    }
}
