//! One request inside the scheduler: its tokens, cache, sampler, text state and event channel.

use std::time::Instant;

use tokio::sync::mpsc;

use super::text::{IncrementalDecoder, StopMatcher, StopOutcome};
use super::{FinishReason, GenerationEvent, TokenLogprob, Usage};
use crate::metrics::EngineMetrics;
use crate::model::BlockTable;
use crate::sampler::{LogprobTable, Sampler, TokenHistory};
use crate::tokenizer::TextTokenizer;

/// A tokenized request, as handed from `submit` to the scheduler thread.
#[derive(Debug)]
pub struct Admitted {
    /// Request id, for logs.
    pub id: String,
    /// The tokenized prompt.
    pub prompt: Vec<u32>,
    /// Completion budget, already checked against the context limit.
    pub max_tokens: usize,
    /// The request's sampler (seeded when asked).
    pub sampler: Sampler,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Token ids that end generation (end-of-turn ids included unless `ignore_eos`).
    pub stop_token_ids: Vec<u32>,
    /// Admission priority, higher first.
    pub priority: i32,
    /// Alternatives per token when log-probabilities are requested.
    pub logprobs: Option<usize>,
    /// When the request reached the engine (for time to first token).
    pub arrived: Instant,
    /// Where the request's events go.
    pub events: mpsc::UnboundedSender<GenerationEvent>,
}

/// A request in the running batch.
#[derive(Debug)]
pub struct Sequence {
    pub id: String,
    prompt: Vec<u32>,
    /// Tokens of `prompt ++ generated` whose keys and values are in the cache.
    cached: usize,
    generated: Vec<u32>,
    max_tokens: usize,
    /// Where the sequence's keys and values live in the pool.
    pub table: BlockTable,
    sampler: Sampler,
    history: TokenHistory,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    stop_token_ids: Vec<u32>,
    arrived: Instant,
    last_token_at: Option<Instant>,
    priority: i32,
    stop_token_seen: bool,
    logprobs: Option<usize>,
    // Log-probabilities of tokens whose text has not been sent yet.
    pending_logprobs: Vec<TokenLogprob>,
    events: mpsc::UnboundedSender<GenerationEvent>,
}

/// What the scheduler should do with a sequence after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterStep {
    /// Keep it in the batch.
    Continue,
    /// It finished (or its client left); drop it.
    Done,
}

impl Sequence {
    /// A sequence for `req`, with nothing cached yet.
    pub fn new(req: Admitted) -> Self {
        let history = TokenHistory::new(&req.prompt);
        Self {
            id: req.id,
            prompt: req.prompt,
            cached: 0,
            generated: Vec::new(),
            max_tokens: req.max_tokens,
            table: BlockTable::default(),
            sampler: req.sampler,
            history,
            decoder: IncrementalDecoder::default(),
            stops: StopMatcher::new(&req.stop),
            stop_token_ids: req.stop_token_ids,
            arrived: req.arrived,
            last_token_at: None,
            priority: req.priority,
            stop_token_seen: false,
            logprobs: req.logprobs,
            pending_logprobs: Vec::new(),
            events: req.events,
        }
    }

    /// The block table, mutably, beside the prompt (for prefix matching and registration).
    pub fn table_and_prompt(&mut self) -> (&mut BlockTable, &[u32]) {
        (&mut self.table, &self.prompt)
    }

    /// Records that the first `n` prompt tokens came from the prefix cache.
    pub fn skip_cached_prefix(&mut self, n: usize) {
        self.cached = n.min(self.prompt.len().saturating_sub(1));
    }

    /// Forgets the cache (the scheduler released the blocks): the next steps recompute the prompt
    /// and the tokens generated so far, then generation continues where it stopped.
    pub fn preempt(&mut self) {
        self.cached = 0;
    }

    /// Whether any prompt token still needs computing.
    pub fn is_prefilling(&self) -> bool {
        self.cached < self.prompt.len()
    }

    /// Client-visible priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Tokens the sequence must hold in the cache to continue: its prompt and output so far.
    pub fn context_len(&self) -> usize {
        self.prompt.len() + self.generated.len()
    }

    /// Whether the client is gone (its receiver dropped).
    pub fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Tokens not yet in the cache: 1 while decoding, more while (re)computing a prefix.
    pub fn pending(&self) -> usize {
        self.prompt.len() + self.generated.len() - self.cached
    }

    /// The tokens to feed this step: up to `budget` of the uncached ones (at least one).
    pub fn next_input(&self, budget: usize) -> Vec<u32> {
        let end = self.cached + self.pending().min(budget.max(1));
        self.prompt
            .iter()
            .chain(&self.generated)
            .skip(self.cached)
            .take(end - self.cached)
            .copied()
            .collect()
    }

    /// Records that `fed` input tokens went through the model; with the prompt complete,
    /// samples a token from `logits` and reports it.
    pub fn after_step(
        &mut self,
        fed: usize,
        logits: &mut [f32],
        tokenizer: &TextTokenizer,
        metrics: &EngineMetrics,
    ) -> AfterStep {
        self.cached += fed;
        if self.pending() > 0 {
            // More of the prefix to compute before these logits mean anything.
            return AfterStep::Continue;
        }
        // Log-probabilities describe the model's own distribution, so take them before the
        // sampler applies penalties in place.
        let table = self
            .logprobs
            .map(|top| (LogprobTable::new(logits, top), logits.to_vec()));
        let token = self.sampler.sample(logits, &self.history);
        let now = Instant::now();
        match self.last_token_at {
            None => metrics
                .time_to_first_token
                .observe((now - self.arrived).as_secs_f64()),
            Some(prev) => metrics.time_per_output_token.observe((now - prev).as_secs_f64()),
        }
        self.last_token_at = Some(now);
        metrics.generation_tokens.inc();

        if self.stop_token_ids.contains(&token) {
            // The stop token was computed, so it counts as generated (as in vLLM), but has no text.
            self.stop_token_seen = true;
            let tail = self.stops.flush();
            self.send_text(tail);
            return self.finish(FinishReason::Stop, metrics);
        }
        self.generated.push(token);
        self.history.push(token);
        // The new token is not cached yet: it is the next step's input.
        if let Some((table, raw)) = table {
            let text = |id: u32| tokenizer.decode(&[id], false).unwrap_or_default();
            self.pending_logprobs.push(TokenLogprob {
                token: text(token),
                logprob: table.logprob(&raw, token),
                top: table.top.iter().map(|&(id, lp)| (text(id), lp)).collect(),
            });
        }
        let delta = match self.decoder.push(token, tokenizer) {
            Ok(delta) => delta,
            Err(err) => {
                let _ = self.events.send(GenerationEvent::Failed(err.to_string()));
                metrics.requests.with_label_values(&["error"]).inc();
                return AfterStep::Done;
            }
        };
        match self.stops.push(&delta) {
            StopOutcome::Stopped(text) => {
                self.send_text(text);
                return self.finish(FinishReason::Stop, metrics);
            }
            StopOutcome::Continue(text) => self.send_text(text),
        }
        if self.generated.len() >= self.max_tokens {
            let tail = self.stops.flush();
            self.send_text(tail);
            return self.finish(FinishReason::Length, metrics);
        }
        AfterStep::Continue
    }

    /// Reports a failure of the step this sequence was part of.
    pub fn fail(&self, message: &str, metrics: &EngineMetrics) {
        let _ = self.events.send(GenerationEvent::Failed(message.to_string()));
        metrics.requests.with_label_values(&["error"]).inc();
    }

    fn send_text(&mut self, text: String) {
        // Log-probabilities ride with the text their tokens produced; held-back tokens wait.
        if !text.is_empty() {
            let logprobs = std::mem::take(&mut self.pending_logprobs);
            let _ = self.events.send(GenerationEvent::Delta { text, logprobs });
        }
    }

    fn finish(&mut self, reason: FinishReason, metrics: &EngineMetrics) -> AfterStep {
        if !self.pending_logprobs.is_empty() {
            let logprobs = std::mem::take(&mut self.pending_logprobs);
            let _ = self.events.send(GenerationEvent::Delta {
                text: String::new(),
                logprobs,
            });
        }
        let usage = Usage {
            prompt_tokens: self.prompt.len(),
            completion_tokens: self.generated.len() + usize::from(self.stop_token_seen),
        };
        let _ = self.events.send(GenerationEvent::Finished { reason, usage });
        metrics.requests.with_label_values(&[reason.as_str()]).inc();
        AfterStep::Done
    }
}
