//! Every quantized type on 512-bit registers, on the interleaved layout of [`super`]: two
//! neighbouring 8-row groups side by side in one register (the first group in lanes 0–7, the
//! second in lanes 8–15; one insert per 32 weight bytes, shared by every input), so one
//! `vpdpbusd` against a broadcast activation dword covers 16 rows, and the per-block scaling of
//! each input runs once per 16 rows instead of once per 8. Batches and prompt chunks, where the
//! integer work bounds the matmul, take half the instructions. Q8_0 joined once its weights were
//! stored unsigned (w + 128): with the sign trick its work was the per-input `vpsignb`s, and
//! pairs gained nothing (0.71 against 0.72 ns per block·row at 8 inputs); now 0.23–0.25 against
//! 0.26–0.28 on 256-bit registers.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{
    IQ4XS, Q2K, Q3K, Q4_1, Q4K, Q5_1, Q5K, Q6K, Q8_0, half_offset, has_fifth_bit, has_half_scales,
    has_levels, has_minimum, has_two_bit_planes, kind_of, level_table, stored_offset,
};
use crate::blocks::ActivationBlock;
use crate::interleaved::{fifth_bits_at, locate, minimums_at, scales_at};

/// Activation bytes `4c..4c + 4` of `x` in every i32 lane.
#[inline(always)]
unsafe fn broadcast4(x: &ActivationBlock, c: usize) -> __m512i {
    unsafe { _mm512_set1_epi32(x.qs.as_ptr().add(4 * c).cast::<i32>().read_unaligned()) }
}

/// 16 bytes from each group at `offset`, as the 16 lanes' f32 values (scales or minimums).
#[inline(always)]
unsafe fn halves(first: *const u8, second: *const u8, offset: usize) -> __m512 {
    unsafe {
        let low = _mm256_castsi128_si256(_mm_loadu_si128(first.add(offset).cast()));
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
            low,
            _mm_loadu_si128(second.add(offset).cast()),
        ))
    }
}

/// 8 bytes from each group at `offset` (sub-block scales), widened to the 16 lanes' f32 values.
#[inline(always)]
unsafe fn byte_halves<const SIGNED: bool>(first: *const u8, second: *const u8, offset: usize) -> __m512 {
    unsafe {
        let low = _mm_loadl_epi64(first.add(offset).cast());
        let bytes = _mm_unpacklo_epi64(low, _mm_loadl_epi64(second.add(offset).cast()));
        _mm512_cvtepi32_ps(if SIGNED {
            _mm512_cvtepi8_epi32(bytes)
        } else {
            _mm512_cvtepu8_epi32(bytes)
        })
    }
}

/// 32 bytes from each group at `offset`, side by side.
#[inline(always)]
unsafe fn pair_load(first: *const u8, second: *const u8, offset: usize) -> __m512i {
    unsafe {
        let low = _mm512_castsi256_si512(_mm256_loadu_si256(first.add(offset).cast()));
        _mm512_inserti64x4::<1>(low, _mm256_loadu_si256(second.add(offset).cast()))
    }
}

/// Q6_K's top 2 bits of chunk `c` moved to bits 4–5 (see `tile::q6k_top_bits`).
#[inline(always)]
unsafe fn q6k_top_bits(plane: __m512i, c: usize) -> __m512i {
    // SAFETY: the caller's CPU has AVX-512BW.
    unsafe {
        let moved = match c {
            0 => plane,
            1 => _mm512_srli_epi16::<2>(plane),
            2 => _mm512_slli_epi16::<4>(plane),
            _ => _mm512_slli_epi16::<2>(plane),
        };
        _mm512_and_si512(moved, _mm512_set1_epi8(0x30))
    }
}

/// Groups `first` and `second` (`blocks` blocks each) against `N` activation rows; lane j < 8
/// of result i is the first group's row j with input i, lane 8 + j the second's row j. `KIND`
/// is one of [`super`]'s type constants (the layout of each: [`super::interleaved`]).
///
/// # Safety
/// Both groups hold `blocks` whole blocks, every input at least `blocks` blocks; the CPU has
/// AVX-512F/BW/VNNI and F16C.
#[inline(always)]
pub(super) unsafe fn pair_dots<const KIND: u8, const N: usize>(
    first: *const u8,
    second: *const u8,
    inputs: [&[ActivationBlock]; N],
    blocks: usize,
) -> [__m512; N] {
    let kind = kind_of(KIND);
    // SAFETY (whole function): as the caller promises.
    unsafe {
        let nibble = _mm512_set1_epi8(0x0F);
        // The IQ4 types' levels +128, unsigned as `vpdpbusd` takes them (see `tile`).
        let levels = _mm512_broadcast_i32x4(_mm_loadu_si128(level_table::<true>().as_ptr().cast()));
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..blocks {
            let (start, sub, weights) = locate(kind, b);
            let (one, two) = (first.add(start), second.add(start));
            let quants = weights - start;
            crate::prefetch_group_block(kind, first, b);
            crate::prefetch_group_block(kind, second, b);
            let mut sums = [_mm512_setzero_si512(); N];
            let mut upper = [_mm512_setzero_si512(); N];
            let (fifth_bits, fifth_low) = if has_fifth_bit(KIND) {
                let bits = pair_load(first, second, fifth_bits_at(kind, start, weights));
                (bits, _mm512_slli_epi16::<4>(bits))
            } else {
                (_mm512_setzero_si512(), _mm512_setzero_si512())
            };
            if has_two_bit_planes(KIND) {
                // Two planes of 2-bit weights (halves 0 and 1): chunk c at bits 2c of each byte;
                // Q3_K's third bits at bit c (half 0) and 4 + c (half 1) of a third plane.
                let (first, second) = (pair_load(one, two, quants), pair_load(one, two, quants + 32));
                let (third_low, third_high) = if KIND == Q3K {
                    let bits = pair_load(one, two, quants + 64);
                    (_mm512_slli_epi16::<2>(bits), _mm512_srli_epi16::<2>(bits))
                } else {
                    (_mm512_setzero_si512(), _mm512_setzero_si512())
                };
                let (two_bits, third_bit) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
                for c in 0..4 {
                    let count = _mm_cvtsi32_si128(2 * c as i32);
                    let mut low = _mm512_and_si512(_mm512_srl_epi16(first, count), two_bits);
                    let mut high = _mm512_and_si512(_mm512_srl_epi16(second, count), two_bits);
                    if KIND == Q3K {
                        let count = _mm_cvtsi32_si128(c as i32);
                        low = _mm512_or_si512(
                            low,
                            _mm512_and_si512(_mm512_srl_epi16(third_low, count), third_bit),
                        );
                        high = _mm512_or_si512(
                            high,
                            _mm512_and_si512(_mm512_srl_epi16(third_high, count), third_bit),
                        );
                    }
                    for i in 0..N {
                        let x = inputs[i].get_unchecked(b);
                        sums[i] = _mm512_dpbusd_epi32(sums[i], low, broadcast4(x, c));
                        upper[i] = _mm512_dpbusd_epi32(upper[i], high, broadcast4(x, c + 4));
                    }
                }
            } else if KIND == Q8_0 {
                // Stored as w + 128: unsigned, as `vpdpbusd` takes it.
                for c in 0..8 {
                    let biased = pair_load(one, two, quants + 32 * c);
                    for i in 0..N {
                        let x = inputs[i].get_unchecked(b);
                        sums[i] = _mm512_dpbusd_epi32(sums[i], biased, broadcast4(x, c));
                    }
                }
            } else {
                for c in 0..4 {
                    let q = pair_load(one, two, quants + 32 * c);
                    let mut low = _mm512_and_si512(q, nibble);
                    let mut high = _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble);
                    if has_fifth_bit(KIND) {
                        let count = _mm_cvtsi32_si128(c as i32);
                        let bit = _mm512_set1_epi8(0x10);
                        low = _mm512_or_si512(low, _mm512_and_si512(_mm512_srl_epi16(fifth_low, count), bit));
                        high =
                            _mm512_or_si512(high, _mm512_and_si512(_mm512_srl_epi16(fifth_bits, count), bit));
                    }
                    if KIND == Q6K {
                        low = _mm512_or_si512(low, q6k_top_bits(pair_load(one, two, quants + 128), c));
                        high = _mm512_or_si512(high, q6k_top_bits(pair_load(one, two, quants + 160), c));
                    }
                    if has_levels(KIND) {
                        low = _mm512_shuffle_epi8(levels, low);
                        high = _mm512_shuffle_epi8(levels, high);
                    }
                    for i in 0..N {
                        let x = inputs[i].get_unchecked(b);
                        sums[i] = _mm512_dpbusd_epi32(sums[i], low, broadcast4(x, c));
                        if KIND == Q6K {
                            upper[i] = _mm512_dpbusd_epi32(upper[i], high, broadcast4(x, c + 4));
                        } else {
                            sums[i] = _mm512_dpbusd_epi32(sums[i], high, broadcast4(x, c + 4));
                        }
                    }
                }
            }
            let d = halves(one, two, 0);
            let (scales, upper_scales, minimums) = match KIND {
                Q4_1 | Q5_1 => (d, d, halves(one, two, 16)),
                Q4K | Q5K => {
                    let scales = _mm512_mul_ps(d, byte_halves::<false>(one, two, scales_at(kind, sub, 0)));
                    let minimums = _mm512_mul_ps(
                        halves(one, two, 16),
                        byte_halves::<false>(one, two, minimums_at(kind, sub, 0)),
                    );
                    (scales, scales, _mm512_sub_ps(_mm512_setzero_ps(), minimums))
                }
                Q6K | Q3K => (
                    _mm512_mul_ps(d, byte_halves::<true>(one, two, scales_at(kind, sub, 0))),
                    _mm512_mul_ps(d, byte_halves::<true>(one, two, scales_at(kind, sub, 1))),
                    _mm512_setzero_ps(),
                ),
                IQ4XS => {
                    let scales = _mm512_mul_ps(d, byte_halves::<true>(one, two, scales_at(kind, sub, 0)));
                    (scales, scales, _mm512_setzero_ps())
                }
                Q2K => (
                    _mm512_mul_ps(d, byte_halves::<false>(one, two, scales_at(kind, sub, 0))),
                    _mm512_mul_ps(d, byte_halves::<false>(one, two, scales_at(kind, sub, 1))),
                    _mm512_setzero_ps(),
                ),
                _ => (d, d, _mm512_setzero_ps()),
            };
            // Q2_K's minimums of each half, negated and scaled by dmin.
            let half_minimums = if KIND == Q2K {
                let dmin = halves(one, two, 16);
                let minimum =
                    |h| _mm512_mul_ps(dmin, byte_halves::<false>(one, two, minimums_at(kind, sub, h)));
                [minimum(0), minimum(1)].map(|m| _mm512_sub_ps(_mm512_setzero_ps(), m))
            } else {
                [_mm512_setzero_ps(); 2]
            };
            for i in 0..N {
                let x = inputs[i].get_unchecked(b);
                let x_scale = _mm512_set1_ps(x.d);
                if has_half_scales(KIND) {
                    // As in `tile`: each half's offset or scaled minimum times the half's Σx.
                    let (low_sum, high_sum) = (x.low_sum, x.sum - x.low_sum);
                    let offset = half_offset(KIND);
                    let low = _mm512_sub_epi32(sums[i], _mm512_set1_epi32(offset * low_sum));
                    let high = _mm512_sub_epi32(upper[i], _mm512_set1_epi32(offset * high_sum));
                    let low_scale = _mm512_mul_ps(scales, x_scale);
                    let high_scale = _mm512_mul_ps(upper_scales, x_scale);
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(low), low_scale, acc[i]);
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(high), high_scale, acc[i]);
                    if KIND == Q2K {
                        let [low_min, high_min] = half_minimums;
                        acc[i] = _mm512_fmadd_ps(low_min, _mm512_set1_ps(x.d * low_sum as f32), acc[i]);
                        acc[i] = _mm512_fmadd_ps(high_min, _mm512_set1_ps(x.d * high_sum as f32), acc[i]);
                    }
                    continue;
                }
                let dots = match stored_offset(KIND) {
                    0 => sums[i],
                    offset => _mm512_sub_epi32(sums[i], _mm512_set1_epi32(offset * x.sum)),
                };
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(scales, x_scale), acc[i]);
                if has_minimum(KIND) {
                    acc[i] = _mm512_fmadd_ps(minimums, _mm512_set1_ps(x.scaled_sum), acc[i]);
                }
            }
        }
        acc
    }
}
