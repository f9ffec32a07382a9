//! F16 weight matrices (GGUF `F16`, row-major little-endian IEEE half floats) times f32
//! activations. Decoding reads each weight once per step, so keeping them at 2 bytes instead of
//! expanding them to f32 at load halves the bytes a token costs. The x86 kernel converts eight
//! weights at a time with F16C and accumulates with FMA, one weight row (streamed in order)
//! × up to 4 activation rows at a time; activations are not quantized (f32 × f16 products, f32 sums).
//! Every row loop asks for the weights a page ahead ([`super::PREFETCH_AHEAD`]).

use half::f16;
use rayon::prelude::*;

use super::rows;

/// A `rows × cols` F16 weight matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct F16Matrix {
    rows: usize,
    cols: usize,
    data: Vec<u16>,
}

impl F16Matrix {
    /// Wraps the file's bytes; `None` when their length does not match the shape.
    pub fn new(rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != rows * cols * 2 {
            return None;
        }
        let data = bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        Some(Self { rows, cols, data })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The matrix as f32, row-major (for long prompt chunks, where a dense GEMM wins).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.data.len()];
        out.par_chunks_mut(8192)
            .zip(self.data.par_chunks(8192))
            .for_each(|(out, bits)| {
                for (o, b) in out.iter_mut().zip(bits) {
                    *o = f16::from_bits(*b).to_f32();
                }
            });
        out
    }

    /// `out = x · Wᵀ` for `n` rows of `x` (`n × cols`); `out` is `n × rows`.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        rows::matmul_many(&mut [(self, out)], x, n);
    }
}

impl rows::RowKernel for F16Matrix {
    type Input = [f32];

    fn rows(&self) -> usize {
        self.rows
    }

    fn fill_rows(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols, "input for {n} rows");
        let cols = self.cols;
        let weights = &self.data[first * cols..(first + out.len() / n) * cols];
        dot_rows(weights, cols, x, n, out);
    }
}

/// Several F16 matrices with the same input (q/k/v, gate/up) in one parallel loop.
pub fn matmul_many(parts: &mut [(&F16Matrix, &mut [f32])], x: &[f32], n: usize) {
    rows::matmul_many(parts, x, n);
}

/// `out[i · rows + r] = Σ_c w[r][c] · x[i][c]` (input-major) with the fastest code this CPU runs.
pub fn dot_rows(weights: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let level = super::dot::simd_level();
        if level == super::dot::Simd::Vnni && super::dot::has_avx512f() {
            // SAFETY: AVX-512F, AVX2, FMA and F16C were detected; shapes checked by the callers.
            unsafe { x86::dot_rows_512(weights, cols, x, n, out) };
            return;
        }
        if level != super::dot::Simd::None {
            // SAFETY: AVX2, FMA and F16C were detected; the shapes are checked by the callers.
            unsafe { x86::dot_rows(weights, cols, x, n, out) };
            return;
        }
    }
    dot_rows_scalar(weights, cols, x, n, out);
}

/// The portable definition.
pub fn dot_rows_scalar(weights: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    let rows = weights.len() / cols;
    for (input_out, input) in out.chunks_exact_mut(rows).zip(x.chunks_exact(cols).take(n)) {
        for (value, row) in input_out.iter_mut().zip(weights.chunks_exact(cols)) {
            *value = row
                .iter()
                .zip(input)
                .map(|(w, v)| f16::from_bits(*w).to_f32() * v)
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Row `r`'s results for inputs `first..first + N` into the input-major `out` (`rows` per
    /// input).
    #[inline(always)]
    fn scatter<const N: usize>(out: &mut [f32], rows: usize, first: usize, r: usize, values: &[f32; N]) {
        for (i, value) in values.iter().enumerate() {
            out[(first + i) * rows + r] = *value;
        }
    }

    /// Asks for the weight line a page past `weight` once per 64 bytes (every 32nd column).
    #[inline(always)]
    fn prefetch_ahead(weight: *const u16, column: usize) {
        if column.is_multiple_of(32) {
            crate::prefetch_ahead(weight.cast(), 64);
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

    /// `R` rows from `rows` (each `cols` halves) against `N` inputs from `inputs` (called with
    /// one row: several interleaved rows stream worse from memory than one).
    #[inline(always)]
    unsafe fn tile<const R: usize, const N: usize>(
        rows: *const u16,
        cols: usize,
        inputs: *const f32,
    ) -> [[f32; N]; R] {
        let body = cols / 8 * 8;
        // SAFETY: the caller passes R whole rows and N whole inputs of `cols` values.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); N]; R];
            let mut c = 0;
            while c < body {
                let mut xs = [_mm256_setzero_ps(); N];
                for (i, x) in xs.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(inputs.add(i * cols + c));
                }
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    prefetch_ahead(rows.add(r * cols + c), c);
                    let w = _mm256_cvtph_ps(_mm_loadu_si128(rows.add(r * cols + c).cast()));
                    for (a, x) in acc_row.iter_mut().zip(&xs) {
                        *a = _mm256_fmadd_ps(w, *x, *a);
                    }
                }
                c += 8;
            }
            let mut out = [[0f32; N]; R];
            for r in 0..R {
                for i in 0..N {
                    let mut sum = horizontal_sum(acc[r][i]);
                    for t in body..cols {
                        sum += f16::from_bits(*rows.add(r * cols + t)).to_f32() * *inputs.add(i * cols + t);
                    }
                    out[r][i] = sum;
                }
            }
            out
        }
    }

    #[inline(always)]
    unsafe fn rows_for<const N: usize>(
        weights: &[u16],
        cols: usize,
        x: &[f32],
        first: usize,
        out: &mut [f32],
    ) {
        let rows = weights.len() / cols;
        let inputs = x[first * cols..].as_ptr();
        let mut r = 0;
        // SAFETY: rows r..r + R and inputs first..first + N are in range.
        unsafe {
            while r < rows {
                let values = tile::<1, N>(weights.as_ptr().add(r * cols), cols, inputs);
                scatter(out, rows, first, r, &values[0]);
                r += 1;
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `weights` holds whole rows of `cols`, `x`
    /// holds `n` rows of `cols`, `out` `n × rows` values (input-major).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(weights: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
        let mut first = 0;
        // SAFETY: forwarded from the caller.
        unsafe {
            while first + 4 <= n {
                rows_for::<4>(weights, cols, x, first, out);
                first += 4;
            }
            match n - first {
                3 => rows_for::<3>(weights, cols, x, first, out),
                2 => rows_for::<2>(weights, cols, x, first, out),
                1 => rows_for::<1>(weights, cols, x, first, out),
                _ => {}
            }
        }
    }

    /// Inputs per prompt tile. Past 8 inputs (prompt chunks) the matmul is bound by arithmetic
    /// and a chunk's tiles find the matrix in cache, so they do not prefetch (measured: F16
    /// pp512 −6% with it).
    const PROMPT_TILE_INPUTS: usize = 6;

    /// `R` rows × `N` inputs on 512-bit registers (16 weights per conversion); the `cols % 16`
    /// tail is summed in scalar code.
    #[inline(always)]
    unsafe fn tile_512<const R: usize, const N: usize, const PREFETCH: bool>(
        rows: *const u16,
        cols: usize,
        inputs: *const f32,
    ) -> [[f32; N]; R] {
        let body = cols / 16 * 16;
        // SAFETY: the caller passes R whole rows and N whole inputs of `cols` values.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); N]; R];
            let mut c = 0;
            while c < body {
                let mut xs = [_mm512_setzero_ps(); N];
                for (i, x) in xs.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(inputs.add(i * cols + c));
                }
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    if PREFETCH {
                        prefetch_ahead(rows.add(r * cols + c), c);
                    }
                    let w = _mm512_cvtph_ps(_mm256_loadu_si256(rows.add(r * cols + c).cast()));
                    for (a, x) in acc_row.iter_mut().zip(&xs) {
                        *a = _mm512_fmadd_ps(w, *x, *a);
                    }
                }
                c += 16;
            }
            let mut out = [[0f32; N]; R];
            for r in 0..R {
                for i in 0..N {
                    let mut sum = _mm512_reduce_add_ps(acc[r][i]);
                    for t in body..cols {
                        sum += f16::from_bits(*rows.add(r * cols + t)).to_f32() * *inputs.add(i * cols + t);
                    }
                    out[r][i] = sum;
                }
            }
            out
        }
    }

    /// One row against one input on two accumulators (one FMA chain would wait on its own
    /// latency), 32 weights per step; the `cols % 32` tail is summed in scalar code.
    #[inline(always)]
    unsafe fn row_512(row: *const u16, cols: usize, input: *const f32) -> f32 {
        let body = cols / 32 * 32;
        // SAFETY: the caller passes a whole row and a whole input of `cols` values.
        unsafe {
            let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut c = 0;
            while c < body {
                prefetch_ahead(row.add(c), c);
                let low = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c).cast()));
                let high = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c + 16).cast()));
                even = _mm512_fmadd_ps(low, _mm512_loadu_ps(input.add(c)), even);
                odd = _mm512_fmadd_ps(high, _mm512_loadu_ps(input.add(c + 16)), odd);
                c += 32;
            }
            let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
            for t in body..cols {
                sum += f16::from_bits(*row.add(t)).to_f32() * *input.add(t);
            }
            sum
        }
    }

    /// Every row against inputs `first..first + N`, `R` rows per tile (then single rows).
    #[inline(always)]
    unsafe fn rows_for_512<const R: usize, const N: usize, const PREFETCH: bool>(
        weights: &[u16],
        cols: usize,
        x: &[f32],
        first: usize,
        out: &mut [f32],
    ) {
        let rows = weights.len() / cols;
        let inputs = x[first * cols..].as_ptr();
        let mut r = 0;
        // SAFETY: rows r..r + R (or r) and inputs first..first + N are in range.
        unsafe {
            while r + R <= rows {
                let values = tile_512::<R, N, PREFETCH>(weights.as_ptr().add(r * cols), cols, inputs);
                for (j, row) in values.iter().enumerate() {
                    scatter(out, rows, first, r + j, row);
                }
                r += R;
            }
            while r < rows {
                let values = tile_512::<1, N, PREFETCH>(weights.as_ptr().add(r * cols), cols, inputs);
                scatter(out, rows, first, r, &values[0]);
                r += 1;
            }
        }
    }

    /// As [`dot_rows`] on 512-bit registers: 16 weights per conversion. Up to 8 inputs (decode
    /// batches), one prefetching pass over the weights, each read from memory once: one row at a
    /// time below 6 inputs (a single input on two accumulators), two from 6. Beyond (prompt
    /// chunks), where arithmetic rather than memory bounds the matmul, tiles of 4 rows × 6 inputs
    /// (each converted weight vector serves 6 FMAs), then the remaining inputs.
    ///
    /// # Safety
    /// As [`dot_rows`], and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_rows_512(weights: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
        let mut first = 0;
        // SAFETY: forwarded from the caller.
        unsafe {
            match n {
                8 => return rows_for_512::<2, 8, true>(weights, cols, x, 0, out),
                7 => return rows_for_512::<2, 7, true>(weights, cols, x, 0, out),
                6 => return rows_for_512::<2, 6, true>(weights, cols, x, 0, out),
                _ => {}
            }
            while first + PROMPT_TILE_INPUTS <= n {
                rows_for_512::<4, PROMPT_TILE_INPUTS, false>(weights, cols, x, first, out);
                first += PROMPT_TILE_INPUTS;
            }
            match n - first {
                5 => rows_for_512::<1, 5, true>(weights, cols, x, first, out),
                4 => rows_for_512::<1, 4, true>(weights, cols, x, first, out),
                3 => rows_for_512::<1, 3, true>(weights, cols, x, first, out),
                2 => rows_for_512::<1, 2, true>(weights, cols, x, first, out),
                1 => {
                    let rows = weights.len() / cols;
                    let input = x[first * cols..].as_ptr();
                    for r in 0..rows {
                        out[first * rows + r] = row_512(weights.as_ptr().add(r * cols), cols, input);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_agree_with_odd_shapes() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        for (rows, cols, n) in [
            (1, 8, 1),
            (5, 37, 3),
            (9, 64, 4),
            (13, 576, 1),
            (6, 100, 5),
            (3, 16, 10),
            // The AVX-512 tiles: 4-row tiles plus single rows, 6-input tiles plus a tail of 1..5.
            (11, 40, 6),
            (9, 576, 13),
            (7, 33, 17),
            (4, 16, 8),
            // Decode batches of 6 to 8 inputs: two rows per tile, and a single last row.
            (5, 50, 7),
            // The single-input path: 32 columns a step plus a tail of 13.
            (7, 45, 1),
            (3, 96, 1),
        ] {
            let bytes: Vec<u8> = (0..rows * cols)
                .flat_map(|_| f16::from_f32(next()).to_le_bytes())
                .collect();
            let matrix = F16Matrix::new(rows, cols, &bytes).expect("shape");
            let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
            let mut out = vec![0f32; n * rows];
            matrix.matmul(&x, n, &mut out);
            let weights = matrix.dequantize();
            for i in 0..n {
                for r in 0..rows {
                    let exact: f64 = (0..cols)
                        .map(|c| f64::from(weights[r * cols + c]) * f64::from(x[i * cols + c]))
                        .sum();
                    let got = f64::from(out[i * rows + r]);
                    assert!(
                        (got - exact).abs() < 1e-4,
                        "{rows}×{cols}×{n} [{i},{r}]: {got} vs {exact}"
                    );
                }
            }
        }
        assert!(F16Matrix::new(2, 3, &[0; 11]).is_none());
    }
}
