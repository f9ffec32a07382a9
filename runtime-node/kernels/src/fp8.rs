//! 8-bit floats for the KV cache (`--kv-cache-dtype fp8`): OCP FP8 E4M3 (a sign, 4 exponent
//! bits with bias 7, 3 mantissa bits; largest finite value 448, `S.1111.111` is NaN and there are
//! no infinities), stored without a scale as vLLM's uncalibrated `fp8` cache does. A quarter of
//! f32's bytes and half of f16's: twice the cached tokens in the same memory. It saves memory,
//! not time: where attention is bound by its arithmetic as much as by its reads, widening costs
//! a few instructions where f16 needs one (`docs/benchmarks.md`).
//!
//! Rounding is to nearest, ties to even; magnitudes past 448 saturate to 448. Widening is exact.
//! On AVX-512 sixteen values widen in a few instructions: each byte moved to the top of a 16-bit
//! lane and shifted right by one (arithmetic, then the copied sign bit cleared) puts its exponent
//! and mantissa in a half float's fields, where it reads as the same number divided by 2⁸ (the
//! biases differ by 8, subnormals included): one half-float conversion and a multiply by 256.

use super::vector::KvElement;

/// One E4M3 value (its bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Fp8E4M3(pub u8);

/// Largest finite E4M3 magnitude.
pub const MAX: f32 = 448.0;

/// The value of each of the 256 bit patterns.
static VALUES: [f32; 256] = {
    let mut table = [0f32; 256];
    let mut bits = 0;
    while bits < 256 {
        table[bits] = decode(bits as u8);
        bits += 1;
    }
    table
};

/// The definition: `(−1)^s · 2^(e−7) · 1.m` for `e > 0`, `(−1)^s · 2^−6 · 0.m` for `e = 0`.
const fn decode(bits: u8) -> f32 {
    let exponent = (bits >> 3) & 0xF;
    let mantissa = (bits & 0x7) as u32;
    let magnitude = if exponent == 0xF && mantissa == 0x7 {
        f32::NAN
    } else if exponent == 0 {
        // m · 2⁻⁹, exact in f32.
        mantissa as f32 * f32::from_bits((127 - 9) << 23)
    } else {
        f32::from_bits(((exponent as u32 + 127 - 7) << 23) | (mantissa << 20))
    };
    if bits & 0x80 != 0 { -magnitude } else { magnitude }
}

impl Fp8E4M3 {
    /// The nearest E4M3 value to `x` (ties to even, saturating at ±448; NaN stays NaN).
    pub fn from_f32(x: f32) -> Self {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let magnitude = x.abs();
        if magnitude.is_nan() {
            return Self(sign | 0x7F);
        }
        let code = if magnitude < f32::from_bits((127 - 6) << 23) {
            // Subnormal range (below 2⁻⁶): steps of 2⁻⁹; 8 steps is the smallest normal, code 8.
            (magnitude * 512.0).round_ties_even() as u8
        } else if magnitude >= MAX {
            0x7E
        } else {
            let bits = magnitude.to_bits();
            let exponent = (bits >> 23) as i32 - 127 + 7;
            let kept = (bits >> 20) & 0x7;
            let rest = bits & 0xF_FFFF;
            let up = rest > 0x8_0000 || (rest == 0x8_0000 && kept & 1 == 1);
            // A carry out of the mantissa moves to the next exponent, as the bits line up.
            ((((exponent as u32) << 3) | kept) + u32::from(up)).min(0x7E) as u8
        };
        Self(sign | code)
    }

    /// The exact value.
    pub fn to_f32(self) -> f32 {
        VALUES[self.0 as usize]
    }
}

impl KvElement for Fp8E4M3 {
    fn widen(row: &[Self], out: &mut [f32]) {
        for (value, stored) in out.iter_mut().zip(row) {
            *value = stored.to_f32();
        }
    }

    fn narrow(values: &[f32], row: &mut [Self]) {
        for (stored, value) in row.iter_mut().zip(values) {
            *stored = Self::from_f32(*value);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(at: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded from the caller (sixteen bytes readable, AVX-512F, which implies the
        // AVX2 the 256-bit integer steps use).
        unsafe {
            let bytes = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(at.cast())), 8);
            let halves = _mm256_and_si256(_mm256_srai_epi16(bytes, 1), _mm256_set1_epi16(0xBFFFu16 as i16));
            let values = _mm512_mul_ps(_mm512_cvtph_ps(halves), _mm512_set1_ps(256.0));
            // The NaN pattern lands on ±480, which no finite E4M3 value is.
            let nan = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(values), _mm512_set1_ps(480.0));
            _mm512_mask_mov_ps(values, nan, _mm512_set1_ps(f32::NAN))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite E4M3 value from its fields in f64, by the format's definition.
    fn finite_values() -> Vec<(u8, f64)> {
        (0u8..=255)
            .filter(|b| b & 0x7F != 0x7F)
            .map(|b| {
                let (e, m) = (i32::from((b >> 3) & 0xF), f64::from(b & 7));
                let magnitude = if e == 0 {
                    m / 8.0 * 2f64.powi(-6)
                } else {
                    (1.0 + m / 8.0) * 2f64.powi(e - 7)
                };
                (b, if b & 0x80 != 0 { -magnitude } else { magnitude })
            })
            .collect()
    }

    /// The nearest finite value by search, ties to the even mantissa, saturating at ±448.
    fn nearest(x: f32) -> u8 {
        let x = f64::from(x).clamp(-448.0, 448.0);
        let mut best: Option<(u8, f64)> = None;
        for (bits, value) in finite_values() {
            // Zero's two signs: keep the input's.
            if value == 0.0 && (bits & 0x80 != 0) != x.is_sign_negative() {
                continue;
            }
            let distance = (value - x).abs();
            best = match best {
                Some((b, d)) if d < distance || (d == distance && b & 1 == 0) => Some((b, d)),
                _ => Some((bits, distance)),
            };
        }
        best.expect("a finite value").0
    }

    #[test]
    fn widening_matches_the_definition_and_nan_is_the_only_non_finite() {
        for (bits, value) in finite_values() {
            assert_eq!(f64::from(Fp8E4M3(bits).to_f32()), value, "{bits:#04x}");
        }
        assert!(Fp8E4M3(0x7F).to_f32().is_nan() && Fp8E4M3(0xFF).to_f32().is_nan());
        assert_eq!(Fp8E4M3(0x7E).to_f32(), MAX);
        assert_eq!(Fp8E4M3(0x01).to_f32(), 2f32.powi(-9));
    }

    #[test]
    fn rounding_is_nearest_even_and_saturates() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut inputs = vec![
            0.0,
            -0.0,
            448.0,
            449.0,
            464.0,
            1e9,
            -1e9,
            2f32.powi(-10),
            3.0 * 2f32.powi(-10),
        ];
        // Every midpoint between neighbours (ties) and points just around it.
        let mut finite: Vec<f64> = finite_values().into_iter().map(|(_, v)| v).collect();
        finite.sort_by(f64::total_cmp);
        for pair in finite.windows(2) {
            let mid = ((pair[0] + pair[1]) / 2.0) as f32;
            if mid == 0.0 {
                continue;
            }
            inputs.extend([
                mid,
                f32::from_bits(mid.to_bits() + 1),
                f32::from_bits(mid.to_bits() - 1),
            ]);
        }
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Magnitudes from 2⁻¹² to 2¹⁰, both signs.
            let exponent = (state % 23) as i32 - 12;
            let fraction = ((state >> 8) % 1_000_000) as f32 / 1_000_000.0;
            let sign = if state >> 63 == 1 { -1.0 } else { 1.0 };
            inputs.push(sign * (1.0 + fraction) * 2f32.powi(exponent));
        }
        for x in inputs {
            assert_eq!(Fp8E4M3::from_f32(x).0, nearest(x), "{x:e}");
        }
        assert_eq!(Fp8E4M3::from_f32(f32::NAN).0 & 0x7F, 0x7F);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_512_bit_load_widens_every_pattern_as_the_table_does() {
        if !crate::dot::has_avx512f() {
            eprintln!("SKIPPED: no AVX-512F");
            return;
        }
        let all: Vec<Fp8E4M3> = (0u8..=255).map(Fp8E4M3).collect();
        for chunk in all.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F was detected; the chunk holds sixteen values.
            unsafe { std::arch::x86_64::_mm512_storeu_ps(got.as_mut_ptr(), Fp8E4M3::load16(chunk.as_ptr())) };
            for (value, stored) in got.iter().zip(chunk) {
                let want = stored.to_f32();
                assert!(
                    value.to_bits() == want.to_bits() || (value.is_nan() && want.is_nan()),
                    "{:#04x}: {value} vs {want}",
                    stored.0
                );
            }
        }
    }
}
