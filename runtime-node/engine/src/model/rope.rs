//! Rotary position embeddings: a cos/sin table computed once, gathered per token position so
//! that tokens of different sequences (at different positions) rotate in one call.

use candle_core::{DType, Device, Result, Tensor};

use super::config::{Llama3RopeScaling, ModelConfig, RopeStyle};

/// Precomputed rotary tables for positions `0..max_positions`.
#[derive(Debug, Clone)]
pub struct Rope {
    // `(max_positions, head_dim / 2)` row-major, in host memory.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    style: RopeStyle,
    max_positions: usize,
    device: Device,
}

/// Inverse frequencies `1 / theta^(2i/d)`, adjusted by Llama 3 scaling or per-dimension factors.
pub fn inverse_frequencies(
    head_dim: usize,
    theta: f64,
    scaling: Option<&Llama3RopeScaling>,
    freq_factors: Option<&[f32]>,
) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| {
            let mut freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            if let Some(factors) = freq_factors
                && let Some(f) = factors.get(i)
            {
                freq /= f64::from(*f);
            } else if let Some(s) = scaling {
                freq = llama3_scale(freq, s);
            }
            freq
        })
        .collect()
}

// Llama 3.1's `rope_type: llama3`: long wavelengths are slowed by `factor`, short ones kept,
// the band between interpolated smoothly.
fn llama3_scale(freq: f64, s: &Llama3RopeScaling) -> f64 {
    let original = s.original_context as f64;
    let low_wavelen = original / s.low_freq_factor;
    let high_wavelen = original / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

impl Rope {
    /// Builds tables for `max_positions` positions from the model's configuration.
    pub fn new(
        cfg: &ModelConfig,
        freq_factors: Option<&[f32]>,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self> {
        let inv = inverse_frequencies(
            cfg.head_dim,
            cfg.rope_theta,
            cfg.rope_scaling.as_ref(),
            freq_factors,
        );
        let half = inv.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for f in &inv {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            cos,
            sin,
            half,
            style: cfg.rope_style,
            max_positions,
            device: device.clone(),
        })
    }

    /// Number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The table rows for `positions` (T of them), on the model's device: `(T, 1, d/2)` each.
    pub fn tables_for(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        let (t, half) = (positions.len(), self.half);
        let rows = |table: &[f32]| {
            let mut out = Vec::with_capacity(t * half);
            for &p in positions {
                let p = p as usize;
                if p >= self.max_positions {
                    candle_core::bail!("position {p} is past the rotary table ({})", self.max_positions);
                }
                out.extend_from_slice(&table[p * half..(p + 1) * half]);
            }
            Tensor::from_vec(out, (t, 1, half), &self.device)
        };
        Ok((rows(&self.cos)?, rows(&self.sin)?))
    }

    /// Rotates `heads` vectors of `2 · d/2` values in `x` (one token's heads, contiguous) in
    /// place to `position`; the host-memory twin of [`Rope::apply`].
    pub fn apply_host(&self, x: &mut [f32], position: usize) {
        let half = self.half;
        let cos = &self.cos[position * half..(position + 1) * half];
        let sin = &self.sin[position * half..(position + 1) * half];
        for head in x.chunks_exact_mut(2 * half) {
            match self.style {
                // Pairs (2i, 2i + 1).
                RopeStyle::Interleaved => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                }
                // Pairs (i, i + d/2).
                RopeStyle::HalfSplit => {
                    let (low, high) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (low[i], high[i]);
                        low[i] = a * cos[i] - b * sin[i];
                        high[i] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }

    /// Rotates `x` of shape `(T, heads, head_dim)`, token t at the position its tables hold.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (t, heads, d) = x.dims3()?;
        // candle's kernels take (batch, heads, seq, dim) with per-batch tables: one token per batch.
        let x4 = x.to_dtype(DType::F32)?.contiguous()?.reshape((t, heads, 1, d))?;
        let out = match self.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x4, cos, sin)?,
            RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&x4, cos, sin)?,
        };
        out.reshape((t, heads, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frequencies_follow_theta() {
        let inv = inverse_frequencies(4, 10_000.0, None, None);
        assert!((inv[0] - 1.0).abs() < 1e-12);
        assert!((inv[1] - 0.01).abs() < 1e-12);
    }

    #[test]
    fn llama3_scaling_slows_only_long_wavelengths() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192,
        };
        let plain = inverse_frequencies(128, 500_000.0, None, None);
        let scaled = inverse_frequencies(128, 500_000.0, Some(&s), None);
        assert_eq!(plain[0], scaled[0], "highest frequency untouched");
        let last = plain.len() - 1;
        assert!(
            (plain[last] / 8.0 - scaled[last]).abs() < 1e-15,
            "lowest frequency divided by 8"
        );
    }

    #[test]
    fn rotation_at_position_zero_is_identity() -> Result<()> {
        let cfg = ModelConfig {
            arch: super::super::config::Architecture::Llama,
            hidden_size: 8,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_style: RopeStyle::Interleaved,
            rope_scaling: None,
            max_position_embeddings: 16,
        };
        let rope = Rope::new(&cfg, None, 16, &Device::Cpu)?;
        let x = Tensor::arange(0f32, 16f32, &Device::Cpu)?.reshape((2, 2, 4))?;
        let (cos, sin) = rope.tables_for(&[0, 3])?;
        let y = rope.apply(&x, &cos, &sin)?;
        let (x0, y0) = (x.get(0)?.to_vec2::<f32>()?, y.get(0)?.to_vec2::<f32>()?);
        assert_eq!(x0, y0);
        // A rotation keeps each pair's norm.
        let (x1, y1) = (x.get(1)?.to_vec2::<f32>()?, y.get(1)?.to_vec2::<f32>()?);
        let norm = |v: &[f32]| v[0] * v[0] + v[1] * v[1];
        assert!((norm(&x1[0]) - norm(&y1[0])).abs() < 1e-3);
        Ok(())
    }
}
