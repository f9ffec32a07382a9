//! x86 vector kernels on the interleaved layout ([`super::interleaved`]): a group of 8 weight
//! rows against up to 8 activation rows at a time. Per 4 weights the 8 rows' integer products
//! go into 8 i32 lanes with one `vpdpbusd` (AVX-512 VNNI on 256-bit registers) or `vpmaddubsw`
//! and `vpmaddwd` (AVX2) against 4 activation bytes broadcast to every lane; per block the lanes
//! are converted once and scaled with the 8 rows' scales in one multiply and one FMA. A weight
//! offset that is an integer comes off the integer sum first (Q4_0's −8·Σx, Q5_0's −16·Σx, Q8_0's
//! stored +128 with VNNI, each Q6_K half's −32·Σx); a scaled one costs one more FMA (Q4_1's m·Σx,
//! Q4_K's −dmin·min·Σx, each Q2_K half's −dmin·min·Σx of the half). IQ4_NL's and IQ4_XS's
//! nibbles are level indices: one `vpshufb` per 32 bytes turns them into their levels (+128
//! with VNNI, so that they stay unsigned and the offset comes off as Q8_0's; signed with AVX2,
//! which then takes Q8_0's sign trick). Groups stream through memory in order, one sequential
//! stream per thread; each block asks for the bytes two pages further on
//! ([`super::PREFETCH_AHEAD`]), where the hardware prefetcher does not reach.

#![cfg(target_arch = "x86_64")]

#[cfg(target_arch = "x86_64")]
mod avx512;

use std::arch::x86_64::*;

use super::blocks::{ActivationBlock, WeightType};
use super::interleaved::{GROUP, fifth_bits_at, group_block_bytes, locate, minimums_at, scales_at};

pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q8_0: u8 = 2;
pub(super) const Q5_0: u8 = 3;
pub(super) const Q4K: u8 = 4;
pub(super) const Q6K: u8 = 5;
pub(super) const Q5_1: u8 = 6;
pub(super) const Q5K: u8 = 7;
pub(super) const IQ4NL: u8 = 8;
pub(super) const IQ4XS: u8 = 9;
pub(super) const Q2K: u8 = 10;
pub(super) const Q3K: u8 = 11;

/// Whether a `KIND` constant's weights lie in 2-bit planes (Q2_K; Q3_K's low bits).
pub(super) const fn has_two_bit_planes(kind: u8) -> bool {
    matches!(kind, Q2K | Q3K)
}

/// Whether a `KIND` constant has a scale per 16 weights (summed in two halves per block).
pub(super) const fn has_half_scales(kind: u8) -> bool {
    matches!(kind, Q6K | Q3K | Q2K)
}

/// The integer each half of a [`has_half_scales`] `KIND` carries beyond its value (Q6_K's 32,
/// Q3_K's 4; Q2_K's offset is a scaled minimum instead).
pub(super) const fn half_offset(kind: u8) -> i32 {
    match kind {
        Q6K => 32,
        Q3K => 4,
        _ => 0,
    }
}

/// Whether a `KIND` constant's nibbles index [`crate::formats::IQ4_LEVELS`].
pub(super) const fn has_levels(kind: u8) -> bool {
    matches!(kind, IQ4NL | IQ4XS)
}

/// [`crate::formats::IQ4_LEVELS`] in each 16-byte lane, +128 (unsigned) when `BIASED`.
#[inline(always)]
pub(super) fn level_table<const BIASED: bool>() -> [u8; 16] {
    crate::formats::IQ4_LEVELS.map(|level| if BIASED { (level as u8) ^ 0x80 } else { level as u8 })
}

/// Whether a `KIND` constant's weights have a fifth bit (in a plane beside the nibbles).
pub(super) const fn has_fifth_bit(kind: u8) -> bool {
    matches!(kind, Q5_0 | Q5_1 | Q5K)
}

/// The integer a `KIND`'s stored weights carry beyond the value they scale (Q4_0's 8, Q5_0's 16,
/// Q8_0's stored +128 and the IQ4 types' biased levels), taken off the integer sum as
/// `offset · Σx`; 0 for the others.
pub(super) const fn stored_offset(kind: u8) -> i32 {
    match kind {
        Q4_0 => 8,
        Q5_0 => 16,
        Q8_0 | IQ4NL | IQ4XS => 128,
        _ => 0,
    }
}

/// Whether a `KIND` adds a scaled minimum per row and block (one more FMA per input).
pub(super) const fn has_minimum(kind: u8) -> bool {
    matches!(kind, Q4_1 | Q5_1 | Q4K | Q5K)
}

/// The weight type a `KIND` constant stands for.
pub(super) const fn kind_of(kind: u8) -> WeightType {
    match kind {
        Q4_0 => WeightType::Q4_0,
        Q4_1 => WeightType::Q4_1,
        Q8_0 => WeightType::Q8_0,
        Q5_0 => WeightType::Q5_0,
        Q4K => WeightType::Q4K,
        Q5_1 => WeightType::Q5_1,
        Q5K => WeightType::Q5K,
        IQ4NL => WeightType::IQ4NL,
        IQ4XS => WeightType::IQ4XS,
        Q2K => WeightType::Q2K,
        Q3K => WeightType::Q3K,
        _ => WeightType::Q6K,
    }
}

/// Activation rows per tile.
const TILE_INPUTS: usize = 8;

/// `acc + Σ_4 u8 · i8` per i32 lane. With AVX2 the i16 intermediate cannot saturate: 4- to
/// 6-bit weights give |pair| ≤ 2·63·128, Q8_0 passes |w| ≤ 128 with |x| ≤ 127.
#[inline(always)]
unsafe fn add_products<const VNNI: bool>(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(acc, unsigned, signed)
        } else {
            let pairs = _mm256_maddubs_epi16(unsigned, signed);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

/// Activation bytes `4c..4c + 4` of `x` in every i32 lane.
#[inline(always)]
unsafe fn broadcast4(x: &ActivationBlock, c: usize) -> __m256i {
    unsafe { _mm256_set1_epi32(x.qs.as_ptr().add(4 * c).cast::<i32>().read_unaligned()) }
}

/// Eight bytes at `at` widened to the 8 lanes' f32 values (Q4_K's unsigned, Q6_K's signed
/// sub-block scales of the group's 8 rows).
#[inline(always)]
unsafe fn byte_lanes<const SIGNED: bool>(at: *const u8) -> __m256 {
    unsafe {
        let bytes = _mm_loadl_epi64(at.cast());
        _mm256_cvtepi32_ps(if SIGNED {
            _mm256_cvtepi8_epi32(bytes)
        } else {
            _mm256_cvtepu8_epi32(bytes)
        })
    }
}

/// Q6_K's top 2 bits of chunk `c` (stored at bits `(4 + 2c) mod 8` of each byte) moved to bits
/// 4–5: one 16-bit shift at most, whose spill into the neighbouring byte the mask removes.
#[inline(always)]
unsafe fn q6k_top_bits(plane: __m256i, c: usize) -> __m256i {
    unsafe {
        let moved = match c {
            0 => plane,
            1 => _mm256_srli_epi16::<2>(plane),
            2 => _mm256_slli_epi16::<4>(plane),
            _ => _mm256_slli_epi16::<2>(plane),
        };
        _mm256_and_si256(moved, _mm256_set1_epi8(0x30))
    }
}

/// One group (8 rows at `group`, `blocks` blocks) against `N` activation rows; lane j of
/// result i is row j's dot product with input i.
#[inline(always)]
unsafe fn group_dots<const VNNI: bool, const KIND: u8, const N: usize>(
    group: *const u8,
    inputs: [&[ActivationBlock]; N],
    blocks: usize,
) -> [__m256; N] {
    let kind = kind_of(KIND);
    // SAFETY (whole function): the caller passes `blocks` whole blocks of the group and N inputs
    // of at least `blocks` blocks; the CPU has the features of the calling wrapper.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        let nibble = _mm256_set1_epi8(0x0F);
        let levels = {
            let table = if VNNI {
                level_table::<true>()
            } else {
                level_table::<false>()
            };
            _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()))
        };
        for b in 0..blocks {
            let (start, sub, weights) = locate(kind, b);
            let (block, quants) = (group.add(start), group.add(weights));
            super::prefetch_group_block(kind, group, b);
            // Q6_K sums its two 16-weight halves apart (each has its own scale).
            let mut sums = [_mm256_setzero_si256(); N];
            let mut upper = [_mm256_setzero_si256(); N];
            if has_two_bit_planes(KIND) {
                // Two planes of 2-bit weights (halves 0 and 1): chunk c at bits 2c of each byte;
                // Q3_K's third bits at bit c (half 0) and 4 + c (half 1) of a third plane.
                let (first, second) = (
                    _mm256_loadu_si256(quants.cast()),
                    _mm256_loadu_si256(quants.add(32).cast()),
                );
                let (third_low, third_high) = if KIND == Q3K {
                    let bits = _mm256_loadu_si256(quants.add(64).cast());
                    (_mm256_slli_epi16::<2>(bits), _mm256_srli_epi16::<2>(bits))
                } else {
                    (_mm256_setzero_si256(), _mm256_setzero_si256())
                };
                let (two_bits, third_bit) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
                for c in 0..4 {
                    let count = _mm_cvtsi32_si128(2 * c as i32);
                    let mut low = _mm256_and_si256(_mm256_srl_epi16(first, count), two_bits);
                    let mut high = _mm256_and_si256(_mm256_srl_epi16(second, count), two_bits);
                    if KIND == Q3K {
                        let count = _mm_cvtsi32_si128(c as i32);
                        low = _mm256_or_si256(
                            low,
                            _mm256_and_si256(_mm256_srl_epi16(third_low, count), third_bit),
                        );
                        high = _mm256_or_si256(
                            high,
                            _mm256_and_si256(_mm256_srl_epi16(third_high, count), third_bit),
                        );
                    }
                    for i in 0..N {
                        let x = inputs[i].get_unchecked(b);
                        sums[i] = add_products::<VNNI>(sums[i], low, broadcast4(x, c));
                        upper[i] = add_products::<VNNI>(upper[i], high, broadcast4(x, c + 4));
                    }
                }
            } else if KIND == Q8_0 {
                for c in 0..8 {
                    // Stored as w + 128: unsigned, as `vpdpbusd` takes it.
                    let biased = _mm256_loadu_si256(quants.add(32 * c).cast());
                    if VNNI {
                        for i in 0..N {
                            let x = broadcast4(inputs[i].get_unchecked(b), c);
                            sums[i] = _mm256_dpbusd_epi32(sums[i], biased, x);
                        }
                        continue;
                    }
                    // `vpmaddubsw`'s i16 pairs would saturate on weights up to 255: back to w,
                    // and |w| · (x with w's sign) = w · x with an unsigned left operand.
                    let q = _mm256_xor_si256(biased, _mm256_set1_epi8(i8::MIN));
                    let magnitude = _mm256_sign_epi8(q, q);
                    for i in 0..N {
                        let x = _mm256_sign_epi8(broadcast4(inputs[i].get_unchecked(b), c), q);
                        sums[i] = add_products::<VNNI>(sums[i], magnitude, x);
                    }
                }
            } else {
                // Q5's plane of fifth bits (byte 4j + t: bit c low half, bit 4 + c high half).
                let (fifth_bits, fifth_low) = if has_fifth_bit(KIND) {
                    let bits = _mm256_loadu_si256(group.add(fifth_bits_at(kind, start, weights)).cast());
                    (bits, _mm256_slli_epi16::<4>(bits))
                } else {
                    (_mm256_setzero_si256(), _mm256_setzero_si256())
                };
                for c in 0..4 {
                    let q = _mm256_loadu_si256(quants.add(32 * c).cast());
                    let mut low = _mm256_and_si256(q, nibble);
                    let mut high = _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble);
                    if has_fifth_bit(KIND) {
                        // Bit c (low half) or 4 + c (high half) of each byte to bit 4.
                        let count = _mm_cvtsi32_si128(c as i32);
                        let bit = _mm256_set1_epi8(0x10);
                        low = _mm256_or_si256(low, _mm256_and_si256(_mm256_srl_epi16(fifth_low, count), bit));
                        high =
                            _mm256_or_si256(high, _mm256_and_si256(_mm256_srl_epi16(fifth_bits, count), bit));
                    }
                    if KIND == Q6K {
                        let planes = quants.add(128);
                        low = _mm256_or_si256(low, q6k_top_bits(_mm256_loadu_si256(planes.cast()), c));
                        high =
                            _mm256_or_si256(high, q6k_top_bits(_mm256_loadu_si256(planes.add(32).cast()), c));
                    }
                    if has_levels(KIND) {
                        low = _mm256_shuffle_epi8(levels, low);
                        high = _mm256_shuffle_epi8(levels, high);
                        if !VNNI {
                            // Signed levels up to 127: Q8_0's sign trick keeps `vpmaddubsw` exact.
                            let (low_size, high_size) =
                                (_mm256_sign_epi8(low, low), _mm256_sign_epi8(high, high));
                            for i in 0..N {
                                let x = inputs[i].get_unchecked(b);
                                let (x_low, x_high) = (broadcast4(x, c), broadcast4(x, c + 4));
                                sums[i] =
                                    add_products::<VNNI>(sums[i], low_size, _mm256_sign_epi8(x_low, low));
                                sums[i] =
                                    add_products::<VNNI>(sums[i], high_size, _mm256_sign_epi8(x_high, high));
                            }
                            continue;
                        }
                    }
                    for i in 0..N {
                        let x = inputs[i].get_unchecked(b);
                        sums[i] = add_products::<VNNI>(sums[i], low, broadcast4(x, c));
                        if KIND == Q6K {
                            upper[i] = add_products::<VNNI>(upper[i], high, broadcast4(x, c + 4));
                        } else {
                            sums[i] = add_products::<VNNI>(sums[i], high, broadcast4(x, c + 4));
                        }
                    }
                }
            }
            // Per row: the scale of the integer sums (of each half, for Q6_K) and the constant
            // per unit of the activations' sum.
            let d = _mm256_cvtph_ps(_mm_loadu_si128(block.cast()));
            let (scales, upper_scales, minimums) = match KIND {
                Q4_1 | Q5_1 => (d, d, _mm256_cvtph_ps(_mm_loadu_si128(block.add(16).cast()))),
                Q4K | Q5K => {
                    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(block.add(16).cast()));
                    let scales = _mm256_mul_ps(d, byte_lanes::<false>(block.add(scales_at(kind, sub, 0))));
                    let minimums =
                        _mm256_mul_ps(dmin, byte_lanes::<false>(block.add(minimums_at(kind, sub, 0))));
                    (scales, scales, _mm256_sub_ps(_mm256_setzero_ps(), minimums))
                }
                Q6K | Q3K => (
                    _mm256_mul_ps(d, byte_lanes::<true>(block.add(scales_at(kind, sub, 0)))),
                    _mm256_mul_ps(d, byte_lanes::<true>(block.add(scales_at(kind, sub, 1)))),
                    _mm256_setzero_ps(),
                ),
                IQ4XS => {
                    let scales = _mm256_mul_ps(d, byte_lanes::<true>(block.add(scales_at(kind, sub, 0))));
                    (scales, scales, _mm256_setzero_ps())
                }
                Q2K => (
                    _mm256_mul_ps(d, byte_lanes::<false>(block.add(scales_at(kind, sub, 0)))),
                    _mm256_mul_ps(d, byte_lanes::<false>(block.add(scales_at(kind, sub, 1)))),
                    _mm256_setzero_ps(),
                ),
                _ => (d, d, _mm256_setzero_ps()),
            };
            // Q2_K's minimums of each half, negated and scaled by dmin.
            let half_minimums = if KIND == Q2K {
                let dmin = _mm256_cvtph_ps(_mm_loadu_si128(block.add(16).cast()));
                let minimum =
                    |h| _mm256_mul_ps(dmin, byte_lanes::<false>(block.add(minimums_at(kind, sub, h))));
                [minimum(0), minimum(1)].map(|m| _mm256_sub_ps(_mm256_setzero_ps(), m))
            } else {
                [_mm256_setzero_ps(); 2]
            };
            for i in 0..N {
                let x = inputs[i].get_unchecked(b);
                let x_scale = _mm256_set1_ps(x.d);
                if has_half_scales(KIND) {
                    // Each 16-weight half has its own scale. Weights are q − 32 (Q6_K), q − 4
                    // (Q3_K): that times each half's Σx comes off in integers; Q2_K instead
                    // subtracts each half's scaled minimum times the half's Σx.
                    let (low_sum, high_sum) = (x.low_sum, x.sum - x.low_sum);
                    let offset = half_offset(KIND);
                    let low = _mm256_sub_epi32(sums[i], _mm256_set1_epi32(offset * low_sum));
                    let high = _mm256_sub_epi32(upper[i], _mm256_set1_epi32(offset * high_sum));
                    let low_scale = _mm256_mul_ps(scales, x_scale);
                    let high_scale = _mm256_mul_ps(upper_scales, x_scale);
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(low), low_scale, acc[i]);
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(high), high_scale, acc[i]);
                    if KIND == Q2K {
                        let [low_min, high_min] = half_minimums;
                        acc[i] = _mm256_fmadd_ps(low_min, _mm256_set1_ps(x.d * low_sum as f32), acc[i]);
                        acc[i] = _mm256_fmadd_ps(high_min, _mm256_set1_ps(x.d * high_sum as f32), acc[i]);
                    }
                    continue;
                }
                // Without VNNI, Q8_0's bytes were turned back to signed above, and the IQ4
                // types' levels looked up signed.
                let offset = if (KIND == Q8_0 || has_levels(KIND)) && !VNNI {
                    0
                } else {
                    stored_offset(KIND)
                };
                let dots = match offset {
                    0 => sums[i],
                    offset => _mm256_sub_epi32(sums[i], _mm256_set1_epi32(offset * x.sum)),
                };
                let scale = _mm256_mul_ps(scales, x_scale);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, acc[i]);
                if has_minimum(KIND) {
                    acc[i] = _mm256_fmadd_ps(minimums, _mm256_set1_ps(x.scaled_sum), acc[i]);
                }
            }
        }
        acc
    }
}

/// Every group against `N` inputs starting at input `first`, writing `out[i · rows + r]` for the
/// `rows = out.len() / n` rows (the last group may be cut short): a whole group's 8 results for
/// one input are one contiguous store.
#[inline(always)]
unsafe fn groups_for_inputs<const VNNI: bool, const WIDE: bool, const KIND: u8, const N: usize>(
    packed: &[u8],
    group_bytes: usize,
    inputs: [&[ActivationBlock]; N],
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    let rows = out.len() / n;
    let blocks = inputs[0].len();
    // Pairs of whole groups on 512-bit registers ([`avx512`]) for 2 or more inputs, the
    // rest below. One input reads one group at a time: a matrix-vector product is bound by
    // memory, and one stream per thread reads faster than two (`docs/benchmarks.md`).
    let mut paired = 0;
    if WIDE && N > 1 {
        while (paired + 2) * GROUP <= rows {
            let (one, two) = (
                &packed[paired * group_bytes..],
                &packed[(paired + 1) * group_bytes..],
            );
            // SAFETY: both groups hold `blocks` whole group blocks; WIDE is only set by the
            // caller that enables AVX-512F/BW/VNNI.
            let dots = unsafe { avx512::pair_dots::<KIND, N>(one.as_ptr(), two.as_ptr(), inputs, blocks) };
            for (i, lanes) in dots.iter().enumerate() {
                let target = &mut out[(first + i) * rows + paired * GROUP..][..2 * GROUP];
                // SAFETY: `target` holds the 16 lanes.
                unsafe { _mm512_storeu_ps(target.as_mut_ptr(), *lanes) };
            }
            paired += 2;
        }
    }
    for (g, group) in packed.chunks_exact(group_bytes).enumerate().skip(paired) {
        // SAFETY: `group` holds `blocks` whole group blocks.
        let dots = unsafe { group_dots::<VNNI, KIND, N>(group.as_ptr(), inputs, blocks) };
        let in_group = GROUP.min(rows - g * GROUP);
        for (i, lanes) in dots.iter().enumerate() {
            let target = &mut out[(first + i) * rows + g * GROUP..][..in_group];
            if in_group == GROUP {
                // SAFETY: `target` holds the 8 lanes.
                unsafe { _mm256_storeu_ps(target.as_mut_ptr(), *lanes) };
            } else {
                let mut values = [0f32; GROUP];
                // SAFETY: `values` has room for the 8 lanes.
                unsafe { _mm256_storeu_ps(values.as_mut_ptr(), *lanes) };
                target.copy_from_slice(&values[..in_group]);
            }
        }
    }
}

/// Every group against every activation row, inputs in tiles of up to [`TILE_INPUTS`].
#[inline(always)]
unsafe fn groups_with<const VNNI: bool, const WIDE: bool, const KIND: u8>(
    packed: &[u8],
    group_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    let per_input = x.len() / n;
    let mut first = 0;
    // SAFETY: the caller's features are enabled; inputs have `per_input` blocks each.
    unsafe {
        while first < n {
            let inputs = &x[first * per_input..];
            // The widest tile that fits the inputs left, as a compile-time size.
            macro_rules! tile {
                ($($width:literal)+) => {
                    match (n - first).min(TILE_INPUTS) {
                        $($width => {
                            let tile: [&[ActivationBlock]; $width] =
                                std::array::from_fn(|i| &inputs[i * per_input..(i + 1) * per_input]);
                            groups_for_inputs::<VNNI, WIDE, KIND, $width>(packed, group_bytes, tile, first, n, out);
                            first += $width;
                        })+
                        _ => unreachable!("tile widths cover 1..=TILE_INPUTS"),
                    }
                };
            }
            tile!(1 2 3 4 5 6 7 8);
        }
    }
}

#[inline(always)]
unsafe fn groups_by_kind<const VNNI: bool, const WIDE: bool>(
    kind: WeightType,
    packed: &[u8],
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    let group_bytes = x.len() / n * group_block_bytes(kind);
    // SAFETY: forwarded from the caller.
    unsafe {
        match kind {
            WeightType::Q4_0 => groups_with::<VNNI, WIDE, Q4_0>(packed, group_bytes, x, n, out),
            WeightType::Q4_1 => groups_with::<VNNI, WIDE, Q4_1>(packed, group_bytes, x, n, out),
            WeightType::Q8_0 => groups_with::<VNNI, WIDE, Q8_0>(packed, group_bytes, x, n, out),
            WeightType::Q5_0 => groups_with::<VNNI, WIDE, Q5_0>(packed, group_bytes, x, n, out),
            WeightType::Q5_1 => groups_with::<VNNI, WIDE, Q5_1>(packed, group_bytes, x, n, out),
            WeightType::Q4K => groups_with::<VNNI, WIDE, Q4K>(packed, group_bytes, x, n, out),
            WeightType::Q5K => groups_with::<VNNI, WIDE, Q5K>(packed, group_bytes, x, n, out),
            WeightType::Q6K => groups_with::<VNNI, WIDE, Q6K>(packed, group_bytes, x, n, out),
            WeightType::IQ4NL => groups_with::<VNNI, WIDE, IQ4NL>(packed, group_bytes, x, n, out),
            WeightType::IQ4XS => groups_with::<VNNI, WIDE, IQ4XS>(packed, group_bytes, x, n, out),
            WeightType::Q2K => groups_with::<VNNI, WIDE, Q2K>(packed, group_bytes, x, n, out),
            WeightType::Q3K => groups_with::<VNNI, WIDE, Q3K>(packed, group_bytes, x, n, out),
        }
    }
}

/// See [`super::dot::dot_groups`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `packed` holds whole groups of
/// `x.len() / n` blocks, enough for the `out.len() / n` rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn groups_avx2(kind: WeightType, packed: &[u8], x: &[ActivationBlock], n: usize, out: &mut [f32]) {
    unsafe { groups_by_kind::<false, false>(kind, packed, x, n, out) }
}

/// As [`groups_avx2`], with `vpdpbusd`.
///
/// # Safety
/// As [`groups_avx2`], and the CPU must support AVX-512 VNNI and AVX-512 VL.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn groups_vnni(kind: WeightType, packed: &[u8], x: &[ActivationBlock], n: usize, out: &mut [f32]) {
    unsafe { groups_by_kind::<true, false>(kind, packed, x, n, out) }
}

/// As [`groups_vnni`], with group pairs on 512-bit registers from two inputs ([`avx512`]).
///
/// # Safety
/// As [`groups_vnni`], and the CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni,avx512vl")]
pub unsafe fn groups_vnni512(
    kind: WeightType,
    packed: &[u8],
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    unsafe { groups_by_kind::<true, true>(kind, packed, x, n, out) }
}
