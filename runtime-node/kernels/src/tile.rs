//! x86 vector kernels: one weight row × up to 4 activation rows at a time, so each weight block
//! is unpacked once for every activation row while the row streams through memory in order
//! (interleaving the blocks of 4 rows instead, to share activation loads, measured 25-45 %
//! slower decoding: the hardware prefetcher follows one stream per thread far better).
//! Per block and pair the integer dot product is one `vpdpbusd`
//! (AVX-512 VNNI on 256-bit registers) or `vpmaddubsw` + `vpmaddwd` (AVX2), converted to f32
//! and accumulated with the two scales in one FMA; the constant terms of Q4_0 (−8·d_w·Σx) and
//! Q4_1 (m·Σx) are summed in scalar from the activation block's precomputed `d·Σq`.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::blocks::{ActivationBlock, WeightType};

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Activation rows per tile.
const TILE_INPUTS: usize = 4;

/// The f16 at `bytes + at` as f32, with the F16C instruction.
#[inline(always)]
unsafe fn f16_at(bytes: *const u8, at: usize) -> f32 {
    unsafe {
        let bits = bytes.add(at).cast::<u16>().read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// The 32 nibbles of a Q4 block as bytes, low nibbles (weights 0..16) first.
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    unsafe {
        let packed = _mm_loadu_si128(qs.cast());
        let mask = _mm_set1_epi8(0x0F);
        let low = _mm_and_si128(packed, mask);
        let high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        _mm256_set_m128i(high, low)
    }
}

/// Eight i32 partial sums of `Σ u8 · i8` over 32 pairs. With AVX2 the i16 intermediate cannot
/// saturate: 4-bit weights give |pair| ≤ 2·15·128, Q8_0 passes |w| ≤ 128 with |x| ≤ 127.
#[inline(always)]
unsafe fn products<const VNNI: bool>(unsigned: __m256i, signed: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned, signed)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1))
        }
    }
}

#[inline(always)]
unsafe fn horizontal_sum(v: __m256) -> f32 {
    unsafe {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
    }
}

/// One weight row (at `row`) against `N` activation rows (`inputs[i]`, `blocks` blocks each);
/// returns the `N` dot products.
#[inline(always)]
unsafe fn tile<const VNNI: bool, const KIND: u8, const N: usize>(
    row: *const u8,
    inputs: [&[ActivationBlock]; N],
    blocks: usize,
) -> [f32; N] {
    let size = match KIND {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    // SAFETY (whole function): the caller passes a row of `blocks` whole blocks and N inputs
    // of at least `blocks` blocks; the CPU has the features of the calling wrapper.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        let mut constant = [0f32; N];
        for b in 0..blocks {
            let block = row.add(b * size);
            let d = f16_at(block, 0);
            let (weights, offset) = match KIND {
                Q4_0 => (nibbles(block.add(2)), -8.0 * d),
                Q4_1 => (nibbles(block.add(4)), f16_at(block, 2)),
                _ => (_mm256_loadu_si256(block.add(2).cast()), 0.0),
            };
            for i in 0..N {
                let x = inputs[i].get_unchecked(b);
                let xs = _mm256_load_si256(x.qs.as_ptr().cast());
                let sums = if KIND == Q8_0 {
                    // |w| · (x with w's sign) = w · x, with an unsigned left operand.
                    products::<VNNI>(_mm256_sign_epi8(weights, weights), _mm256_sign_epi8(xs, weights))
                } else {
                    products::<VNNI>(weights, xs)
                };
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * x.d), acc[i]);
                if KIND != Q8_0 {
                    constant[i] += offset * x.scaled_sum;
                }
            }
        }
        let mut out = [0f32; N];
        for i in 0..N {
            out[i] = horizontal_sum(acc[i]) + constant[i];
        }
        out
    }
}

/// Tiles over all rows for `N` inputs starting at input `first`, writing `out[r · n + i]`.
#[inline(always)]
unsafe fn rows_for_inputs<const VNNI: bool, const KIND: u8, const N: usize>(
    weights: &[u8],
    row_bytes: usize,
    inputs: [&[ActivationBlock]; N],
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    let blocks = inputs[0].len();
    for (r, row) in weights.chunks_exact(row_bytes).enumerate() {
        // SAFETY: `row` holds `blocks` whole blocks.
        let values = unsafe { tile::<VNNI, KIND, N>(row.as_ptr(), inputs, blocks) };
        out[r * n + first..][..N].copy_from_slice(&values);
    }
}

/// Every weight row against every activation row, inputs in tiles of four.
#[inline(always)]
unsafe fn rows_with<const VNNI: bool, const KIND: u8>(
    weights: &[u8],
    row_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    let per_input = x.len() / n;
    let input = |i: usize| &x[i * per_input..(i + 1) * per_input];
    let mut first = 0;
    // SAFETY: the caller's features are enabled; inputs have `per_input` blocks each.
    unsafe {
        while first + TILE_INPUTS <= n {
            let inputs = [input(first), input(first + 1), input(first + 2), input(first + 3)];
            rows_for_inputs::<VNNI, KIND, TILE_INPUTS>(weights, row_bytes, inputs, first, n, out);
            first += TILE_INPUTS;
        }
        match n - first {
            3 => rows_for_inputs::<VNNI, KIND, 3>(
                weights,
                row_bytes,
                [input(first), input(first + 1), input(first + 2)],
                first,
                n,
                out,
            ),
            2 => rows_for_inputs::<VNNI, KIND, 2>(
                weights,
                row_bytes,
                [input(first), input(first + 1)],
                first,
                n,
                out,
            ),
            1 => rows_for_inputs::<VNNI, KIND, 1>(weights, row_bytes, [input(first)], first, n, out),
            _ => {}
        }
    }
}

#[inline(always)]
unsafe fn rows_by_kind<const VNNI: bool>(
    kind: WeightType,
    weights: &[u8],
    row_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    if n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        match kind {
            WeightType::Q4_0 => rows_with::<VNNI, Q4_0>(weights, row_bytes, x, n, out),
            WeightType::Q4_1 => rows_with::<VNNI, Q4_1>(weights, row_bytes, x, n, out),
            WeightType::Q8_0 => rows_with::<VNNI, Q8_0>(weights, row_bytes, x, n, out),
        }
    }
}

/// See [`super::dot::dot_rows`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `weights` holds whole rows of `row_bytes`, and `x`
/// holds `n` rows of `row_bytes / block_bytes` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_avx2(
    kind: WeightType,
    weights: &[u8],
    row_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    unsafe { rows_by_kind::<false>(kind, weights, row_bytes, x, n, out) }
}

/// As [`rows_avx2`], with `vpdpbusd`.
///
/// # Safety
/// As [`rows_avx2`], and the CPU must support AVX-512 VNNI and AVX-512 VL.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn rows_vnni(
    kind: WeightType,
    weights: &[u8],
    row_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    unsafe { rows_by_kind::<true>(kind, weights, row_bytes, x, n, out) }
}
