//! Small f32 vector loops of the decode step (attention's dot products and weighted sums,
//! activation quantization), compiled twice: for the baseline target and with AVX2 + FMA,
//! picked at run time. The code is the same plain Rust; the wider instruction set lets the
//! compiler use 8-lane FMAs and `vroundps` instead of 4-lane SSE and a `roundf` call.

use super::blocks::{ActivationBlock, BLOCK};

/// `Σ a·b` (over the shorter length).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// `y += a·x` (over the shorter length).
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { axpy_avx2(y, a, x) };
        }
    }
    axpy_portable(y, a, x);
}

/// How a key/value cache stores its numbers: `f32`, or IEEE half floats (`half::f16`: half the
/// memory, and half the bytes attention reads per step, which bound batched decoding).
pub trait KvElement: Copy + Default + Send + Sync + 'static {
    /// `out[i] = row[i]` as f32 (same lengths).
    fn widen(row: &[Self], out: &mut [f32]);
    /// `row[i] = values[i]`, rounded to this type (same lengths).
    fn narrow(values: &[f32], row: &mut [Self]);
    /// Sixteen values from `at` in one 512-bit register.
    ///
    /// # Safety
    /// Sixteen values must be readable at `at`; the caller must run with AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(at: *const Self) -> std::arch::x86_64::__m512;
}

impl KvElement for f32 {
    fn widen(row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(row);
    }

    fn narrow(values: &[f32], row: &mut [f32]) {
        row.copy_from_slice(values);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(at: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(at) }
    }
}

impl KvElement for half::f16 {
    fn widen(row: &[half::f16], out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        row.convert_to_f32_slice(out);
    }

    fn narrow(values: &[f32], row: &mut [half::f16]) {
        use half::slice::HalfFloatSliceExt;
        row.convert_from_f32_slice(values);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(at: *const half::f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded from the caller; AVX-512F includes the 16-wide half conversion.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(at.cast())) }
    }
}

/// `gate[i] = silu(gate[i]) · up[i]`, the feed-forward activation (`silu(g) = g / (1 + e^−g)`).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dot::has_avx512f() {
            // SAFETY: AVX-512F was detected.
            return unsafe { crate::exp512::silu_mul(gate, up) };
        }
    }
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `out[i] = e^((x[i] − max) · scale)` for every finite `x[i]` and 0 for the others (a
/// softmax's unnormalised weights: `max` the largest finite value, `scale` one over the
/// temperature); returns their sum.
pub fn softmax_weights(x: &[f32], max: f32, scale: f32, out: &mut Vec<f32>) -> f32 {
    out.clear();
    out.resize(x.len(), 0.0);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dot::has_avx512f() {
            // SAFETY: AVX-512F was detected.
            return unsafe { crate::exp512::softmax_weights(x, max, scale, out) };
        }
    }
    let mut total = 0.0;
    for (w, v) in out.iter_mut().zip(x) {
        if v.is_finite() {
            *w = ((v - max) * scale).exp();
            total += *w;
        }
    }
    total
}

/// The sum [`softmax_weights`] returns, without writing the weights (a log-sum-exp needs only
/// the sum).
pub fn softmax_total(x: &[f32], max: f32, scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dot::has_avx512f() {
            // SAFETY: AVX-512F was detected.
            return unsafe { crate::exp512::softmax_total(x, max, scale) };
        }
    }
    x.iter()
        .filter(|v| v.is_finite())
        .map(|v| ((v - max) * scale).exp())
        .sum()
}

/// [`crate::blocks::quantize_activations`] with the fastest code this CPU runs, split across
/// the worker pool when `x` is long (a prompt chunk's rows).
pub fn quantize(x: &[f32], out: &mut Vec<ActivationBlock>) {
    const BLOCKS_PER_TASK: usize = 256;
    let blocks = x.len() / BLOCK;
    out.clear();
    out.resize(blocks, ActivationBlock::ZERO);
    if blocks >= 4 * BLOCKS_PER_TASK {
        crate::pool::global().for_each_chunk(out, BLOCKS_PER_TASK, &|task, piece| {
            quantize_slice(&x[task * BLOCKS_PER_TASK * BLOCK..], piece);
        });
    } else {
        quantize_slice(x, out);
    }
}

/// Quantizes the first `out.len()` blocks of `x` into `out`.
fn quantize_slice(x: &[f32], out: &mut [ActivationBlock]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dot::has_avx512f() {
            // SAFETY: AVX-512F was detected.
            return unsafe { crate::quantize512::quantize_slice(x, out) };
        }
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { quantize_slice_avx2(x, out) };
        }
    }
    quantize_slice_with(x, out);
}

#[inline(always)]
fn quantize_slice_with(x: &[f32], out: &mut [ActivationBlock]) {
    for (block, chunk) in out.iter_mut().zip(x.chunks_exact(BLOCK)) {
        *block = crate::blocks::quantize_block(chunk);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    crate::dot::simd_level() != crate::dot::Simd::None
}

/// `a·b + c`, fused where the CPU has FMA (without it `mul_add` is a slow library call).
#[inline(always)]
fn multiply_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Eight independent accumulators, so the sum vectorizes without reassociation.
#[inline(always)]
pub(crate) fn dot_with<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_body, b_body) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_body
        .remainder()
        .iter()
        .zip(b_body.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_body.zip(b_body) {
        for i in 0..8 {
            lanes[i] = multiply_add::<FMA>(x[i], y[i], lanes[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn axpy_with<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = multiply_add::<FMA>(a, *x, *y);
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_with::<false>(a, b)
}

fn axpy_portable(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_with::<false>(y, a, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_with::<true>(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_with::<true>(y, a, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_slice_avx2(x: &[f32], out: &mut [ActivationBlock]) {
    quantize_slice_with(x, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_loops_match_plain_arithmetic_with_tails() {
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..67).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-5);
        let mut y = b.clone();
        axpy(&mut y, 0.5, &a);
        for ((y, a), b) in y.iter().zip(&a).zip(&b) {
            assert!((y - (b + 0.5 * a)).abs() < 1e-6);
        }
        // Long enough to be split across the pool.
        let x: Vec<f32> = (0..40_000).map(|i| (i % 97) as f32 - 48.5).collect();
        let (mut fast, mut plain) = (Vec::new(), Vec::new());
        quantize(&x, &mut fast);
        crate::blocks::quantize_activations(&x, &mut plain);
        assert_eq!(fast.len(), x.len() / BLOCK);
        for (f, p) in fast.iter().zip(&plain) {
            assert_eq!((f.qs, f.d, f.sum, f.low_sum), (p.qs, p.d, p.sum, p.low_sum));
        }
    }

    #[test]
    fn softmax_weights_match_f64_and_zero_the_non_finite() {
        // 37 values: two full registers and a tail; infinities and a NaN among them.
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.73).sin() * 12.0).collect();
        x[3] = f32::NEG_INFINITY;
        x[20] = f32::INFINITY;
        x[36] = f32::NAN;
        let max = x
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::MIN, f32::max);
        let scale = 1.0 / 0.7;
        let mut weights = vec![9.0; 3];
        let total = softmax_weights(&x, max, scale, &mut weights);
        assert_eq!(weights.len(), x.len());
        let mut exact_total = 0.0;
        for (w, v) in weights.iter().zip(&x) {
            let exact = if v.is_finite() {
                ((f64::from(*v) - f64::from(max)) * f64::from(scale)).exp()
            } else {
                0.0
            };
            exact_total += exact;
            // The f32 argument's rounding (relative 2^-24 of its size) comes out of `exp` as a
            // relative error of that size, plus the polynomial's own ~1 ulp.
            let argument = (f64::from(*v) - f64::from(max)) * f64::from(scale);
            let tolerance = if v.is_finite() {
                (2.5e-7 + argument.abs() * 1.2e-7) * exact
            } else {
                0.0
            };
            assert!(
                (f64::from(*w) - exact).abs() <= tolerance,
                "{v}: {w} against {exact}"
            );
        }
        assert!((f64::from(total) - exact_total).abs() < 1e-5 * exact_total);
        let sum_only = softmax_total(&x, max, scale);
        assert!((f64::from(sum_only) - exact_total).abs() < 1e-5 * exact_total);
    }
}
