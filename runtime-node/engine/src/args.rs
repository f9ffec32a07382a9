//! What the engine makes of `hearth_node_contract`'s flags: the contract is plain data shared with
//! the operator, these are the engine's readings of it (weight format, KV storage, thread pinning,
//! the devices this build can run on).

use candle_core::quantized::GgmlDType;
use hearth_kernels::affinity::Pinning;
use hearth_node_contract::{DeviceSpec, KvCacheDtype, ModelArgs, PinThreads, Requantize};

use crate::model::{KvDtype, WeightFormat};

/// The KV storage these flags ask for (`None`: the model's default for its weights).
pub fn kv_cache(args: &ModelArgs) -> Option<KvDtype> {
    args.kv_cache_dtype.map(|dtype| match dtype {
        KvCacheDtype::F16 => KvDtype::F16,
        KvCacheDtype::F32 => KvDtype::F32,
        KvCacheDtype::Fp8 => KvDtype::Fp8,
    })
}

/// The weight format these flags ask for.
pub fn weight_format(args: &ModelArgs) -> WeightFormat {
    match (args.dequantize, args.requantize) {
        (true, _) => WeightFormat::Dequantized,
        (false, Some(Requantize::Q8_0)) => WeightFormat::Requantized(GgmlDType::Q8_0),
        (false, None) => WeightFormat::AsStored,
    }
}

/// The kernel pool's pinning for `--pin-threads`.
pub fn pinning(pin: PinThreads) -> Pinning {
    match pin {
        PinThreads::Auto => Pinning::Auto,
        PinThreads::Always => Pinning::Always,
        PinThreads::Never => Pinning::Never,
    }
}

/// A `--device` this build has no backend for.
#[derive(Debug, thiserror::Error)]
#[error(
    "device `{0}` needs the CUDA backend, which this build of runtime-node does not have; use `--device cpu`"
)]
pub struct UnsupportedDevice(pub DeviceSpec);

/// Refuses a CUDA device in a build without the `cuda` feature.
pub fn check_backend(device: DeviceSpec) -> Result<(), UnsupportedDevice> {
    match device {
        DeviceSpec::Cuda(_) if !cfg!(feature = "cuda") => Err(UnsupportedDevice(device)),
        DeviceSpec::Cpu | DeviceSpec::Cuda(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use hearth_node_contract::ServeArgs;

    use super::*;

    #[test]
    fn weight_flags_choose_the_format() {
        let mut args = ServeArgs::new("/m.gguf".into()).model;
        assert_eq!(weight_format(&args), WeightFormat::AsStored);
        assert_eq!(kv_cache(&args), None);
        args.requantize = Some(Requantize::Q8_0);
        args.kv_cache_dtype = Some(KvCacheDtype::Fp8);
        assert_eq!(weight_format(&args), WeightFormat::Requantized(GgmlDType::Q8_0));
        assert_eq!(kv_cache(&args), Some(KvDtype::Fp8));
        args.requantize = None;
        args.dequantize = true;
        assert_eq!(weight_format(&args), WeightFormat::Dequantized);
    }

    #[test]
    fn the_cpu_is_always_supported() {
        assert!(check_backend(DeviceSpec::Cpu).is_ok());
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_builds_accept_cuda_devices() {
        assert!(check_backend(DeviceSpec::Cuda(1)).is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_device_is_refused_with_a_reason() {
        let err = check_backend(DeviceSpec::Cuda(0)).expect_err("cuda refused");
        assert!(err.to_string().contains("needs the CUDA backend"), "{err}");
        assert!(err.to_string().contains("`cuda:0`"), "{err}");
    }
}
