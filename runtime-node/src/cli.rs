//! Command-line interface. The operator renders `serve` flags into the pod spec, so their names
//! are part of Hearth's contract: rename them only together with `operator/`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// Top-level arguments of the `runtime-node` binary.
#[derive(Debug, Parser)]
#[command(name = "runtime-node", version, about = "Hearth's LLM inference engine")]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `runtime-node`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model and serve the OpenAI-compatible API.
    Serve(ServeArgs),
    /// Measure prefill and decode throughput of a model on this machine.
    Bench(BenchArgs),
    /// Run the billing sidecar: a metering proxy in front of the engine with a crash-safe ledger.
    Meter(crate::meter::MeterArgs),
}

/// Flags shared by every subcommand that loads a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF model file, or a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`).
    #[arg(long, env = "HEARTH_MODEL")]
    pub model: PathBuf,
    /// Compute device: `cpu`, or `cuda:N` (CUDA builds; tensor-parallel rank r uses GPU N + r).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// CPU worker threads for the kernels (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Pin kernel thread i to the i-th CPU this process may use: `auto` does when the process
    /// may use exactly `--threads` CPUs (an exclusive cpuset, or every core of a local machine);
    /// on CPUs shared with other processes pinned threads would contend for the same cores.
    #[arg(long, value_enum, default_value_t = PinThreads::Auto, env = "HEARTH_PIN_THREADS")]
    pub pin_threads: PinThreads,
    /// Expand quantized weights to f32 at load (and keep the KV cache in f32 unless
    /// `--kv-cache-dtype` says otherwise): exact matmuls at 4-8x the memory (numerics checks; on
    /// SmolLM2 Q4_1 it is not faster).
    #[arg(long, conflicts_with = "requantize")]
    pub dequantize: bool,
    /// Convert block-quantized weights to this type at load (`q8_0`): ~3x faster decode on CPU
    /// for Q4_1 files, at about twice the logit error (measured on SmolLM2).
    #[arg(long)]
    pub requantize: Option<Requantize>,
    /// How the CPU KV cache stores keys and values: `f16` (half the memory and the bytes
    /// attention reads; the default), `f32` (the default with `--dequantize`) or `fp8` (E4M3:
    /// twice f16's cached tokens in the same memory, each value rounded by up to 1/16 of
    /// itself; not faster on CPUs measured so far). GPU caches are f32.
    #[arg(long)]
    pub kv_cache_dtype: Option<KvCacheDtype>,
    /// Longest sequence (prompt + completion) the engine accepts, in tokens; 0 = the model's own.
    #[arg(long, default_value_t = 4096)]
    pub max_context_tokens: usize,
}

/// Flags of `runtime-node serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model to load and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The OpenAI model id clients send; defaults to the GGUF file stem.
    #[arg(long)]
    pub served_name: Option<String>,
    /// Most sequences decoded together in one step.
    #[arg(long, default_value_t = 8)]
    pub max_batch_size: usize,
    /// Tokens the paged KV cache holds across all sequences (0 = sized by
    /// `--kv-cache-fraction`, at most max-batch-size full contexts).
    #[arg(long, default_value_t = 0)]
    pub kv_cache_tokens: usize,
    /// Share of the memory available at start the KV cache may take (0 = no memory cap).
    #[arg(long, default_value_t = 0.0)]
    pub kv_cache_fraction: f64,
    /// Turn off sharing of identical prompt-prefix KV blocks between requests.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Tensor-parallel ranks, one thread each: attention heads, KV heads and the MLP width must
    /// divide by it. On CUDA, one GPU per rank (NCCL); on CPU the ranks share the cores.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel: usize,
    /// GPU product the pod was scheduled for (the CRD's `gpu.type`, e.g. `nvidia-h100-80gb`);
    /// CUDA builds refuse to start on visible GPUs whose NVML name lacks any of its words.
    #[arg(long, env = "HEARTH_EXPECT_GPU_PRODUCT")]
    pub expect_gpu_product: Option<String>,
    /// GPU memory the pod was scheduled for, GiB per GPU (the CRD's `gpu.memoryGiB`); CUDA
    /// builds refuse GPUs with less than 90 % of it.
    #[arg(long, env = "HEARTH_EXPECT_GPU_MEMORY_GIB")]
    pub expect_gpu_memory_gib: Option<f64>,
    /// Compute dtype requested by the operator; a GGUF file fixes its own weight types, so only
    /// `auto` and the f32 activations this engine uses are meaningful here.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Where downloaded models are cached (remote sources are not fetched by this build).
    #[arg(long)]
    pub model_cache: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGTERM before exiting.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
}

/// Flags of `runtime-node bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The model to load and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length used to measure prefill.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens decoded to measure batch-1 decode.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Concurrent sequences for the aggregate decode measurement (1 = skip it).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Also measure prefill of a prompt this long, in a sequence of its own (0 = skip it):
    /// llama-bench's `pp512` beside the shorter prompt that decoding follows.
    #[arg(long, default_value_t = 0)]
    pub long_prompt_tokens: usize,
    /// Tensor-parallel ranks to measure with (as `serve --tensor-parallel`): on CPU the ranks
    /// share the cores, on CUDA one GPU each.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel: usize,
    /// Also measure this machine's memory read bandwidth (the decode roofline).
    #[arg(long)]
    pub bandwidth: bool,
    /// End with one JSON line of every figure (what `make bench` reads).
    #[arg(long)]
    pub json: bool,
}

/// Target types for `--requantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Requantize {
    /// 8-bit blocks of 32 (candle has SIMD kernels for it).
    #[value(name = "q8_0")]
    Q8_0,
}

/// `--pin-threads` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PinThreads {
    /// Pin when the allowed CPUs are exactly as many as the threads.
    Auto,
    /// Always pin (threads share CPUs when there are fewer).
    Always,
    /// Never pin.
    Never,
}

impl From<PinThreads> for hearth_kernels::affinity::Pinning {
    fn from(pin: PinThreads) -> Self {
        match pin {
            PinThreads::Auto => Self::Auto,
            PinThreads::Always => Self::Always,
            PinThreads::Never => Self::Never,
        }
    }
}

/// `--kv-cache-dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheDtype {
    /// IEEE half floats.
    F16,
    /// 32-bit floats.
    F32,
    /// 8-bit floats (OCP FP8 E4M3, no scale).
    Fp8,
}

impl ModelArgs {
    /// The KV storage these flags ask for (`None`: the model's default for its weights).
    pub fn kv_cache(&self) -> Option<crate::model::KvDtype> {
        self.kv_cache_dtype.map(|dtype| match dtype {
            KvCacheDtype::F16 => crate::model::KvDtype::F16,
            KvCacheDtype::F32 => crate::model::KvDtype::F32,
            KvCacheDtype::Fp8 => crate::model::KvDtype::Fp8,
        })
    }

    /// The weight format these flags ask for.
    pub fn weight_format(&self) -> crate::model::WeightFormat {
        use crate::model::WeightFormat;
        match (self.dequantize, self.requantize) {
            (true, _) => WeightFormat::Dequantized,
            (false, Some(Requantize::Q8_0)) => {
                WeightFormat::Requantized(candle_core::quantized::GgmlDType::Q8_0)
            }
            (false, None) => WeightFormat::AsStored,
        }
    }
}

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The host CPU.
    Cpu,
    /// CUDA GPU with this ordinal (CUDA builds only).
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

/// Why a `--device` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSpecError {
    /// CUDA was asked for but this build has no CUDA backend.
    #[error(
        "device `{0}` needs the CUDA backend, which this build of runtime-node does not have; use `--device cpu`"
    )]
    CudaUnavailable(String),
    /// Not a device name at all.
    #[error("unknown device `{0}`; expected `cpu` (or `cuda:N` in CUDA builds)")]
    Unknown(String),
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(Self::Cuda(0)),
            #[cfg(feature = "cuda")]
            other if other.starts_with("cuda:") => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceSpecError::Unknown(other.to_string())),
            other if other == "cuda" || other.starts_with("cuda:") => {
                Err(DeviceSpecError::CudaUnavailable(other.to_string()))
            }
            other => Err(DeviceSpecError::Unknown(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_accepts_the_operator_flags() {
        let cli = Cli::try_parse_from([
            "runtime-node",
            "serve",
            "--model",
            "/m.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--served-name",
            "smol",
            "--threads",
            "2",
            "--max-batch-size",
            "4",
            "--max-context-tokens",
            "2048",
            "--device",
            "cpu",
            "--tensor-parallel",
            "1",
            "--kv-cache-fraction",
            "0.5",
            "--dtype",
            "auto",
            "--no-prefix-caching",
            "--requantize",
            "q8_0",
            "--pin-threads",
            "never",
        ])
        .expect("flags parse");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.port, 9000);
        assert_eq!(args.served_name.as_deref(), Some("smol"));
        assert_eq!(args.model.threads, 2);
        assert_eq!(args.model.pin_threads, PinThreads::Never);
        assert_eq!(args.max_batch_size, 4);
        assert_eq!(args.model.max_context_tokens, 2048);
        assert_eq!(
            args.model.weight_format(),
            crate::model::WeightFormat::Requantized(candle_core::quantized::GgmlDType::Q8_0)
        );
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_devices_parse_with_their_ordinal() {
        assert_eq!("cuda".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cuda(3)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_device_is_refused_with_a_reason() {
        let err = Cli::try_parse_from(["runtime-node", "serve", "--model", "m", "--device", "cuda:0"])
            .expect_err("cuda refused");
        assert!(err.to_string().contains("CUDA backend"), "{err}");
    }
}
