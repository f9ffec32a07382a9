//! Grouped-query attention on 512-bit registers, for head widths of 64 and 128 (every Llama,
//! Qwen2 and Mistral size). Same arithmetic as [`super::attend_group`], arranged so
//! the loops run at the FMA units' rate and each cached row comes from memory once per group:
//! - positions in blocks of eight: a block's key rows are loaded from memory by the group's
//!   first head and from L1 by the others (the cache, not the arithmetic, bounds decoding);
//! - each head scores a block's eight positions together, the eight sums reduced at once (one
//!   `hadd` tree instead of eight full horizontal reductions);
//! - softmax with a vector `exp` (a scalar `expf` per score cost as much as the dot products);
//! - the weighted sums of a block's value rows accumulated per head, two positions interleaved
//!   so eight (or sixteen) FMA chains are in flight.

use std::arch::x86_64::*;

use super::{Context, SoftmaxPart};
use crate::exp512::{exp, lanes};
use crate::vector::KvElement;

/// Positions whose key and value rows are read together.
const BLOCK: usize = 8;

/// How many positions ahead of the block being scored its keys are prefetched.
const AHEAD: usize = 4 * BLOCK;

/// Whether this path handles heads of `head_dim` values.
pub fn supports(head_dim: usize) -> bool {
    matches!(head_dim, 64 | 128)
}

/// [`super::attend_group`] for `head_dim` in [`supports`].
///
/// # Safety
/// The CPU must have AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn attend_group<T: KvElement>(
    queries: &[f32],
    context: &Context<'_, T>,
    head_dim: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: (&mut [f32], &mut [SoftmaxPart]),
) {
    match head_dim {
        64 => attend::<T, 4>(queries, context, scale, scores, out),
        128 => attend::<T, 8>(queries, context, scale, scores, out),
        _ => panic!("AVX-512 attention takes heads of 64 or 128 values, not {head_dim}"),
    }
}

/// `V` registers of 16 values per head.
#[target_feature(enable = "avx512f,avx2,fma")]
fn attend<T: KvElement, const V: usize>(
    queries: &[f32],
    context: &Context<'_, T>,
    scale: f32,
    scores: &mut Vec<f32>,
    (out, parts): (&mut [f32], &mut [SoftmaxPart]),
) {
    let head_dim = V * 16;
    let len = context.rows.len();
    let heads = queries.len() / head_dim;
    assert!(
        out.len() == heads * head_dim && parts.len() == heads,
        "one output per query head"
    );
    out.fill(0.0);
    let Some(last_row) = context.rows.iter().max() else {
        parts.fill(SoftmaxPart::EMPTY);
        return;
    };
    // Every row read below lies inside both tables (checked once, not per load).
    let end = (context.base + *last_row as usize + 1) * head_dim;
    assert!(end <= context.keys.len() && end <= context.values.len());
    scores.clear();
    scores.resize(heads * (len + head_dim), 0.0);
    // Each head's weighted sum runs on two chains, even positions in `out` and odd ones here,
    // added at the end (so the order of additions does not depend on the block size).
    let (scores, odd_sums) = scores.split_at_mut(heads * len);
    let row_at = |p: usize| (context.base + context.rows[p] as usize) * head_dim;
    let whole = len - len % BLOCK;
    // SAFETY (all blocks below): every row offset is `row_at(p)` for `p < len`, inside the
    // tables by the assertion above; each query and output head holds `V` registers' worth, and
    // the tile `BLOCK` rows of `V` registers.
    unsafe {
        let (keys, values) = (context.keys.as_ptr(), context.values.as_ptr());
        let row_bytes = head_dim * size_of::<T>();
        let mut tile = Tile([0.0; BLOCK * 128]);
        let tile = tile.0.as_mut_ptr();
        let tile_at = |j: usize, v: usize| tile.add((j * V + v) * 16).cast_const();
        // Latency, not bandwidth, bounds these reads (the rows come from memory: the weights
        // streamed since the last step evicted them, and a task's run is too short for the
        // hardware prefetcher to ramp up): ask for the first keys at once, then keep the keys
        // `AHEAD` positions ahead and ask for each block's values, which the weighted sums read
        // after the softmax, while the block is scored.
        for p in 0..AHEAD.min(len) {
            prefetch(keys.add(row_at(p)).cast(), row_bytes);
        }
        for block in (0..whole).step_by(BLOCK) {
            let rows: [*const T; BLOCK] = std::array::from_fn(|j| keys.add(row_at(block + j)));
            for p in (block + AHEAD..len).take(BLOCK) {
                prefetch(keys.add(row_at(p)).cast(), row_bytes);
            }
            for p in block..block + BLOCK {
                prefetch(values.add(row_at(p)).cast(), row_bytes);
            }
            widen_block::<T, V>(&rows, tile);
            for (query, head_scores) in queries.chunks_exact(head_dim).zip(scores.chunks_exact_mut(len)) {
                let q: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(query.as_ptr().add(16 * v)));
                let sums: [__m512; BLOCK] = std::array::from_fn(|j| {
                    let mut acc = _mm512_mul_ps(q[0], _mm512_load_ps(tile_at(j, 0)));
                    for (v, qv) in q.iter().enumerate().skip(1) {
                        acc = _mm512_fmadd_ps(*qv, _mm512_load_ps(tile_at(j, v)), acc);
                    }
                    acc
                });
                let eight = _mm256_mul_ps(reduce_eight(sums), _mm256_set1_ps(scale));
                _mm256_storeu_ps(head_scores.as_mut_ptr().add(block), eight);
            }
        }
        for p in whole..len {
            let key = keys.add(row_at(p));
            for (query, head_scores) in queries.chunks_exact(head_dim).zip(scores.chunks_exact_mut(len)) {
                let mut acc = _mm512_setzero_ps();
                for v in 0..V {
                    let qv = _mm512_loadu_ps(query.as_ptr().add(16 * v));
                    acc = _mm512_fmadd_ps(qv, T::load16(key.add(16 * v)), acc);
                }
                head_scores[p] = _mm512_reduce_add_ps(acc) * scale;
            }
        }
        for (head_scores, part) in scores.chunks_exact_mut(len).zip(parts.iter_mut()) {
            *part = exponentiate(head_scores);
        }

        for block in (0..whole).step_by(BLOCK) {
            let rows: [*const T; BLOCK] = std::array::from_fn(|j| values.add(row_at(block + j)));
            widen_block::<T, V>(&rows, tile);
            let sums = out
                .chunks_exact_mut(head_dim)
                .zip(odd_sums.chunks_exact_mut(head_dim));
            for ((even_out, odd_out), head_scores) in sums.zip(scores.chunks_exact(len)) {
                let weights = &head_scores[block..block + BLOCK];
                let mut even: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(even_out.as_ptr().add(16 * v)));
                let mut odd: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(odd_out.as_ptr().add(16 * v)));
                for j in (0..BLOCK).step_by(2) {
                    let (w0, w1) = (_mm512_set1_ps(weights[j]), _mm512_set1_ps(weights[j + 1]));
                    for v in 0..V {
                        even[v] = _mm512_fmadd_ps(w0, _mm512_load_ps(tile_at(j, v)), even[v]);
                        odd[v] = _mm512_fmadd_ps(w1, _mm512_load_ps(tile_at(j + 1, v)), odd[v]);
                    }
                }
                for v in 0..V {
                    _mm512_storeu_ps(even_out.as_mut_ptr().add(16 * v), even[v]);
                    _mm512_storeu_ps(odd_out.as_mut_ptr().add(16 * v), odd[v]);
                }
            }
        }
        // The last positions, alternately on the even and the odd chain, then the two added.
        for p in whole..len {
            let row = values.add(row_at(p));
            let sums = out
                .chunks_exact_mut(head_dim)
                .zip(odd_sums.chunks_exact_mut(head_dim));
            for ((even_out, odd_out), head_scores) in sums.zip(scores.chunks_exact(len)) {
                let w = _mm512_set1_ps(head_scores[p]);
                let chain = if (p - whole).is_multiple_of(2) {
                    even_out
                } else {
                    odd_out
                };
                for v in 0..V {
                    let at = chain.as_mut_ptr().add(16 * v);
                    _mm512_storeu_ps(
                        at,
                        _mm512_fmadd_ps(w, T::load16(row.add(16 * v)), _mm512_loadu_ps(at)),
                    );
                }
            }
        }
        for (even, odd) in out.iter_mut().zip(odd_sums.iter()) {
            *even += odd;
        }
    }
}

/// A block's rows widened to f32 (up to 128 values a row), cache-line aligned: each row is
/// converted once and then read by every head of the group.
#[repr(align(64))]
struct Tile([f32; BLOCK * 128]);

/// Widens the `BLOCK` rows of `V` registers at `rows` into a [`Tile`] at `tile`, row after row.
///
/// # Safety
/// Each row must hold `16 · V` readable values, `tile` a [`Tile`]; the CPU must have AVX-512F.
#[inline(always)]
unsafe fn widen_block<T: KvElement, const V: usize>(rows: &[*const T; BLOCK], tile: *mut f32) {
    for (j, row) in rows.iter().enumerate() {
        for v in 0..V {
            // SAFETY: forwarded from the caller; `j · V + v < BLOCK · 8` registers of 16.
            unsafe { _mm512_store_ps(tile.add((j * V + v) * 16), T::load16(row.add(16 * v))) };
        }
    }
}

/// Asks for the cache lines of the `bytes` bytes at `at` into L2 (a hint: never faults). Not
/// into L1: its few miss buffers fill and stall the loop (`docs/benchmarks.md`, "Kernel design
/// choices").
#[inline(always)]
fn prefetch(at: *const i8, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch of any address is only a hint.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(line)) };
    }
}

/// The eight horizontal sums of eight registers, in order.
///
/// # Safety
/// The CPU must have AVX-512F and AVX2.
#[inline(always)]
unsafe fn reduce_eight(x: [__m512; 8]) -> __m256 {
    // Fold each register's upper half onto its lower, then pairwise `hadd`s: after two rounds
    // each 128-bit lane holds four registers' partial sums, and adding the lanes finishes them.
    // SAFETY: the caller runs with AVX-512F and AVX2.
    unsafe {
        let y: [__m256; 8] = std::array::from_fn(|i| {
            _mm256_add_ps(
                _mm512_castps512_ps256(x[i]),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x[i]))),
            )
        });
        let (t01, t23) = (_mm256_hadd_ps(y[0], y[1]), _mm256_hadd_ps(y[2], y[3]));
        let (t45, t67) = (_mm256_hadd_ps(y[4], y[5]), _mm256_hadd_ps(y[6], y[7]));
        let (low, high) = (_mm256_hadd_ps(t01, t23), _mm256_hadd_ps(t45, t67));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(low, high),
            _mm256_permute2f128_ps::<0x31>(low, high),
        )
    }
}

/// Replaces each score `s` by `exp(s − max)`; returns the max and the sum.
#[target_feature(enable = "avx512f,avx2,fma")]
fn exponentiate(scores: &mut [f32]) -> SoftmaxPart {
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for chunk in scores.chunks(16) {
        max = _mm512_max_ps(max, load_part(chunk, f32::NEG_INFINITY));
    }
    let largest = _mm512_reduce_max_ps(max);
    let max = _mm512_set1_ps(largest);
    let mut total = _mm512_setzero_ps();
    for chunk in scores.chunks_mut(16) {
        let mask = lanes(chunk.len());
        let e = exp(_mm512_sub_ps(load_part(chunk, 0.0), max));
        total = _mm512_mask_add_ps(total, mask, total, e);
        // SAFETY: the mask covers `chunk.len()` lanes.
        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, e) };
    }
    SoftmaxPart {
        max: largest,
        total: _mm512_reduce_add_ps(total),
    }
}

/// Up to 16 values, the missing lanes set to `fill`.
#[target_feature(enable = "avx512f,avx2,fma")]
fn load_part(chunk: &[f32], fill: f32) -> __m512 {
    // SAFETY: the mask covers `chunk.len()` lanes.
    unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes(chunk.len()), chunk.as_ptr()) }
}
