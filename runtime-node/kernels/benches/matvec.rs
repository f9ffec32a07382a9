//! Single-thread speed of the quantized dot-product kernels, per type, instruction set and
//! number of activation rows, on a matrix larger than the caches (as in decoding): weight bytes
//! read per second and nanoseconds per (block × activation row). `cargo bench -p hearth-kernels`.

use std::time::Instant;

use hearth_kernels::blocks::{BLOCK, WeightType, quantize_activations};
use hearth_kernels::dot::{Simd, available, dot_groups};
use hearth_kernels::formats::f16_fields;
use hearth_kernels::interleaved::repack;

fn main() {
    let rows = 262_144;
    for kind in [
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
    ] {
        // SmolLM2's width, or the nearest whole superblocks.
        let cols = if kind.block_weights() == BLOCK { 576 } else { 512 };
        let row_bytes = cols / kind.block_weights() * kind.block_bytes();
        // Arbitrary but valid bytes: a small scale in every block header keeps values finite.
        let mut weights: Vec<u8> = (0..rows * row_bytes).map(|i| (i * 7 + 3) as u8).collect();
        let scale = half::f16::from_f32(0.01).to_le_bytes();
        for block in weights.chunks_exact_mut(kind.block_bytes()) {
            for &at in f16_fields(kind) {
                block[at..at + 2].copy_from_slice(&scale);
            }
        }
        let packed = repack(kind, rows, cols, &weights);
        for level in available().into_iter().filter(|l| *l != Simd::None) {
            for n in [1, 4, 8] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
                let mut activations = Vec::new();
                quantize_activations(&x, &mut activations);
                let mut out = vec![0f32; rows * n];
                let rounds = 3;
                let start = Instant::now();
                for _ in 0..rounds {
                    dot_groups(level, kind, &packed, &activations, n, &mut out);
                }
                let seconds = start.elapsed().as_secs_f64() / rounds as f64;
                let block_dots = (rows * cols / BLOCK * n) as f64;
                println!(
                    "{kind:?} {level:?} n={n}: {:.2} GB/s of weights, {:.2} ns per block·row (checksum {:.3})",
                    weights.len() as f64 / seconds / 1e9,
                    seconds * 1e9 / block_dots,
                    out.iter().sum::<f32>()
                );
            }
        }
    }
}
