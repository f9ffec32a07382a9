//! The fused CPU step: a forward pass over host memory (decoding and prompt chunks alike),
//! where candle's per-op tensors cost more than the arithmetic.
//!
//! Every per-layer intermediate lives in [`HostBuffers`], reused across steps (what is still
//! allocated per step is small: the token list, each token's context rows, the logits). Each
//! norm's output is quantized to 8-bit blocks once and shared by the matrices that read it
//! (q/k/v and gate/up, each pair or triple in one parallel loop); rotary embedding is applied in
//! place; attention reads keys and values straight out of the paged pool through the block
//! table, with grouped-query heads sharing one pass over their KV head instead of copying it.

use candle_core::{DType, Result, Tensor};
use hearth_kernels::attention::{Context, SoftmaxPart, attend_group, merge_parts, normalise};
use hearth_kernels::blocks::ActivationBlock;
use hearth_kernels::pool::SendPtr;
use hearth_kernels::vector::{KvElement, quantize, silu_mul};

use super::kv_cache::{HostLayer, KvPool};
use super::layers::Linear;
use super::llama::{Llama, StepInput};

/// Scratch memory of the fused step, sized for the largest step seen so far.
#[derive(Debug, Default)]
pub struct HostBuffers {
    // Residual stream, `tokens × hidden`.
    x: Vec<f32>,
    // Normalised input of the current sub-layer.
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attention: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    // Output of o / down before it is added to the residual.
    projected: Vec<f32>,
    quantized: Vec<ActivationBlock>,
    attention_runs: AttentionRuns,
}

/// Scratch of [`attend`]: its tasks, each task's softmax parts, and the unnormalised sums of
/// the tasks that cover only a run of a split context.
#[derive(Debug, Default)]
struct AttentionRuns {
    tasks: Vec<AttentionTask>,
    parts: Vec<SoftmaxPart>,
    sums: Vec<f32>,
}

/// One query group (a KV head's query heads) of one token over a run of its context.
#[derive(Debug, Clone, Copy)]
struct AttentionTask {
    token: usize,
    kv_head: usize,
    // Positions `start..end` of the token's context.
    start: usize,
    end: usize,
    // How many runs the context is split into, and this task's slot in `sums` when more than one.
    runs: usize,
    slot: usize,
}

/// Resizes `buffer` to `len` values (contents are overwritten by the caller).
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// Where each new token of the step sits: its sequence's blocks and its position.
struct TokenSlot<'a> {
    blocks: &'a [u32],
    position: usize,
}

impl Llama {
    /// One step over `batch` (already reserved in `pool`) in host memory; `ids` and `positions`
    /// are the flattened new tokens. Returns `(batch.len(), vocab)` logits like the tensor path.
    pub(super) fn run_host(
        &self,
        batch: &mut [StepInput<'_>],
        pool: &mut KvPool,
        ids: &[u32],
        positions: &[u32],
    ) -> Result<Tensor> {
        let mut guard = self
            .host_buffers
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused step buffers poisoned".into()))?;
        let buffers = &mut *guard;
        let cfg = &self.cfg;
        let (tokens, hidden) = (ids.len(), cfg.hidden_size);
        let (heads, kv_heads, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);

        let embedded = self
            .embedding
            .embedding(&Tensor::new(ids, &candle_core::Device::Cpu)?)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        buffers.x.clear();
        buffers.x.extend_from_slice(&embedded);

        let slots: Vec<TokenSlot<'_>> = batch
            .iter()
            .flat_map(|entry| {
                let blocks = entry.table.blocks();
                entry
                    .tokens
                    .iter()
                    .enumerate()
                    .map(move |(i, _)| (blocks, entry.table.len() + i))
            })
            .map(|(blocks, position)| TokenSlot { blocks, position })
            .collect();
        debug_assert!(
            slots
                .iter()
                .zip(positions)
                .all(|(s, &p)| s.position == p as usize)
        );
        // Each token's context as pool rows (the same in every layer): positions 0..=position.
        let block_size = pool.block_size();
        let token_rows: Vec<Vec<u32>> = slots
            .iter()
            .map(|slot| {
                (0..=slot.position)
                    .map(|p| pool_row(slot.blocks, p, block_size) as u32)
                    .collect()
            })
            .collect();

        for (layer, block) in self.blocks.iter().enumerate() {
            let b = &mut *buffers;
            let normed = sized(&mut b.normed, tokens * hidden);
            block.attn_norm.forward_host(&b.x, normed);
            quantize(normed, &mut b.quantized);
            let q = sized(&mut b.q, tokens * heads * hd);
            let k = sized(&mut b.k, tokens * kv_heads * hd);
            let v = sized(&mut b.v, tokens * kv_heads * hd);
            Linear::forward_host_many(
                &[&block.q, &block.k, &block.v],
                normed,
                &b.quantized,
                tokens,
                &mut [&mut *q, &mut *k, &mut *v],
            )?;
            for (t, slot) in slots.iter().enumerate() {
                self.rope
                    .apply_host(&mut q[t * heads * hd..(t + 1) * heads * hd], slot.position);
                self.rope
                    .apply_host(&mut k[t * kv_heads * hd..(t + 1) * kv_heads * hd], slot.position);
            }
            let pool_rows = pool.pool_rows();
            let Some(store) = pool.host_layer_mut(layer) else {
                candle_core::bail!("the fused step needs a host KV pool");
            };
            // This step's keys and values go into their blocks before anyone attends to them.
            for (t, slot) in slots.iter().enumerate() {
                let row = pool_row(slot.blocks, slot.position, block_size);
                for head in 0..kv_heads {
                    let from = (t * kv_heads + head) * hd;
                    store.store(
                        (head * pool_rows + row) * hd,
                        &k[from..from + hd],
                        &v[from..from + hd],
                    );
                }
            }
            let attention = sized(&mut b.attention, tokens * heads * hd);
            let layout = AttentionLayout {
                heads,
                group: heads / kv_heads,
                head_dim: hd,
                pool_rows,
            };
            let runs = &mut b.attention_runs;
            match store {
                HostLayer::F32 { k, v } => attend(&layout, q, (k, v), &token_rows, attention, runs),
                HostLayer::F16 { k, v } => attend(&layout, q, (k, v), &token_rows, attention, runs),
                HostLayer::Fp8 { k, v } => attend(&layout, q, (k, v), &token_rows, attention, runs),
            }

            quantize(attention, &mut b.quantized);
            let projected = sized(&mut b.projected, tokens * hidden);
            block.o.forward_host(attention, &b.quantized, tokens, projected)?;
            add_into(&mut b.x, projected);

            block.ffn_norm.forward_host(&b.x, normed);
            quantize(normed, &mut b.quantized);
            let width = block.gate.out_features();
            let gate = sized(&mut b.gate, tokens * width);
            let up = sized(&mut b.up, tokens * width);
            Linear::forward_host_many(
                &[&block.gate, &block.up],
                normed,
                &b.quantized,
                tokens,
                &mut [&mut *gate, &mut *up],
            )?;
            silu_mul(gate, up);
            quantize(gate, &mut b.quantized);
            block.down.forward_host(gate, &b.quantized, tokens, projected)?;
            add_into(&mut b.x, projected);
        }

        // Logits after each entry's last new token.
        let mut last = Vec::with_capacity(batch.len() * hidden);
        let mut end = 0;
        for entry in batch.iter_mut() {
            let n = entry.tokens.len();
            end += n;
            last.extend_from_slice(&buffers.x[(end - 1) * hidden..end * hidden]);
            pool.advance(entry.table, n);
        }
        let rows = batch.len();
        let normed = sized(&mut buffers.normed, rows * hidden);
        self.norm.forward_host(&last, normed);
        quantize(normed, &mut buffers.quantized);
        let Some(lm_head) = &self.lm_head else {
            candle_core::bail!("this rank has no output head; rank 0 computes the logits");
        };
        let mut logits = vec![0f32; rows * cfg.vocab_size];
        lm_head.forward_host(normed, &buffers.quantized, rows, &mut logits)?;
        Tensor::from_vec(logits, (rows, cfg.vocab_size), &candle_core::Device::Cpu)
    }
}

/// Row of `position` in a layer's pool storage, through the sequence's block table.
#[inline]
fn pool_row(blocks: &[u32], position: usize, block_size: usize) -> usize {
    blocks[position / block_size] as usize * block_size + position % block_size
}

fn add_into(residual: &mut [f32], delta: &[f32]) {
    for (r, d) in residual.iter_mut().zip(delta) {
        *r += d;
    }
}

/// Shapes attention needs to find a head's rows in the pool.
struct AttentionLayout {
    heads: usize,
    // Query heads per KV head.
    group: usize,
    head_dim: usize,
    pool_rows: usize,
}

/// Fewest context positions in a run of a split context: shorter runs cost more to merge and
/// to schedule than they save.
const MIN_RUN: usize = 64;

/// Causal attention of every new token's query heads over its sequence's cached keys and values
/// (positions `0..=position`, whose pool rows are `token_rows[t]`), read in place from the pool.
/// A task takes one token's query group (the query heads of a KV head), so each key and value
/// row is read once per group. When that leaves too few tasks to keep every thread busy (a
/// single decoding sequence: one token, a few KV heads), each context is split into runs whose
/// results are merged afterwards (split-K, as flash-decoding does on GPUs).
fn attend<T: KvElement>(
    layout: &AttentionLayout,
    q: &[f32],
    (keys, values): (&[T], &[T]),
    token_rows: &[Vec<u32>],
    out: &mut [f32],
    scratch: &mut AttentionRuns,
) {
    let (hd, group) = (layout.head_dim, layout.group);
    let kv_heads = layout.heads / group;
    let scale = 1.0 / (hd as f32).sqrt();
    let workers = hearth_kernels::pool::global();
    let wanted_tasks = 4 * workers.threads();
    let groups = token_rows.len() * kv_heads;
    scratch.tasks.clear();
    let mut slots = 0;
    for (token, rows) in token_rows.iter().enumerate() {
        let runs = if groups >= wanted_tasks {
            1
        } else {
            wanted_tasks
                .div_ceil(groups)
                .min(rows.len().div_ceil(MIN_RUN))
                .max(1)
        };
        let run_len = rows.len().div_ceil(runs);
        for kv_head in 0..kv_heads {
            for run in 0..runs {
                scratch.tasks.push(AttentionTask {
                    token,
                    kv_head,
                    start: (run * run_len).min(rows.len()),
                    end: ((run + 1) * run_len).min(rows.len()),
                    runs,
                    slot: if runs > 1 { slots + run } else { 0 },
                });
            }
            if runs > 1 {
                slots += runs;
            }
        }
    }
    let AttentionRuns { tasks, parts, sums } = scratch;
    parts.clear();
    parts.resize(tasks.len() * group, SoftmaxPart::EMPTY);
    sums.clear();
    sums.resize(slots * group * hd, 0.0);
    let (parts_at, sums_at, out_at) = (SendPtr::new(parts), SendPtr::new(sums), SendPtr::new(out));
    let group_width = group * hd;
    // Where a token's query group starts in `q` and `out`.
    let group_at = |task: &AttentionTask| (task.token * layout.heads + task.kv_head * group) * hd;
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    workers.run(tasks.len(), &|index| {
        let task = &tasks[index];
        let at = group_at(task);
        let context = Context {
            keys,
            values,
            base: task.kv_head * layout.pool_rows,
            rows: &token_rows[task.token][task.start..task.end],
        };
        // SAFETY: each task owns its `group` parts, its slot of `sums` (split runs) or its query
        // group of `out` (whole contexts); all three outlive `run`.
        let (target, part) = unsafe {
            let target = if task.runs > 1 {
                sums_at.get().add(task.slot * group_width)
            } else {
                out_at.get().add(at)
            };
            (
                std::slice::from_raw_parts_mut(target, group_width),
                std::slice::from_raw_parts_mut(parts_at.get().add(index * group), group),
            )
        };
        let queries = &q[at..at + group_width];
        SCORES.with_borrow_mut(|scores| {
            attend_group(queries, &context, hd, scale, scores, (&mut *target, &mut *part))
        });
        if task.runs == 1 {
            normalise(target, part);
        }
    });
    for (index, task) in tasks.iter().enumerate() {
        if task.runs > 1 && task.start == 0 {
            let at = group_at(task);
            let runs = task.slot * group_width..(task.slot + task.runs) * group_width;
            let run_parts = &parts[index * group..(index + task.runs) * group];
            merge_parts(&sums[runs], run_parts, &mut out[at..at + group_width]);
        }
    }
}
