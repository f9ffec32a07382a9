//! `e^x` on 512-bit registers, for softmax ([`crate::attention`]), the SiLU of the
//! feed-forward gate (a scalar `expf` per value cost a few percent of a prompt) and the
//! sampler's weights over the vocabulary.

use std::arch::x86_64::*;

/// `e^x` to about one ulp: `x = n·ln2 + r` with `|r| ≤ ln2/2`, a degree-6 Taylor polynomial
/// for `e^r`, and `scalef` for `2^n`. Inputs below −87.3 give `e^−87.3` (≈1e-38, which neither
/// a softmax sum nor `1 + e^x` can tell from zero) instead of denormals; above ~88.7 the result
/// is +∞, as `expf`'s is.
#[target_feature(enable = "avx512f,avx2,fma")]
pub fn exp(x: __m512) -> __m512 {
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// A mask of the first `n ≤ 16` lanes.
pub fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
}

/// `gate[i] = silu(gate[i]) · up[i]` with `silu(g) = g / (1 + e^−g)`.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "one up value per gate value");
    let one = _mm512_set1_ps(1.0);
    for (g, u) in gate.chunks_mut(16).zip(up.chunks(16)) {
        let mask = lanes(g.len());
        // SAFETY: the mask covers the chunks' `g.len()` values.
        unsafe {
            let gv = _mm512_maskz_loadu_ps(mask, g.as_ptr());
            let uv = _mm512_maskz_loadu_ps(mask, u.as_ptr());
            let negated = _mm512_sub_ps(_mm512_setzero_ps(), gv);
            let silu = _mm512_div_ps(gv, _mm512_add_ps(one, exp(negated)));
            _mm512_mask_storeu_ps(g.as_mut_ptr(), mask, _mm512_mul_ps(silu, uv));
        }
    }
}

/// [`crate::vector::softmax_weights`] on 512-bit registers.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn softmax_weights(x: &[f32], max: f32, scale: f32, out: &mut [f32]) -> f32 {
    assert_eq!(x.len(), out.len(), "one weight per value");
    weigh(x, max, scale, Some(out))
}

/// [`crate::vector::softmax_total`] on 512-bit registers.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn softmax_total(x: &[f32], max: f32, scale: f32) -> f32 {
    weigh(x, max, scale, None)
}

/// The softmax weights of `x` and their sum, the weights stored into `out` when given (as long
/// as `x`).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn weigh(x: &[f32], max: f32, scale: f32, mut out: Option<&mut [f32]>) -> f32 {
    let (max, scale) = (_mm512_set1_ps(max), _mm512_set1_ps(scale));
    let mut total = _mm512_setzero_ps();
    for (chunk, values) in x.chunks(16).enumerate() {
        let mask = lanes(values.len());
        // SAFETY: the mask covers the chunk's `values.len()` values, here and in `out`.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, values.as_ptr());
            // v − v is 0 for a finite value and NaN for ±∞ or NaN.
            let finite =
                _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(mask, _mm512_sub_ps(v, v), _mm512_setzero_ps());
            let e = _mm512_maskz_mov_ps(finite, exp(_mm512_mul_ps(_mm512_sub_ps(v, max), scale)));
            total = _mm512_add_ps(total, e);
            if let Some(out) = out.as_deref_mut() {
                _mm512_mask_storeu_ps(out[16 * chunk..].as_mut_ptr(), mask, e);
            }
        }
    }
    _mm512_reduce_add_ps(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_exp_is_within_two_ulps_down_to_the_clamp() {
        if crate::dot::skip_without_avx512f() {
            return;
        }
        let inputs: Vec<f32> = (0..16 * 700).map(|i| -(i as f32) * 0.0125 + 0.3).collect();
        for chunk in inputs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F was detected above.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (x, e) in chunk.iter().zip(got) {
                let want = f64::from(x.max(-87.3)).exp();
                let relative = (f64::from(e) - want).abs() / want;
                assert!(relative < 2.5e-7, "exp({x}) = {e}, want {want}");
            }
        }
    }

    #[test]
    fn silu_times_up_matches_f64_with_a_tail() {
        if crate::dot::skip_without_avx512f() {
            return;
        }
        // 16 × 60 + 7 values (a masked tail), gates from −100 to 100 (both exp extremes).
        let mut gate: Vec<f32> = (0..967).map(|i| (i as f32 - 483.0) * 0.207).collect();
        let up: Vec<f32> = (0..967).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let expected: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| f64::from(*g) / (1.0 + (-f64::from(*g)).exp()) * f64::from(*u))
            .collect();
        // SAFETY: AVX-512F was detected above.
        unsafe { silu_mul(&mut gate, &up) };
        for (i, (got, want)) in gate.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "value {i}: {got} vs {want}"
            );
        }
    }
}
