//! Grouped-query attention over a paged key/value cache, in parts: a query group's softmax over
//! one run of its context gives unnormalised weighted sums plus each head's [`SoftmaxPart`]
//! (largest score, sum of exponentials); runs of one context computed apart (by different
//! threads: a long context split for a single decoding sequence) are combined by
//! [`merge_parts`], a whole context's by [`normalise`]. The arithmetic is softmax's, rescaled
//! to a common maximum, so the split changes rounding only.

#[cfg(target_arch = "x86_64")]
mod avx512;

use super::vector::KvElement;

/// The cached positions a query attends to: rows `base + rows[p]` of the `keys` and `values`
/// tables (rows of one head's width), stored as `T`.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a, T = f32> {
    /// Key rows.
    pub keys: &'a [T],
    /// Value rows, laid out as `keys`.
    pub values: &'a [T],
    /// First row of the key/value head in both tables.
    pub base: usize,
    /// The positions' rows, relative to `base`.
    pub rows: &'a [u32],
}

/// Where one query head's softmax stands after part of its context: the largest scaled score
/// and `Σ exp(score − max)` over that part (an empty part: `max = −∞`, `total = 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxPart {
    /// Largest score of the part.
    pub max: f32,
    /// Sum of `exp(score − max)` over the part.
    pub total: f32,
}

impl SoftmaxPart {
    /// A part with no positions.
    pub const EMPTY: Self = Self {
        max: f32::NEG_INFINITY,
        total: 0.0,
    };
}

/// Attention of query heads that share one key/value head (a group of one: plain multi-head),
/// over the context's rows: `queries` holds the heads one after another, `head_dim` values
/// each. For each head, scores `query · key_p · scale`, `parts[h]` gets their
/// [`SoftmaxPart`] and `out` (per head) `Σ_p exp(score_p − max) · value_p`, not yet divided by
/// the total ([`normalise`], [`merge_parts`]). Each key and value row is read from memory once
/// for the whole group. `scores` is scratch.
pub fn attend_group<T: KvElement>(
    queries: &[f32],
    context: &Context<'_, T>,
    head_dim: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    (out, parts): (&mut [f32], &mut [SoftmaxPart]),
) {
    assert_eq!(queries.len(), out.len(), "one output per query value");
    assert_eq!(
        queries.len(),
        parts.len() * head_dim,
        "one softmax part per query head"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dot::has_avx512f() && avx512::supports(head_dim) {
            // SAFETY: AVX-512F was detected (it implies the AVX2 and FMA checks passed).
            return unsafe { avx512::attend_group(queries, context, head_dim, scale, scores, (out, parts)) };
        }
        if crate::dot::simd_level() != crate::dot::Simd::None {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { attend_group_avx2(queries, context, head_dim, scale, scores, (out, parts)) };
        }
    }
    attend_group_portable(queries, context, head_dim, scale, scores, (out, parts));
}

/// [`attend_group`] without vector instructions (the reference the vector paths are tested
/// against, and what CPUs without AVX2 run).
pub fn attend_group_portable<T: KvElement>(
    queries: &[f32],
    context: &Context<'_, T>,
    head_dim: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    (out, parts): (&mut [f32], &mut [SoftmaxPart]),
) {
    attend_group_with::<false, T>(queries, context, head_dim, scale, scores, (out, parts));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_group_avx2<T: KvElement>(
    queries: &[f32],
    context: &Context<'_, T>,
    head_dim: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    (out, parts): (&mut [f32], &mut [SoftmaxPart]),
) {
    attend_group_with::<true, T>(queries, context, head_dim, scale, scores, (out, parts));
}

#[inline(always)]
fn attend_group_with<const FMA: bool, T: KvElement>(
    queries: &[f32],
    context: &Context<'_, T>,
    head_dim: usize,
    scale: f32,
    scratch: &mut Vec<f32>,
    (out, parts): (&mut [f32], &mut [SoftmaxPart]),
) {
    let len = context.rows.len();
    let heads = queries.len() / head_dim;
    scratch.clear();
    // The scores, then one key or value row widened to f32.
    scratch.resize(heads * len + head_dim, 0.0);
    let (scores, wide) = scratch.split_at_mut(heads * len);
    for (p, &row) in context.rows.iter().enumerate() {
        let at = (context.base + row as usize) * head_dim;
        T::widen(&context.keys[at..at + head_dim], wide);
        for (h, query) in queries.chunks_exact(head_dim).enumerate() {
            scores[h * len + p] = crate::vector::dot_with::<FMA>(query, wide) * scale;
        }
    }
    for (head_scores, part) in scores.chunks_exact_mut(len.max(1)).zip(parts.iter_mut()) {
        let max = head_scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
        let mut total = 0f32;
        for s in head_scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        *part = SoftmaxPart { max, total };
    }
    if len == 0 {
        parts.fill(SoftmaxPart::EMPTY);
    }
    out.fill(0.0);
    for (p, &row) in context.rows.iter().enumerate() {
        let at = (context.base + row as usize) * head_dim;
        T::widen(&context.values[at..at + head_dim], wide);
        for (h, head_out) in out.chunks_exact_mut(head_dim).enumerate() {
            crate::vector::axpy_with::<FMA>(head_out, scores[h * len + p], wide);
        }
    }
}

/// Divides each head's sums in `out` (from [`attend_group`] over a whole context) by its total.
pub fn normalise(out: &mut [f32], parts: &[SoftmaxPart]) {
    let head_dim = out.len() / parts.len().max(1);
    for (head_out, part) in out.chunks_exact_mut(head_dim.max(1)).zip(parts) {
        divide(head_out, part.total);
    }
}

/// `head_out /= total` (as a multiplication by the inverse); zeros for an empty context.
fn divide(head_out: &mut [f32], total: f32) {
    let inverse = if total > 0.0 { 1.0 / total } else { 0.0 };
    head_out.iter_mut().for_each(|o| *o *= inverse);
}

/// Combines the results of [`attend_group`] over disjoint runs of one context into the
/// normalised attention output: `sums` holds each run's `out` one after another (each
/// `out.len()` values), `parts` each run's parts likewise. Each run is rescaled from its own
/// maximum to the overall one.
pub fn merge_parts(sums: &[f32], parts: &[SoftmaxPart], out: &mut [f32]) {
    let heads = parts.len() * out.len() / sums.len().max(1);
    let head_dim = out.len() / heads.max(1);
    assert_eq!(sums.len() % out.len().max(1), 0, "whole runs of sums");
    out.fill(0.0);
    for (h, head_out) in out.chunks_exact_mut(head_dim.max(1)).enumerate() {
        let of_head = || parts.iter().skip(h).step_by(heads);
        let max = of_head().fold(f32::NEG_INFINITY, |m, part| m.max(part.max));
        let mut total = 0f32;
        for (run, part) in of_head().enumerate() {
            if part.total == 0.0 {
                continue;
            }
            let weight = (part.max - max).exp();
            total += weight * part.total;
            let at = (run * heads + h) * head_dim;
            crate::vector::axpy(head_out, weight, &sums[at..at + head_dim]);
        }
        divide(head_out, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::Fp8E4M3;

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
    pub(crate) fn reference<T: KvElement>(
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

    /// A paged table's keys and values in f32, and the rows of one context.
    struct Table<'a> {
        keys: &'a [f32],
        values: &'a [f32],
        base: usize,
        rows: &'a [u32],
    }

    impl Table<'_> {
        /// [`check`] with the table stored as `T`.
        fn check_as<T: KvElement>(&self, kernel: Kernel<T>, queries: &[f32], head_dim: usize, label: &str) {
            let (keys, values) = (stored::<T>(self.keys), stored::<T>(self.values));
            let context = Context {
                keys: &keys,
                values: &values,
                base: self.base,
                rows: self.rows,
            };
            check(kernel, queries, &context, head_dim, label);
        }
    }

    /// `values` rounded to the storage type `T`.
    fn stored<T: KvElement>(values: &[f32]) -> Vec<T> {
        let mut out = vec![T::default(); values.len()];
        T::narrow(values, &mut out);
        out
    }

    type Kernel<T> = fn(&[f32], &Context<'_, T>, usize, f32, &mut Vec<f32>, (&mut [f32], &mut [SoftmaxPart]));

    /// `kernel` on the whole context (normalised) and on the context cut into `splits` runs
    /// (merged) against the f64 definition.
    fn check<T: KvElement>(
        kernel: Kernel<T>,
        queries: &[f32],
        context: &Context<'_, T>,
        head_dim: usize,
        label: &str,
    ) {
        let heads = queries.len() / head_dim;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let expected = reference(queries, context, head_dim, scale);
        let mut scores = Vec::new();
        let len = context.rows.len();
        for splits in [1, 2, 3, 5] {
            let run = len.div_ceil(splits);
            let mut sums = vec![f32::NAN; splits * queries.len()];
            let mut parts = vec![SoftmaxPart::EMPTY; splits * heads];
            for (s, (sum, part)) in sums
                .chunks_exact_mut(queries.len())
                .zip(parts.chunks_exact_mut(heads))
                .enumerate()
            {
                // Runs past the end are empty: a split into more runs than positions.
                let rows = &context.rows[(s * run).min(len)..((s + 1) * run).min(len)];
                kernel(
                    queries,
                    &Context { rows, ..*context },
                    head_dim,
                    scale,
                    &mut scores,
                    (sum, part),
                );
            }
            let mut out = vec![f32::NAN; queries.len()];
            if splits == 1 {
                out.copy_from_slice(&sums);
                normalise(&mut out, &parts);
            } else {
                merge_parts(&sums, &parts, &mut out);
            }
            for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (f64::from(*got) - want).abs() < 2e-6,
                    "{label}, {splits} runs, value {i}: {got} vs {want}"
                );
            }
        }
    }

    /// Every kernel this CPU runs, grouped heads of 64 and 128 values (the 512-bit kernel's
    /// widths) and an odd width, context lengths around the 8-position blocks and the value
    /// pairs, rows shuffled and offset by a base as a paged cache hands them over; f32, f16 and
    /// FP8 storage.
    #[test]
    fn every_path_matches_the_f64_definition_whole_and_split() {
        type Kernels = (&'static str, Kernel<f32>, Kernel<half::f16>, Kernel<Fp8E4M3>);
        let mut kernels: Vec<Kernels> = vec![
            (
                "dispatched",
                attend_group::<f32>,
                attend_group::<half::f16>,
                attend_group::<Fp8E4M3>,
            ),
            (
                "portable",
                attend_group_portable::<f32>,
                attend_group_portable::<half::f16>,
                attend_group_portable::<Fp8E4M3>,
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::dot::simd_level() != crate::dot::Simd::None {
            fn avx2<T: KvElement>(
                q: &[f32],
                c: &Context<'_, T>,
                d: usize,
                s: f32,
                scratch: &mut Vec<f32>,
                out: (&mut [f32], &mut [SoftmaxPart]),
            ) {
                // SAFETY: AVX2 and FMA were detected.
                unsafe { attend_group_avx2(q, c, d, s, scratch, out) }
            }
            kernels.push(("avx2", avx2::<f32>, avx2::<half::f16>, avx2::<Fp8E4M3>));
        }
        let mut random = Random(7);
        for (head_dim, group) in [(64, 3), (64, 1), (128, 4), (24, 2)] {
            for len in [1usize, 2, 7, 8, 9, 17, 300] {
                let (base, table_rows) = (5, len + 11);
                let keys: Vec<f32> = (0..(base + table_rows) * head_dim)
                    .map(|_| random.float() * 3.0)
                    .collect();
                let values: Vec<f32> = (0..keys.len()).map(|_| random.float()).collect();
                let rows: Vec<u32> = (0..len as u32).map(|p| (p * 7 + 3) % table_rows as u32).collect();
                let queries: Vec<f32> = (0..group * head_dim).map(|_| random.float()).collect();
                let table = Table {
                    keys: &keys,
                    values: &values,
                    base,
                    rows: &rows,
                };
                for (name, wide, narrow, eight_bit) in &kernels {
                    let label = format!("{name}, {head_dim}×{group}, len {len}");
                    // The same table stored as each type (the reference reads the rounded values).
                    table.check_as(*wide, &queries, head_dim, &format!("f32, {label}"));
                    table.check_as(*narrow, &queries, head_dim, &format!("f16, {label}"));
                    table.check_as(*eight_bit, &queries, head_dim, &format!("fp8, {label}"));
                }
            }
        }
    }

    #[test]
    fn two_heads_over_two_rows_by_hand() {
        // Attention over rows 2 and 0 of a 3-row table equals the softmax formula by hand, for
        // each of a group of two query heads sharing the key/value head.
        let keys = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0];
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let context = Context {
            keys: &keys,
            values: &values,
            base: 0,
            rows: &[2, 0],
        };
        let (mut scores, mut out, mut parts) = (Vec::new(), [0f32; 4], [SoftmaxPart::EMPTY; 2]);
        attend_group(
            &[1.0, 0.5, -1.0, 0.25],
            &context,
            2,
            0.5,
            &mut scores,
            (&mut out, &mut parts),
        );
        normalise(&mut out, &parts);
        for (head, query) in [[1.0f32, 0.5], [-1.0, 0.25]].iter().enumerate() {
            let s2 = (query[0] * 2.0 + query[1] * 2.0) * 0.5;
            let s0 = query[0] * 0.5;
            let (w2, w0) = (s2.exp() / (s2.exp() + s0.exp()), s0.exp() / (s2.exp() + s0.exp()));
            let got = &out[head * 2..head * 2 + 2];
            assert!(
                (got[0] - (w2 * 5.0 + w0 * 1.0)).abs() < 1e-6
                    && (got[1] - (w2 * 6.0 + w0 * 2.0)).abs() < 1e-6,
                "head {head}: {got:?}"
            );
            assert_eq!(parts[head].max, s2.max(s0), "head {head}'s largest score");
        }
    }
}
