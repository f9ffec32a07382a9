//! Dot products of quantized weight rows with 8-bit activation blocks, summed in integers per
//! block and scaled in f32 (as llama.cpp does): the portable scalar definition, and the
//! dispatch to the vector kernels ([`super::tile`]) this CPU runs.

use super::blocks::{ActivationBlock, WeightType};

/// `out[i · rows + r] = dot(row r, x_i)` (input-major) for the `rows = out.len() / n` rows whose groups `packed`
/// holds (interleaved layout, [`crate::interleaved`]) and each of the `n` activation rows in
/// `x`: the loop a matmul task runs, dispatched once.
pub fn dot_groups(
    level: Simd,
    kind: WeightType,
    packed: &[u8],
    x: &[ActivationBlock],
    n: usize,
    out: &mut [f32],
) {
    let per_input = x.len() / n.max(1);
    assert!(
        n > 0 && x.len() == n * per_input,
        "{n} activation rows of {per_input} blocks"
    );
    let groups = (out.len() / n).div_ceil(crate::interleaved::GROUP);
    assert!(
        out.len().is_multiple_of(n)
            && packed.len() == groups * per_input * crate::interleaved::group_block_bytes(kind),
        "{} bytes of weights for {} rows of {per_input} blocks",
        packed.len(),
        out.len() / n
    );
    #[cfg(target_arch = "x86_64")]
    {
        let detected = detect("");
        match level {
            // SAFETY: the features each path needs were detected on this CPU; shapes checked.
            Simd::Vnni if detected == Simd::Vnni && has_avx512bw() => {
                return unsafe { super::tile::groups_vnni512(kind, packed, x, n, out) };
            }
            Simd::Vnni if detected == Simd::Vnni => {
                return unsafe { super::tile::groups_vnni(kind, packed, x, n, out) };
            }
            Simd::Avx2 if detected != Simd::None => {
                return unsafe { super::tile::groups_avx2(kind, packed, x, n, out) };
            }
            _ => {}
        }
    }
    crate::interleaved::dot_groups_scalar(kind, packed, x, n, out);
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

/// Whether 512-bit registers may be used: AVX-512F on this CPU, and `HEARTH_KERNELS` does not
/// cap the kernels below [`Simd::Vnni`].
pub fn has_avx512f() -> bool {
    use std::sync::OnceLock;
    static WIDE: OnceLock<bool> = OnceLock::new();
    #[cfg(target_arch = "x86_64")]
    let detected = || simd_level() == Simd::Vnni && is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let detected = || false;
    *WIDE.get_or_init(detected)
}

/// [`has_avx512f`] and AVX-512BW (the 512-bit quantized kernel's byte shifts).
pub fn has_avx512bw() -> bool {
    use std::sync::OnceLock;
    static WIDE_BYTES: OnceLock<bool> = OnceLock::new();
    #[cfg(target_arch = "x86_64")]
    let detected = || has_avx512f() && is_x86_feature_detected!("avx512bw");
    #[cfg(not(target_arch = "x86_64"))]
    let detected = || false;
    *WIDE_BYTES.get_or_init(detected)
}

/// For tests of the 512-bit code: true (after saying so) where this CPU cannot run it.
#[cfg(test)]
pub(crate) fn skip_without_avx512f() -> bool {
    let skip = !has_avx512f();
    if skip {
        eprintln!("skipped: this CPU has no AVX-512F");
    }
    skip
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn detect(cap: &str) -> Simd {
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

/// The definition, on one row of GGUF blocks (what the interleaved kernels are tested against).
pub fn dot_scalar(kind: WeightType, row: &[u8], x: &[ActivationBlock]) -> f32 {
    x.iter()
        .enumerate()
        .map(|(b, a)| crate::interleaved::block_dot(kind, &crate::formats::decode(kind, row, b), a))
        .sum()
}
