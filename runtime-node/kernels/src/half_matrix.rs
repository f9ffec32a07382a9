//! F16 weight matrices (GGUF `F16`, IEEE half floats) times f32 activations. Decoding reads each
//! weight once per step, so keeping them at 2 bytes instead of expanding them to f32 at load
//! halves the bytes a token costs.
//!
//! Layout: at load the rows are repacked into panels of [`PANEL`] (16) rows, stored column-major
//! within the panel: column `k` of the panel's 16 rows is 16 consecutive halves (32 bytes), so
//! one F16C conversion gives one 512-bit register holding 16 output rows' weights for column
//! `k`. A kernel multiplies it by input `x[i][k]` broadcast to every lane and accumulates 16
//! outputs per register: no horizontal sums, and each converted weight vector serves every
//! input of the tile (outer products, as a GEMM micro-kernel does). The last panel is padded with
//! zero rows. Panels start 32-byte aligned, so no 32-byte load splits a cache line.

use half::f16;
use rayon::prelude::*;

use super::dot::Simd;
use super::rows;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Rows per panel: one 512-bit register of f32 lanes.
pub const PANEL: usize = 16;

/// 64 bytes of halves, 64-byte aligned: the unit the panel storage is allocated in.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// A `rows × cols` F16 weight matrix in 16-row panels (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct F16Matrix {
    rows: usize,
    cols: usize,
    lines: Vec<Line>,
}

impl F16Matrix {
    /// Repacks the file's row-major bytes into panels; `None` when their length does not match
    /// the shape.
    pub fn new(rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != rows * cols * 2 {
            return None;
        }
        let halves = rows.div_ceil(PANEL) * PANEL * cols;
        let mut lines = vec![Line([0; 32]); halves.div_ceil(32)];
        let panels = &mut as_halves_mut(&mut lines)[..halves];
        panels
            .par_chunks_mut(PANEL * cols.max(1))
            .enumerate()
            .for_each(|(panel, out)| {
                for lane in 0..PANEL.min(rows.saturating_sub(panel * PANEL)) {
                    let row = &bytes[(panel * PANEL + lane) * cols * 2..][..cols * 2];
                    for (k, b) in row.chunks_exact(2).enumerate() {
                        out[k * PANEL + lane] = u16::from_le_bytes([b[0], b[1]]);
                    }
                }
            });
        Some(Self { rows, cols, lines })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Every panel, padding included: `rows.div_ceil(16) × cols × 16` halves.
    fn panels(&self) -> &[u16] {
        let len = self.rows.div_ceil(PANEL) * PANEL * self.cols;
        &as_halves(&self.lines)[..len]
    }

    /// The matrix as f32, row-major (to check the kernels and the repacking against).
    pub fn dequantize(&self) -> Vec<f32> {
        let (cols, panels) = (self.cols, self.panels());
        let mut out = vec![0f32; self.rows * cols];
        out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(r, row)| {
            let panel = &panels[r / PANEL * PANEL * cols..];
            for (k, value) in row.iter_mut().enumerate() {
                *value = f16::from_bits(panel[k * PANEL + r % PANEL]).to_f32();
            }
        });
        out
    }

    /// `out = x · Wᵀ` for `n` rows of `x` (`n × cols`); `out` is `n × rows`.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        rows::matmul_many(&mut [(self, out)], x, n);
    }
}

fn as_halves(lines: &[Line]) -> &[u16] {
    // SAFETY: `Line` is `repr(C)` around `[u16; 32]` with no padding (64 bytes at alignment 64).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 32) }
}

fn as_halves_mut(lines: &mut [Line]) -> &mut [u16] {
    // SAFETY: as in `as_halves`, and the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 32) }
}

impl rows::RowKernel for F16Matrix {
    type Input = [f32];
    const ROW_UNIT: usize = PANEL;

    fn rows(&self) -> usize {
        self.rows
    }

    fn fill_rows(&self, first: usize, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols, "input for {n} rows");
        let rows = out.len() / n;
        let panel_len = PANEL * self.cols;
        let panels = &self.panels()[first / PANEL * panel_len..][..rows.div_ceil(PANEL) * panel_len];
        dot_panels(super::dot::simd_level(), panels, self.cols, x, n, out);
    }
}

/// Several F16 matrices with the same input (q/k/v, gate/up) in one parallel loop.
pub fn matmul_many(parts: &mut [(&F16Matrix, &mut [f32])], x: &[f32], n: usize) {
    rows::matmul_many(parts, x, n);
}

/// `out[i · rows + r] = Σ_k w[r][k] · x[i][k]` (input-major, `rows = out.len() / n`) for the
/// rows that `panels` holds (whole panels of `cols` columns; padding rows are not written), with
/// the code for `level` where this CPU runs it, else the portable code.
pub fn dot_panels(level: Simd, panels: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    let rows = out.len() / n.max(1);
    assert!(
        n > 0
            && out.len() == n * rows
            && x.len() == n * cols
            && panels.len() == rows.div_ceil(PANEL) * PANEL * cols,
        "{} halves of panels for {rows} rows × {cols} columns, {} inputs for {n} rows",
        panels.len(),
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        let detected = super::dot::detect("");
        if level == Simd::Vnni && detected == Simd::Vnni && super::dot::has_avx512f() {
            // SAFETY: AVX-512F, AVX2, FMA and F16C were detected; the shapes are checked above.
            return unsafe { x86::dot_panels_512(panels, cols, x, n, out) };
        }
        if level != Simd::None && detected != Simd::None {
            // SAFETY: AVX2, FMA and F16C were detected; the shapes are checked above.
            return unsafe { x86::dot_panels_256(panels, cols, x, n, out) };
        }
    }
    dot_panels_scalar(panels, cols, x, n, out);
}

/// The portable definition.
pub fn dot_panels_scalar(panels: &[u16], cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    let rows = out.len() / n;
    for (input_out, input) in out.chunks_exact_mut(rows).zip(x.chunks_exact(cols)) {
        for (r, value) in input_out.iter_mut().enumerate() {
            let panel = &panels[r / PANEL * PANEL * cols..];
            *value = input
                .iter()
                .enumerate()
                .map(|(k, v)| f16::from_bits(panel[k * PANEL + r % PANEL]).to_f32() * v)
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_values(count: usize, state: &mut u64) -> Vec<f32> {
        (0..count)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_path_matches_the_row_major_product_with_odd_shapes() {
        let mut state = 12345u64;
        for (rows, cols, n) in [
            (1, 8, 1),
            (5, 37, 3),
            (9, 64, 4),
            (13, 576, 1),
            (16, 100, 5),
            (3, 16, 10),
            (33, 40, 6),
            (47, 576, 13),
            (7, 33, 17),
            (64, 16, 8),
            (50, 50, 7),
            (70, 45, 1),
            (80, 9, 2),
            (17, 96, 25),
            (32, 31, 12),
            (21, 33, 6),
        ] {
            // Row-major values rounded to f16 (as the file holds them), the reference's input.
            let weights: Vec<f32> = random_values(rows * cols, &mut state)
                .into_iter()
                .map(|v| f16::from_f32(v).to_f32())
                .collect();
            let bytes: Vec<u8> = weights
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
            let matrix = F16Matrix::new(rows, cols, &bytes).expect("shape");
            assert_eq!(matrix.dequantize(), weights, "{rows}×{cols} dequantized");
            let x = random_values(n * cols, &mut state);
            for level in crate::dot::available() {
                let mut out = vec![f32::NAN; n * rows];
                dot_panels(level, matrix.panels(), cols, &x, n, &mut out);
                for i in 0..n {
                    for r in 0..rows {
                        let exact: f64 = (0..cols)
                            .map(|c| f64::from(weights[r * cols + c]) * f64::from(x[i * cols + c]))
                            .sum();
                        let got = f64::from(out[i * rows + r]);
                        assert!(
                            (got - exact).abs() < 1e-4,
                            "{level:?} {rows}×{cols}×{n} [{i},{r}]: {got} vs {exact}"
                        );
                    }
                }
            }
            // Through the worker pool: tasks start at panel boundaries.
            let mut out = vec![0f32; n * rows];
            matrix.matmul(&x, n, &mut out);
            let mut direct = vec![0f32; n * rows];
            dot_panels_scalar(matrix.panels(), cols, &x, n, &mut direct);
            for (got, want) in out.iter().zip(&direct) {
                assert!(
                    (got - want).abs() < 1e-4,
                    "{rows}×{cols}×{n} pooled: {got} vs {want}"
                );
            }
        }
        assert!(F16Matrix::new(2, 3, &[0; 11]).is_none());
    }

    #[test]
    fn panels_are_aligned_and_padded_with_zeros() {
        let bytes: Vec<u8> = (0..17 * 3)
            .flat_map(|v| f16::from_f32(v as f32 + 1.0).to_le_bytes())
            .collect();
        let matrix = F16Matrix::new(17, 3, &bytes).expect("shape");
        let panels = matrix.panels();
        assert_eq!(panels.as_ptr() as usize % 64, 0);
        assert_eq!(panels.len(), 2 * PANEL * 3);
        // Row 16 is the second panel's lane 0; lanes 1..16 are padding.
        let second = &panels[PANEL * 3..];
        for k in 0..3 {
            assert_eq!(
                f16::from_bits(second[k * PANEL]).to_f32(),
                (16 * 3 + k) as f32 + 1.0
            );
            assert!(second[k * PANEL + 1..(k + 1) * PANEL].iter().all(|h| *h == 0));
        }
    }
}
