//! What the pod expects of its GPUs and the GPU gauges, independent of the CUDA build so the
//! matching rules and the metric names are tested everywhere. The `cuda` module fills them from
//! NVML.

use prometheus::{GaugeVec, Opts, Registry};

/// The GPU the operator scheduled this pod for (`InferenceModel.spec.gpu`), checked against
/// what NVML sees at start so a pod on the wrong node fails loudly instead of running slowly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuExpectation {
    /// Product as the CRD names it, e.g. `nvidia-h100-80gb`: every `-`-separated word must
    /// appear in the NVML name (`NVIDIA H100 80GB HBM3`), case-insensitively.
    pub product: Option<String>,
    /// Memory per GPU in GiB; a GPU with less than 90 % of it is refused (NVML reports an 80 GB
    /// H100 as 79.6 GiB).
    pub memory_gib: Option<f64>,
}

/// A visible GPU that does not match the expectation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuMismatch {
    /// The product name does not contain the expected words.
    #[error(
        "GPU {index} is `{found}`, but the pod asked for `{expected}` (--expect-gpu-product / HEARTH_EXPECT_GPU_PRODUCT)"
    )]
    Product {
        /// NVML index.
        index: u32,
        /// The expected product.
        expected: String,
        /// NVML's name for the GPU.
        found: String,
    },
    /// The GPU has too little memory.
    #[error(
        "GPU {index} has {found_gib:.1} GiB, but the pod asked for {expected_gib} GiB (--expect-gpu-memory-gib / HEARTH_EXPECT_GPU_MEMORY_GIB; at least 90 % is accepted)"
    )]
    Memory {
        /// NVML index.
        index: u32,
        /// The expected GiB.
        expected_gib: f64,
        /// The GPU's total GiB.
        found_gib: f64,
    },
    /// Fewer GPUs are visible than the ranks need.
    #[error("{found} GPU(s) visible, but {needed} are needed (one per tensor-parallel rank)")]
    Count {
        /// GPUs needed.
        needed: usize,
        /// GPUs visible.
        found: usize,
    },
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

impl GpuExpectation {
    /// Whether GPU `index`, called `name` with `total_bytes` of memory, is what was asked for.
    pub fn check(&self, index: u32, name: &str, total_bytes: u64) -> Result<(), GpuMismatch> {
        if let Some(expected) = &self.product {
            let have = words(name);
            if !words(expected).iter().all(|w| have.contains(w)) {
                return Err(GpuMismatch::Product {
                    index,
                    expected: expected.clone(),
                    found: name.to_string(),
                });
            }
        }
        if let Some(expected_gib) = self.memory_gib {
            let found_gib = total_bytes as f64 / f64::from(1u32 << 30);
            if found_gib < expected_gib * 0.9 {
                return Err(GpuMismatch::Memory {
                    index,
                    expected_gib,
                    found_gib,
                });
            }
        }
        Ok(())
    }
}

/// GPU gauges (names prefixed `hearth_engine_gpu_`), labelled by NVML index (bounded by the
/// GPUs in the pod).
#[derive(Debug, Clone)]
pub struct GpuMetrics {
    /// Bytes of GPU memory in use.
    pub memory_used_bytes: GaugeVec,
    /// Bytes of GPU memory in total.
    pub memory_total_bytes: GaugeVec,
    /// Percent of the last sample period a kernel was running.
    pub utilization_percent: GaugeVec,
}

impl GpuMetrics {
    /// Creates the gauges and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["gpu"]);
        let metrics = Self {
            memory_used_bytes: gauge("hearth_engine_gpu_memory_used_bytes", "GPU memory in use, bytes.")?,
            memory_total_bytes: gauge(
                "hearth_engine_gpu_memory_total_bytes",
                "GPU memory in total, bytes.",
            )?,
            utilization_percent: gauge(
                "hearth_engine_gpu_utilization_percent",
                "Percent of the last sample period a GPU kernel was running.",
            )?,
        };
        registry.register(Box::new(metrics.memory_used_bytes.clone()))?;
        registry.register(Box::new(metrics.memory_total_bytes.clone()))?;
        registry.register(Box::new(metrics.utilization_percent.clone()))?;
        Ok(metrics)
    }

    /// Records one sample of GPU `index`.
    pub fn record(&self, index: u32, used_bytes: u64, total_bytes: u64, utilization: u32) {
        let label = index.to_string();
        self.memory_used_bytes
            .with_label_values(&[&label])
            .set(used_bytes as f64);
        self.memory_total_bytes
            .with_label_values(&[&label])
            .set(total_bytes as f64);
        self.utilization_percent
            .with_label_values(&[&label])
            .set(f64::from(utilization));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn crd_product_names_match_nvml_names() {
        let h100 = GpuExpectation {
            product: Some("nvidia-h100-80gb".into()),
            memory_gib: Some(80.0),
        };
        assert_eq!(h100.check(0, "NVIDIA H100 80GB HBM3", 81_559 * (1 << 20)), Ok(()));
        let err = h100
            .check(1, "NVIDIA A100-SXM4-40GB", 40 * GIB)
            .expect_err("wrong GPU");
        assert!(
            err.to_string().contains("GPU 1 is `NVIDIA A100-SXM4-40GB`"),
            "{err}"
        );
        let small = GpuExpectation {
            product: None,
            memory_gib: Some(80.0),
        };
        let err = small.check(0, "NVIDIA H100", 40 * GIB).expect_err("too small");
        assert!(
            err.to_string().contains("40.0 GiB") && err.to_string().contains("80 GiB"),
            "{err}"
        );
        assert_eq!(GpuExpectation::default().check(0, "anything", 0), Ok(()));
    }

    #[test]
    fn gauges_are_exported() {
        let registry = Registry::new();
        let metrics = GpuMetrics::new(&registry).expect("registers");
        metrics.record(0, 5 * GIB, 80 * GIB, 42);
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("hearth_engine_gpu_utilization_percent{gpu=\"0\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("hearth_engine_gpu_memory_total_bytes{gpu=\"0\"}"),
            "{text}"
        );
    }
}
