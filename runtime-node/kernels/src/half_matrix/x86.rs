//! The x86 kernels over 16-row F16 panels ([`super::PANEL`]): per column, one F16C conversion
//! of the panel's 16 weights and one FMA per input with the input's value broadcast, so a
//! register accumulates 16 output rows of one input.
//!
//! Up to 8 inputs (decode batches, bound by memory) a thread streams its panels one at a time,
//! in order, prefetching two pages ahead, with each input's sums split over several FMA chains:
//! one stream per thread reads faster than several (`docs/benchmarks.md`).
//! Past 8 inputs (prompt chunks, bound by arithmetic, the task's panels in cache) tiles are
//! 2 panels × 12 inputs: each converted weight vector serves 12 FMAs.

use std::arch::x86_64::*;

use super::PANEL;

/// Inputs per prompt tile on 512-bit registers: 2 panels × 12 inputs = 24 accumulators of 32.
const PROMPT_INPUTS_512: usize = 12;
/// Inputs per tile on 256-bit registers: 2 halves × 6 inputs = 12 accumulators of 16.
const TILE_INPUTS_256: usize = 6;

/// The 32 bytes of column `k` of the panel at `panel` (32-byte aligned).
#[inline(always)]
unsafe fn column(panel: *const u16, k: usize) -> *const u16 {
    unsafe { panel.add(k * PANEL) }
}

/// Asks for the weight line two pages ahead of column `k` once per 64 bytes (every second column).
#[inline(always)]
fn prefetch_column(at: *const u16, k: usize) {
    if k.is_multiple_of(2) {
        crate::prefetch_ahead(at.cast(), 64);
    }
}

/// Stores the first `valid` of a panel's 16 results at `at`.
#[inline(always)]
unsafe fn store_512(at: *mut f32, valid: usize, values: __m512) {
    unsafe { _mm512_mask_storeu_ps(at, ((1u32 << valid) - 1) as u16, values) };
}

/// One panel against inputs `0..N` of `inputs` (each `cols` values) on `S` FMA chains per input
/// (column `k` into chain `k % S`), reading the panel in order: lane `j` of result `i` is the
/// panel's row `j` with input `i`.
#[inline(always)]
unsafe fn panel_chains_512<const N: usize, const S: usize>(
    panel: *const u16,
    cols: usize,
    inputs: *const f32,
) -> [__m512; N] {
    // SAFETY: the caller passes a whole panel and N whole inputs of `cols` columns.
    unsafe {
        let mut chains = [[_mm512_setzero_ps(); N]; S];
        let body = cols / S * S;
        let mut k = 0;
        while k < body {
            for (s, chain) in chains.iter_mut().enumerate() {
                let at = column(panel, k + s);
                prefetch_column(at, k + s);
                let w = _mm512_cvtph_ps(_mm256_load_si256(at.cast()));
                for (i, acc) in chain.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(w, _mm512_set1_ps(*inputs.add(i * cols + k + s)), *acc);
                }
            }
            k += S;
        }
        for k in body..cols {
            let w = _mm512_cvtph_ps(_mm256_load_si256(column(panel, k).cast()));
            for (i, acc) in chains[0].iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(w, _mm512_set1_ps(*inputs.add(i * cols + k)), *acc);
            }
        }
        let mut sums = chains[0];
        for chain in &chains[1..] {
            for (sum, part) in sums.iter_mut().zip(chain) {
                *sum = _mm512_add_ps(*sum, *part);
            }
        }
        sums
    }
}

/// Every panel in order against all `N` inputs of `x`, into the input-major `out`.
#[inline(always)]
unsafe fn stream_512<const N: usize, const S: usize>(
    panels: &[u16],
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = out.len() / N;
    // SAFETY: every panel, input and stored lane is in range.
    unsafe {
        for panel in 0..rows.div_ceil(PANEL) {
            let sums = panel_chains_512::<N, S>(panels.as_ptr().add(panel * PANEL * cols), cols, x.as_ptr());
            let valid = (rows - panel * PANEL).min(PANEL);
            for (i, values) in sums.iter().enumerate() {
                store_512(out[i * rows + panel * PANEL..].as_mut_ptr(), valid, *values);
            }
        }
    }
}

/// Panels `0..P` from `panels` (each `cols × 16` halves) against inputs `0..N` of `inputs`:
/// `acc[p][i]` lane `j` is row `16p + j` of input `i`.
#[inline(always)]
unsafe fn tile_512<const P: usize, const N: usize>(
    panels: *const u16,
    cols: usize,
    inputs: *const f32,
) -> [[__m512; N]; P] {
    // SAFETY: the caller passes P whole panels and N whole inputs of `cols` columns.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; P];
        for k in 0..cols {
            let mut w = [_mm512_setzero_ps(); P];
            for (p, w) in w.iter_mut().enumerate() {
                *w = _mm512_cvtph_ps(_mm256_load_si256(column(panels.add(p * PANEL * cols), k).cast()));
            }
            for i in 0..N {
                let x = _mm512_set1_ps(*inputs.add(i * cols + k));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    acc[i] = _mm512_fmadd_ps(*w, x, acc[i]);
                }
            }
        }
        acc
    }
}

/// Every panel against inputs `first..first + N`, `P` panels per tile (then single panels),
/// into the input-major `out` (`rows` per input).
#[inline(always)]
unsafe fn tiles_512<const P: usize, const N: usize>(
    panels: &[u16],
    cols: usize,
    x: &[f32],
    first: usize,
    out: &mut [f32],
) {
    let rows = out.len() / (x.len() / cols);
    let count = rows.div_ceil(PANEL);
    let inputs = x[first * cols..].as_ptr();
    let store = |out: &mut [f32], panel: usize, i: usize, values: __m512| {
        let valid = (rows - panel * PANEL).min(PANEL);
        // SAFETY: `valid` lanes from here lie in input `first + i`'s rows.
        unsafe {
            store_512(
                out[(first + i) * rows + panel * PANEL..].as_mut_ptr(),
                valid,
                values,
            )
        };
    };
    let mut panel = 0;
    // SAFETY: panels panel..panel + P (or panel) and inputs first..first + N are in range.
    unsafe {
        while panel + P <= count {
            let acc = tile_512::<P, N>(panels.as_ptr().add(panel * PANEL * cols), cols, inputs);
            for (p, acc) in acc.iter().enumerate() {
                for (i, values) in acc.iter().enumerate() {
                    store(out, panel + p, i, *values);
                }
            }
            panel += P;
        }
        while panel < count {
            let acc = tile_512::<1, N>(panels.as_ptr().add(panel * PANEL * cols), cols, inputs);
            for (i, values) in acc[0].iter().enumerate() {
                store(out, panel, i, *values);
            }
            panel += 1;
        }
    }
}

/// `out[i · rows + r] = Σ_k w[r][k] · x[i][k]` on 512-bit registers: up to 8 inputs streamed
/// one panel at a time (4 chains per input up to 3 inputs, 2 up to 8); beyond, tiles of
/// 2 panels × 12 inputs, then the remaining inputs.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C; `panels` holds whole, 32-byte aligned
/// panels for `out.len() / n` rows of `cols`, `x` holds `n` rows of `cols`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn dot_panels_512(panels: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match n {
            1 => return stream_512::<1, 4>(panels, cols, x, out),
            2 => return stream_512::<2, 4>(panels, cols, x, out),
            3 => return stream_512::<3, 4>(panels, cols, x, out),
            4 => return stream_512::<4, 2>(panels, cols, x, out),
            5 => return stream_512::<5, 2>(panels, cols, x, out),
            6 => return stream_512::<6, 2>(panels, cols, x, out),
            7 => return stream_512::<7, 2>(panels, cols, x, out),
            8 => return stream_512::<8, 2>(panels, cols, x, out),
            _ => {}
        }
        let mut first = 0;
        while first + PROMPT_INPUTS_512 <= n {
            tiles_512::<2, PROMPT_INPUTS_512>(panels, cols, x, first, out);
            first += PROMPT_INPUTS_512;
        }
        match n - first {
            11 => tiles_512::<2, 11>(panels, cols, x, first, out),
            10 => tiles_512::<2, 10>(panels, cols, x, first, out),
            9 => tiles_512::<2, 9>(panels, cols, x, first, out),
            8 => tiles_512::<2, 8>(panels, cols, x, first, out),
            7 => tiles_512::<2, 7>(panels, cols, x, first, out),
            6 => tiles_512::<2, 6>(panels, cols, x, first, out),
            5 => tiles_512::<2, 5>(panels, cols, x, first, out),
            4 => tiles_512::<2, 4>(panels, cols, x, first, out),
            3 => tiles_512::<2, 3>(panels, cols, x, first, out),
            2 => tiles_512::<2, 2>(panels, cols, x, first, out),
            1 => tiles_512::<2, 1>(panels, cols, x, first, out),
            _ => {}
        }
    }
}

/// One panel against inputs `0..N` on 256-bit registers: `acc[i]` holds the panel's rows 0–7
/// and 8–15 with input `i` (two FMA chains per input).
#[inline(always)]
unsafe fn tile_256<const N: usize, const PREFETCH: bool>(
    panel: *const u16,
    cols: usize,
    inputs: *const f32,
) -> [[__m256; 2]; N] {
    // SAFETY: the caller passes a whole panel and N whole inputs of `cols` columns.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        for k in 0..cols {
            let at = column(panel, k);
            if PREFETCH {
                prefetch_column(at, k);
            }
            let low = _mm256_cvtph_ps(_mm_load_si128(at.cast()));
            let high = _mm256_cvtph_ps(_mm_load_si128(at.add(8).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*inputs.add(i * cols + k));
                acc[0] = _mm256_fmadd_ps(low, x, acc[0]);
                acc[1] = _mm256_fmadd_ps(high, x, acc[1]);
            }
        }
        acc
    }
}

/// Every panel in order against inputs `first..first + N` on 256-bit registers; padding rows
/// are left out by a scalar copy.
#[inline(always)]
unsafe fn tiles_256<const N: usize, const PREFETCH: bool>(
    panels: &[u16],
    cols: usize,
    x: &[f32],
    first: usize,
    out: &mut [f32],
) {
    let rows = out.len() / (x.len() / cols);
    let inputs = x[first * cols..].as_ptr();
    for panel in 0..rows.div_ceil(PANEL) {
        // SAFETY: the panel and inputs first..first + N are in range.
        let acc = unsafe { tile_256::<N, PREFETCH>(panels.as_ptr().add(panel * PANEL * cols), cols, inputs) };
        let valid = (rows - panel * PANEL).min(PANEL);
        for (i, values) in acc.iter().enumerate() {
            let mut lanes = [0f32; PANEL];
            // SAFETY: `lanes` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), values[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), values[1]);
            }
            out[(first + i) * rows + panel * PANEL..][..valid].copy_from_slice(&lanes[..valid]);
        }
    }
}

/// Inputs `0..n` in tiles of 6, then the remaining inputs.
#[inline(always)]
unsafe fn inputs_256<const PREFETCH: bool>(
    panels: &[u16],
    cols: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let mut first = 0;
    // SAFETY: forwarded from the caller.
    unsafe {
        while first + TILE_INPUTS_256 <= n {
            tiles_256::<TILE_INPUTS_256, PREFETCH>(panels, cols, x, first, out);
            first += TILE_INPUTS_256;
        }
        match n - first {
            5 => tiles_256::<5, PREFETCH>(panels, cols, x, first, out),
            4 => tiles_256::<4, PREFETCH>(panels, cols, x, first, out),
            3 => tiles_256::<3, PREFETCH>(panels, cols, x, first, out),
            2 => tiles_256::<2, PREFETCH>(panels, cols, x, first, out),
            1 => tiles_256::<1, PREFETCH>(panels, cols, x, first, out),
            _ => {}
        }
    }
}

/// As [`dot_panels_512`] on 256-bit registers: one panel at a time × up to 6 inputs,
/// prefetching up to 8 inputs.
///
/// # Safety
/// As [`dot_panels_512`] without AVX-512F: AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_panels_256(panels: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if n <= 8 {
            inputs_256::<true>(panels, cols, x, n, out);
        } else {
            inputs_256::<false>(panels, cols, x, n, out);
        }
    }
}
