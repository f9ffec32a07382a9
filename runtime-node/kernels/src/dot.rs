//! Dot products of one row of quantized weight blocks with 8-bit activation blocks, summed in
//! integers per block and scaled in f32 (as llama.cpp does): a portable scalar version (the
//! definition) and an AVX2 version chosen at run time.

use super::blocks::{ActivationBlock, BLOCK, WeightType, read_f16};

/// `Σ_blocks` of the row's blocks with `x`, with the fastest implementation this CPU has.
#[inline]
pub fn dot(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
    dot_at(simd_level(), kind, row, x)
}

/// [`dot`] with the instruction set `level`, which must not exceed what [`available`] lists
/// (falls back to scalar code otherwise).
#[inline]
pub fn dot_at(level: Simd, kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        let detected = detect("");
        match level {
            // SAFETY: the features each path needs were detected on this CPU.
            Simd::Vnni if detected == Simd::Vnni => return unsafe { avx2::dot_vnni(kind, row, x) },
            Simd::Avx2 if detected != Simd::None => return unsafe { avx2::dot_avx2(kind, row, x) },
            _ => {}
        }
    }
    dot_scalar(kind, row, x)
}

/// `out[r · n + i] = dot(row r, x_i)` for every weight row in `weights` (`row_bytes` each)
/// and each of the `n` activation rows in `x`: the loop a matmul task runs, dispatched once.
pub fn dot_rows(
    level: Simd,
    kind: WeightType,
    weights: &[u8],
    row_bytes: usize,
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let detected = detect("");
        match level {
            // SAFETY: the features each path needs were detected on this CPU.
            Simd::Vnni if detected == Simd::Vnni => {
                return unsafe { avx2::rows_vnni(kind, weights, row_bytes, x, n, out) };
            }
            Simd::Avx2 if detected != Simd::None => {
                return unsafe { avx2::rows_avx2(kind, weights, row_bytes, x, n, out) };
            }
            _ => {}
        }
    }
    let per_input = x.len() / n.max(1);
    for (row_out, row) in out.chunks_exact_mut(n).zip(weights.chunks_exact(row_bytes)) {
        for (value, input) in row_out.iter_mut().zip(x.chunks_exact(per_input)) {
            *value = dot_scalar(kind, row, input);
        }
    }
}

/// Every instruction set this CPU runs, best first (for tests that check each path).
pub fn available() -> Vec<Simd> {
    match detect("") {
        Simd::Vnni => vec![Simd::Vnni, Simd::Avx2, Simd::None],
        Simd::Avx2 => vec![Simd::Avx2, Simd::None],
        Simd::None => vec![Simd::None],
    }
}

/// The vector instruction sets the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512 VNNI (`vpdpbusd` on 256-bit registers) with AVX2, FMA and F16C.
    Vnni,
    /// AVX2, FMA and F16C.
    Avx2,
    /// Portable scalar code.
    None,
}

/// The best instruction set on this CPU (detected once). `HEARTH_KERNELS=avx2|scalar` caps it,
/// for comparing paths.
pub fn simd_level() -> Simd {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("HEARTH_KERNELS").unwrap_or_default();
        detect(&cap)
    })
}

#[cfg(target_arch = "x86_64")]
fn detect(cap: &str) -> Simd {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let vnni = avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
    match cap {
        "scalar" => Simd::None,
        "avx2" if avx2 => Simd::Avx2,
        _ if vnni => Simd::Vnni,
        _ if avx2 => Simd::Avx2,
        _ => Simd::None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(_cap: &str) -> Simd {
    Simd::None
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

    use super::{ActivationBlock, WeightType};

    /// The f16 at `bytes[at..at + 2]` as f32, with the F16C instruction.
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

    /// Eight i32 partial sums of `Σ u8 · i8` over 32 pairs: one `vpdpbusd` with VNNI, else
    /// `vpmaddubsw` + `vpmaddwd` (no i16 saturation here: |u8 · i8| pairs stay below 2^15 for
    /// the 4-bit weights, and Q8_0 passes |w| ≤ 127).
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

    /// One block's integer sums, its combined scale, and its constant term (Q4_0's −8·d·Σx,
    /// Q4_1's m·d_x·Σx).
    #[inline(always)]
    unsafe fn block<const VNNI: bool>(
        kind: WeightType,
        block: *const u8,
        a: &ActivationBlock,
    ) -> (__m256i, f32, f32) {
        unsafe {
            let xs = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let d = f16_at(block, 0) * a.d;
            match kind {
                WeightType::Q4_0 => (
                    products::<VNNI>(nibbles(block.add(2)), xs),
                    d,
                    -8.0 * f16_at(block, 0) * a.scaled_sum,
                ),
                WeightType::Q4_1 => (
                    products::<VNNI>(nibbles(block.add(4)), xs),
                    d,
                    f16_at(block, 2) * a.scaled_sum,
                ),
                WeightType::Q8_0 => {
                    let ws = _mm256_loadu_si256(block.add(2).cast());
                    // |w| · (x with w's sign) = w · x, with an unsigned left operand.
                    (
                        products::<VNNI>(_mm256_sign_epi8(ws, ws), _mm256_sign_epi8(xs, ws)),
                        d,
                        0.0,
                    )
                }
            }
        }
    }

    /// Two blocks per iteration into two accumulators, so consecutive FMAs do not wait on
    /// each other.
    #[inline(always)]
    unsafe fn dot_with<const VNNI: bool>(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
        let size = kind.block_bytes();
        let blocks = (row.len() / size).min(x.len());
        let base = row.as_ptr();
        // SAFETY: every block index is below `blocks`, within both slices.
        unsafe {
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut constant = 0f32;
            let mut i = 0;
            while i + 1 < blocks {
                let (s0, d0, c0) = block::<VNNI>(kind, base.add(i * size), &x[i]);
                let (s1, d1, c1) = block::<VNNI>(kind, base.add((i + 1) * size), &x[i + 1]);
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d0), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(d1), acc1);
                constant += c0 + c1;
                i += 2;
            }
            if i < blocks {
                let (s0, d0, c0) = block::<VNNI>(kind, base.add(i * size), &x[i]);
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d0), acc0);
                constant += c0;
            }
            horizontal_sum(_mm256_add_ps(acc0, acc1)) + constant
        }
    }

    /// Every weight row against every activation row (see [`super::dot_rows`]).
    #[inline(always)]
    unsafe fn rows_with<const VNNI: bool>(
        kind: WeightType,
        weights: &[u8],
        row_bytes: usize,
        x: &[ActivationBlock],
        n: usize,
        out: &mut [f32],
    ) {
        let per_input = x.len() / n.max(1);
        for (row_out, row) in out.chunks_exact_mut(n).zip(weights.chunks_exact(row_bytes)) {
            for (value, input) in row_out.iter_mut().zip(x.chunks_exact(per_input)) {
                // SAFETY: the caller's features are enabled.
                *value = unsafe { dot_with::<VNNI>(kind, row, input) };
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows_avx2(
        kind: WeightType,
        weights: &[u8],
        row_bytes: usize,
        x: &[ActivationBlock],
        n: usize,
        out: &mut [f32],
    ) {
        unsafe { rows_with::<false>(kind, weights, row_bytes, x, n, out) }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512 VNNI and AVX-512 VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn rows_vnni(
        kind: WeightType,
        weights: &[u8],
        row_bytes: usize,
        x: &[ActivationBlock],
        n: usize,
        out: &mut [f32],
    ) {
        unsafe { rows_with::<true>(kind, weights, row_bytes, x, n, out) }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_avx2(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
        unsafe { dot_with::<false>(kind, row, x) }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512 VNNI and AVX-512 VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn dot_vnni(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
        unsafe { dot_with::<true>(kind, row, x) }
    }
}
