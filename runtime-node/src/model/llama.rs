//! The Llama-family transformer (Llama, Mistral, Qwen2) over quantized GGUF weights.
//!
//! A step takes any mix of sequences, each contributing one or more new tokens: their tokens are
//! flattened into one `(T, hidden)` matrix so every weight matrix is read once per step for the
//! whole batch, and attention runs per sequence against that sequence's blocks in the paged KV
//! pool. Grouped-query attention folds the query heads of a group into rows of one matmul instead
//! of copying K/V per query head.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Result, Tensor};

use super::config::{Architecture, ModelConfig};
use super::gguf::LoadError;
use super::kv_cache::{BlockTable, KvPool};
use super::rope::Rope;
use super::source::TensorSource;

/// RMS normalisation with a learned scale.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// A linear layer over quantized weights, with an optional f32 bias (Qwen2's q/k/v).
#[derive(Debug, Clone)]
struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

/// Rows from which a quantized matmul dequantizes its weight and runs a dense GEMM instead of
/// one quantized dot product per (row, column): candle's quantized kernels do not reuse weight
/// loads across rows, so long prompt chunks are several times faster dense.
const DENSE_MIN_ROWS: usize = 32;

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            QMatMul::QTensor(q) if x.dim(0)? >= DENSE_MIN_ROWS => {
                let w = q.dequantize(x.device())?;
                x.matmul(&w.t()?)?
            }
            weight => weight.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// One sequence's share of a forward step: its new tokens and its block table.
#[derive(Debug)]
pub struct StepInput<'a> {
    /// Tokens to append (a prompt chunk on prefill, one token on decode).
    pub tokens: &'a [u32],
    /// The sequence's blocks; the tokens go in at position `table.len()`.
    pub table: &'a mut BlockTable,
}

/// A loaded model, ready to run steps.
#[derive(Debug)]
pub struct Llama {
    cfg: ModelConfig,
    embedding: QTensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: QMatMul,
    rope: Rope,
    device: Device,
}

/// Loader state: the file, where the weights go, and the config they must agree with.
struct WeightReader<'a> {
    source: &'a mut dyn TensorSource,
    device: &'a Device,
    dequantize: bool,
    requantize: Option<GgmlDType>,
}

/// Whether `dtype` is a block-quantized type (not a float type).
fn is_block_quantized(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// How weights are kept in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// As stored in the file.
    #[default]
    AsStored,
    /// Expanded to f32: exact matmuls at 4-8x the memory (numerics checks).
    Dequantized,
    /// Block-quantized weights converted to this type at load: trades a little accuracy for a
    /// type with faster CPU kernels (candle has SIMD Q8_0 but scalar Q4_1).
    Requantized(GgmlDType),
}

impl WeightReader<'_> {
    fn qtensor(&mut self, name: &str, shape: &[usize]) -> std::result::Result<QTensor, LoadError> {
        self.source.load(name, shape, self.device)
    }

    fn f32(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, LoadError> {
        let q = self.qtensor(name, shape)?;
        q.dequantize(self.device).map_err(|source| self.build_err(source))
    }

    fn linear(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> std::result::Result<Linear, LoadError> {
        let q = self.qtensor(&format!("{name}.weight"), &[out, inp])?;
        let weight = self.matmul(q)?;
        let bias_name = format!("{name}.bias");
        let bias = if bias && self.source.has(&bias_name) {
            Some(self.f32(&bias_name, &[out])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    fn matmul(&self, q: QTensor) -> std::result::Result<QMatMul, LoadError> {
        if self.dequantize {
            let t = q
                .dequantize(self.device)
                .map_err(|source| self.build_err(source))?;
            return Ok(QMatMul::Tensor(t));
        }
        let q = match self.requantize {
            Some(target) if q.dtype() != target && is_block_quantized(q.dtype()) => {
                let requantized = q
                    .dequantize(self.device)
                    .and_then(|t| QTensor::quantize(&t, target));
                requantized.map_err(|source| self.build_err(source))?
            }
            _ => q,
        };
        QMatMul::from_qtensor(q).map_err(|source| self.build_err(source))
    }

    fn build_err(&self, source: candle_core::Error) -> LoadError {
        LoadError::Build {
            path: self.source.path().to_path_buf(),
            source: Box::new(source),
        }
    }
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
        };
        let embedding = r.qtensor("token_embd.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: RmsNorm {
                    weight: r.f32(&format!("{p}.attn_norm.weight"), &[h])?,
                    eps,
                },
                q: r.linear(&format!("{p}.attn_q"), q_out, h, biases)?,
                k: r.linear(&format!("{p}.attn_k"), kv_out, h, biases)?,
                v: r.linear(&format!("{p}.attn_v"), kv_out, h, biases)?,
                o: r.linear(&format!("{p}.attn_output"), h, q_out, false)?,
                ffn_norm: RmsNorm {
                    weight: r.f32(&format!("{p}.ffn_norm.weight"), &[h])?,
                    eps,
                },
                gate: r.linear(&format!("{p}.ffn_gate"), ff, h, false)?,
                up: r.linear(&format!("{p}.ffn_up"), ff, h, false)?,
                down: r.linear(&format!("{p}.ffn_down"), h, ff, false)?,
            });
        }
        let norm = RmsNorm {
            weight: r.f32("output_norm.weight", &[h])?,
            eps,
        };
        // Small models tie the output projection to the embedding table.
        let head_name = if r.source.has("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let head = r.qtensor(head_name, &[cfg.vocab_size, h])?;
        let lm_head = r.matmul(head)?;
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
        })
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

    /// A KV pool of `num_blocks` blocks of `block_size` tokens for this model.
    pub fn new_pool(&self, num_blocks: usize, block_size: usize) -> Result<KvPool> {
        KvPool::new(&self.cfg, num_blocks, block_size, &self.device)
    }

    /// Runs one step over `batch`, appending every entry's tokens to its blocks in `pool`, and
    /// returns the next-token logits after each entry's last token: `(batch.len(), vocab)`, f32.
    pub fn forward(&self, batch: &mut [StepInput<'_>], pool: &mut KvPool) -> Result<Tensor> {
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
        let total = all_tokens.len();
        let ids = Tensor::from_vec(all_tokens, total, &self.device)?;
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let (cos, sin) = self.rope.tables_for(&positions)?;

        let mut x = self.embedding.embedding(&ids)?.to_dtype(DType::F32)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&x)?;
            let attn = self.attention(layer, block, &h, &cos, &sin, batch, pool)?;
            x = (x + block.o.forward(&attn)?)?;
            let h = block.ffn_norm.forward(&x)?;
            let mlp = (block.gate.forward(&h)?.silu()? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&mlp)?)?;
        }
        let mut last_rows = Vec::with_capacity(batch.len());
        let mut offset = 0u32;
        for entry in batch.iter_mut() {
            let n = entry.tokens.len();
            offset += n as u32;
            last_rows.push(offset - 1);
            pool.advance(entry.table, n);
        }
        let last_rows = Tensor::new(last_rows.as_slice(), &self.device)?;
        let x = self.norm.forward(&x.index_select(&last_rows, 0)?)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
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
        pool: &KvPool,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (heads, kv_heads, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let group = heads / kv_heads;
        let total = h.dim(0)?;
        let q = block.q.forward(h)?.reshape((total, heads, hd))?;
        let k = block.k.forward(h)?.reshape((total, kv_heads, hd))?;
        let v = block.v.forward(h)?.reshape((total, kv_heads, hd))?;
        let q = self.rope.apply(&q, cos, sin)?;
        let k = self.rope.apply(&k, cos, sin)?;
        let scale = 1.0 / (hd as f64).sqrt();

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
