//! Grouped-query attention on 512-bit registers, for head widths of 64 and 128 (every Llama,
//! Qwen2 and Mistral size). Same arithmetic as [`crate::vector::attend_group`], arranged so the
//! loops run at the FMA units' rate instead of their latency:
//! - scores eight positions at a time, the eight sums reduced together (one `hadd` tree instead
//!   of eight full horizontal reductions), the query held in registers;
//! - softmax with a vector `exp` (a scalar `expf` per score cost as much as the dot products);
//! - the weighted sum of values accumulated in registers, two positions interleaved so
//!   sixteen (or thirty-two) FMA chains are in flight, normalised once at the end.

use std::arch::x86_64::*;

use super::exp512::{exp, lanes};
use super::vector::{Context, KvElement};

/// Whether this path handles heads of `head_dim` values.
pub fn supports(head_dim: usize) -> bool {
    matches!(head_dim, 64 | 128)
}

/// [`crate::vector::attend_group`] for `head_dim` in [`supports`].
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
    out: &mut [f32],
) {
    match head_dim {
        64 => attend::<T, 4>(queries, context, scale, scores, out),
        128 => attend::<T, 8>(queries, context, scale, scores, out),
        _ => panic!("attention512 takes heads of 64 or 128 values, not {head_dim}"),
    }
}

/// `V` registers of 16 values per head.
#[target_feature(enable = "avx512f,avx2,fma")]
fn attend<T: KvElement, const V: usize>(
    queries: &[f32],
    context: &Context<'_, T>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let head_dim = V * 16;
    let len = context.rows.len();
    let heads = queries.len() / head_dim;
    assert_eq!(out.len(), heads * head_dim, "one output per query head");
    let Some(last_row) = context.rows.iter().max() else {
        out.fill(0.0);
        return;
    };
    // Every row read below lies inside both tables (checked once, not per load).
    let end = (context.base + *last_row as usize + 1) * head_dim;
    assert!(end <= context.keys.len() && end <= context.values.len());
    scores.clear();
    scores.resize(heads * len, 0.0);
    let row_at = |p: usize| (context.base + context.rows[p] as usize) * head_dim;
    for (h, (query, head_out)) in queries
        .chunks_exact(head_dim)
        .zip(out.chunks_exact_mut(head_dim))
        .enumerate()
    {
        let head_scores = &mut scores[h * len..(h + 1) * len];
        // SAFETY (all blocks below): every row offset is `row_at(p)` for `p < len`, inside the
        // tables by the assertion above; `query`/`head_out` hold `V` registers' worth.
        unsafe {
            let q: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(query.as_ptr().add(16 * v)));
            let keys = context.keys.as_ptr();
            let mut p = 0;
            while p + 8 <= len {
                let sums: [__m512; 8] = std::array::from_fn(|j| {
                    let key = keys.add(row_at(p + j));
                    let mut acc = _mm512_mul_ps(q[0], T::load16(key));
                    for (v, qv) in q.iter().enumerate().skip(1) {
                        acc = _mm512_fmadd_ps(*qv, T::load16(key.add(16 * v)), acc);
                    }
                    acc
                });
                let eight = _mm256_mul_ps(reduce_eight(sums), _mm256_set1_ps(scale));
                _mm256_storeu_ps(head_scores.as_mut_ptr().add(p), eight);
                p += 8;
            }
            for (i, score) in head_scores.iter_mut().enumerate().skip(p) {
                let key = keys.add(row_at(i));
                let mut acc = _mm512_setzero_ps();
                for (v, qv) in q.iter().enumerate() {
                    acc = _mm512_fmadd_ps(*qv, T::load16(key.add(16 * v)), acc);
                }
                *score = _mm512_reduce_add_ps(acc) * scale;
            }

            let total = exponentiate(head_scores);

            let values = context.values.as_ptr();
            let mut even = [_mm512_setzero_ps(); V];
            let mut odd = [_mm512_setzero_ps(); V];
            let mut p = 0;
            while p + 2 <= len {
                let (w0, w1) = (_mm512_set1_ps(head_scores[p]), _mm512_set1_ps(head_scores[p + 1]));
                let (v0, v1) = (values.add(row_at(p)), values.add(row_at(p + 1)));
                for v in 0..V {
                    even[v] = _mm512_fmadd_ps(w0, T::load16(v0.add(16 * v)), even[v]);
                    odd[v] = _mm512_fmadd_ps(w1, T::load16(v1.add(16 * v)), odd[v]);
                }
                p += 2;
            }
            if p < len {
                let (w, row) = (_mm512_set1_ps(head_scores[p]), values.add(row_at(p)));
                for (v, acc) in even.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(w, T::load16(row.add(16 * v)), *acc);
                }
            }
            let inverse = _mm512_set1_ps(1.0 / total);
            for v in 0..V {
                let sum = _mm512_mul_ps(_mm512_add_ps(even[v], odd[v]), inverse);
                _mm512_storeu_ps(head_out.as_mut_ptr().add(16 * v), sum);
            }
        }
    }
}

/// The eight horizontal sums of eight registers, in order.
#[target_feature(enable = "avx512f,avx2,fma")]
fn reduce_eight(x: [__m512; 8]) -> __m256 {
    // Fold each register's upper half onto its lower, then pairwise `hadd`s: after two rounds
    // each 128-bit lane holds four registers' partial sums, and adding the lanes finishes them.
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

/// Replaces each score `s` by `exp(s − max)` and returns their sum.
#[target_feature(enable = "avx512f,avx2,fma")]
fn exponentiate(scores: &mut [f32]) -> f32 {
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for chunk in scores.chunks(16) {
        max = _mm512_max_ps(max, load_part(chunk, f32::NEG_INFINITY));
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut total = _mm512_setzero_ps();
    for chunk in scores.chunks_mut(16) {
        let mask = lanes(chunk.len());
        let e = exp(_mm512_sub_ps(load_part(chunk, 0.0), max));
        total = _mm512_mask_add_ps(total, mask, total, e);
        // SAFETY: the mask covers `chunk.len()` lanes.
        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, e) };
    }
    _mm512_reduce_add_ps(total)
}

/// Up to 16 values, the missing lanes set to `fill`.
#[target_feature(enable = "avx512f,avx2,fma")]
fn load_part(chunk: &[f32], fill: f32) -> __m512 {
    // SAFETY: the mask covers `chunk.len()` lanes.
    unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes(chunk.len()), chunk.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Random(u64);
    impl Random {
        fn float(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Softmax attention in f64, straight from the definition.
    fn reference<T: KvElement>(
        queries: &[f32],
        context: &Context<'_, T>,
        head_dim: usize,
        scale: f32,
    ) -> Vec<f64> {
        let row = |table: &[T], p: usize| {
            let at = (context.base + context.rows[p] as usize) * head_dim;
            let mut wide = vec![0f32; head_dim];
            T::widen(&table[at..at + head_dim], &mut wide);
            wide.into_iter().map(f64::from).collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        for query in queries.chunks_exact(head_dim) {
            let scores: Vec<f64> = (0..context.rows.len())
                .map(|p| {
                    let key = row(context.keys, p);
                    query
                        .iter()
                        .zip(&key)
                        .map(|(q, k)| f64::from(*q) * k)
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut head = vec![0f64; head_dim];
            for (p, w) in weights.iter().enumerate() {
                for (o, v) in head.iter_mut().zip(row(context.values, p)) {
                    *o += w / total * v;
                }
            }
            out.extend(head);
        }
        out
    }

    #[test]
    fn attention_matches_the_f64_definition() {
        if crate::dot::skip_without_avx512f() {
            return;
        }
        let mut random = Random(7);
        // Context lengths around the 8-position blocks and the 2-position value pairs; rows
        // shuffled and offset by a base, as a paged cache hands them over.
        for (head_dim, group) in [(64, 3), (64, 1), (128, 4)] {
            for len in [1usize, 2, 7, 8, 9, 17, 300] {
                let (base, table_rows) = (5, len + 11);
                let keys: Vec<f32> = (0..(base + table_rows) * head_dim)
                    .map(|_| random.float() * 3.0)
                    .collect();
                let values: Vec<f32> = (0..keys.len()).map(|_| random.float()).collect();
                let rows: Vec<u32> = (0..len as u32).map(|p| (p * 7 + 3) % table_rows as u32).collect();
                let queries: Vec<f32> = (0..group * head_dim).map(|_| random.float()).collect();
                check(
                    &queries,
                    (&keys, &values),
                    base,
                    &rows,
                    head_dim,
                    &format!("f32, {head_dim}×{group}, len {len}"),
                );
                // The same table stored as half floats (the reference reads the rounded values).
                let (keys, values) = (halves(&keys), halves(&values));
                check(
                    &queries,
                    (&keys, &values),
                    base,
                    &rows,
                    head_dim,
                    &format!("f16, {head_dim}×{group}, len {len}"),
                );
            }
        }
    }

    fn halves(values: &[f32]) -> Vec<half::f16> {
        let mut out = vec![half::f16::ZERO; values.len()];
        half::f16::narrow(values, &mut out);
        out
    }

    /// The kernel and the portable path on `rows` of the (keys, values) table from `base`,
    /// against the f64 definition.
    fn check<T: KvElement>(
        queries: &[f32],
        (keys, values): (&[T], &[T]),
        base: usize,
        rows: &[u32],
        head_dim: usize,
        label: &str,
    ) {
        let context = &Context {
            keys,
            values,
            base,
            rows,
        };
        let (mut scores, mut out) = (Vec::new(), vec![f32::NAN; queries.len()]);
        let scale = 1.0 / (head_dim as f32).sqrt();
        // SAFETY: the caller checked for AVX-512F.
        unsafe { attend_group(queries, context, head_dim, scale, &mut scores, &mut out) };
        let expected = reference(queries, context, head_dim, scale);
        for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() < 2e-6,
                "{label}, value {i}: {got} vs {want}"
            );
        }
        // The portable path agrees too (it widens each row before its f32 loops).
        let mut portable = vec![f32::NAN; queries.len()];
        crate::vector::attend_group_portable(queries, context, head_dim, scale, &mut scores, &mut portable);
        for (i, (got, want)) in portable.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() < 2e-6,
                "{label}, portable, value {i}: {got} vs {want}"
            );
        }
    }
}
