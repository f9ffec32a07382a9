//! Paged key/value cache: one pool of fixed-size blocks per layer shared by all sequences, and a
//! block table per sequence mapping its positions to blocks (vLLM's layout). Sequences grow one
//! block at a time, never copy their history, and hand their blocks back when they finish.
//!
//! Storage per layer is `(kv_heads, num_blocks * block_size, head_dim)` for K and for V, so a
//! block's rows for a head are contiguous. On CPU it is plain host memory ([`KvDtype`]: half
//! floats by default, as llama.cpp keeps them, or f32 for numerics checks) that the fused decode
//! step ([`super::host_step`]) writes and reads in place through the block table; elsewhere it is
//! a device tensor written with `slice_set`. The tensor path ([`KvPool::write`],
//! [`KvPool::gather`]) works on both.
//!
//! **Prefix caching**: full blocks of a prompt are registered under a hash chained over all tokens
//! up to the block's end. A later prompt with the same prefix maps those blocks into its table
//! (reference-counted, never written again) and skips their prefill. Blocks nobody holds stay
//! cached until the pool needs them, then the least recently released is evicted first.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use candle_core::{DType, Device, Result, Tensor};
use half::f16;
use hearth_kernels::fp8::Fp8E4M3;
use hearth_kernels::vector::KvElement;

use super::config::ModelConfig;

/// Tokens per block.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// The block pool.
#[derive(Debug)]
pub struct KvPool {
    store: Store,
    block_size: usize,
    num_blocks: usize,
    kv_heads: usize,
    head_dim: usize,
    // Blocks holding nothing.
    free: Vec<u32>,
    // Per block: how many tables hold it.
    refs: Vec<u32>,
    // Per block: its prefix hash and tokens, when it is a cached full prompt block.
    cached: Vec<Option<(u64, Vec<u32>)>>,
    by_hash: HashMap<u64, u32>,
    // Cached blocks nobody holds, oldest release first (key: release tick).
    evictable: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    tick: u64,
}

/// Where the K/V rows live.
#[derive(Debug)]
enum Store {
    /// CPU: per layer, K and V as host vectors.
    Host(Vec<HostLayer>),
    /// Other devices: per layer, K and V tensors.
    Device(Vec<(Tensor, Tensor)>),
}

/// How a host pool stores keys and values (device pools keep f32 tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// IEEE half floats: half the memory of f32, and half the bytes attention reads per step
    /// (which bound batched decoding at long contexts).
    #[default]
    F16,
    /// f32: exact to the step's own arithmetic (the `--dequantize` numerics mode).
    F32,
    /// FP8 E4M3 without a scale (vLLM's uncalibrated `fp8`): a quarter of f32's bytes (twice
    /// f16's tokens in a memory budget), each key and value rounded by up to 1/16 of itself.
    Fp8,
}

impl KvDtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
            Self::Fp8 => 1,
        }
    }
}

/// One layer's K and V rows in host memory, `(kv_heads, num_blocks * block_size, head_dim)`.
#[derive(Debug)]
pub enum HostLayer {
    /// Stored as f32.
    F32 {
        /// Keys.
        k: Vec<f32>,
        /// Values.
        v: Vec<f32>,
    },
    /// Stored as half floats.
    F16 {
        /// Keys.
        k: Vec<f16>,
        /// Values.
        v: Vec<f16>,
    },
    /// Stored as FP8 E4M3.
    Fp8 {
        /// Keys.
        k: Vec<Fp8E4M3>,
        /// Values.
        v: Vec<Fp8E4M3>,
    },
}

impl HostLayer {
    fn zeros(dtype: KvDtype, values: usize) -> Self {
        match dtype {
            KvDtype::F32 => Self::F32 {
                k: vec![0.0; values],
                v: vec![0.0; values],
            },
            KvDtype::F16 => Self::F16 {
                k: vec![f16::ZERO; values],
                v: vec![f16::ZERO; values],
            },
            KvDtype::Fp8 => Self::Fp8 {
                k: vec![Fp8E4M3::default(); values],
                v: vec![Fp8E4M3::default(); values],
            },
        }
    }

    fn dtype(&self) -> KvDtype {
        match self {
            Self::F32 { .. } => KvDtype::F32,
            Self::F16 { .. } => KvDtype::F16,
            Self::Fp8 { .. } => KvDtype::Fp8,
        }
    }

    /// Stores `key` and `value` (same length) from value offset `at`, rounded to the storage type.
    pub fn store(&mut self, at: usize, key: &[f32], value: &[f32]) {
        fn put<T: KvElement>(table: &mut [T], at: usize, values: &[f32]) {
            T::narrow(values, &mut table[at..at + values.len()]);
        }
        match self {
            Self::F32 { k, v } => {
                put(k, at, key);
                put(v, at, value);
            }
            Self::F16 { k, v } => {
                put(k, at, key);
                put(v, at, value);
            }
            Self::Fp8 { k, v } => {
                put(k, at, key);
                put(v, at, value);
            }
        }
    }

    /// Appends `count` keys (or values, when `keys` is false) from value offset `at` to `out` as f32.
    fn widen_into(&self, keys: bool, at: usize, count: usize, out: &mut Vec<f32>) {
        fn take<T: KvElement>(table: &[T], at: usize, count: usize, out: &mut Vec<f32>) {
            let start = out.len();
            out.resize(start + count, 0.0);
            T::widen(&table[at..at + count], &mut out[start..]);
        }
        match (self, keys) {
            (Self::F32 { k, .. }, true) => take(k, at, count, out),
            (Self::F32 { v, .. }, false) => take(v, at, count, out),
            (Self::F16 { k, .. }, true) => take(k, at, count, out),
            (Self::F16 { v, .. }, false) => take(v, at, count, out),
            (Self::Fp8 { k, .. }, true) => take(k, at, count, out),
            (Self::Fp8 { v, .. }, false) => take(v, at, count, out),
        }
    }
}

/// The blocks holding one sequence's keys and values, in position order.
#[derive(Debug, Default)]
pub struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
    // Leading blocks whose prefix hash is known, and the hash of the last of them.
    hashed_blocks: usize,
    last_hash: u64,
}

impl BlockTable {
    /// Tokens cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block ids, in order.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// A table over `blocks` holding `len` tokens, as another rank's pool allocated them: a
    /// tensor-parallel follower stores its heads in the same blocks as rank 0.
    pub(crate) fn from_blocks(blocks: Vec<u32>, len: usize) -> Self {
        Self {
            blocks,
            len,
            ..Self::default()
        }
    }
}

/// Blocks needed to hold `tokens` tokens.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size)
}

impl KvPool {
    /// A pool of `num_blocks` blocks of `block_size` tokens for every layer of `cfg`; on CPU its
    /// rows are stored as `dtype`.
    pub fn new(
        cfg: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            candle_core::bail!("a KV pool needs at least one block of at least one token");
        }
        let shape = (cfg.num_kv_heads, num_blocks * block_size, cfg.head_dim);
        let store = if device.is_cpu() {
            let values = shape.0 * shape.1 * shape.2;
            Store::Host(
                (0..cfg.num_layers)
                    .map(|_| HostLayer::zeros(dtype, values))
                    .collect(),
            )
        } else {
            Store::Device(
                (0..cfg.num_layers)
                    .map(|_| {
                        Ok((
                            Tensor::zeros(shape, DType::F32, device)?,
                            Tensor::zeros(shape, DType::F32, device)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        Ok(Self {
            store,
            block_size,
            num_blocks,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            // Pop from the end: hand out low block ids first.
            free: (0..num_blocks as u32).rev().collect(),
            refs: vec![0; num_blocks],
            cached: vec![None; num_blocks],
            by_hash: HashMap::new(),
            evictable: BTreeMap::new(),
            released_at: vec![0; num_blocks],
            tick: 0,
        })
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Blocks not held by any sequence (empty, or cached and evictable).
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Cached prefix blocks (held or not).
    pub fn cached_blocks(&self) -> usize {
        self.by_hash.len()
    }

    /// Bytes of K/V storage the pool holds.
    pub fn capacity_bytes(&self) -> usize {
        let (layers, bytes) = match &self.store {
            Store::Host(layers) => (
                layers.len(),
                layers.first().map_or(4, |layer| layer.dtype().bytes()),
            ),
            Store::Device(layers) => (layers.len(), 4),
        };
        layers * 2 * self.kv_heads * self.num_blocks * self.block_size * self.head_dim * bytes
    }

    /// Gives `table`'s blocks back to the pool and empties it. Cached prefix blocks stay cached.
    pub fn release(&mut self, table: &mut BlockTable) {
        for block in table.blocks.drain(..).rev() {
            let b = block as usize;
            self.refs[b] = self.refs[b].saturating_sub(1);
            if self.refs[b] > 0 {
                continue;
            }
            if self.cached[b].is_some() {
                self.tick += 1;
                self.released_at[b] = self.tick;
                self.evictable.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
        table.len = 0;
        table.hashed_blocks = 0;
        table.last_hash = 0;
    }

    /// Grows `table` so it can hold `extra` more tokens; fails (changing nothing) when the pool
    /// has too few free blocks.
    pub fn reserve(&mut self, table: &mut BlockTable, extra: usize) -> Result<()> {
        let needed = blocks_for(table.len + extra, self.block_size).saturating_sub(table.blocks.len());
        if needed > self.free_blocks() {
            candle_core::bail!(
                "KV cache pool exhausted: need {needed} more blocks, {} of {} free",
                self.free_blocks(),
                self.num_blocks
            );
        }
        for _ in 0..needed {
            let block = match self.free.pop() {
                Some(block) => block,
                None => self.evict_oldest()?,
            };
            self.refs[block as usize] = 1;
            table.blocks.push(block);
        }
        Ok(())
    }

    fn evict_oldest(&mut self) -> Result<u32> {
        let Some((_, block)) = self.evictable.pop_first() else {
            candle_core::bail!("KV cache pool exhausted");
        };
        if let Some((hash, _)) = self.cached[block as usize].take() {
            self.by_hash.remove(&hash);
        }
        Ok(block)
    }

    /// Maps the longest cached prefix of `prompt` into the empty `table`, whole blocks only and
    /// always leaving at least one prompt token to compute. Returns the tokens now cached.
    pub fn match_prefix(&mut self, table: &mut BlockTable, prompt: &[u32]) -> usize {
        if !table.blocks.is_empty() {
            return 0;
        }
        let usable = prompt.len().saturating_sub(1) / self.block_size;
        let mut parent = 0;
        for chunk in prompt.chunks_exact(self.block_size).take(usable) {
            let hash = chain_hash(parent, chunk);
            let Some(&block) = self.by_hash.get(&hash) else {
                break;
            };
            let b = block as usize;
            if !matches!(&self.cached[b], Some((_, tokens)) if tokens.as_slice() == chunk) {
                break;
            }
            if self.refs[b] == 0 {
                self.evictable.remove(&self.released_at[b]);
            }
            self.refs[b] += 1;
            table.blocks.push(block);
            table.len += self.block_size;
            table.hashed_blocks += 1;
            table.last_hash = hash;
            parent = hash;
        }
        table.len
    }

    /// Registers `table`'s full blocks among `prompt`'s first `table.len()` tokens as cached
    /// prefix blocks, so later prompts can share them.
    pub fn register_prefix(&mut self, table: &mut BlockTable, prompt: &[u32]) {
        let full = table.len.min(prompt.len()) / self.block_size;
        while table.hashed_blocks < full {
            let i = table.hashed_blocks;
            let chunk = &prompt[i * self.block_size..(i + 1) * self.block_size];
            let hash = chain_hash(table.last_hash, chunk);
            let block = table.blocks[i];
            // Identical content computed twice (two requests prefilling at once): keep the first.
            if self.cached[block as usize].is_none() && !self.by_hash.contains_key(&hash) {
                self.by_hash.insert(hash, block);
                self.cached[block as usize] = Some((hash, chunk.to_vec()));
            }
            table.hashed_blocks += 1;
            table.last_hash = hash;
        }
    }

    /// Stores `k`/`v` of shape `(kv_heads, n, head_dim)` for positions `len..len + n` of `table`
    /// in `layer`. The tokens count in `table.len()` only after [`KvPool::advance`].
    pub fn write(&mut self, layer: usize, table: &BlockTable, k: &Tensor, v: &Tensor) -> Result<()> {
        let n = k.dim(1)?;
        let rows = self.num_blocks * self.block_size;
        let spans = self.spans(table, n)?;
        match &mut self.store {
            Store::Host(layers) => {
                let Some(store) = layers.get_mut(layer) else {
                    candle_core::bail!("KV pool has no layer {layer}");
                };
                let hd = self.head_dim;
                let k = k.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let v = v.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                for head in 0..self.kv_heads {
                    for &(done, row, count) in &spans {
                        let from = (head * n + done) * hd..(head * n + done + count) * hd;
                        store.store((head * rows + row) * hd, &k[from.clone()], &v[from]);
                    }
                }
            }
            Store::Device(layers) => {
                let Some((k_store, v_store)) = layers.get(layer) else {
                    candle_core::bail!("KV pool has no layer {layer}");
                };
                for (done, row, count) in spans {
                    k_store.slice_set(&k.narrow(1, done, count)?.contiguous()?, 1, row)?;
                    v_store.slice_set(&v.narrow(1, done, count)?.contiguous()?, 1, row)?;
                }
            }
        }
        Ok(())
    }

    /// Where positions `len..len + n` of `table` go: `(offset in the new tokens, pool row,
    /// count)` runs, one per block touched.
    pub fn spans(&self, table: &BlockTable, n: usize) -> Result<Vec<(usize, usize, usize)>> {
        let mut spans = Vec::new();
        let mut done = 0;
        while done < n {
            let pos = table.len + done;
            let Some(&block) = table.blocks.get(pos / self.block_size) else {
                candle_core::bail!("position {pos} has no block; reserve first");
            };
            let offset = pos % self.block_size;
            let count = (self.block_size - offset).min(n - done);
            spans.push((done, block as usize * self.block_size + offset, count));
            done += count;
        }
        Ok(spans)
    }

    /// `table`'s keys and values in `layer`, gathered to `(kv_heads, blocks * block_size,
    /// head_dim)` each; rows at or after the sequence's length are stale and must be masked.
    pub fn gather(&self, layer: usize, table: &BlockTable) -> Result<(Tensor, Tensor)> {
        self.gather_blocks(layer, &table.blocks)
    }

    /// The keys and values of `blocks` in `layer`, in that order (a block may repeat), gathered
    /// to `(kv_heads, blocks.len() * block_size, head_dim)` each.
    pub fn gather_blocks(&self, layer: usize, blocks: &[u32]) -> Result<(Tensor, Tensor)> {
        let rows = blocks.len() * self.block_size;
        match &self.store {
            Store::Host(layers) => {
                let Some(store) = layers.get(layer) else {
                    candle_core::bail!("KV pool has no layer {layer}");
                };
                let (bs, hd) = (self.block_size, self.head_dim);
                let pool_rows = self.num_blocks * bs;
                let gather = |keys: bool| {
                    let mut out = Vec::with_capacity(self.kv_heads * rows * hd);
                    for head in 0..self.kv_heads {
                        for &block in blocks {
                            let start = (head * pool_rows + block as usize * bs) * hd;
                            store.widen_into(keys, start, bs * hd, &mut out);
                        }
                    }
                    Tensor::from_vec(out, (self.kv_heads, rows, hd), &candle_core::Device::Cpu)
                };
                Ok((gather(true)?, gather(false)?))
            }
            Store::Device(layers) => {
                let Some((k_store, v_store)) = layers.get(layer) else {
                    candle_core::bail!("KV pool has no layer {layer}");
                };
                let ids = Tensor::new(blocks, k_store.device())?;
                let shape4 = (self.kv_heads, self.num_blocks, self.block_size, self.head_dim);
                let gather = |store: &Tensor| {
                    store.reshape(shape4)?.index_select(&ids, 1)?.reshape((
                        self.kv_heads,
                        rows,
                        self.head_dim,
                    ))
                };
                Ok((gather(k_store)?, gather(v_store)?))
            }
        }
    }

    /// `layer`'s host storage, for the fused CPU step to read and write in place; `None` when
    /// the pool lives on another device.
    pub fn host_layer_mut(&mut self, layer: usize) -> Option<&mut HostLayer> {
        match &mut self.store {
            Store::Host(layers) => layers.get_mut(layer),
            Store::Device(_) => None,
        }
    }

    /// Whether the pool is in host memory.
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Host(_))
    }

    /// Rows per head in a layer's storage (`num_blocks * block_size`).
    pub fn pool_rows(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Marks `n` written tokens of `table` as cached.
    pub fn advance(&self, table: &mut BlockTable, n: usize) {
        table.len += n;
    }
}

// Hash of a block's tokens chained onto the hash of everything before it.
fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parent.hash(&mut hasher);
    tokens.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Architecture, RopeStyle};

    fn cfg() -> ModelConfig {
        ModelConfig {
            arch: Architecture::Llama,
            hidden_size: 8,
            intermediate_size: 8,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
            vocab_size: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_style: RopeStyle::Interleaved,
            rope_scaling: None,
            max_position_embeddings: 1024,
        }
    }

    #[test]
    fn sequences_interleave_blocks_and_read_back_in_order() -> Result<()> {
        let dev = Device::Cpu;
        let mut pool = KvPool::new(&cfg(), 8, 4, KvDtype::F32, &dev)?;
        let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
        // Alternate writes so the two sequences' blocks interleave in the pool.
        for step in 0..10u32 {
            for (table, base) in [(&mut a, 0.0f32), (&mut b, 100.0)] {
                let n = if step == 0 { 3 } else { 1 };
                pool.reserve(table, n)?;
                let start = table.len() as f32;
                let values: Vec<f32> = (0..n).flat_map(|i| [base + start + i as f32; 2]).collect();
                let k = Tensor::from_vec(values, (1, n, 2), &dev)?;
                for layer in 0..2 {
                    pool.write(layer, table, &k, &k)?;
                }
                pool.advance(table, n);
            }
        }
        assert_eq!(a.len(), 12);
        assert_eq!(a.blocks().len(), 3);
        assert_eq!(pool.free_blocks(), 2);
        let (k, _) = pool.gather(1, &b)?;
        let rows: Vec<f32> = k.get(0)?.to_vec2::<f32>()?.iter().map(|r| r[0]).collect();
        let expected: Vec<f32> = (0..12).map(|i| 100.0 + i as f32).collect();
        assert_eq!(rows, expected);

        pool.release(&mut a);
        assert_eq!(pool.free_blocks(), 5);
        assert!(a.is_empty());
        Ok(())
    }

    /// f16 and FP8 pools hold their rows in a half and a quarter of f32's bytes, and what they
    /// hand back is each value rounded to the storage type.
    #[test]
    fn narrow_storage_rounds_in_fewer_bytes() -> Result<()> {
        let dev = Device::Cpu;
        let full = KvPool::new(&cfg(), 2, 4, KvDtype::F32, &dev)?;
        let half_floats = [f16::from_f32(1.0 / 3.0).to_f32(), f16::from_f32(-1000.1).to_f32()];
        assert_ne!(half_floats[0], 1.0 / 3.0);
        // FP8: 1/3 rounds to 0.34375 (1.011b × 2⁻²); 1000 saturates at 448.
        for (dtype, ratio, rounded) in [
            (KvDtype::F16, 2, half_floats),
            (KvDtype::Fp8, 4, [0.34375, -448.0]),
        ] {
            let mut pool = KvPool::new(&cfg(), 2, 4, dtype, &dev)?;
            assert_eq!(pool.capacity_bytes() * ratio, full.capacity_bytes(), "{dtype:?}");
            let mut table = BlockTable::default();
            pool.reserve(&mut table, 1)?;
            let k = Tensor::from_vec(vec![1.0f32 / 3.0, -1000.1], (1, 1, 2), &dev)?;
            pool.write(0, &table, &k, &k)?;
            pool.advance(&mut table, 1);
            let (keys, values) = pool.gather(0, &table)?;
            for table in [keys, values] {
                assert_eq!(table.get(0)?.get(0)?.to_vec1::<f32>()?, rounded, "{dtype:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn prefixes_are_shared_refcounted_and_evicted_lru() -> Result<()> {
        let mut pool = KvPool::new(&cfg(), 6, 4, KvDtype::F16, &Device::Cpu)?;
        let prompt: Vec<u32> = (0..10).collect();
        let mut first = BlockTable::default();
        assert_eq!(pool.match_prefix(&mut first, &prompt), 0);
        pool.reserve(&mut first, 10)?;
        pool.advance(&mut first, 10);
        pool.register_prefix(&mut first, &prompt);
        assert_eq!(pool.cached_blocks(), 2, "two full blocks of four");

        // Same prompt: both full blocks are shared (one token would be left anyway).
        let mut second = BlockTable::default();
        assert_eq!(pool.match_prefix(&mut second, &prompt), 8);
        assert_eq!(&second.blocks()[..2], &first.blocks()[..2]);
        // A prompt of exactly 8 tokens shares only the first block: its last token must run.
        let mut third = BlockTable::default();
        assert_eq!(pool.match_prefix(&mut third, &prompt[..8]), 4);
        // A different second block shares only the first.
        let mut other: Vec<u32> = prompt.clone();
        other[5] = 99;
        let mut fourth = BlockTable::default();
        assert_eq!(pool.match_prefix(&mut fourth, &other), 4);

        for table in [&mut first, &mut second, &mut third, &mut fourth] {
            pool.release(table);
        }
        assert_eq!(pool.free_blocks(), 6);
        assert_eq!(pool.cached_blocks(), 2, "released prefix blocks stay cached");
        // Needing every block evicts the cached ones.
        let mut big = BlockTable::default();
        pool.reserve(&mut big, 24)?;
        assert_eq!(pool.cached_blocks(), 0);
        pool.release(&mut big);
        assert_eq!(pool.match_prefix(&mut BlockTable::default(), &prompt), 0);
        Ok(())
    }

    #[test]
    fn exhaustion_is_an_error_that_changes_nothing() -> Result<()> {
        let mut pool = KvPool::new(&cfg(), 2, 4, KvDtype::F16, &Device::Cpu)?;
        let mut table = BlockTable::default();
        assert!(pool.reserve(&mut table, 9).is_err());
        assert_eq!(pool.free_blocks(), 2);
        assert!(table.blocks().is_empty());
        pool.reserve(&mut table, 8)?;
        assert_eq!(pool.free_blocks(), 0);
        Ok(())
    }
}
