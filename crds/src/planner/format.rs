//! How weights are stored: plain floating point, vLLM-style quantization, or a GGUF block type.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::PlanError;

/// The storage format of a model's weight matrices.
///
/// Quantized formats store weights in blocks: a run of `elements` weights packed with their
/// scales (and minimums) into `bytes` bytes; [`WeightFormat::block_layout`] states each block's
/// arithmetic so byte counts stay exact integers. Variant names follow llama.cpp's type names.
#[allow(
    non_camel_case_types,
    reason = "GGUF type names (Q4_K_M, Q8_0) are the vocabulary users know"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightFormat {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 16-bit brain float; what `engine.dtype: auto` assumes, as every catalog model ships it.
    BF16,
    /// 8-bit float (E4M3) weights with per-tensor or per-channel scales (vLLM `fp8`).
    Fp8,
    /// 8-bit integer weights with per-channel scales (W8A8 / `int8`).
    Int8,
    /// 4-bit integer weights, AWQ or GPTQ, in groups of 128 with an fp16 scale and zero each.
    Int4,
    /// GGUF Q8_0: 32 weights as 32 int8 + one f16 scale.
    Q8_0,
    /// GGUF Q6_K: 256-weight super-blocks of 6-bit weights with int8 sub-block scales.
    Q6_K,
    /// GGUF Q5_K_M: the llama.cpp mix that is mostly Q5_K blocks; planned as Q5_K.
    Q5_K_M,
    /// GGUF Q4_K_M: the llama.cpp mix that is mostly Q4_K blocks; planned as Q4_K.
    Q4_K_M,
    /// GGUF Q4_0: 32 weights as 16 bytes of nibbles + one f16 scale.
    Q4_0,
    /// GGUF Q4_1: 32 weights as 16 bytes of nibbles + an f16 scale and an f16 minimum.
    Q4_1,
}

/// One storage block: `elements` weights occupy `bytes` bytes, scales included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BlockLayout {
    /// Bytes one block occupies.
    pub bytes: u64,
    /// Weights one block holds.
    pub elements: u64,
}

/// `engine.dtype` values the planner accepts (aliases `fp32`, `fp16`, `half`, `bf16` too).
const ACCEPTED_DTYPES: &str = "auto, float32, float16, bfloat16";
/// `engine.quantization` values the planner accepts.
const ACCEPTED_QUANTIZATIONS: &str =
    "none, fp8, int8, awq, gptq, int4, q8_0, q6_k, q5_k_m, q4_k_m, q4_0, q4_1";

impl WeightFormat {
    /// The block arithmetic of the format:
    /// - F32 4 bytes/1, F16 and BF16 2 bytes/1, Fp8 and Int8 1 byte/1.
    /// - Int4 (AWQ/GPTQ, group 128): 128 × 4 bits = 64 bytes + f16 scale 2 + f16 zero 2
    ///   = 68 bytes/128 = 4.25 bits (real checkpoints pack zeros in 4 bits: slightly less).
    /// - Q8_0: 32 × 1 byte + f16 scale 2 = 34 bytes/32 = 8.5 bits.
    /// - Q6_K: 128 bytes low nibbles + 64 bytes high bits + 16 int8 scales + f16 scale 2
    ///   = 210 bytes/256 = 6.5625 bits.
    /// - Q5_K(_M): f16 scale 2 + f16 min 2 + 12 bytes 6-bit scales + 32 bytes high bits
    ///   + 128 bytes nibbles = 176 bytes/256 = 5.5 bits.
    /// - Q4_K(_M): f16 scale 2 + f16 min 2 + 12 bytes scales + 128 bytes nibbles
    ///   = 144 bytes/256 = 4.5 bits.
    /// - Q4_0: f16 scale 2 + 16 bytes nibbles = 18 bytes/32 = 4.5 bits.
    /// - Q4_1: f16 scale 2 + f16 min 2 + 16 bytes nibbles = 20 bytes/32 = 5 bits.
    ///
    /// The `_M` mixes keep a few tensors (the output projection, half of `attn_v` and
    /// `ffn_down`) at Q6_K, so real Q4_K_M files run about 5–9% larger than planned here.
    pub fn block_layout(self) -> BlockLayout {
        let (bytes, elements) = match self {
            Self::F32 => (4, 1),
            Self::F16 | Self::BF16 => (2, 1),
            Self::Fp8 | Self::Int8 => (1, 1),
            Self::Int4 => (68, 128),
            Self::Q8_0 => (34, 32),
            Self::Q6_K => (210, 256),
            Self::Q5_K_M => (176, 256),
            Self::Q4_K_M => (144, 256),
            Self::Q4_0 => (18, 32),
            Self::Q4_1 => (20, 32),
        };
        BlockLayout { bytes, elements }
    }

    /// Effective bits per weight including block scales, e.g. 4.5 for Q4_0 (18 bytes per 32).
    pub fn bits_per_weight(self) -> f64 {
        let block = self.block_layout();
        (block.bytes * 8) as f64 / block.elements as f64
    }

    /// Bytes `elements` weights occupy, whole blocks rounded up; `None` on 64-bit overflow.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let block = self.block_layout();
        elements.div_ceil(block.elements).checked_mul(block.bytes)
    }

    /// Whether this is a GGUF (llama.cpp) block type rather than a safetensors format.
    pub fn is_gguf(self) -> bool {
        matches!(
            self,
            Self::Q8_0 | Self::Q6_K | Self::Q5_K_M | Self::Q4_K_M | Self::Q4_0 | Self::Q4_1
        )
    }

    /// The format of the tensors a quantizer leaves alone (norms and biases always; embeddings,
    /// the output projection and MoE routers too outside GGUF): F32 in GGUF files, the model's
    /// 16-bit dtype for Fp8/Int8/Int4 checkpoints, the format itself when unquantized.
    pub fn unquantized_companion(self) -> WeightFormat {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => self,
            Self::Fp8 | Self::Int8 | Self::Int4 => Self::BF16,
            Self::Q8_0 | Self::Q6_K | Self::Q5_K_M | Self::Q4_K_M | Self::Q4_0 | Self::Q4_1 => Self::F32,
        }
    }

    /// Bytes per activation element, and the usual KV-cache element width: 4 under F32, else 2
    /// (quantized models still compute in 16 bits; an fp8 KV cache is a separate choice).
    pub fn compute_bytes_per_element(self) -> u64 {
        if self == Self::F32 { 4 } else { 2 }
    }

    /// The format a CR's `engine.dtype` and `engine.quantization` select.
    ///
    /// A quantization other than `none` decides the format (`awq`, `gptq` and `int4` are all
    /// [`WeightFormat::Int4`]); otherwise the dtype does, and `auto` (or no dtype) plans for
    /// BF16 since every catalog model ships 16-bit weights. Matching is case-insensitive.
    /// Unknown values are an error naming the field and the accepted values.
    pub fn from_spec(dtype: Option<&str>, quantization: Option<&str>) -> Result<Self, PlanError> {
        let quantization = quantization.map(str::trim).map(str::to_ascii_lowercase);
        if let Some(quantization) = quantization.filter(|value| !value.is_empty() && value != "none") {
            return match quantization.as_str() {
                "fp8" => Ok(Self::Fp8),
                "int8" => Ok(Self::Int8),
                "awq" | "gptq" | "int4" => Ok(Self::Int4),
                "q8_0" => Ok(Self::Q8_0),
                "q6_k" => Ok(Self::Q6_K),
                "q5_k_m" => Ok(Self::Q5_K_M),
                "q4_k_m" => Ok(Self::Q4_K_M),
                "q4_0" => Ok(Self::Q4_0),
                "q4_1" => Ok(Self::Q4_1),
                _ => Err(PlanError::UnknownQuantization {
                    value: quantization,
                    accepted: ACCEPTED_QUANTIZATIONS,
                }),
            };
        }
        let dtype = dtype.map(str::trim).unwrap_or("auto").to_ascii_lowercase();
        match dtype.as_str() {
            "auto" | "" | "bfloat16" | "bf16" => Ok(Self::BF16),
            "float16" | "fp16" | "half" => Ok(Self::F16),
            "float32" | "fp32" => Ok(Self::F32),
            _ => Err(PlanError::UnknownDtype {
                value: dtype,
                accepted: ACCEPTED_DTYPES,
            }),
        }
    }

    /// The name used in `engine.dtype` / `engine.quantization`, e.g. `bfloat16` or `q4_k_m`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::Fp8 => "fp8",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
            Self::Q8_0 => "q8_0",
            Self::Q6_K => "q6_k",
            Self::Q5_K_M => "q5_k_m",
            Self::Q4_K_M => "q4_k_m",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_formats_count_whole_blocks_on_a_block_multiple_tensor() {
        // A 4,096 × 4,096 projection: 16,777,216 weights.
        let elements = 4096 * 4096;
        // Q4_0: 16,777,216 / 32 = 524,288 blocks × 18 bytes = 9,437,184 (4.5 bits/weight).
        assert_eq!(WeightFormat::Q4_0.bytes_for(elements), Some(9_437_184));
        // Q8_0: 524,288 blocks × 34 bytes = 17,825,792 (8.5 bits/weight).
        assert_eq!(WeightFormat::Q8_0.bytes_for(elements), Some(17_825_792));
        // Q4_1: 524,288 × 20 = 10,485,760; Q4_K_M: 65,536 super-blocks × 144 = 9,437,184.
        assert_eq!(WeightFormat::Q4_1.bytes_for(elements), Some(10_485_760));
        assert_eq!(WeightFormat::Q4_K_M.bytes_for(elements), Some(9_437_184));
        // Int4: 131,072 groups × 68 bytes = 8,912,896; BF16: 2 bytes each = 33,554,432.
        assert_eq!(WeightFormat::Int4.bytes_for(elements), Some(8_912_896));
        assert_eq!(WeightFormat::BF16.bytes_for(elements), Some(33_554_432));
    }

    #[test]
    fn partial_blocks_round_up_and_overflow_is_reported() {
        // 33 weights need two Q8_0 blocks.
        assert_eq!(WeightFormat::Q8_0.bytes_for(33), Some(68));
        assert_eq!(WeightFormat::F32.bytes_for(u64::MAX), None);
    }

    #[test]
    fn bits_per_weight_include_block_scales() {
        let expected = [
            (WeightFormat::F32, 32.0),
            (WeightFormat::BF16, 16.0),
            (WeightFormat::Fp8, 8.0),
            (WeightFormat::Int4, 4.25),
            (WeightFormat::Q8_0, 8.5),
            (WeightFormat::Q6_K, 6.5625),
            (WeightFormat::Q5_K_M, 5.5),
            (WeightFormat::Q4_K_M, 4.5),
            (WeightFormat::Q4_0, 4.5),
            (WeightFormat::Q4_1, 5.0),
        ];
        for (format, bits) in expected {
            assert_eq!(format.bits_per_weight(), bits, "{format}");
        }
    }

    #[test]
    fn from_spec_prefers_quantization_and_defaults_auto_to_bf16() {
        assert_eq!(WeightFormat::from_spec(None, None), Ok(WeightFormat::BF16));
        assert_eq!(
            WeightFormat::from_spec(Some("auto"), Some("none")),
            Ok(WeightFormat::BF16)
        );
        assert_eq!(
            WeightFormat::from_spec(Some("float32"), None),
            Ok(WeightFormat::F32)
        );
        assert_eq!(
            WeightFormat::from_spec(Some("float16"), Some("")),
            Ok(WeightFormat::F16)
        );
        assert_eq!(
            WeightFormat::from_spec(Some("bfloat16"), Some("AWQ")),
            Ok(WeightFormat::Int4)
        );
        assert_eq!(
            WeightFormat::from_spec(Some("auto"), Some("gptq")),
            Ok(WeightFormat::Int4)
        );
        assert_eq!(WeightFormat::from_spec(None, Some("fp8")), Ok(WeightFormat::Fp8));
        assert_eq!(
            WeightFormat::from_spec(None, Some("Q4_K_M")),
            Ok(WeightFormat::Q4_K_M)
        );
    }

    #[test]
    fn from_spec_names_the_field_and_accepted_values() {
        let error = WeightFormat::from_spec(Some("float8"), None).expect_err("unknown dtype");
        assert_eq!(
            error.to_string(),
            "`engine.dtype` \"float8\" is not supported; accepted values: auto, float32, float16, bfloat16"
        );
        let error = WeightFormat::from_spec(None, Some("q3_k_s")).expect_err("unknown quantization");
        assert!(
            error
                .to_string()
                .starts_with("`engine.quantization` \"q3_k_s\" is not supported")
        );
        assert!(error.to_string().contains("q4_k_m"));
    }
}
