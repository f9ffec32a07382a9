//! GGUF's quantized formats decoded one 32-weight sub-block at a time into one shape,
//! [`SubBlock`]: unsigned integer weights plus the stored scale fields. The repacking at load
//! ([`crate::interleaved`]) and the scalar definitions the vector kernels are tested against
//! both read weights through it.
//!
//! | type | weights per block | bytes | layout (little-endian) |
//! |---|---|---|---|
//! | Q4_0 | 32 | 18 | `d: f16, qs: [u8; 16]` |
//! | Q4_1 | 32 | 20 | `d: f16, m: f16, qs: [u8; 16]` |
//! | Q5_0 | 32 | 22 | `d: f16, qh: u32, qs: [u8; 16]` |
//! | Q5_1 | 32 | 24 | `d: f16, m: f16, qh: u32, qs: [u8; 16]` |
//! | Q8_0 | 32 | 34 | `d: f16, qs: [i8; 32]` |
//! | Q4_K | 256 | 144 | `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]` |
//! | Q5_K | 256 | 176 | `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]` |
//! | Q2_K | 256 | 84 | `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16` |
//! | Q3_K | 256 | 110 | `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16` |
//! | Q6_K | 256 | 210 | `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16` |
//! | IQ4_NL | 32 | 18 | `d: f16, qs: [u8; 16]` |
//! | IQ4_XS | 256 | 136 | `d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]` |
//!
//! Q4_0/Q4_1/Q5_0/Q5_1: byte `i` of `qs` holds weight `i` in its low nibble and weight `i + 16`
//! in its high nibble; Q5's bit `i` of `qh` is weight `i`'s fifth bit. Q4_K/Q5_K: 8 sub-blocks of
//! 32, each with a 6-bit scale and minimum packed into `scales`; weights `64c + l` and
//! `64c + 32 + l` share byte `32c + l` (low, high nibble); Q5_K's bit `s` of `qh[l]` is the fifth
//! bit of sub-block `s`'s weight `l`. Q6_K: 16 scales of 16 weights; weight
//! `128h + 32k + l` has its low 4 bits in `ql[64h + l + 32(k mod 2)]` (nibble `k / 2`) and its
//! top 2 bits at bit `2k` of `qh[32h + l]`. Q2_K: 16 sub-blocks of 16 weights, each with a
//! 4-bit scale (low nibble of `scales[s]`) and minimum (high nibble); weight `128h + 32k + l` is
//! the 2 bits at bit `2k` of `qs[32h + l]`. Q3_K: 16 sub-blocks of 16 weights, each with a 6-bit
//! scale `s` (the low 4 bits in a nibble of `scales[s mod 8]`, low for s < 8; the top 2 at bit
//! `2·(s / 4)` of `scales[8 + s mod 4]`), weighing `s − 32`; weight `128h + 32k + l` is `q − 4`
//! with `q`'s low 2 bits at bit `2k` of `qs[32h + l]` and its third at bit `4h + k` of
//! `hmask[l]`. IQ4_NL and IQ4_XS: each nibble (arranged as Q4_0's,
//! per 32-weight block of 16 bytes) indexes [`IQ4_LEVELS`]; IQ4_XS's block `s` has the scale
//! `ls − 32` with `ls` = nibble `s mod 2` of `scales_l[s / 2]` plus bits `2s..2s + 2` of
//! `scales_h` as its top 2 bits.

use half::f16;

use super::blocks::{BLOCK, WeightType};

/// IQ4_NL's and IQ4_XS's 16 weight levels (GGUF's `kvalues_iq4nl`), by 4-bit index.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// One 32-weight sub-block. Weight `i` is, by type (`h = i / 16`):
/// Q4_0 `d·(q − 8)`, Q4_1 and Q5_1 `d·q + m`, Q5_0 `d·(q − 16)`, Q8_0 `d·(q as i8)`,
/// Q4_K and Q5_K `d·scale[0]·q − m·min[0]`, Q2_K `d·scale[h]·q − m·min[h]`, Q3_K
/// `d·scale[h]·(q − 4)`, Q6_K `d·scale[h]·(q − 32)`, IQ4_NL `d·L[q]` and IQ4_XS
/// `d·scale[0]·L[q]` with the levels `L` ([`IQ4_LEVELS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubBlock {
    /// The integer weights as stored: 4, 5 or 6 unsigned bits, Q8_0's i8 bits, or the IQ4
    /// types' level indices.
    pub q: [u8; BLOCK],
    /// The (super)block's f16 scale, as stored.
    pub d: [u8; 2],
    /// The f16 minimum (Q4_1, Q5_1) or scale of the minimums (Q4_K, Q5_K, Q2_K), as stored; else
    /// zero.
    pub m: [u8; 2],
    /// Sub-block scales: Q4_K's and Q5_K's 6-bit scale (both entries), Q6_K's, Q3_K's and Q2_K's
    /// per half, IQ4_XS's signed scale (both entries); else zero.
    pub scale: [i8; 2],
    /// Q4_K's and Q5_K's 6-bit minimum (both entries), Q2_K's per half; else zero.
    pub min: [u8; 2],
}

impl SubBlock {
    /// Per half (weights 0–15, 16–31): `(scale, offset)` with weight `i = scale·q_i + offset`,
    /// and the integer `q_i` the kernels multiply ([`Self::integers`]).
    pub fn scale_and_offset(&self, kind: WeightType) -> [(f32, f32); 2] {
        let d = f16::from_le_bytes(self.d).to_f32();
        let m = f16::from_le_bytes(self.m).to_f32();
        let half = |h: usize| match kind {
            WeightType::Q4_0 => (d, -8.0 * d),
            WeightType::Q4_1 | WeightType::Q5_1 => (d, m),
            WeightType::Q5_0 => (d, -16.0 * d),
            WeightType::Q8_0 | WeightType::IQ4NL => (d, 0.0),
            WeightType::IQ4XS => (d * f32::from(self.scale[0]), 0.0),
            WeightType::Q4K | WeightType::Q5K | WeightType::Q2K => {
                (d * f32::from(self.scale[h]), -m * f32::from(self.min[h]))
            }
            WeightType::Q6K => {
                let scale = d * f32::from(self.scale[h]);
                (scale, -32.0 * scale)
            }
            WeightType::Q3K => {
                let scale = d * f32::from(self.scale[h]);
                (scale, -4.0 * scale)
            }
        };
        [half(0), half(1)]
    }

    /// The integer weights as the kernels multiply them (Q8_0's bytes are signed; the IQ4 types'
    /// indices stand for their levels).
    pub fn integers(&self, kind: WeightType) -> [i32; BLOCK] {
        self.q.map(|q| match kind {
            WeightType::Q8_0 => i32::from(q as i8),
            WeightType::IQ4NL | WeightType::IQ4XS => i32::from(IQ4_LEVELS[usize::from(q & 0x0F)]),
            _ => i32::from(q),
        })
    }

    /// The 32 weights as f32 (the definition).
    pub fn values(&self, kind: WeightType) -> [f32; BLOCK] {
        let halves = self.scale_and_offset(kind);
        let integers = self.integers(kind);
        std::array::from_fn(|i| {
            let (scale, offset) = halves[i / 16];
            integers[i] as f32 * scale + offset
        })
    }
}

/// Byte offsets of a GGUF block's f16 fields: the scale `d`, then Q4_1's and Q5_1's `m` or Q4_K's
/// and Q5_K's `dmin`.
pub const fn f16_fields(kind: WeightType) -> &'static [usize] {
    match kind {
        WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
        WeightType::Q2K => &[80, 82],
        WeightType::Q6K => &[208],
        WeightType::Q3K => &[108],
        _ => &[0],
    }
}

/// Every weight of whole GGUF blocks of `kind`, in order, as f32 (the definition); `None` when
/// `blocks` is not a whole number of blocks.
pub fn dequantize(kind: WeightType, blocks: &[u8]) -> Option<Vec<f32>> {
    if !blocks.len().is_multiple_of(kind.block_bytes()) {
        return None;
    }
    let sub_blocks = blocks.len() / kind.block_bytes() * kind.block_weights() / BLOCK;
    Some(
        (0..sub_blocks)
            .flat_map(|b| decode(kind, blocks, b).values(kind))
            .collect(),
    )
}

/// Sub-block `b` (of 32 weights) of a row of GGUF blocks.
pub fn decode(kind: WeightType, row: &[u8], b: usize) -> SubBlock {
    let per_block = kind.block_weights() / BLOCK;
    let block = &row[b / per_block * kind.block_bytes()..][..kind.block_bytes()];
    let sub = b % per_block;
    let f16_at = |at: usize| [block[at], block[at + 1]];
    let fields = f16_fields(kind);
    let mut out = SubBlock {
        q: [0; BLOCK],
        d: f16_at(fields[0]),
        m: fields.get(1).map_or([0; 2], |&at| f16_at(at)),
        scale: [0; 2],
        min: [0; 2],
    };
    match kind {
        WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q5_0 | WeightType::Q5_1 | WeightType::IQ4NL => {
            let fifth_bits =
                |at: usize| u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let (qs, high_bits) = match kind {
                WeightType::Q4_0 | WeightType::IQ4NL => (&block[2..18], 0),
                WeightType::Q4_1 => (&block[4..20], 0),
                WeightType::Q5_0 => (&block[6..22], fifth_bits(2)),
                _ => (&block[8..24], fifth_bits(4)),
            };
            for (i, byte) in qs.iter().enumerate() {
                out.q[i] = byte & 0x0F;
                out.q[i + 16] = byte >> 4;
            }
            for (i, q) in out.q.iter_mut().enumerate() {
                *q |= (((high_bits >> i) & 1) as u8) << 4;
            }
        }
        WeightType::Q8_0 => out.q.copy_from_slice(&block[2..34]),
        WeightType::Q4K | WeightType::Q5K => {
            let (scale, min) = q4k_scale_and_min(&block[4..16], sub);
            out.scale = [scale as i8; 2];
            out.min = [min; 2];
            let quants_at = if kind == WeightType::Q5K { 48 } else { 16 };
            let qs = &block[quants_at + 32 * (sub / 2)..][..32];
            for (q, byte) in out.q.iter_mut().zip(qs) {
                *q = if sub.is_multiple_of(2) {
                    byte & 0x0F
                } else {
                    byte >> 4
                };
            }
            if kind == WeightType::Q5K {
                for (q, high) in out.q.iter_mut().zip(&block[16..48]) {
                    *q |= ((high >> sub) & 1) << 4;
                }
            }
        }
        WeightType::Q2K => {
            for h in 0..2 {
                let packed = block[2 * sub + h];
                out.scale[h] = (packed & 0x0F) as i8;
                out.min[h] = packed >> 4;
            }
            out.q = two_bit_weights(&block[16..80], sub);
        }
        WeightType::Q3K => {
            let (packed, low_bits, high_bits) = (&block[96..108], &block[32..96], &block[..32]);
            for h in 0..2 {
                let s = 2 * sub + h;
                let nibble = if s < 8 {
                    packed[s % 8] & 0x0F
                } else {
                    packed[s % 8] >> 4
                };
                let top = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
                out.scale[h] = (nibble | top << 4) as i8 - 32;
            }
            let (half, k) = (sub / 4, sub % 4);
            out.q = two_bit_weights(low_bits, sub);
            for (q, high) in out.q.iter_mut().zip(high_bits) {
                *q |= ((high >> (4 * half + k)) & 1) << 2;
            }
        }
        WeightType::IQ4XS => {
            let low = (block[4 + sub / 2] >> (4 * (sub % 2))) & 0x0F;
            let high = (u16::from_le_bytes([block[2], block[3]]) >> (2 * sub)) & 3;
            out.scale = [(low | (high as u8) << 4) as i8 - 32; 2];
            for (i, byte) in block[8 + 16 * sub..][..16].iter().enumerate() {
                out.q[i] = byte & 0x0F;
                out.q[i + 16] = byte >> 4;
            }
        }
        WeightType::Q6K => {
            out.scale = [block[192 + 2 * sub] as i8, block[193 + 2 * sub] as i8];
            let (h, k) = (sub / 4, sub % 4);
            let low = &block[64 * h + 32 * (k % 2)..][..32];
            let high = &block[128 + 32 * h..][..32];
            for (l, q) in out.q.iter_mut().enumerate() {
                let nibble = if k < 2 { low[l] & 0x0F } else { low[l] >> 4 };
                *q = nibble | (((high[l] >> (2 * k)) & 3) << 4);
            }
        }
    }
    out
}

/// Sub-block `sub`'s 2-bit weights from Q2_K's `qs` (Q3_K's low bits): weight `128h + 32k + l`
/// at bit `2k` of `qs[32h + l]`.
fn two_bit_weights(qs: &[u8], sub: usize) -> [u8; BLOCK] {
    let (half, k) = (sub / 4, sub % 4);
    std::array::from_fn(|l| (qs[32 * half + l] >> (2 * k)) & 3)
}

/// Q4_K's (and Q5_K's) 6-bit scale and minimum of sub-block `sub` from the 12 packed bytes:
/// sub-blocks 0–3 in the low 6 bits of bytes `sub` and `sub + 4`; 4–7 in a nibble of byte
/// `sub + 4` plus the top 2 bits of bytes `sub − 4` and `sub`.
fn q4k_scale_and_min(packed: &[u8], sub: usize) -> (u8, u8) {
    if sub < 4 {
        (packed[sub] & 63, packed[sub + 4] & 63)
    } else {
        (
            (packed[sub + 4] & 0x0F) | ((packed[sub - 4] >> 6) << 4),
            (packed[sub + 4] >> 4) | ((packed[sub] >> 6) << 4),
        )
    }
}
