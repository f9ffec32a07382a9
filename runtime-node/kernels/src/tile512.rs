//! Q4_0/Q4_1 on 512-bit registers, on the same interleaved layout as [`super::tile`]: two
//! neighbouring 8-row groups side by side in one register (the first group in lanes 0–7, the
//! second in lanes 8–15; one insert per 32 weight bytes, shared by every input), so one
//! `vpdpbusd` against a broadcast activation dword covers 16 rows, and the per-block scaling of
//! each input runs once per 16 rows instead of once per 8. Batches and prompt chunks, where the
//! integer work bounds the matmul, take half the instructions. Q8_0 stays on 256-bit registers:
//! its work is the `vpdpbusd`s themselves, which 512-bit registers did not speed up on this VM
//! (a pair version measured 0.71 against 0.72 ns per block·row at 8 inputs).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::blocks::{ActivationBlock, WeightType};
use super::interleaved::{group_block_bytes, header_bytes};

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

/// Groups `first` and `second` (`blocks` group blocks each) against `N` activation rows; lane
/// j < 8 of result i is the first group's row j with input i, lane 8 + j the second's row j.
/// `Q4_1` picks the type (else Q4_0).
///
/// # Safety
/// Both groups hold `blocks` whole group blocks, every input at least `blocks` blocks; the CPU
/// has AVX-512F/BW/VNNI and F16C.
#[inline(always)]
pub(super) unsafe fn pair_dots<const Q4_1: bool, const N: usize>(
    first: *const u8,
    second: *const u8,
    inputs: [&[ActivationBlock]; N],
    blocks: usize,
) -> [__m512; N] {
    let kind = if Q4_1 { WeightType::Q4_1 } else { WeightType::Q4_0 };
    let (size, header) = (group_block_bytes(kind), header_bytes(kind));
    // SAFETY (whole function): as the caller promises.
    unsafe {
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..blocks {
            let (one, two) = (first.add(b * size), second.add(b * size));
            super::prefetch_ahead(one, size);
            super::prefetch_ahead(two, size);
            let mut sums = [_mm512_setzero_si512(); N];
            for c in 0..4 {
                let low_group = _mm512_castsi256_si512(_mm256_loadu_si256(one.add(header + 32 * c).cast()));
                let q =
                    _mm512_inserti64x4::<1>(low_group, _mm256_loadu_si256(two.add(header + 32 * c).cast()));
                let low = _mm512_and_si512(q, mask);
                let high = _mm512_and_si512(_mm512_srli_epi16::<4>(q), mask);
                for i in 0..N {
                    let x = inputs[i].get_unchecked(b);
                    sums[i] = _mm512_dpbusd_epi32(sums[i], low, broadcast4(x, c));
                    sums[i] = _mm512_dpbusd_epi32(sums[i], high, broadcast4(x, c + 4));
                }
            }
            let scales = halves(one, two, 0);
            let minimums = if Q4_1 {
                halves(one, two, 16)
            } else {
                _mm512_setzero_ps()
            };
            for i in 0..N {
                let x = inputs[i].get_unchecked(b);
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(x.d));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[i]), scale, acc[i]);
                acc[i] = if Q4_1 {
                    _mm512_fmadd_ps(minimums, _mm512_set1_ps(x.scaled_sum), acc[i])
                } else {
                    _mm512_fmadd_ps(scales, _mm512_set1_ps(-8.0 * x.scaled_sum), acc[i])
                };
            }
        }
        acc
    }
}
