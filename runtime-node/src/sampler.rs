//! Next-token selection: penalties, then greedy or temperature sampling narrowed by top-k,
//! top-p and min-p. Seeded samplers are reproducible.

use std::collections::HashMap;

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

/// Chooses tokens for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler for `params`, seeded from `params.seed` when given.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
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
        let temperature = self.params.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / temperature))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if self.params.top_k > 0 && self.params.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.params.top_k - 1, by_logit_desc);
            candidates.truncate(self.params.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);

        // Softmax over the survivors (max first, so exp never overflows).
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);

        let mut keep = probs.len();
        if self.params.min_p > 0.0 {
            let floor = self.params.min_p * probs[0];
            keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
        }
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut n = 0;
            for p in &probs[..keep] {
                cumulative += p;
                n += 1;
                if cumulative >= self.params.top_p {
                    break;
                }
            }
            keep = n.max(1);
        }
        let mass: f32 = probs[..keep].iter().sum();
        let mut draw = self.rng.random::<f32>() * mass;
        for (i, p) in probs[..keep].iter().enumerate() {
            if draw < *p {
                return candidates[i].0;
            }
            draw -= p;
        }
        candidates[keep - 1].0
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
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        let log_sum_exp = max + sum.ln();
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        let top = top.min(ids.len());
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if top > 0 && top < ids.len() {
            ids.select_nth_unstable_by(top - 1, by_logit);
        }
        ids.truncate(top);
        ids.sort_unstable_by(by_logit);
        Self {
            log_sum_exp,
            top: ids
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

/// Index of the largest finite value (ties: the lowest index), 0 for an empty slice.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
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
