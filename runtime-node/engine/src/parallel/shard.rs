//! Cutting weight matrices into per-rank slices at load time, without leaving the quantized
//! format where the blocks allow it.
//!
//! A `(out, in)` GGUF matrix is stored row by row, each row a run of blocks covering `in`.
//! **Column-parallel** layers take whole rows, which are independent, so the slice is a byte
//! range of the quantized data: exact for every type. **Row-parallel** layers take a range of
//! each row's columns; when that range starts and ends on block boundaries the slice is again
//! whole blocks. Otherwise (e.g. Q4_K's 256-wide blocks over a 128-wide slice) the matrix is
//! dequantized and the slice kept as f32: exact values, more memory, dense kernels.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Result, Shape, Tensor};

/// Which slice of the model a rank holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..world`.
    pub rank: usize,
    /// Ranks in the group.
    pub world: usize,
}

impl Shard {
    /// The whole model on one rank.
    pub const SINGLE: Self = Self { rank: 0, world: 1 };

    /// Whether the model is split at all.
    pub fn is_split(self) -> bool {
        self.world > 1
    }

    /// This rank's `(start, len)` of a dimension of `size` (a multiple of `world`).
    pub fn range(self, size: usize) -> Result<(usize, usize)> {
        if self.world == 0 || !size.is_multiple_of(self.world) {
            candle_core::bail!("a dimension of {size} does not split over {} ranks", self.world);
        }
        let len = size / self.world;
        Ok((self.rank * len, len))
    }
}

/// This rank's rows of the `(out, in)` matrix `q` (column-parallel), still quantized.
pub fn shard_rows(q: QTensor, shard: Shard) -> Result<QTensor> {
    if !shard.is_split() {
        return Ok(q);
    }
    let (out, inp) = q.shape().dims2()?;
    let (start, len) = shard.range(out)?;
    let dtype = q.dtype();
    let row_bytes = inp / dtype.block_size() * dtype.type_size();
    let data = q.data()?;
    let slice = &data[start * row_bytes..(start + len) * row_bytes];
    rebuild(Cow::Borrowed(slice), &q, (len, inp))
}

/// This rank's columns of the `(out, in)` matrix `q` (row-parallel): whole quantized blocks when
/// the slice is block-aligned, else an f32 copy of the slice.
pub fn shard_columns(q: QTensor, shard: Shard) -> Result<QTensor> {
    if !shard.is_split() {
        return Ok(q);
    }
    let (out, inp) = q.shape().dims2()?;
    let (start, len) = shard.range(inp)?;
    let dtype = q.dtype();
    let block = dtype.block_size();
    if !start.is_multiple_of(block) || !len.is_multiple_of(block) {
        let dense = q.dequantize(&q.device())?.narrow(1, start, len)?.contiguous()?;
        return QTensor::quantize(&dense, GgmlDType::F32);
    }
    let (row_bytes, block_bytes) = (inp / block * dtype.type_size(), dtype.type_size());
    let (first, take) = (start / block * block_bytes, len / block * block_bytes);
    let data = q.data()?;
    let mut slice = Vec::with_capacity(out * take);
    for row in data.chunks_exact(row_bytes) {
        slice.extend_from_slice(&row[first..first + take]);
    }
    rebuild(Cow::Owned(slice), &q, (out, len))
}

/// This rank's part of the 1-D vector `t` (a bias of a column-parallel layer).
pub fn shard_vector(t: Tensor, shard: Shard) -> Result<Tensor> {
    if !shard.is_split() {
        return Ok(t);
    }
    let (start, len) = shard.range(t.dim(0)?)?;
    t.narrow(0, start, len)?.contiguous()
}

fn rebuild(bytes: Cow<'_, [u8]>, like: &QTensor, shape: (usize, usize)) -> Result<QTensor> {
    from_blocks(bytes, like.dtype(), shape, &like.device())
}

/// A `shape` matrix of `dtype` blocks on `device`, stored as a file's tensors are (on CUDA
/// with the zero-padded rows candle's kernels read).
pub fn from_blocks(
    bytes: Cow<'_, [u8]>,
    dtype: GgmlDType,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<QTensor> {
    QTensor::new(QStorage::from_data(bytes, device, dtype)?, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(out: usize, inp: usize) -> Tensor {
        let values: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        Tensor::from_vec(values, (out, inp), &Device::Cpu).expect("matrix")
    }

    fn dense(q: &QTensor) -> Vec<Vec<f32>> {
        q.dequantize(&Device::Cpu)
            .and_then(|t| t.to_vec2())
            .expect("dequantize")
    }

    #[test]
    fn shards_equal_slices_of_the_dequantized_matrix() -> Result<()> {
        // Both split on block boundaries: Q8_0 (blocks of 32) 128 columns, Q4_K (256) 512 columns.
        for (dtype, inp) in [(GgmlDType::Q8_0, 128), (GgmlDType::Q4K, 512)] {
            let q = QTensor::quantize(&matrix(8, inp), dtype)?;
            let full = q.dequantize(&Device::Cpu)?;
            for rank in 0..2 {
                let shard = Shard { rank, world: 2 };
                let rows = shard_rows(QTensor::quantize(&matrix(8, inp), dtype)?, shard)?;
                assert_eq!(rows.dtype(), dtype);
                assert_eq!(dense(&rows), full.narrow(0, rank * 4, 4)?.to_vec2::<f32>()?);
                let cols = shard_columns(QTensor::quantize(&matrix(8, inp), dtype)?, shard)?;
                assert_eq!(cols.dtype(), dtype, "stays quantized");
                let want = full.narrow(1, rank * inp / 2, inp / 2)?.to_vec2::<f32>()?;
                assert_eq!(dense(&cols), want, "{dtype:?} rank {rank}");
            }
        }
        Ok(())
    }

    #[test]
    fn misaligned_columns_fall_back_to_f32() -> Result<()> {
        let q = QTensor::quantize(&matrix(4, 256), GgmlDType::Q4K)?;
        let full = q.dequantize(&Device::Cpu)?;
        let cols = shard_columns(q, Shard { rank: 1, world: 2 })?;
        assert_eq!(cols.dtype(), GgmlDType::F32);
        assert_eq!(dense(&cols), full.narrow(1, 128, 128)?.to_vec2::<f32>()?);
        Ok(())
    }
}
