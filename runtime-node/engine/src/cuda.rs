//! CUDA devices and NVML telemetry (feature `cuda`).
//!
//! candle links the CUDA driver dynamically (`dynamic-linking`), so a CUDA build does not start
//! at all where `libcuda.so.1` is missing: cudarc's `is_culib_present()` exists only with
//! `dynamic-loading`, which candle's feature set excludes. What remains to guard is a machine
//! with the driver but not the GPU asked for: the device count is checked first, and context
//! creation runs under `catch_unwind` because cudarc panics on some driver failures.

use std::time::Duration;

use candle_core::Device;
use nvml_wrapper::Nvml;

use crate::gpu::{GpuExpectation, GpuMetrics, GpuMismatch};

/// Why a CUDA device or NVML could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The driver reported an error (no GPU, driver/toolkit mismatch, ...).
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// `--device cuda:N` names a GPU that is not there.
    #[error("--device cuda:{ordinal}: only {count} CUDA device(s) are visible")]
    NoSuchDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices visible.
        count: usize,
    },
    /// Creating the CUDA context panicked inside cudarc.
    #[error("--device cuda:{0}: creating the CUDA context failed (cudarc panicked)")]
    ContextPanicked(usize),
    /// NVML could not be initialised or queried.
    #[error("NVML: {0}")]
    Nvml(String),
    /// A visible GPU is not what the pod asked for.
    #[error(transparent)]
    Mismatch(#[from] GpuMismatch),
}

/// A candle device on CUDA GPU `ordinal`, or an error saying why not (never a panic).
pub fn new_device(ordinal: usize) -> Result<Device, CudaError> {
    let count =
        cudarc::driver::CudaContext::device_count().map_err(|e| CudaError::Driver(format!("{e:?}")))?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(CudaError::NoSuchDevice { ordinal, count });
    }
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(CudaError::Driver(e.to_string())),
        Err(_) => Err(CudaError::ContextPanicked(ordinal)),
    }
}

fn nvml_err(e: nvml_wrapper::error::NvmlError) -> CudaError {
    CudaError::Nvml(e.to_string())
}

/// Checks that at least `needed` GPUs are visible and each matches `expect`; returns NVML for
/// the telemetry thread.
pub fn verify_gpus(needed: usize, expect: &GpuExpectation) -> Result<Nvml, CudaError> {
    let nvml = Nvml::init().map_err(nvml_err)?;
    let count = nvml.device_count().map_err(nvml_err)?;
    if (count as usize) < needed {
        return Err(GpuMismatch::Count {
            needed,
            found: count as usize,
        }
        .into());
    }
    for index in 0..count {
        let device = nvml.device_by_index(index).map_err(nvml_err)?;
        let name = device.name().map_err(nvml_err)?;
        let memory = device.memory_info().map_err(nvml_err)?;
        expect.check(index, &name, memory.total)?;
        tracing::info!(index, %name, total_gib = memory.total >> 30, "GPU verified");
    }
    Ok(nvml)
}

/// Samples every visible GPU's memory and utilization into `metrics` every `interval`, on a
/// background thread, for the life of the process.
pub fn spawn_telemetry(nvml: Nvml, metrics: GpuMetrics, interval: Duration) -> Result<(), CudaError> {
    std::thread::Builder::new()
        .name("hearth-nvml".into())
        .spawn(move || {
            loop {
                if let Err(err) = sample(&nvml, &metrics) {
                    tracing::warn!(%err, "reading GPU telemetry");
                }
                std::thread::sleep(interval);
            }
        })
        .map(|_| ())
        .map_err(|e| CudaError::Nvml(format!("spawning the telemetry thread: {e}")))
}

fn sample(nvml: &Nvml, metrics: &GpuMetrics) -> Result<(), CudaError> {
    for index in 0..nvml.device_count().map_err(nvml_err)? {
        let device = nvml.device_by_index(index).map_err(nvml_err)?;
        let memory = device.memory_info().map_err(nvml_err)?;
        let utilization = device.utilization_rates().map_err(nvml_err)?;
        metrics.record(index, memory.used, memory.total, utilization.gpu);
    }
    Ok(())
}
