//! IQ4_NL rewritten, exactly, as a type candle holds. IQ4_NL (18 bytes per 32 weights:
//! `d: f16, qs: [u8; 16]`, byte `i` holding weight `i` in its low nibble and `i + 16` in its
//! high one) maps each 4-bit index through a fixed table of 16 signed 8-bit levels
//! ([`IQ4_LEVELS`]): weight = `d·IQ4_LEVELS[index]`. Stored as Q8_0 (`d: f16, qs: [i8; 32]`)
//! with the levels themselves it dequantizes to the same floats, at 34 bytes per block instead
//! of 18: how the GGUF reader gives IQ4_NL tensors to candle, which does not hold the type (our
//! CPU kernels take IQ4_NL as stored).

use super::blocks::WeightType;
use super::formats::decode;

/// IQ4_NL blocks rewritten as Q8_0 blocks (see the module documentation); `None` when
/// `blocks` is not a whole number of IQ4_NL blocks.
pub fn iq4nl_as_q8_0(blocks: &[u8]) -> Option<Vec<u8>> {
    let (nl_bytes, q8_bytes) = (WeightType::IQ4NL.block_bytes(), WeightType::Q8_0.block_bytes());
    if !blocks.len().is_multiple_of(nl_bytes) {
        return None;
    }
    let mut out = vec![0u8; blocks.len() / nl_bytes * q8_bytes];
    for (b, q8) in out.chunks_exact_mut(q8_bytes).enumerate() {
        let block = decode(WeightType::IQ4NL, blocks, b);
        q8[..2].copy_from_slice(&block.d);
        // The levels, which `integers` reads from the indices, are Q8_0's integers.
        for (q, level) in q8[2..].iter_mut().zip(block.integers(WeightType::IQ4NL)) {
            *q = level as i8 as u8;
        }
    }
    Some(out)
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
    fn widened_iq4nl_blocks_hold_every_level_and_scale() {
        let mut state = 0x2545_F491_4F6C_DD1D;
        // GGUF's IQ4_NL block: an f16 scale and 16 bytes of indices.
        let block_bytes = 18;
        let mut blocks = random_bytes(4 * block_bytes, &mut state);
        for (b, block) in blocks.chunks_exact_mut(block_bytes).enumerate() {
            block[..2].copy_from_slice(&half::f16::from_f32(0.003 * (b + 1) as f32).to_le_bytes());
        }
        let widened = iq4nl_as_q8_0(&blocks).expect("whole blocks");
        assert_eq!(widened.len(), 4 * 34);
        // Every level appears, so a wrong table entry cannot hide.
        let indices: std::collections::HashSet<u8> = blocks
            .chunks_exact(block_bytes)
            .flat_map(|b| b[2..].iter().flat_map(|q| [q & 15, q >> 4]))
            .collect();
        assert_eq!(indices.len(), 16);
        for (b, nl) in blocks.chunks_exact(block_bytes).enumerate() {
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
