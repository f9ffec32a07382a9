//! How close batch-1 F16 decoding's matmuls come to the memory bus: SmolLM2-135M's 211 F16
//! matrices (30 layers of q/k/v, o, gate/up and down, then the 49,152-row output head), each
//! times one input vector through the worker pool as the fused step runs them, against a plain
//! read of as many bytes split across the same threads. Rounds alternate the two; medians.
//! `cargo bench -p hearth-kernels --bench decode_stream` (part of `make bench`).

use std::time::Instant;

use hearth_kernels::affinity::Pinning;
use hearth_kernels::half_matrix::{F16Matrix, matmul_many};
use hearth_kernels::pool;

const HIDDEN: usize = 576;
const KV_WIDTH: usize = 192;
const FFN: usize = 1536;
const LAYERS: usize = 30;
const VOCAB: usize = 49_152;
const ROUNDS: usize = 21;

/// A `rows × cols` matrix of small varied halves (the values do not change the speed).
fn matrix(rows: usize, cols: usize, seed: usize) -> F16Matrix {
    let bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|i| {
            let value = ((i * 2_654_435_761 + seed) % 1000) as f32 * 1e-3 - 0.5;
            half::f16::from_f32(value).to_le_bytes()
        })
        .collect();
    F16Matrix::new(rows, cols, &bytes).expect("shape")
}

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() {
    let threads = std::env::var("HEARTH_BENCH_THREADS").map_or(2, |t| t.parse().expect("a thread count"));
    pool::init_global(threads, Pinning::Auto).expect("a kernel pool");
    let workers = pool::global();
    let shapes = [
        (HIDDEN, HIDDEN),
        (KV_WIDTH, HIDDEN),
        (KV_WIDTH, HIDDEN),
        (HIDDEN, HIDDEN),
        (FFN, HIDDEN),
        (FFN, HIDDEN),
        (HIDDEN, FFN),
    ];
    let layers: Vec<Vec<F16Matrix>> = (0..LAYERS)
        .map(|layer| {
            shapes
                .iter()
                .enumerate()
                .map(|(i, &(r, c))| matrix(r, c, layer * 7 + i))
                .collect()
        })
        .collect();
    let head = matrix(VOCAB, HIDDEN, 1);
    let bytes = 2 * (LAYERS * shapes.iter().map(|(r, c)| r * c).sum::<usize>() + VOCAB * HIDDEN);
    let x: Vec<f32> = (0..FFN).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(r, _)| vec![0f32; r]).collect();
    let mut logits = vec![0f32; VOCAB];
    let plain: Vec<u64> = (0..bytes as u64 / 8).collect();

    let (mut matmuls, mut reads) = (Vec::new(), Vec::new());
    let mut checksum = 0u64;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for layer in &layers {
            let [q, k, v, o, gate, up, down] = &mut outs[..] else {
                unreachable!()
            };
            matmul_many(
                &mut [(&layer[0], q), (&layer[1], k), (&layer[2], v)],
                &x[..HIDDEN],
                1,
            );
            matmul_many(&mut [(&layer[3], o)], &x[..HIDDEN], 1);
            matmul_many(&mut [(&layer[4], gate), (&layer[5], up)], &x[..HIDDEN], 1);
            matmul_many(&mut [(&layer[6], down)], &x, 1);
        }
        head.matmul(&x[..HIDDEN], 1, &mut logits);
        matmuls.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let share = plain.len().div_ceil(threads);
        let sums: Vec<std::sync::atomic::AtomicU64> = (0..threads).map(|_| Default::default()).collect();
        workers.run(threads, &|t| {
            let part = &plain[(t * share).min(plain.len())..((t + 1) * share).min(plain.len())];
            let mut lanes = [0u64; 4];
            for quad in part.chunks_exact(4) {
                for (lane, word) in lanes.iter_mut().zip(quad) {
                    *lane = lane.wrapping_add(*word);
                }
            }
            let total = lanes.iter().fold(0u64, |a, l| a.wrapping_add(*l));
            sums[t].store(total, std::sync::atomic::Ordering::Relaxed);
        });
        reads.push(started.elapsed().as_secs_f64());
        checksum = sums.iter().fold(checksum, |a, s| {
            a.wrapping_add(s.load(std::sync::atomic::Ordering::Relaxed))
        });
    }
    let (matmul, read) = (median(matmuls), median(reads));
    println!(
        "F16 decode matmuls, {threads} threads, {:.0} MB per token: {:.1} GB/s ({:.1} tok/s if nothing else ran); \
         plain read of as many bytes: {:.1} GB/s; matmuls at {:.0}% of the plain read \
         (medians of {ROUNDS} alternating rounds; checksums {:.3} {})",
        bytes as f64 / 1e6,
        bytes as f64 / matmul / 1e9,
        1.0 / matmul,
        bytes as f64 / read / 1e9,
        100.0 * read / matmul,
        logits.iter().sum::<f32>(),
        checksum % 1000,
    );
}
