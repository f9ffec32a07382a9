//! Dot products of one row of quantized weight blocks with 8-bit activation blocks, summed in
//! integers per block and scaled in f32 (as llama.cpp does): a portable scalar version (the
//! definition) and an AVX2 version chosen at run time.

use super::blocks::{ActivationBlock, BLOCK, WeightType, read_f16};

/// `Σ_blocks` of the row's blocks with `x`, with the fastest implementation this CPU has.
#[inline]
pub fn dot(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected on this CPU.
            return unsafe { avx2::dot(kind, row, x) };
        }
    }
    dot_scalar(kind, row, x)
}

/// Whether the AVX2 path runs here (cached after the first check).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// The portable definition.
pub fn dot_scalar(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
    let mut total = 0f32;
    for (block, a) in row.chunks_exact(kind.block_bytes()).zip(x) {
        let d = read_f16(block, 0);
        match kind {
            WeightType::Q4_0 | WeightType::Q4_1 => {
                let qs = if kind == WeightType::Q4_0 {
                    &block[2..18]
                } else {
                    &block[4..20]
                };
                let mut products = 0i32;
                for (i, byte) in qs.iter().enumerate() {
                    products += i32::from(byte & 0x0F) * i32::from(a.qs[i])
                        + i32::from(byte >> 4) * i32::from(a.qs[i + BLOCK / 2]);
                }
                total += match kind {
                    WeightType::Q4_0 => d * a.d * (products - 8 * a.sum) as f32,
                    _ => d * a.d * products as f32 + read_f16(block, 2) * a.d * a.sum as f32,
                };
            }
            WeightType::Q8_0 => {
                let products: i32 = block[2..34]
                    .iter()
                    .zip(&a.qs)
                    .map(|(w, x)| i32::from(*w as i8) * i32::from(*x))
                    .sum();
                total += d * a.d * products as f32;
            }
        }
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ActivationBlock, WeightType, read_f16};

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

    /// Eight i32 partial sums of `Σ u8 · i8` over 32 pairs.
    #[inline(always)]
    unsafe fn products(unsigned: __m256i, signed: __m256i) -> __m256i {
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1)) }
    }

    #[inline(always)]
    unsafe fn horizontal_sum(v: __m256) -> f32 {
        unsafe {
            let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
            _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `row` holds whole blocks of `kind`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        // The per-block constant terms (Q4_0's −8·Σx, Q4_1's m·Σx), summed in scalar.
        let mut constant = 0f32;
        for (block, a) in row.chunks_exact(kind.block_bytes()).zip(x) {
            let d = read_f16(block, 0) * a.d;
            // SAFETY: `a.qs` is 32 bytes; the block slices are whole blocks.
            unsafe {
                let xs = _mm256_loadu_si256(a.qs.as_ptr().cast());
                let sums = match kind {
                    WeightType::Q4_0 => {
                        constant -= 8.0 * d * a.sum as f32;
                        products(nibbles(block.as_ptr().add(2)), xs)
                    }
                    WeightType::Q4_1 => {
                        constant += read_f16(block, 2) * a.d * a.sum as f32;
                        products(nibbles(block.as_ptr().add(4)), xs)
                    }
                    WeightType::Q8_0 => {
                        let ws = _mm256_loadu_si256(block.as_ptr().add(2).cast());
                        // |w| · (x with w's sign) = w · x, with an unsigned left operand.
                        products(_mm256_sign_epi8(ws, ws), _mm256_sign_epi8(xs, ws))
                    }
                };
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d), acc);
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { horizontal_sum(acc) + constant }
    }
}
