//! runtime-node's own CPU kernels, used where candle's are slow: a few rows of activations
//! (decode steps, batches, prompt chunks) times a Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K /
//! Q6_K / Q2_K / Q3_K / IQ4_NL / IQ4_XS ([`formats`]; [`widen`] rewrites IQ4_NL for candle) or F16
//! weight matrix, and the vector loops of a fused step (attention over an f32, f16 or FP8
//! ([`fp8`]) KV cache, activation quantization, SiLU). Each activation row is quantized to 8-bit
//! blocks once; weights are repacked at load into interleaved groups of 8 rows
//! ([`interleaved`]), read once per call for all activation rows and dotted in integers
//! ([`dot`]); output rows are split across a persistent worker pool ([`pool`], [`rows`]), pinned
//! to CPUs the process owns ([`affinity`]). Load-time work (repacking, dequantizing) uses rayon.

pub mod affinity;
pub mod attention;
pub mod blocks;
pub mod dot;
#[cfg(target_arch = "x86_64")]
mod exp512;
pub mod formats;
pub mod fp8;
pub mod half_matrix;
pub mod interleaved;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod quantize512;
pub mod rows;
mod tile;
pub mod vector;
pub mod widen;

use rayon::prelude::*;

use blocks::{ActivationBlock, BLOCK, WeightType};

/// How far ahead of its read position a streaming kernel asks for weight bytes: two pages,
/// because the hardware prefetcher stops at 4 KiB page boundaries. The lines go to L2
/// (`prefetcht1`): into L1 (`prefetcht0`) they evicted each other before use once a thread reads
/// two streams (the paired groups of 2–8 inputs), and a distance past one page gained nothing.
/// Measured on SmolLM2 decode (2 threads, this VM): a page ahead into L1 against none, +15%
/// tokens/s for Q4_0/Q4_1/Q8_0 and +25% for F16; two pages into L2 against that, a further 3–5%
/// for the quantized types at batch 1 and 10–30% per block for 2–4 inputs (cold matrices).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 8192;

/// Asks for the cache lines of `bytes` bytes starting [`PREFETCH_AHEAD`] past `start` (one
/// weight block, two pages ahead of the one being read). A hint only: addresses past the matrix
/// do not fault.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_ahead(start: *const u8, bytes: usize) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    let mut line = 0;
    while line < bytes {
        // SAFETY: prefetching has no architectural effect, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(PREFETCH_AHEAD + line).cast()) };
        line += 64;
    }
}

/// Prefetches, two pages ahead, what block `b` of the group at `group` reads: the whole block, or
/// for Q4_K / Q6_K the block's weights plus, at a superblock's first block, its header.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_group_block(kind: WeightType, group: *const u8, b: usize) {
    let (start, sub, weights) = interleaved::locate(kind, b);
    match interleaved::superblock_parts(kind) {
        Some((header, block)) => {
            if sub == 0 {
                prefetch_ahead(group.wrapping_add(start), header);
            }
            prefetch_ahead(group.wrapping_add(weights), block);
        }
        None => prefetch_ahead(group.wrapping_add(start), interleaved::group_block_bytes(kind)),
    }
}

/// A `rows × cols` weight matrix, repacked at load from GGUF blocks into groups of 8 rows
/// ([`interleaved`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    kind: WeightType,
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
}

/// Why raw bytes are not a matrix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatrixError {
    /// Columns must fill whole blocks.
    #[error("{cols} columns is not a multiple of {kind:?}'s {block}-weight block")]
    PartialBlock {
        /// Weight type.
        kind: WeightType,
        /// The column count.
        cols: usize,
        /// Weights per block.
        block: usize,
    },
    /// The byte count does not match the shape.
    #[error("{rows}×{cols} {kind:?} needs {expected} bytes, got {actual}")]
    Size {
        /// Weight type.
        kind: WeightType,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}

impl QuantMatrix {
    /// Wraps `data` (as stored in the file) checking it matches the shape.
    pub fn new(kind: WeightType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, MatrixError> {
        let block = kind.block_weights();
        if !cols.is_multiple_of(block) {
            return Err(MatrixError::PartialBlock { kind, cols, block });
        }
        let expected = rows * cols / block * kind.block_bytes();
        if data.len() != expected {
            return Err(MatrixError::Size {
                kind,
                rows,
                cols,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            kind,
            rows,
            cols,
            packed: interleaved::repack(kind, rows, cols, &data),
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weight type.
    pub fn kind(&self) -> WeightType {
        self.kind
    }

    /// The whole matrix as f32, `rows × cols` row-major (for long prompt chunks, where a dense
    /// GEMM that reuses each weight across many rows wins).
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.cols / BLOCK;
        let group_bytes = blocks * interleaved::group_block_bytes(self.kind);
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols).enumerate().for_each(|(r, row)| {
            let group = &self.packed[r / interleaved::GROUP * group_bytes..][..group_bytes];
            for (b, values) in row.chunks_exact_mut(BLOCK).enumerate() {
                let block = interleaved::unpack(self.kind, group, b, r % interleaved::GROUP);
                values.copy_from_slice(&block.values(self.kind));
            }
        });
        out
    }

    /// `y = x · Wᵀ` for `x` of `n × cols` (row-major); returns `n × rows`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        let mut activations = Vec::with_capacity(n * self.cols / BLOCK);
        // Columns fill whole blocks, so the rows quantize as one run of blocks.
        vector::quantize(x, &mut activations);
        let mut y = vec![0f32; n * self.rows];
        self.matmul_quantized(&activations, n, &mut y);
        y
    }

    /// `out = x · Wᵀ` for `n` rows of activations already quantized by
    /// [`quantize_activations`] (`cols / 32` blocks per row), so matrices that share an input
    /// (q/k/v, gate/up) quantize it once. `out` is `n × rows`.
    pub fn matmul_quantized(&self, activations: &[ActivationBlock], n: usize, out: &mut [f32]) {
        rows::matmul_many(&mut [(self, out)], activations, n);
    }
}

impl rows::RowKernel for QuantMatrix {
    type Input = [ActivationBlock];

    fn rows(&self) -> usize {
        self.rows
    }

    fn fill_rows(&self, first: usize, activations: &[ActivationBlock], n: usize, out: &mut [f32]) {
        let blocks_per_row = self.cols / BLOCK;
        assert_eq!(
            activations.len(),
            n * blocks_per_row,
            "activation blocks for {n} rows"
        );
        let group_bytes = blocks_per_row * interleaved::group_block_bytes(self.kind);
        let first_group = first / interleaved::GROUP;
        let groups = (out.len() / n).div_ceil(interleaved::GROUP);
        let weights = &self.packed[first_group * group_bytes..(first_group + groups) * group_bytes];
        dot::dot_groups(dot::simd_level(), self.kind, weights, activations, n, out);
    }
}

/// Several matrices with the same input (q/k/v, gate/up) in one parallel loop: one
/// synchronisation instead of one per matrix. Each part is a matrix and its `n × rows` output;
/// `activations` are the `n` input rows quantized once.
pub fn matmul_quantized_many(
    parts: &mut [(&QuantMatrix, &mut [f32])],
    activations: &[ActivationBlock],
    n: usize,
) {
    rows::matmul_many(parts, activations, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use blocks::quantize_activations;
    use half::f16;

    /// A deterministic xorshift for random test data without a dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn float(&mut self) -> f32 {
            (self.next() % 20_001) as f32 / 10_000.0 - 1.0
        }
        fn byte(&mut self) -> u8 {
            (self.next() & 0xFF) as u8
        }
    }

    /// `blocks` GGUF blocks of random bytes with small random f16 scales (and minimums).
    fn random_blocks(kind: WeightType, blocks: usize, random: &mut Random) -> Vec<u8> {
        let mut data = Vec::with_capacity(blocks * kind.block_bytes());
        for _ in 0..blocks {
            let mut block: Vec<u8> = (0..kind.block_bytes()).map(|_| random.byte()).collect();
            for &at in formats::f16_fields(kind) {
                let value = f16::from_f32(random.float() * 0.05);
                block[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
            data.extend(block);
        }
        data
    }

    const KINDS: [WeightType; 12] = [
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q5K,
        WeightType::Q6K,
        WeightType::IQ4NL,
        WeightType::IQ4XS,
        WeightType::Q2K,
        WeightType::Q3K,
    ];

    /// `blocks` rounded up to whole GGUF blocks of `kind` (superblocks of 8 for Q4_K/Q6_K).
    fn whole_blocks(kind: WeightType, blocks: usize) -> usize {
        let per_block = kind.block_weights() / BLOCK;
        blocks.div_ceil(per_block) * per_block
    }

    #[test]
    fn repacking_keeps_every_weight_and_scale() {
        let mut random = Random(3);
        for kind in KINDS {
            let (rows, blocks) = (11, whole_blocks(kind, 3));
            let cols = blocks * BLOCK;
            let data = random_blocks(kind, rows * cols / kind.block_weights(), &mut random);
            let packed = interleaved::repack(kind, rows, cols, &data);
            let group_bytes = blocks * interleaved::group_block_bytes(kind);
            assert_eq!(packed.len(), rows.div_ceil(8) * group_bytes, "{kind:?}");
            let row_bytes = data.len() / rows;
            for r in 0..rows {
                let group = &packed[r / 8 * group_bytes..][..group_bytes];
                for b in 0..blocks {
                    let stored = formats::decode(kind, &data[r * row_bytes..][..row_bytes], b);
                    assert_eq!(
                        interleaved::unpack(kind, group, b, r % 8),
                        stored,
                        "{kind:?} [{r},{b}]"
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_on_the_interleaved_layout_agrees_with_the_gguf_definition() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        for kind in KINDS {
            // Row counts around the 8-row group (partial groups), input counts around the 8-input
            // tile, odd block counts.
            for (rows, n, blocks) in [
                (1, 1, 1),
                (3, 2, 2),
                (8, 4, 3),
                (13, 7, 17),
                (17, 8, 18),
                (24, 1, 5),
                (9, 13, 3),
                (5, 6, 2),
                // Pairs of whole groups on 512-bit registers, then an odd group or a partial one.
                (32, 8, 2),
                (40, 5, 4),
                (45, 3, 3),
            ] {
                let blocks = whole_blocks(kind, blocks);
                let row_bytes = blocks * BLOCK / kind.block_weights() * kind.block_bytes();
                let weights = random_blocks(kind, rows * blocks * BLOCK / kind.block_weights(), &mut random);
                let packed = interleaved::repack(kind, rows, blocks * BLOCK, &weights);
                let x: Vec<f32> = (0..n * blocks * BLOCK).map(|_| random.float()).collect();
                let mut a = Vec::new();
                quantize_activations(&x, &mut a);
                for level in dot::available() {
                    let mut fast = vec![0f32; rows * n];
                    dot::dot_groups(level, kind, &packed, &a, n, &mut fast);
                    for r in 0..rows {
                        for i in 0..n {
                            let row = &weights[r * row_bytes..(r + 1) * row_bytes];
                            let exact = dot::dot_scalar(kind, row, &a[i * blocks..(i + 1) * blocks]);
                            let got = fast[i * rows + r];
                            // Same integer sums; only the f32 accumulation order differs.
                            assert!(
                                (exact - got).abs() <= 1e-4 * (1.0 + exact.abs()),
                                "{kind:?} {level:?} {rows}×{n}×{blocks} [{r},{i}]: {exact} vs {got}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn many_matrices_in_one_loop_equal_each_alone() {
        let mut random = Random(7);
        let cols = 64;
        let matrices: Vec<QuantMatrix> = [37, 16, 9]
            .iter()
            .map(|&rows| {
                let data = random_blocks(WeightType::Q4_1, rows * cols / BLOCK, &mut random);
                QuantMatrix::new(WeightType::Q4_1, rows, cols, data).expect("shape")
            })
            .collect();
        // 20 inputs: every task writes its rows of every input into place.
        for n in [1, 3, 20] {
            let x: Vec<f32> = (0..n * cols).map(|_| random.float()).collect();
            let mut activations = Vec::new();
            quantize_activations(&x, &mut activations);
            let mut outputs: Vec<Vec<f32>> = matrices.iter().map(|m| vec![0f32; n * m.rows()]).collect();
            let mut parts: Vec<(&QuantMatrix, &mut [f32])> = matrices
                .iter()
                .zip(outputs.iter_mut())
                .map(|(m, out)| (m, out.as_mut_slice()))
                .collect();
            matmul_quantized_many(&mut parts, &activations, n);
            for (matrix, out) in matrices.iter().zip(&outputs) {
                let mut alone = vec![0f32; n * matrix.rows()];
                matrix.matmul_quantized(&activations, n, &mut alone);
                assert_eq!(out, &alone, "{} rows, n = {n}", matrix.rows());
            }
        }
    }

    #[test]
    fn matmul_matches_dequantized_f32_within_activation_rounding() {
        let mut random = Random(42);
        // Odd row counts (a partial task at the end) and several input rows.
        // 200 rows × 3 inputs: tasks of 32 rows on 2 threads, which a task split not aligned
        // to the 8-row groups would get wrong; 20 inputs: tiles of 8 and 4, each task writing
        // its rows of every input into place.
        for (kind, n) in KINDS.into_iter().flat_map(|kind| [(kind, 3), (kind, 20)]) {
            let (rows, cols) = (200, whole_blocks(kind, 3) * BLOCK);
            let data = random_blocks(kind, rows * cols / kind.block_weights(), &mut random);
            let matrix = QuantMatrix::new(kind, rows, cols, data.clone()).expect("shape");
            assert_eq!(
                matrix.packed.len(),
                rows.div_ceil(8) * cols / BLOCK * interleaved::group_block_bytes(kind)
            );
            let x: Vec<f32> = (0..n * cols).map(|_| random.float()).collect();
            let y = matrix.matmul(&x, n);
            let row_bytes = data.len() / rows;
            let weights: Vec<f32> = (0..rows * cols / BLOCK)
                .flat_map(|b| {
                    let row = &data[b / (cols / BLOCK) * row_bytes..][..row_bytes];
                    formats::decode(kind, row, b % (cols / BLOCK)).values(kind)
                })
                .collect();
            assert_eq!(matrix.dequantize(), weights, "dequantize is the block definition");
            for i in 0..n {
                for r in 0..rows {
                    let exact: f64 = (0..cols)
                        .map(|c| f64::from(weights[r * cols + c]) * f64::from(x[i * cols + c]))
                        .sum();
                    let scale: f64 = (0..cols).map(|c| f64::from(weights[r * cols + c].abs())).sum();
                    // 8-bit activations: each |Δx| ≤ amax/254 ≤ 1/254.
                    let bound = scale / 254.0 + 1e-4;
                    let got = f64::from(y[i * rows + r]);
                    assert!(
                        (got - exact).abs() <= bound,
                        "{kind:?} [{i},{r}]: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_named() {
        assert_eq!(
            QuantMatrix::new(WeightType::Q8_0, 2, 48, vec![]),
            Err(MatrixError::PartialBlock {
                kind: WeightType::Q8_0,
                cols: 48,
                block: 32
            })
        );
        assert_eq!(
            QuantMatrix::new(WeightType::Q4K, 2, 576, vec![]),
            Err(MatrixError::PartialBlock {
                kind: WeightType::Q4K,
                cols: 576,
                block: 256
            })
        );
        assert!(matches!(
            QuantMatrix::new(WeightType::Q4_0, 2, 64, vec![0; 10]),
            Err(MatrixError::Size {
                expected: 72,
                actual: 10,
                ..
            })
        ));
    }
}
