//! [`NcclCommunicator`]: the all-reduce between GPUs, through NCCL on each rank's CUDA stream
//! (feature `cuda`). One communicator per rank thread, created collectively: every rank calls
//! [`NcclCommunicator::new`] with the same [`Id`] at once.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::Communicator;

/// One rank's NCCL communicator.
#[derive(Debug)]
pub struct NcclCommunicator {
    comm: Comm,
}

// SAFETY: an NCCL communicator is not tied to the thread that created it; it must only not be
// used from two threads at once, which `!Sync` (no `unsafe impl Sync`) already rules out. The
// rank-0 model is built on the loading thread, then moved to the scheduler thread for good.
unsafe impl Send for NcclCommunicator {}

impl NcclCommunicator {
    /// Joins the group `id` as `rank` of `world` on `device` (a CUDA device); blocks until every
    /// rank has joined.
    pub fn new(device: &Device, rank: usize, world: usize, id: Id) -> Result<Self, String> {
        let cuda = device
            .as_cuda_device()
            .map_err(|e| format!("NCCL needs a CUDA device: {e}"))?;
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world, id)
            .map_err(|e| format!("joining the NCCL group as rank {rank} of {world}: {e:?}"))?;
        Ok(Self { comm })
    }
}

/// The all-reduce as a candle op, so it runs on the tensor's own storage and stream.
struct AllReduce<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce needs tensors on a CUDA device")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("the NCCL all-reduce needs a contiguous tensor");
        };
        if storage.dtype() != DType::F32 {
            candle_core::bail!(
                "the NCCL all-reduce sums f32 activations, not {:?}",
                storage.dtype()
            );
        }
        let device = storage.device().clone();
        let input = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let mut output = device.alloc_zeros::<f32>(end - start)?;
        self.comm
            .all_reduce(&input, &mut output, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok((
            CudaStorage::wrap_cuda_slice(output, device),
            layout.shape().clone(),
        ))
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&AllReduce { comm: &self.comm })
    }

    fn abort(&self) {
        // Dropping the `Comm` (when the failed rank's thread ends) calls `ncclCommAbort`, which
        // makes the other ranks' pending collectives return an error.
    }
}
