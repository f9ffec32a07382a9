//! The building blocks of the transformer and how their weights are read: RMS norm, linear
//! layers over quantized matrices, and the loader that takes (for tensor parallel: slices)
//! matrices from a [`TensorSource`] in the requested [`WeightFormat`].

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

use super::gguf::LoadError;
use super::source::TensorSource;
use crate::parallel::Shard;
use crate::parallel::shard::{from_blocks, shard_columns, shard_rows, shard_vector};
use hearth_kernels::QuantMatrix;
use hearth_kernels::blocks::{ActivationBlock, WeightType};
use hearth_kernels::half_matrix::F16Matrix;

/// RMS normalisation with a learned scale.
#[derive(Debug, Clone)]
pub(super) struct RmsNorm {
    pub(super) weight: Tensor,
    pub(super) eps: f32,
    // The weight in host memory, for the fused CPU step.
    pub(super) host_weight: Vec<f32>,
}

impl RmsNorm {
    /// A norm with `weight` (copied to host memory for the fused CPU step).
    pub(super) fn new(weight: Tensor, eps: f32) -> Result<Self> {
        let host_weight = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self {
            weight,
            eps,
            host_weight,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }

    /// Normalises each row of `x` into `out` (host memory, rows of the weight's length).
    pub(super) fn forward_host(&self, x: &[f32], out: &mut [f32]) {
        let width = self.host_weight.len();
        for (row, out) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            let mean_square = hearth_kernels::vector::dot(row, row) / width as f32;
            let scale = 1.0 / (mean_square + self.eps).sqrt();
            for ((o, v), w) in out.iter_mut().zip(row).zip(&self.host_weight) {
                *o = v * scale * w;
            }
        }
    }
}

/// A linear layer over quantized weights, with an optional f32 bias (Qwen2's q/k/v).
#[derive(Debug, Clone)]
pub(super) struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    // The bias in host memory, for the fused CPU step.
    host_bias: Option<Vec<f32>>,
}

/// Rows from which candle-quantized matmuls dequantize their weight and run a dense f32 GEMM,
/// which reuses each weight across rows. Our block types and F16 always use our kernels, whose
/// layouts already serve 8 (blocks) or 16 (F16 panels) rows per instruction, which beat a dense
/// GEMM even for prompt chunks (`docs/benchmarks.md`, "Kernel design choices").
pub(super) const DENSE_MIN_ROWS: usize = 32;

/// A weight matrix: in our kernels' block layout on CPU for the types they implement
/// (the `hearth-kernels` crate), else candle's quantized (or dense) matmul.
#[derive(Debug, Clone)]
pub(super) enum LinearWeight {
    /// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_NL / IQ4_XS on
    /// CPU.
    Blocks(QuantMatrix),
    /// F16 on CPU, kept at 2 bytes per weight (candle would expand it to f32 at load).
    F16(F16Matrix),
    /// Every other type or device.
    Candle(QMatMul),
}

impl LinearWeight {
    /// `x · Wᵀ` for `x` of shape `(rows, in)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        match self {
            Self::Blocks(matrix) if x.dtype() == DType::F32 && x.device().is_cpu() => {
                let input = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let y = matrix.matmul(&input, rows);
                Tensor::from_vec(y, (rows, matrix.rows()), x.device())
            }
            Self::F16(matrix) if x.dtype() == DType::F32 && x.device().is_cpu() => {
                let input = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let mut y = vec![0f32; rows * matrix.rows()];
                matrix.matmul(&input, rows, &mut y);
                Tensor::from_vec(y, (rows, matrix.rows()), x.device())
            }
            Self::Blocks(_) | Self::F16(_) => Err(candle_core::Error::Msg(
                "host-layout weights run on CPU with f32 activations only".into(),
            )),
            Self::Candle(QMatMul::QTensor(q)) if rows >= DENSE_MIN_ROWS => {
                let w = q.dequantize(x.device())?;
                x.matmul(&w.t()?)
            }
            Self::Candle(weight) => weight.forward(x),
        }
    }
}

impl LinearWeight {
    /// `out = x · Wᵀ` on host memory for the fused CPU step: `x` is `n × in`, `quantized` the
    /// same rows already in 8-bit blocks (our kernels' input), `out` is `n × out`. Other weight
    /// types go through candle's matmul.
    pub(super) fn forward_host(
        &self,
        x: &[f32],
        quantized: &[ActivationBlock],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Self::Blocks(matrix) => {
                matrix.matmul_quantized(quantized, n, out);
                Ok(())
            }
            Self::F16(matrix) => {
                matrix.matmul(x, n, out);
                Ok(())
            }
            Self::Candle(_) => {
                let input = Tensor::from_slice(x, (n, x.len() / n.max(1)), &Device::Cpu)?;
                let y = self.forward(&input)?.to_dtype(DType::F32)?.flatten_all()?;
                out.copy_from_slice(&y.to_vec1::<f32>()?);
                Ok(())
            }
        }
    }
}

impl Linear {
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// [`LinearWeight::forward_host`] plus the bias.
    pub(super) fn forward_host(
        &self,
        x: &[f32],
        quantized: &[ActivationBlock],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.weight.forward_host(x, quantized, n, out)?;
        self.add_host_bias(out);
        Ok(())
    }

    /// Several layers reading the same input (q/k/v, gate/up) into `outs`: in one parallel loop
    /// when all are in one of our kernels' formats (one synchronisation instead of one per
    /// layer), else one by one.
    pub(super) fn forward_host_many(
        layers: &[&Linear],
        x: &[f32],
        quantized: &[ActivationBlock],
        n: usize,
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let blocks: Option<Vec<&QuantMatrix>> = layers
            .iter()
            .map(|layer| match &layer.weight {
                LinearWeight::Blocks(matrix) => Some(matrix),
                _ => None,
            })
            .collect();
        let halves: Option<Vec<&F16Matrix>> = layers
            .iter()
            .map(|layer| match &layer.weight {
                LinearWeight::F16(matrix) => Some(matrix),
                _ => None,
            })
            .collect();
        let outputs = outs.iter_mut().map(|out| &mut **out);
        match (blocks, halves) {
            (Some(matrices), _) => {
                let mut parts: Vec<(&QuantMatrix, &mut [f32])> = matrices.into_iter().zip(outputs).collect();
                hearth_kernels::matmul_quantized_many(&mut parts, quantized, n);
            }
            (None, Some(matrices)) => {
                let mut parts: Vec<(&F16Matrix, &mut [f32])> = matrices.into_iter().zip(outputs).collect();
                hearth_kernels::half_matrix::matmul_many(&mut parts, x, n);
            }
            (None, None) => {
                for (layer, out) in layers.iter().zip(outs.iter_mut()) {
                    layer.forward_host(x, quantized, n, out)?;
                }
                return Ok(());
            }
        }
        for (layer, out) in layers.iter().zip(outs.iter_mut()) {
            layer.add_host_bias(out);
        }
        Ok(())
    }

    fn add_host_bias(&self, out: &mut [f32]) {
        if let Some(bias) = &self.host_bias {
            for row in out.chunks_exact_mut(bias.len()) {
                for (value, b) in row.iter_mut().zip(bias) {
                    *value += b;
                }
            }
        }
    }

    /// Output features.
    pub(super) fn out_features(&self) -> usize {
        self.weight.rows()
    }
}

impl LinearWeight {
    /// Output features (rows of the weight).
    pub(super) fn rows(&self) -> usize {
        match self {
            Self::Blocks(matrix) => matrix.rows(),
            Self::F16(matrix) => matrix.rows(),
            Self::Candle(QMatMul::QTensor(q)) => q.shape().dims()[0],
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims()[0],
        }
    }
}

/// Which dimension of a linear layer's weight is split across ranks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Split {
    /// Output rows (column-parallel: q/k/v, gate/up).
    Output,
    /// Input columns (row-parallel: o, down); the outputs are partial sums.
    Input,
}

/// Loader state: the file, where the weights go, and the config they must agree with.
pub(super) struct WeightReader<'a> {
    pub(super) source: &'a mut dyn TensorSource,
    pub(super) device: &'a Device,
    pub(super) dequantize: bool,
    pub(super) requantize: Option<GgmlDType>,
    pub(super) shard: Shard,
}

/// Our kernels' name for a GGUF block type they implement.
fn kernel_type(dtype: GgmlDType) -> Option<WeightType> {
    match dtype {
        GgmlDType::Q4_0 => Some(WeightType::Q4_0),
        GgmlDType::Q4_1 => Some(WeightType::Q4_1),
        GgmlDType::Q5_0 => Some(WeightType::Q5_0),
        GgmlDType::Q5_1 => Some(WeightType::Q5_1),
        GgmlDType::Q8_0 => Some(WeightType::Q8_0),
        GgmlDType::Q4K => Some(WeightType::Q4K),
        GgmlDType::Q5K => Some(WeightType::Q5K),
        GgmlDType::Q6K => Some(WeightType::Q6K),
        GgmlDType::Q2K => Some(WeightType::Q2K),
        GgmlDType::Q3K => Some(WeightType::Q3K),
        _ => None,
    }
}

/// `q`, quantized on the CPU, on `device` as a file's blocks are put there ([`from_blocks`]).
fn onto_device(q: QTensor, device: &Device) -> Result<QTensor> {
    if device.is_cpu() {
        return Ok(q);
    }
    from_blocks(q.data()?, q.dtype(), q.shape().clone(), device)
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
    pub(super) fn qtensor(&mut self, name: &str, shape: &[usize]) -> std::result::Result<QTensor, LoadError> {
        self.source.load(name, shape, self.device)
    }

    pub(super) fn f32(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, LoadError> {
        let q = self.qtensor(name, shape)?;
        q.dequantize(self.device).map_err(|source| self.build_err(source))
    }

    pub(super) fn linear(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
        split: Split,
    ) -> std::result::Result<Linear, LoadError> {
        let weight = match self.stored_on_our_kernels(&format!("{name}.weight"), out, inp)? {
            Some(matrix) => LinearWeight::Blocks(matrix),
            None => {
                let q = self.qtensor(&format!("{name}.weight"), &[out, inp])?;
                let q = match split {
                    Split::Output => shard_rows(q, self.shard),
                    Split::Input => shard_columns(q, self.shard),
                }
                .map_err(|source| self.build_err(source))?;
                self.matmul(q)?
            }
        };
        let bias_name = format!("{name}.bias");
        let bias = if bias && self.source.has(&bias_name) {
            // Only column-parallel layers have biases here (Qwen2's q/k/v).
            let b = self.f32(&bias_name, &[out])?;
            Some(shard_vector(b, self.shard).map_err(|source| self.build_err(source))?)
        } else {
            None
        };
        let host_bias = match &bias {
            Some(b) if self.device.is_cpu() => {
                Some(b.to_vec1::<f32>().map_err(|source| self.build_err(source))?)
            }
            _ => None,
        };
        Ok(Linear {
            weight,
            bias,
            host_bias,
        })
    }

    /// A matrix stored in a type candle does not hold (IQ4_NL, IQ4_XS) as our kernels' matrix,
    /// straight from the file's blocks, where they run it: on CPU, the weights as stored, one
    /// rank. `None` elsewhere (the reader then gives candle the type's exact rewrite).
    fn stored_on_our_kernels(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> std::result::Result<Option<QuantMatrix>, LoadError> {
        if !self.device.is_cpu() || self.dequantize || self.requantize.is_some() || self.shard.world != 1 {
            return Ok(None);
        }
        let Some((kind, data)) = self.source.load_stored_blocks(name, &[rows, cols])? else {
            return Ok(None);
        };
        QuantMatrix::new(kind, rows, cols, data)
            .map(Some)
            .map_err(|e| self.build_err(candle_core::Error::Msg(e.to_string())))
    }

    pub(super) fn matmul(&self, q: QTensor) -> std::result::Result<LinearWeight, LoadError> {
        if self.dequantize {
            let t = q
                .dequantize(self.device)
                .map_err(|source| self.build_err(source))?;
            return Ok(LinearWeight::Candle(QMatMul::Tensor(t)));
        }
        let q = match self.requantize {
            Some(target) if q.dtype() != target && is_block_quantized(q.dtype()) => {
                // Rounded on the CPU and uploaded as a file's blocks are: candle's CUDA quantize
                // leaves the row padding its kernels read uninitialised (NaN logits on an H200).
                let requantized = q
                    .dequantize(&Device::Cpu)
                    .and_then(|t| QTensor::quantize(&t, target))
                    .and_then(|cpu| onto_device(cpu, self.device));
                requantized.map_err(|source| self.build_err(source))?
            }
            _ => q,
        };
        if let (GgmlDType::F16, true, &[rows, cols]) = (q.dtype(), self.device.is_cpu(), q.shape().dims()) {
            let data = q.data().map_err(|source| self.build_err(source))?;
            let matrix = F16Matrix::new(rows, cols, &data).ok_or_else(|| {
                self.build_err(candle_core::Error::Msg(format!(
                    "{rows}×{cols} F16 data has the wrong size"
                )))
            })?;
            return Ok(LinearWeight::F16(matrix));
        }
        if let (Some(kind), true, &[rows, cols]) =
            (kernel_type(q.dtype()), self.device.is_cpu(), q.shape().dims())
        {
            let data = q.data().map_err(|source| self.build_err(source))?.into_owned();
            let matrix = QuantMatrix::new(kind, rows, cols, data)
                .map_err(|e| self.build_err(candle_core::Error::Msg(e.to_string())))?;
            return Ok(LinearWeight::Blocks(matrix));
        }
        QMatMul::from_qtensor(q)
            .map(LinearWeight::Candle)
            .map_err(|source| self.build_err(source))
    }

    pub(super) fn build_err(&self, source: candle_core::Error) -> LoadError {
        LoadError::Build {
            path: self.source.path().to_path_buf(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our repacked layout and decoding of every block type the kernels take, checked against
    /// candle's own dequantization of the same GGUF bytes (an independent implementation of
    /// the formats), and our matmul against candle's f32 matmul of those weights.
    #[test]
    fn kernel_types_equal_candles_dequantization() {
        let (rows, cols, n) = (24, 512, 3);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i / cols) as f32 * 0.1))
            .collect();
        let weights = Tensor::from_vec(values, (rows, cols), &Device::Cpu).expect("tensor");
        let x: Vec<f32> = (0..n * cols).map(|i| (i * 31 % 97) as f32 / 97.0 - 0.5).collect();
        let input = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).expect("tensor");
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::Q3K,
            GgmlDType::Q2K,
        ] {
            let q = QTensor::quantize(&weights, dtype).expect("quantize");
            let data = q.data().expect("bytes").into_owned();
            let kind = kernel_type(dtype).expect("a kernel type");
            let matrix = QuantMatrix::new(kind, rows, cols, data).expect("shape");
            let reference = q.dequantize(&Device::Cpu).expect("dequantize");
            let dequantized = reference
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values");
            assert_eq!(matrix.dequantize(), dequantized, "{dtype:?}");
            let product = input.matmul(&reference.t().expect("t")).expect("matmul");
            let expected = product
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values");
            for (i, (got, want)) in matrix.matmul(&x, n).iter().zip(&expected).enumerate() {
                // 8-bit activations: each |Δx| ≤ amax/254 ≤ 0.5/254, times the row's Σ|w|.
                let row = &dequantized[i % rows * cols..][..cols];
                let bound = row.iter().map(|w| w.abs()).sum::<f32>() * 0.5 / 254.0 + 1e-4;
                assert!(
                    (got - want).abs() <= bound,
                    "{dtype:?} [{i}]: {got} vs {want} (bound {bound})"
                );
            }
        }
    }

    /// IQ4_NL and IQ4_XS blocks from llama.cpp's quantizer against gguf-py's dequantization
    /// (`tests/data/iq4_gguf_py.json`): our kernels' matrices built from the blocks as stored,
    /// and the rewrite candle reads (IQ4_NL as Q8_0, IQ4_XS as f32), both equal to it.
    #[test]
    fn iq4_types_equal_gguf_py_dequantization() {
        use super::super::gguf_rewrite::Rewrite;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/iq4_gguf_py.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        let cases = fixture["cases"].as_array().expect("cases");
        assert_eq!(cases.len(), 2);
        for case in cases {
            let hex = case["blocks_hex"].as_str().expect("hex");
            let blocks: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex byte"))
                .collect();
            let expected: Vec<f32> = case["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect();
            let rewrite = match case["type"].as_str() {
                Some("IQ4_NL") => Rewrite::Iq4NlAsQ8_0,
                _ => Rewrite::Iq4XsAsF32,
            };
            let kind = rewrite.native();
            let matrix = QuantMatrix::new(kind, 1, expected.len(), blocks.clone()).expect("one row");
            assert_eq!(matrix.dequantize(), expected, "{kind:?} on our kernels");
            let rewritten = rewrite.apply(&blocks).expect("whole blocks");
            let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                rewrite.target(),
                &rewritten,
                vec![1, expected.len()],
                &Device::Cpu,
            )
            .expect("candle tensor");
            let read = q
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values");
            assert_eq!(read, expected, "{kind:?} as candle reads it");
            // Through the loader: our kernels' matrix from the file's blocks on CPU, candle's
            // dense f32 when dequantizing.
            let code = if kind == WeightType::IQ4NL { 20 } else { 23 };
            let file = std::env::temp_dir().join(format!("hearth-layers-{}-{code}.gguf", std::process::id()));
            std::fs::write(
                &file,
                super::super::gguf_header::test_bytes::one_tensor_gguf(
                    "w.weight",
                    1,
                    expected.len(),
                    code,
                    &blocks,
                ),
            )
            .expect("write");
            let mut gguf = super::super::gguf::GgufFile::open(&file).expect("open");
            for dequantize in [false, true] {
                let mut reader = WeightReader {
                    source: &mut gguf,
                    device: &Device::Cpu,
                    dequantize,
                    requantize: None,
                    shard: Shard::SINGLE,
                };
                let linear = reader
                    .linear("w", 1, expected.len(), false, Split::Output)
                    .expect("linear");
                let values = match (&linear.weight, dequantize) {
                    (LinearWeight::Blocks(m), false) if m.kind() == kind => m.dequantize(),
                    (LinearWeight::Candle(QMatMul::Tensor(t)), true) => {
                        t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values")
                    }
                    (LinearWeight::Blocks(m), _) => {
                        panic!("{kind:?} dequantize={dequantize}: loaded as {:?}", m.kind())
                    }
                    (_, _) => panic!("{kind:?} dequantize={dequantize}: loaded as another candle matmul"),
                };
                assert_eq!(values, expected, "{kind:?} loaded, dequantize={dequantize}");
            }
            let _ = std::fs::remove_file(file);
        }
    }
}
