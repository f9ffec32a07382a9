//! Tensor parallelism: the [`Communicator`] ranks use to sum partial results, a CPU
//! implementation (threads of one process, used by the tests) and, behind the `cuda` feature, an
//! NCCL one; and weight sharding at load time ([`shard`]). The group of rank threads that follow
//! rank 0's steps runs the model, so it lives with it (`model::group`).
//!
//! The layout is Megatron's, as in candle's `llama_multiprocess`: q/k/v and gate/up are
//! column-parallel (each rank holds a slice of the output rows, so of the heads), o and down are
//! row-parallel (a slice of the input columns) and their partial outputs are summed with one
//! all-reduce each, so every rank holds the full residual stream after each block. Embeddings,
//! norms and the output head are replicated; only rank 0 computes logits.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod shard;

use candle_core::Tensor;

pub use cpu::CpuCommunicator;
pub use shard::Shard;

/// How ranks of one tensor-parallel group exchange activations. One value per rank, owned by
/// that rank's thread: implementations are `Send`, never shared between threads.
pub trait Communicator: Send + std::fmt::Debug {
    /// This rank's index, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// The element-wise sum of `x` over all ranks, returned to every rank. Every rank must call
    /// it with a tensor of the same shape, in the same order of calls.
    fn all_reduce_sum(&self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// Gives up on the group: ranks waiting in (or later entering) a collective get an error
    /// instead of waiting for this rank forever. Called when this rank fails mid-step.
    fn abort(&self);
}

/// Why a model cannot be split over the requested number of ranks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--tensor-parallel {world} must divide the model's {what} ({count}); choose a tensor-parallel size that divides it"
)]
pub struct IndivisibleError {
    /// The tensor-parallel size asked for.
    pub world: usize,
    /// Which dimension does not divide (`attention heads`, `KV heads`, `MLP width`).
    pub what: &'static str,
    /// The model's size of that dimension.
    pub count: usize,
}

/// The dimensions tensor parallelism splits: attention heads, KV heads and MLP width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitDims {
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// MLP intermediate width.
    pub mlp_width: usize,
}

/// Checks that `world` ranks can each take an equal share of every dimension of `dims`.
pub fn check_divisible(dims: SplitDims, world: usize) -> Result<(), IndivisibleError> {
    let dims = [
        ("attention heads", dims.heads),
        ("KV heads", dims.kv_heads),
        ("MLP width", dims.mlp_width),
    ];
    for (what, count) in dims {
        if world == 0 || !count.is_multiple_of(world) {
            return Err(IndivisibleError { world, what, count });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(heads: usize, kv_heads: usize) -> SplitDims {
        SplitDims {
            heads,
            kv_heads,
            mlp_width: 128,
        }
    }

    #[test]
    fn indivisible_heads_name_both_numbers() {
        let err = check_divisible(dims(4, 2), 3).expect_err("3 does not divide 4");
        let message = err.to_string();
        assert!(
            message.contains("--tensor-parallel 3") && message.contains("attention heads (4)"),
            "{message}"
        );
        let err = check_divisible(dims(4, 2), 4).expect_err("4 does not divide 2 KV heads");
        assert!(err.to_string().contains("KV heads (2)"), "{err}");
        assert_eq!(check_divisible(dims(4, 2), 2), Ok(()));
    }
}
