//! The scheduler loop: one thread owns the model and the KV pool. Requests arrive over a channel
//! and join the running batch between steps (continuous batching), highest priority first; each
//! step feeds every running sequence its next token, or a chunk of its prompt, through one forward
//! pass; sequences leave when they finish or their client disconnects, and their blocks go back
//! to the pool.
//!
//! KV blocks are taken as sequences grow, not reserved for their whole budget up front, so the
//! pool holds as many sequences as their actual lengths allow. A request is admitted when the
//! blocks for its prompt fit beside one block of headroom per running sequence; waiting requests
//! queue until blocks free up. A new sequence first maps the longest cached prefix of its prompt
//! (prefix caching) and prefills only the rest. Preemption frees a sequence's blocks and puts it
//! back in the queue, to recompute its prompt and output so far when it is admitted again; it
//! happens when the pool cannot hold the next step's growth (the lowest-priority, latest-arrived
//! sequence goes first), and when the highest-priority waiting request cannot be admitted while
//! a running sequence has a lower priority.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc::{Receiver, TryRecvError};

use super::sequence::{Admitted, AfterStep, Sequence};
use crate::metrics::EngineMetrics;
use crate::model::kv_cache::blocks_for;
use crate::model::{KvPool, Llama, StepInput};
use crate::tokenizer::TextTokenizer;

/// Limits the scheduler works within.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLimits {
    /// Most sequences in one step.
    pub max_batch_size: usize,
    /// Most tokens in one step; long prompts are prefilled in chunks so decodes keep flowing.
    pub max_step_tokens: usize,
    /// Reuse cached prompt-prefix blocks.
    pub prefix_caching: bool,
}

/// Something waiting for a batch slot: a new request, or a preempted sequence.
// Boxed: both are large (a sampler's RNG state), and the heap moves them around.
enum Pending {
    New(Box<Admitted>),
    Preempted(Box<Sequence>),
}

impl Pending {
    fn priority(&self) -> i32 {
        match self {
            Self::New(req) => req.priority,
            Self::Preempted(seq) => seq.priority(),
        }
    }

    fn is_cancelled(&self) -> bool {
        match self {
            Self::New(req) => req.events.is_closed(),
            Self::Preempted(seq) => seq.is_cancelled(),
        }
    }

    /// Tokens it must hold in the cache when admitted.
    fn context_len(&self) -> usize {
        match self {
            Self::New(req) => req.prompt.len(),
            Self::Preempted(seq) => seq.context_len(),
        }
    }
}

// Waiting work: highest priority first, then first come first served.
struct Waiting(Pending, u64);

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .priority()
            .cmp(&other.0.priority())
            .then(other.1.cmp(&self.1))
    }
}

/// The scheduler's state between steps.
struct Scheduler {
    model: Llama,
    tokenizer: TextTokenizer,
    pool: KvPool,
    limits: SchedulerLimits,
    metrics: EngineMetrics,
    waiting: BinaryHeap<Waiting>,
    // Running sequences with their arrival numbers (kept for re-queueing after preemption).
    running: Vec<Sequence>,
    running_arrivals: Vec<u64>,
    arrivals: u64,
}

/// Clears the engine's alive flag when the scheduler stops for any reason, a panic included,
/// so `/health` fails and the kubelet restarts the pod instead of it answering 503 forever.
pub struct StopsWithScheduler(pub Arc<AtomicBool>);

impl Drop for StopsWithScheduler {
    fn drop(&mut self) {
        self.0.store(false, AtomicOrdering::SeqCst);
    }
}

/// Runs until the request channel closes and all work is done.
pub fn run(
    model: Llama,
    tokenizer: TextTokenizer,
    pool: KvPool,
    requests: Receiver<Admitted>,
    limits: SchedulerLimits,
    metrics: EngineMetrics,
    alive: Arc<AtomicBool>,
) {
    let _stops = StopsWithScheduler(alive);
    let mut s = Scheduler {
        model,
        tokenizer,
        pool,
        limits,
        metrics,
        waiting: BinaryHeap::new(),
        running: Vec::new(),
        running_arrivals: Vec::new(),
        arrivals: 0,
    };
    let mut open = true;
    loop {
        // Idle: block for the next request instead of spinning.
        if s.running.is_empty() && s.waiting.is_empty() {
            if !open {
                break;
            }
            match requests.recv() {
                Ok(req) => s.enqueue(req),
                Err(_) => break,
            }
        }
        while open {
            match requests.try_recv() {
                Ok(req) => s.enqueue(req),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        s.drop_cancelled();
        s.admit();
        s.publish_gauges();
        if s.running.is_empty() {
            if !s.waiting.is_empty() {
                // Nothing runs yet nothing fits: the head of the queue needs more blocks than the
                // pool has. `LocalEngine` refuses such requests, so this is a bug; fail it.
                let message = "request needs more KV cache than the pool holds";
                match s.waiting.pop() {
                    Some(Waiting(Pending::New(req), _)) => {
                        let _ = req.events.send(super::GenerationEvent::Failed(message.into()));
                    }
                    Some(Waiting(Pending::Preempted(seq), _)) => seq.fail(message, &s.metrics),
                    None => {}
                }
            }
            continue;
        }
        s.step();
        s.publish_gauges();
    }
    s.metrics.running.set(0);
    s.metrics.waiting.set(0);
}

impl Scheduler {
    fn enqueue(&mut self, req: Admitted) {
        self.waiting
            .push(Waiting(Pending::New(Box::new(req)), self.arrivals));
        self.arrivals += 1;
    }

    fn retire(&mut self, mut seq: Sequence) {
        self.pool.release(&mut seq.table);
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].is_cancelled() {
                let seq = self.running.swap_remove(i);
                self.running_arrivals.swap_remove(i);
                tracing::debug!(id = %seq.id, "client left; dropping sequence");
                self.metrics.requests.with_label_values(&["cancelled"]).inc();
                self.retire(seq);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self) {
        while let Some(head) = self.waiting.peek() {
            if head.0.is_cancelled() {
                self.waiting.pop();
                self.metrics.requests.with_label_values(&["cancelled"]).inc();
                continue;
            }
            // Its context plus the token it computes next, beside one block of headroom per
            // running sequence so their next steps do not immediately preempt it.
            let need = blocks_for(head.0.context_len() + 1, self.pool.block_size()) + self.running.len();
            let priority = head.0.priority();
            let fits = self.running.len() < self.limits.max_batch_size && need <= self.pool.free_blocks();
            if !fits {
                if self.preempt_below(priority) {
                    continue;
                }
                break;
            }
            let Some(Waiting(pending, arrival)) = self.waiting.pop() else {
                break;
            };
            let mut seq = match pending {
                Pending::New(req) => {
                    let prompt_len = req.prompt.len() as u64;
                    self.metrics.prompt_tokens.inc_by(prompt_len);
                    self.metrics.prefix_cache_queries.inc_by(prompt_len);
                    Sequence::new(*req)
                }
                Pending::Preempted(seq) => *seq,
            };
            let cached = if self.limits.prefix_caching {
                let (table, prompt) = seq.table_and_prompt();
                self.pool.match_prefix(table, prompt)
            } else {
                0
            };
            seq.skip_cached_prefix(cached);
            self.metrics.prefix_cache_hits.inc_by(cached as u64);
            self.running.push(seq);
            self.running_arrivals.push(arrival);
        }
    }

    /// Preempts the lowest-priority running sequence (the latest arrival among equals) if its
    /// priority is below `priority`. Returns whether one was preempted.
    fn preempt_below(&mut self, priority: i32) -> bool {
        let victim = (0..self.running.len())
            .filter(|&i| self.running[i].priority() < priority)
            .min_by_key(|&i| {
                (
                    self.running[i].priority(),
                    std::cmp::Reverse(self.running_arrivals[i]),
                )
            });
        let Some(i) = victim else { return false };
        self.preempt(i, "for a higher-priority request");
        true
    }

    /// Frees running sequence `i`'s blocks and queues it to be recomputed.
    fn preempt(&mut self, i: usize, why: &str) {
        let mut seq = self.running.swap_remove(i);
        let arrival = self.running_arrivals.swap_remove(i);
        tracing::debug!(id = %seq.id, why, "preempting");
        self.metrics.preemptions.inc();
        self.pool.release(&mut seq.table);
        seq.preempt();
        self.waiting
            .push(Waiting(Pending::Preempted(Box::new(seq)), arrival));
    }

    /// Preempts sequences, lowest priority and latest arrival first, until the pool can hold
    /// every running sequence's growth in the next step (a decode's token, or a prompt chunk of
    /// up to `max_step_tokens`). One sequence alone always fits: `LocalEngine` refuses requests
    /// longer than the pool.
    fn make_room(&mut self) {
        let block_size = self.pool.block_size();
        loop {
            let growth: usize = self
                .running
                .iter()
                .map(|seq| {
                    let next = seq.pending().min(self.limits.max_step_tokens.max(1));
                    blocks_for(seq.table.len() + next, block_size).saturating_sub(seq.table.blocks().len())
                })
                .sum();
            if growth <= self.pool.free_blocks() || self.running.len() <= 1 {
                return;
            }
            let victim = (0..self.running.len()).min_by_key(|&i| {
                (
                    self.running[i].priority(),
                    std::cmp::Reverse(self.running_arrivals[i]),
                )
            });
            match victim {
                Some(i) => self.preempt(i, "the KV cache is full"),
                None => return,
            }
        }
    }

    fn publish_gauges(&self) {
        self.metrics.running.set(self.running.len() as i64);
        self.metrics.waiting.set(self.waiting.len() as i64);
        let used = self.pool.num_blocks() - self.pool.free_blocks();
        self.metrics
            .kv_cache_utilization
            .set(used as f64 / self.pool.num_blocks() as f64);
    }

    /// One forward pass over the batch: decodes first (one token each), prompt chunks in the
    /// token budget left over.
    fn step(&mut self) {
        self.make_room();
        let decoding = self.running.iter().filter(|s| s.pending() == 1).count();
        let mut budget = self.limits.max_step_tokens.saturating_sub(decoding);
        let mut inputs: Vec<Vec<u32>> = Vec::with_capacity(self.running.len());
        for seq in &self.running {
            if seq.pending() == 1 {
                inputs.push(seq.next_input(1));
            } else if budget > 0 {
                let chunk = seq.next_input(budget);
                budget -= chunk.len();
                inputs.push(chunk);
            } else {
                inputs.push(Vec::new());
            }
        }
        let mut batch: Vec<StepInput<'_>> = self
            .running
            .iter_mut()
            .zip(&inputs)
            .filter(|(_, tokens)| !tokens.is_empty())
            .map(|(seq, tokens)| StepInput {
                tokens,
                table: &mut seq.table,
            })
            .collect();
        let logits = self
            .model
            .forward(&mut batch, &mut self.pool)
            .and_then(|l| l.to_vec2::<f32>());
        drop(batch);
        let mut rows = match logits {
            Ok(rows) => rows.into_iter(),
            Err(err) => {
                tracing::error!(%err, "forward pass failed; failing the batch");
                let message = format!("inference failed: {err}");
                self.running_arrivals.clear();
                for seq in std::mem::take(&mut self.running) {
                    seq.fail(&message, &self.metrics);
                    self.retire(seq);
                }
                return;
            }
        };
        let mut finished = Vec::new();
        let mut kept = Vec::with_capacity(self.running.len());
        let mut kept_arrivals = Vec::with_capacity(self.running.len());
        let arrivals = std::mem::take(&mut self.running_arrivals);
        for ((mut seq, input), arrival) in std::mem::take(&mut self.running)
            .into_iter()
            .zip(&inputs)
            .zip(arrivals)
        {
            if input.is_empty() {
                kept.push(seq);
                kept_arrivals.push(arrival);
                continue;
            }
            let prefilling = seq.is_prefilling();
            let outcome = match rows.next() {
                Some(mut row) => seq.after_step(input.len(), &mut row, &self.tokenizer, &self.metrics),
                None => {
                    seq.fail("internal error: missing logits row", &self.metrics);
                    AfterStep::Done
                }
            };
            if prefilling && self.limits.prefix_caching {
                let (table, prompt) = seq.table_and_prompt();
                self.pool.register_prefix(table, prompt);
            }
            match outcome {
                AfterStep::Continue => {
                    kept.push(seq);
                    kept_arrivals.push(arrival);
                }
                AfterStep::Done => finished.push(seq),
            }
        }
        self.running = kept;
        self.running_arrivals = kept_arrivals;
        for seq in finished {
            self.retire(seq);
        }
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    #[test]
    fn a_panicking_scheduler_clears_the_alive_flag() {
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let crashed = std::thread::spawn(move || {
            let _stops = StopsWithScheduler(flag);
            panic!("a bug in a step");
        })
        .join();
        assert!(crashed.is_err());
        assert!(!alive.load(AtomicOrdering::SeqCst));
    }
}
