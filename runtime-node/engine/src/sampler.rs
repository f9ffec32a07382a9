//! Next-token selection: penalties, then greedy or temperature sampling narrowed by top-k,
//! top-p and min-p. Seeded samplers are reproducible.

use std::collections::HashMap;

use hearth_kernels::vector::{softmax_total, softmax_weights};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a request wants its tokens chosen (OpenAI's fields plus the common extensions).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities sum to `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen, prompt included (1 = off).
    pub repetition_penalty: f32,
    /// Subtract from the logit of every token generated at least once (OpenAI semantics).
    pub presence_penalty: f32,
    /// Subtract this times the number of times a token was generated (OpenAI semantics).
    pub frequency_penalty: f32,
    /// Seed for reproducible sampling; `None` draws one from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// A sampling parameter outside its range; the message names the field and the range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}` must be {expected}, got {value}")]
pub struct InvalidParam {
    /// The OpenAI field name.
    pub field: &'static str,
    /// The accepted range, in words.
    pub expected: &'static str,
    /// The value received.
    pub value: f32,
}

impl SamplingParams {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        let check = |field, ok: bool, expected, value| {
            if ok {
                Ok(())
            } else {
                Err(InvalidParam {
                    field,
                    expected,
                    value,
                })
            }
        };
        check(
            "temperature",
            (0.0..=2.0).contains(&self.temperature),
            "between 0 and 2",
            self.temperature,
        )?;
        check(
            "top_p",
            self.top_p > 0.0 && self.top_p <= 1.0,
            "in (0, 1]",
            self.top_p,
        )?;
        check(
            "min_p",
            (0.0..=1.0).contains(&self.min_p),
            "between 0 and 1",
            self.min_p,
        )?;
        check(
            "repetition_penalty",
            self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite(),
            "positive",
            self.repetition_penalty,
        )?;
        check(
            "presence_penalty",
            (-2.0..=2.0).contains(&self.presence_penalty),
            "between -2 and 2",
            self.presence_penalty,
        )?;
        check(
            "frequency_penalty",
            (-2.0..=2.0).contains(&self.frequency_penalty),
            "between -2 and 2",
            self.frequency_penalty,
        )
    }

    /// Whether sampling reduces to taking the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= f32::EPSILON || self.top_k == 1
    }
}

/// Tokens a sequence has seen, for the penalties.
#[derive(Debug, Clone, Default)]
pub struct TokenHistory {
    prompt: Vec<u32>,
    generated: HashMap<u32, u32>,
}

impl TokenHistory {
    /// A history starting with the prompt's tokens.
    pub fn new(prompt: &[u32]) -> Self {
        let mut prompt = prompt.to_vec();
        prompt.sort_unstable();
        prompt.dedup();
        Self {
            prompt,
            generated: HashMap::new(),
        }
    }

    /// Records a generated token.
    pub fn push(&mut self, token: u32) {
        *self.generated.entry(token).or_insert(0) += 1;
    }
}

/// Tokens whose weight relative to the most likely one is below this are left out of the
/// first, partial sort (see [`Sampler::sample`]).
const CANDIDATE_WEIGHT: f32 = 1e-4;

/// Chooses tokens for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    // Scratch reused across tokens: every token's weight, and the candidates a filter sorts.
    weights: Vec<f32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params`, seeded from `params.seed` when given.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            weights: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The parameters this sampler applies.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place by the penalties).
    pub fn sample(&mut self, logits: &mut [f32], history: &TokenHistory) -> u32 {
        self.apply_penalties(logits, history);
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let max = largest_finite(logits);
        if max == f32::NEG_INFINITY {
            return argmax(logits);
        }
        // Each token's probability up to one shared factor: exp((logit − max) / T), 0 for a
        // non-finite logit; the most likely token's weight is 1.
        let total = softmax_weights(logits, max, 1.0 / self.params.temperature, &mut self.weights);
        let p = &self.params;
        if p.top_k == 0 && p.top_p >= 1.0 && p.min_p <= 0.0 {
            // Nothing to narrow: draw over every token in vocabulary order, no sorting.
            return draw_over(&mut self.rng, &self.weights, total);
        }
        // The filters keep a prefix of the tokens in descending order. Sort only the tokens of
        // at least a small weight first (2–380 of SmolLM2's 49,152 at temperatures up to 1,
        // where sorting them all took ~1.3 ms a token), or of at least min_p's floor when that
        // is higher, and every token when the prefix might reach past them.
        let first_cut = CANDIDATE_WEIGHT.max(p.min_p);
        for cut in [first_cut, -1.0] {
            let candidates = &mut self.candidates;
            candidates.clear();
            let above = self.weights.iter().enumerate().filter(|(_, w)| **w >= cut);
            candidates.extend(above.map(|(i, &w)| (i as u32, w)));
            let whole = candidates.len() == self.weights.len();
            if p.top_k > candidates.len() && !whole {
                continue;
            }
            let by_weight_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
            if p.top_k > 0 && p.top_k < candidates.len() {
                candidates.select_nth_unstable_by(p.top_k - 1, by_weight_desc);
                candidates.truncate(p.top_k);
            }
            candidates.sort_unstable_by(by_weight_desc);
            let Some(&(_, largest)) = candidates.first() else {
                continue;
            };
            // top_p reads probabilities normalised over what top_k left (every token without it).
            let mass = if p.top_k > 0 {
                candidates.iter().map(|c| c.1).sum()
            } else {
                total
            };
            let mut keep = candidates.len();
            if p.min_p > 0.0 {
                let floor = p.min_p * largest;
                keep = candidates.iter().take_while(|c| c.1 >= floor).count().max(1);
            }
            if p.top_p < 1.0 {
                let mut cumulative = 0.0;
                let reached = candidates[..keep].iter().position(|c| {
                    cumulative += c.1 / mass;
                    cumulative >= p.top_p
                });
                keep = reached.map_or(keep, |i| i + 1);
            }
            // Exact when top_k or min_p chose the candidates, the filters stopped inside them,
            // or they are every token.
            if p.top_k > 0 || p.min_p >= cut || keep < candidates.len() || whole {
                let kept = &candidates[..keep];
                let kept_mass = kept.iter().map(|c| c.1).sum();
                return draw(&mut self.rng, kept.iter().copied(), kept_mass);
            }
        }
        argmax(logits)
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &TokenHistory) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let seen = history.prompt.iter().chain(history.generated.keys());
            for &token in seen {
                if let Some(l) = logits.get_mut(token as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&token, &count) in &history.generated {
                if let Some(l) = logits.get_mut(token as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }
}

/// Log-probabilities of a logits row: the log-sum-exp and the `top` most likely ids.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobTable {
    log_sum_exp: f32,
    /// The most likely ids with their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl LogprobTable {
    /// Computes the table for `logits` (raw model output).
    pub fn new(logits: &[f32], top: usize) -> Self {
        let max = largest_finite(logits);
        let log_sum_exp = max + softmax_total(logits, max, 1.0).ln();
        // One pass keeping the best `top` so far in order (ties: the lower id first); most
        // tokens fail the first comparison.
        let mut best: Vec<u32> = Vec::with_capacity(top + 1);
        for (i, &logit) in logits.iter().enumerate() {
            let full = best.len() == top;
            if top == 0 || logit.is_nan() || (full && logit <= logits[best[top - 1] as usize]) {
                continue;
            }
            let at = best.partition_point(|&b| logits[b as usize] >= logit);
            best.insert(at, i as u32);
            best.truncate(top);
        }
        Self {
            log_sum_exp,
            top: best
                .into_iter()
                .map(|i| (i, logits[i as usize] - log_sum_exp))
                .collect(),
        }
    }

    /// The log-probability of `token` given the row's `logits`.
    pub fn logprob(&self, logits: &[f32], token: u32) -> f32 {
        logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |l| l - self.log_sum_exp)
    }
}

/// A token drawn with probability proportional to its weight, `mass` being the weights' sum.
fn draw(rng: &mut StdRng, weighted: impl Iterator<Item = (u32, f32)>, mass: f32) -> u32 {
    walk(rng.random::<f32>() * mass, weighted)
}

/// The token at which `left` falls inside the running sum of the weights; the last token of
/// positive weight when rounding leaves `left` past the end.
fn walk(mut left: f32, weighted: impl Iterator<Item = (u32, f32)>) -> u32 {
    let mut last = 0;
    for (token, weight) in weighted {
        if left < weight {
            return token;
        }
        left -= weight;
        if weight > 0.0 {
            last = token;
        }
    }
    last
}

/// [`draw`] over `weights` indexed by token, `mass` their sum: whole chunks are skipped by
/// their sums (a loop the compiler vectorises) before one chunk is walked token by token.
fn draw_over(rng: &mut StdRng, weights: &[f32], mass: f32) -> u32 {
    const CHUNK: usize = 256;
    let mut left = rng.random::<f32>() * mass;
    for (c, chunk) in weights.chunks(CHUNK).enumerate() {
        let sum: f32 = chunk.iter().sum();
        if left < sum {
            let tokens = chunk
                .iter()
                .enumerate()
                .map(|(i, &w)| ((c * CHUNK + i) as u32, w));
            return walk(left, tokens);
        }
        left -= sum;
    }
    // Rounding carried the draw past the end: the last token with weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
}

/// The largest finite value, −∞ when there is none.
fn largest_finite(values: &[f32]) -> f32 {
    // Sixteen running maxima updated by a comparison and a select: a loop the compiler
    // vectorises (a fold over `f32::max` with a finiteness filter runs one value at a time).
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane && v < f32::INFINITY { v } else { *lane };
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane = if v > *lane && v < f32::INFINITY { v } else { *lane };
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Index of the largest value other than NaN (ties: the lowest index), 0 for an empty slice or
/// one of NaNs only.
pub fn argmax(values: &[f32]) -> u32 {
    // The maximum first, in a loop without a data-dependent branch, then where it first occurs.
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    values.iter().position(|&v| v == max).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(7),
            ..SamplingParams::default()
        }
    }

    fn draw_many(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut sampler = Sampler::new(p);
        let history = TokenHistory::default();
        (0..n)
            .map(|_| sampler.sample(&mut logits.to_vec(), &history))
            .collect()
    }

    #[test]
    fn greedy_takes_the_maximum() {
        let out = draw_many(params(0.0), &[0.1, 3.0, 2.9, -1.0], 5);
        assert!(out.iter().all(|&t| t == 1));
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(
            draw_many(params(1.0), &logits, 64),
            draw_many(params(1.0), &logits, 64)
        );
        let other = SamplingParams {
            seed: Some(8),
            ..params(1.0)
        };
        assert_ne!(draw_many(params(1.0), &logits, 64), draw_many(other, &logits, 64));
    }

    /// The filtered softmax by its definition, in f64: finite logits sorted by logit, the top_k
    /// first, softmax at the temperature over those, tokens under min_p × the largest
    /// probability dropped, the smallest prefix holding top_p kept, renormalised.
    fn reference_probabilities(logits: &[f32], p: &SamplingParams) -> Vec<f64> {
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let scaled = |i: usize| f64::from(logits[i]) / f64::from(p.temperature);
        let max = scaled(order[0]);
        let total: f64 = order.iter().map(|&i| (scaled(i) - max).exp()).sum();
        let probability = |i: usize| (scaled(i) - max).exp() / total;
        let floor = f64::from(p.min_p) * probability(order[0]);
        let mut kept = Vec::new();
        let mut cumulative = 0.0;
        for &i in order.iter().take_while(|&&i| probability(i) >= floor) {
            kept.push(i);
            cumulative += probability(i);
            if cumulative >= f64::from(p.top_p) {
                break;
            }
        }
        let mut out = vec![0.0; logits.len()];
        for &i in &kept {
            out[i] = probability(i) / cumulative;
        }
        out
    }

    #[test]
    fn draws_follow_the_filtered_softmax() {
        let mut small: Vec<f32> = (0..12).map(|i| (i as f32 * 1.7).sin() * 3.0).collect();
        small[4] = f32::NEG_INFINITY;
        small[9] = f32::NAN;
        // One likely token over a long tail of tokens each below the sampler's first cut, which
        // top_p 0.9 and min_p 1e-5 must still reach.
        let mut tail: Vec<f32> = (0..2_001).map(|i| -9.3 - i as f32 * 1e-4).collect();
        tail[7] = 0.0;
        let with = |temperature, top_k, top_p, min_p| SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            ..params(1.0)
        };
        // Likely tokens spread over a vocabulary of several 256-token chunks.
        let mut spread: Vec<f32> = (0..1_000).map(|i| (i as f32 * 0.61).sin() * 1.5 - 1.5).collect();
        for peak in [100, 400, 700, 990] {
            spread[peak] = 5.0;
        }
        // (logits, parameters, draws): fewer over the tail, where each draw sorts it all.
        let cases = [
            (&small, with(1.0, 0, 1.0, 0.0), 20_000),
            (&small, with(0.7, 3, 1.0, 0.0), 20_000),
            (&small, with(1.0, 0, 0.8, 0.0), 20_000),
            (&small, with(1.3, 0, 1.0, 0.1), 20_000),
            (&small, with(1.0, 5, 0.9, 0.05), 20_000),
            (&spread, with(1.0, 0, 1.0, 0.0), 20_000),
            (&spread, with(0.8, 0, 0.95, 0.0), 20_000),
            (&tail, with(1.0, 0, 1.0, 0.0), 4_000),
            (&tail, with(1.0, 0, 0.9, 0.0), 4_000),
            (&tail, with(1.0, 0, 1.0, 1e-5), 4_000),
            (&tail, with(1.0, 0, 1.0, 1e-3), 4_000),
        ];
        for (logits, p, draws) in cases {
            let expected = reference_probabilities(logits, &p);
            let mut counts = vec![0usize; logits.len()];
            for token in draw_many(p.clone(), logits, draws) {
                counts[token as usize] += 1;
            }
            // Tokens of 1% or more one by one, the rest together; never one the filters drop.
            let (mut rest_expected, mut rest_count) = (0.0, 0);
            for (i, (&p_i, &count)) in expected.iter().zip(&counts).enumerate() {
                assert!(
                    p_i > 0.0 || count == 0,
                    "{p:?}: token {i} drawn though filtered out"
                );
                if p_i >= 0.01 {
                    let frequency = count as f64 / draws as f64;
                    let sigma = (p_i * (1.0 - p_i) / draws as f64).sqrt();
                    assert!(
                        (frequency - p_i).abs() <= 5.0 * sigma,
                        "{p:?}: token {i} {frequency} against {p_i}"
                    );
                } else {
                    rest_expected += p_i;
                    rest_count += count;
                }
            }
            let frequency = rest_count as f64 / draws as f64;
            let sigma = (rest_expected * (1.0 - rest_expected) / draws as f64).sqrt();
            assert!(
                (frequency - rest_expected).abs() <= 5.0 * sigma + 1e-4,
                "{p:?}: the unlikely tokens together {frequency} against {rest_expected}"
            );
        }
    }

    #[test]
    fn top_k_limits_the_choices() {
        let logits = [1.0, 5.0, 4.9, 0.5, 4.8];
        let p = SamplingParams {
            top_k: 2,
            ..params(2.0)
        };
        let out = draw_many(p, &logits, 200);
        assert!(out.iter().all(|t| *t == 1 || *t == 2), "{out:?}");
        assert!(out.contains(&1) && out.contains(&2));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ~0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let p = SamplingParams {
            top_p: 0.8,
            ..params(1.0)
        };
        let out = draw_many(p, &logits, 300);
        assert!(out.iter().all(|t| *t <= 1), "{out:?}");
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = [3.0, 2.9, 0.0, -1.0];
        let p = SamplingParams {
            min_p: 0.5,
            ..params(1.0)
        };
        let out = draw_many(p, &logits, 300);
        assert!(out.iter().all(|t| *t <= 1), "{out:?}");
    }

    #[test]
    fn penalties_discourage_repeats() {
        let mut history = TokenHistory::new(&[0]);
        history.push(1);
        history.push(1);
        let mut sampler = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..params(0.0)
        });
        let mut logits = vec![4.0, 4.0, 1.0];
        sampler.apply_penalties(&mut logits, &history);
        assert_eq!(logits[0], 2.0, "prompt token: repetition penalty only");
        assert_eq!(logits[1], 4.0 / 2.0 - 0.5 - 0.25 * 2.0);
        assert_eq!(logits[2], 1.0);
        let mut logits = vec![4.0, 4.5, 3.0];
        assert_eq!(sampler.sample(&mut logits, &history), 2);
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let table = LogprobTable::new(&logits, 2);
        let total: f32 = logits.iter().map(|&l| (l - table.log_sum_exp).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(table.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((table.logprob(&logits, 1) - table.top[0].1).abs() < 1e-7);
        assert!(table.top[0].1 < 0.0);
    }

    #[test]
    fn logprob_table_matches_f64_over_a_vocabulary() {
        let mut logits: Vec<f32> = (0..3_001)
            .map(|i| ((i * 7_919) % 1_009) as f32 * 0.01 - 5.0)
            .collect();
        logits[17] = f32::NEG_INFINITY;
        logits[2_000] = f32::NAN;
        let finite: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i, f64::from(l)))
            .collect();
        let max = finite.iter().map(|f| f.1).fold(f64::MIN, f64::max);
        let exact_lse = max + finite.iter().map(|f| (f.1 - max).exp()).sum::<f64>().ln();
        let mut order = finite.clone();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for top in [0, 1, 7, 20] {
            let table = LogprobTable::new(&logits, top);
            assert!((f64::from(table.log_sum_exp) - exact_lse).abs() < 1e-4, "{top}");
            let ids: Vec<usize> = table.top.iter().map(|t| t.0 as usize).collect();
            let expected: Vec<usize> = order.iter().take(top).map(|o| o.0).collect();
            assert_eq!(ids, expected, "the {top} most likely, ties by id");
        }
        assert!(LogprobTable::new(&[f32::NAN, f32::NAN], 2).top.is_empty());
    }

    #[test]
    fn out_of_range_params_are_named() {
        let err = SamplingParams {
            temperature: 3.0,
            ..SamplingParams::default()
        }
        .validate()
        .expect_err("too hot");
        assert_eq!(err.field, "temperature");
        assert!(SamplingParams::default().validate().is_ok());
    }
}
