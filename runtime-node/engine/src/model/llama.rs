//! The Llama-family transformer (Llama, Mistral, Qwen2) over quantized GGUF weights.
//!
//! A step takes any mix of sequences, each contributing one or more new tokens: their tokens are
//! flattened into one `(T, hidden)` matrix so every weight matrix is read once per step for the
//! whole batch, and attention runs per sequence against that sequence's blocks in the paged KV
//! pool. Grouped-query attention folds the query heads of a group into rows of one matmul instead
//! of copying K/V per query head.

use std::sync::Mutex;

use candle_core::quantized::QTensor;
use candle_core::{D, DType, Device, Result, Tensor};

use super::config::{Architecture, ModelConfig};
use super::gguf::LoadError;
use super::group::{Followers, StepCommand};
use super::host_step::HostBuffers;
use super::kv_cache::{BlockTable, KvDtype, KvPool};
pub use super::layers::WeightFormat;
use super::layers::{Linear, LinearWeight, RmsNorm, Split, WeightReader};
use super::rope::Rope;
use super::source::TensorSource;
use crate::parallel::{Communicator, Shard};

#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) attn_norm: RmsNorm,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) ffn_norm: RmsNorm,
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
}

/// One sequence's share of a forward step: its new tokens and its block table.
#[derive(Debug)]
pub struct StepInput<'a> {
    /// Tokens to append (a prompt chunk on prefill, one token on decode).
    pub tokens: &'a [u32],
    /// The sequence's blocks; the tokens go in at position `table.len()`.
    pub table: &'a mut BlockTable,
}

/// A loaded model, ready to run steps. Under tensor parallelism this is one rank's shard: its
/// heads and MLP slice, a communicator, and on rank 0 the follower ranks it drives.
#[derive(Debug)]
pub struct Llama {
    pub(super) cfg: ModelConfig,
    pub(super) embedding: QTensor,
    pub(super) blocks: Vec<Block>,
    pub(super) norm: RmsNorm,
    // Only rank 0 computes logits; follower ranks skip the output head.
    pub(super) lm_head: Option<LinearWeight>,
    pub(super) rope: Rope,
    device: Device,
    shard: Shard,
    comm: Option<Box<dyn Communicator>>,
    followers: Option<Followers>,
    // Small steps on CPU run the fused host-memory step (`host_step`) unless turned off.
    fused_cpu_step: bool,
    // How a host KV pool stores its rows: f32 with dequantized weights (exact numerics), else f16.
    kv_dtype: KvDtype,
    pub(super) host_buffers: Mutex<HostBuffers>,
}

impl Llama {
    /// Reads the weights named by llama.cpp's GGUF convention (`blk.N.attn_q.weight`, ...) from
    /// `source` (a GGUF file or a safetensors folder mapped to those names),
    /// checking every shape against `cfg`. `max_positions` bounds the rotary tables; `format`
    /// says how matrices are kept in memory.
    pub fn load(
        source: &mut dyn TensorSource,
        cfg: &ModelConfig,
        max_positions: usize,
        format: WeightFormat,
        device: &Device,
    ) -> std::result::Result<Self, LoadError> {
        Self::load_shard(source, cfg, max_positions, format, device, Shard::SINGLE)
    }

    /// Like [`Llama::load`], keeping only `shard`'s slice of the heads and MLP: the rank's part
    /// of a tensor-parallel model. `cfg`'s head counts and MLP width must divide by the shard's
    /// world size.
    pub fn load_shard(
        source: &mut dyn TensorSource,
        cfg: &ModelConfig,
        max_positions: usize,
        format: WeightFormat,
        device: &Device,
        shard: Shard,
    ) -> std::result::Result<Self, LoadError> {
        crate::parallel::check_divisible(cfg.split_dims(), shard.world).map_err(|error| {
            LoadError::TensorParallel {
                path: source.path().to_path_buf(),
                error,
            }
        })?;
        let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let (q_out, kv_out) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let biases = cfg.arch == Architecture::Qwen2;
        let mut r = WeightReader {
            source,
            device,
            dequantize: format == WeightFormat::Dequantized,
            requantize: match format {
                WeightFormat::Requantized(target) => Some(target),
                _ => None,
            },
            shard,
        };
        let embedding = r.qtensor("token_embd.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: RmsNorm::new(r.f32(&format!("{p}.attn_norm.weight"), &[h])?, eps)
                    .map_err(|source| r.build_err(source))?,
                q: r.linear(&format!("{p}.attn_q"), q_out, h, biases, Split::Output)?,
                k: r.linear(&format!("{p}.attn_k"), kv_out, h, biases, Split::Output)?,
                v: r.linear(&format!("{p}.attn_v"), kv_out, h, biases, Split::Output)?,
                o: r.linear(&format!("{p}.attn_output"), h, q_out, false, Split::Input)?,
                ffn_norm: RmsNorm::new(r.f32(&format!("{p}.ffn_norm.weight"), &[h])?, eps)
                    .map_err(|source| r.build_err(source))?,
                gate: r.linear(&format!("{p}.ffn_gate"), ff, h, false, Split::Output)?,
                up: r.linear(&format!("{p}.ffn_up"), ff, h, false, Split::Output)?,
                down: r.linear(&format!("{p}.ffn_down"), h, ff, false, Split::Input)?,
            });
        }
        let norm =
            RmsNorm::new(r.f32("output_norm.weight", &[h])?, eps).map_err(|source| r.build_err(source))?;
        // Small models tie the output projection to the embedding table.
        let head_name = if r.source.has("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let lm_head = if shard.rank == 0 {
            let head = r.qtensor(head_name, &[cfg.vocab_size, h])?;
            Some(r.matmul(head)?)
        } else {
            None
        };
        // Llama 3.x GGUFs carry their frequency scaling as per-dimension factors.
        let freq_factors = if r.source.has("rope_freqs.weight") {
            let t = r.f32("rope_freqs.weight", &[cfg.head_dim / 2])?;
            Some(t.to_vec1::<f32>().map_err(|source| r.build_err(source))?)
        } else {
            None
        };
        let rope = Rope::new(cfg, freq_factors.as_deref(), max_positions, device)
            .map_err(|source| r.build_err(source))?;
        Ok(Self {
            cfg: cfg.clone(),
            embedding,
            blocks,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            shard,
            comm: None,
            followers: None,
            fused_cpu_step: device.is_cpu(),
            kv_dtype: if format == WeightFormat::Dequantized {
                KvDtype::F32
            } else {
                KvDtype::F16
            },
            host_buffers: Mutex::new(HostBuffers::default()),
        })
    }

    /// Turns the fused CPU step off (every step then runs as candle tensor ops) or back on: for
    /// comparing the two paths in tests and benchmarks.
    pub fn set_fused_cpu_step(&mut self, on: bool) {
        self.fused_cpu_step = on && self.device.is_cpu();
    }

    /// Whether a step runs fused in host memory: on CPU, one rank, a host pool. Prompt chunks
    /// too: tensor ops quantize each matmul's input again and copy every intermediate, which
    /// makes them slower (`docs/benchmarks.md`, "Kernel design choices").
    fn runs_fused(&self, pool: &KvPool) -> bool {
        self.fused_cpu_step && pool.is_host() && !self.shard.is_split() && self.followers.is_none()
    }

    /// Joins this shard to its group: `comm` sums the row-parallel outputs; `followers` (rank 0
    /// only) are the other ranks, sent every step and pool allocation.
    pub(crate) fn attach(&mut self, comm: Box<dyn Communicator>, followers: Option<Followers>) {
        self.comm = Some(comm);
        self.followers = followers;
    }

    /// Which slice of the model this is.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Query and KV heads held by this rank.
    fn local_heads(&self) -> (usize, usize) {
        let world = self.shard.world.max(1);
        (self.cfg.num_heads / world, self.cfg.num_kv_heads / world)
    }

    /// Sums a row-parallel layer's partial output over the ranks.
    fn all_reduce(&self, x: Tensor) -> Result<Tensor> {
        match &self.comm {
            Some(comm) if self.shard.is_split() => comm.all_reduce_sum(&x),
            _ => Ok(x),
        }
    }

    /// Gives up on the group after a failed step, so the other ranks stop waiting for this one.
    pub(crate) fn abort_group(&self) {
        if let Some(comm) = &self.comm {
            comm.abort();
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Longest sequence the rotary tables cover.
    pub fn max_positions(&self) -> usize {
        self.rope.max_positions()
    }

    /// A KV pool of `num_blocks` blocks of `block_size` tokens for this model (for this rank's
    /// KV heads; on rank 0 every follower allocates its own alike).
    pub fn new_pool(&self, num_blocks: usize, block_size: usize) -> Result<KvPool> {
        if let Some(followers) = &self.followers {
            followers.new_pools(num_blocks, block_size)?;
        }
        self.new_local_pool(num_blocks, block_size)
    }

    /// How this model's pools store keys and values in host memory.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// Sets how pools made from now on store keys and values in host memory.
    pub fn set_kv_dtype(&mut self, dtype: KvDtype) {
        self.kv_dtype = dtype;
    }

    /// This rank's pool only.
    pub(crate) fn new_local_pool(&self, num_blocks: usize, block_size: usize) -> Result<KvPool> {
        let mut local = self.cfg.clone();
        local.num_kv_heads = self.local_heads().1;
        KvPool::new(&local, num_blocks, block_size, self.kv_dtype, &self.device)
    }

    /// Runs one step over `batch`, appending every entry's tokens to its blocks in `pool`, and
    /// returns the next-token logits after each entry's last token: `(batch.len(), vocab)`, f32.
    pub fn forward(&self, batch: &mut [StepInput<'_>], pool: &mut KvPool) -> Result<Tensor> {
        let (ids, positions) = self.reserve(batch, pool)?;
        if self.runs_fused(pool) {
            return self.run_host(batch, pool, &ids, &positions);
        }
        if let Some(followers) = &self.followers {
            followers.step(StepCommand::new(batch))?;
        }
        match self.run(batch, pool, ids, positions, true) {
            Ok(Some(logits)) => Ok(logits),
            Ok(None) => candle_core::bail!("the step computed no logits"),
            Err(err) => {
                self.abort_group();
                Err(err)
            }
        }
    }

    /// A follower's share of rank 0's `step`: the same tokens into the same blocks of its own
    /// pool, through its own heads; the logits are left to rank 0.
    pub(crate) fn follow(&self, step: &StepCommand, pool: &mut KvPool) -> Result<()> {
        let mut tables: Vec<BlockTable> = step
            .entries
            .iter()
            .map(|e| BlockTable::from_blocks(e.blocks.clone(), e.len))
            .collect();
        let mut batch: Vec<StepInput<'_>> = step
            .entries
            .iter()
            .zip(tables.iter_mut())
            .map(|(e, table)| StepInput {
                tokens: &e.tokens,
                table,
            })
            .collect();
        let (ids, positions) = self.reserve(&mut batch, pool)?;
        self.run(&mut batch, pool, ids, positions, false).map(|_| ())
    }

    /// Makes room for every entry's tokens; returns the flattened token ids and positions.
    fn reserve(&self, batch: &mut [StepInput<'_>], pool: &mut KvPool) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut all_tokens = Vec::new();
        let mut positions = Vec::new();
        for entry in batch.iter_mut() {
            if entry.tokens.is_empty() {
                candle_core::bail!("a step entry has no tokens");
            }
            let start = entry.table.len();
            let end = start + entry.tokens.len();
            if end > self.rope.max_positions() {
                candle_core::bail!(
                    "a sequence of {end} tokens exceeds the rotary table of {} positions",
                    self.rope.max_positions()
                );
            }
            pool.reserve(entry.table, entry.tokens.len())?;
            all_tokens.extend_from_slice(entry.tokens);
            positions.extend((start..end).map(|p| p as u32));
        }
        Ok((all_tokens, positions))
    }

    /// The layers over a reserved batch; the logits when `logits` (rank 0).
    fn run(
        &self,
        batch: &mut [StepInput<'_>],
        pool: &mut KvPool,
        ids: Vec<u32>,
        positions: Vec<u32>,
        logits: bool,
    ) -> Result<Option<Tensor>> {
        let (cos, sin) = self.rope.tables_for(&positions)?;
        let ids = Tensor::from_vec(ids, positions.len(), &self.device)?;

        let mut x = self.embedding.embedding(&ids)?.to_dtype(DType::F32)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&x)?;
            let attn = self.attention(layer, block, &h, &cos, &sin, batch, pool)?;
            x = (x + self.all_reduce(block.o.forward(&attn)?)?)?;
            let h = block.ffn_norm.forward(&x)?;
            let mlp = (block.gate.forward(&h)?.silu()? * block.up.forward(&h)?)?;
            x = (x + self.all_reduce(block.down.forward(&mlp)?)?)?;
        }
        let mut last_rows = Vec::with_capacity(batch.len());
        let mut offset = 0u32;
        for entry in batch.iter_mut() {
            let n = entry.tokens.len();
            offset += n as u32;
            last_rows.push(offset - 1);
            pool.advance(entry.table, n);
        }
        if !logits {
            return Ok(None);
        }
        let last_rows = Tensor::new(last_rows.as_slice(), &self.device)?;
        let x = self.norm.forward(&x.index_select(&last_rows, 0)?)?;
        let Some(lm_head) = &self.lm_head else {
            candle_core::bail!(
                "rank {} has no output head; rank 0 computes the logits",
                self.shard.rank
            );
        };
        lm_head.forward(&x)?.to_dtype(DType::F32).map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        block: &Block,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &[StepInput<'_>],
        pool: &mut KvPool,
    ) -> Result<Tensor> {
        let ((heads, kv_heads), hd) = (self.local_heads(), self.cfg.head_dim);
        let group = heads / kv_heads;
        let total = h.dim(0)?;
        let q = block.q.forward(h)?.reshape((total, heads, hd))?;
        let k = block.k.forward(h)?.reshape((total, kv_heads, hd))?;
        let v = block.v.forward(h)?.reshape((total, kv_heads, hd))?;
        let q = self.rope.apply(&q, cos, sin)?;
        let k = self.rope.apply(&k, cos, sin)?;
        let scale = 1.0 / (hd as f64).sqrt();
        if batch.len() > 1 && batch.iter().all(|entry| entry.tokens.len() == 1) {
            return self.decode_attention(layer, (&q, &k, &v), scale, batch, pool);
        }

        let mut outputs = Vec::with_capacity(batch.len());
        let mut offset = 0;
        for entry in batch {
            let n = entry.tokens.len();
            let start = entry.table.len();
            let k_new = k.narrow(0, offset, n)?.transpose(0, 1)?;
            let v_new = v.narrow(0, offset, n)?.transpose(0, 1)?;
            pool.write(layer, entry.table, &k_new, &v_new)?;
            // Whole blocks: rows past `start + n` are stale and masked below.
            let (keys, values) = pool.gather(layer, entry.table)?;
            let rows = keys.dim(1)?;
            // (n, heads, hd) -> (kv_heads, group * n, hd): the queries sharing a KV head become
            // rows of one matmul against that head's keys.
            let q_seq =
                q.narrow(0, offset, n)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((kv_heads, group * n, hd))?;
            let mut scores = (q_seq.matmul(&keys.t()?)? * scale)?;
            if n > 1 || rows > start + n {
                let mask = causal_mask(n, start, rows, &self.device)?;
                scores = scores
                    .reshape((kv_heads, group, n, rows))?
                    .broadcast_add(&mask)?
                    .reshape((kv_heads, group * n, rows))?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let out = probs
                .matmul(&values)?
                .reshape((heads, n, hd))?
                .transpose(0, 1)?
                .reshape((n, heads * hd))?;
            outputs.push(out);
            offset += n;
        }
        if outputs.len() == 1 {
            return outputs
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("empty batch".into()));
        }
        Tensor::cat(&outputs, 0)
    }

    /// Attention for sequences that each decode one token: their blocks gathered side by side
    /// (padded to the longest with a masked repeat of their first block) and attended in one
    /// batched matmul, instead of a chain of small ops per sequence (a kernel launch each on a
    /// GPU). `q` is `(batch, heads, head_dim)`, `k` and `v` `(batch, kv_heads, head_dim)`.
    fn decode_attention(
        &self,
        layer: usize,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        scale: f64,
        batch: &[StepInput<'_>],
        pool: &mut KvPool,
    ) -> Result<Tensor> {
        let ((heads, kv_heads), hd) = (self.local_heads(), self.cfg.head_dim);
        let sequences = batch.len();
        for (i, entry) in batch.iter().enumerate() {
            let k_new = k.narrow(0, i, 1)?.transpose(0, 1)?;
            let v_new = v.narrow(0, i, 1)?.transpose(0, 1)?;
            pool.write(layer, entry.table, &k_new, &v_new)?;
        }
        let widest = batch.iter().map(|e| e.table.blocks().len()).max().unwrap_or(0);
        let rows = widest * pool.block_size();
        let mut blocks = Vec::with_capacity(sequences * widest);
        let mut mask = Vec::with_capacity(sequences * rows);
        for entry in batch {
            let own = entry.table.blocks();
            let Some(&first) = own.first() else {
                candle_core::bail!("a decoding sequence has no KV block");
            };
            blocks.extend(
                own.iter()
                    .copied()
                    .chain(std::iter::repeat_n(first, widest - own.len())),
            );
            // The new token sits at position `len`: rows 0..=len are its context.
            let visible = entry.table.len() + 1;
            mask.extend((0..rows).map(|j| if j < visible { 0.0 } else { f32::NEG_INFINITY }));
        }
        let (keys, values) = pool.gather_blocks(layer, &blocks)?;
        let per_sequence = |t: Tensor| {
            t.reshape((kv_heads, sequences, rows, hd))?
                .transpose(0, 1)?
                .contiguous()
        };
        let (keys, values) = (per_sequence(keys)?, per_sequence(values)?);
        let mask = Tensor::from_vec(mask, (sequences, 1, 1, rows), &self.device)?;
        let queries = q.reshape((sequences, kv_heads, heads / kv_heads, hd))?;
        let scores = (queries.matmul(&keys.t()?)? * scale)?.broadcast_add(&mask)?;
        candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&values)?
            .reshape((sequences, heads * hd))
    }
}

/// `(n, rows)` additive mask: token t (at position start + t) sees positions `0..=start + t`;
/// later rows (future tokens, stale block tails) are hidden.
fn causal_mask(n: usize, start: usize, rows: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|t| (0..rows).map(move |j| if j > start + t { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, rows), device)
}

/// Index of the largest value in each row of `logits` `(rows, vocab)`.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
