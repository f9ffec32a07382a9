//! The engine's command line as types. These names are the contract between the operator and the
//! engine: the operator builds the engine's arguments from a [`ServeArgs`] ([`ServeArgs::to_args`])
//! and `runtime-node serve` parses the same struct back, so the two cannot drift. Renaming a flag
//! here renames it on both sides. [`spec::serve_args`] is the one mapping from an
//! InferenceModel's spec to these flags, for the operator's pods and local mode alike.

pub mod spec;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, FromArgMatches, ValueEnum};

/// Flags shared by every subcommand that loads a model.
#[derive(Debug, Clone, PartialEq, Args)]
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
#[derive(Debug, Clone, PartialEq, Args)]
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

impl ServeArgs {
    /// `serve` for `model` with every other flag at its default, as `runtime-node serve --model
    /// <model>` would parse it in an environment without `HEARTH_*` variables.
    pub fn new(model: PathBuf) -> ServeArgs {
        // A placeholder, not `model` itself: clap refuses an empty path, and the defaults are
        // what is wanted from the parse.
        let mut args = parse_without_env(["serve", "--model", "model"])
            .expect("serve parses with only --model, from the #[arg] defaults");
        args.model.model = model;
        args
    }

    /// The arguments of `runtime-node` that parse back to these flags: `serve`, `--model <path>`,
    /// then each flag that differs from its default (booleans as bare flags). Flags at their
    /// default are left out, so an engine's `HEARTH_*` variables apply to them as they would to a
    /// hand-written command line. A path that is not UTF-8 is written lossily.
    pub fn to_args(&self) -> Vec<String> {
        let defaults = Self::new(self.model.model.clone());
        // Destructured without `..`: a new flag cannot be left out of the list unnoticed.
        let Self {
            model:
                ModelArgs {
                    model,
                    device,
                    threads,
                    pin_threads,
                    dequantize,
                    requantize,
                    kv_cache_dtype,
                    max_context_tokens,
                },
            host,
            port,
            served_name,
            max_batch_size,
            kv_cache_tokens,
            kv_cache_fraction,
            no_prefix_caching,
            tensor_parallel,
            expect_gpu_product,
            expect_gpu_memory_gib,
            dtype,
            model_cache,
            max_request_bytes,
            drain_timeout,
        } = self;
        let mut args = ArgList(vec![
            "serve".into(),
            "--model".into(),
            model.to_string_lossy().into_owned(),
        ]);
        args.value("--device", device, &defaults.model.device);
        args.value("--threads", threads, &defaults.model.threads);
        args.value("--pin-threads", pin_threads, &defaults.model.pin_threads);
        args.flag("--dequantize", *dequantize);
        args.optional("--requantize", requantize);
        args.optional("--kv-cache-dtype", kv_cache_dtype);
        args.value(
            "--max-context-tokens",
            max_context_tokens,
            &defaults.model.max_context_tokens,
        );
        args.value("--host", host, &defaults.host);
        args.value("--port", port, &defaults.port);
        args.optional("--served-name", served_name);
        args.value("--max-batch-size", max_batch_size, &defaults.max_batch_size);
        args.value("--kv-cache-tokens", kv_cache_tokens, &defaults.kv_cache_tokens);
        args.value(
            "--kv-cache-fraction",
            kv_cache_fraction,
            &defaults.kv_cache_fraction,
        );
        args.flag("--no-prefix-caching", *no_prefix_caching);
        args.value("--tensor-parallel", tensor_parallel, &defaults.tensor_parallel);
        args.optional("--expect-gpu-product", expect_gpu_product);
        args.optional("--expect-gpu-memory-gib", expect_gpu_memory_gib);
        args.value("--dtype", dtype, &defaults.dtype);
        args.optional(
            "--model-cache",
            &model_cache.as_ref().map(|path| path.to_string_lossy()),
        );
        args.value(
            "--max-request-bytes",
            max_request_bytes,
            &defaults.max_request_bytes,
        );
        args.value("--drain-timeout", drain_timeout, &defaults.drain_timeout);
        args.0
    }
}

/// Parses `serve` flags (the first item stands for the program) as runtime-node does, except that
/// no flag falls back to an environment variable: [`ServeArgs::new`] must not depend on the
/// caller's environment.
fn parse_without_env<I, T>(args: I) -> Result<ServeArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = ServeArgs::augment_args(clap::Command::new("serve")).mut_args(|arg| arg.env(None));
    ServeArgs::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// An argument list under construction by [`ServeArgs::to_args`].
struct ArgList(Vec<String>);

impl ArgList {
    /// `flag value` unless `value` is the default.
    fn value<T: PartialEq + fmt::Display>(&mut self, flag: &str, value: &T, default: &T) {
        if value != default {
            self.0.extend([flag.to_owned(), value.to_string()]);
        }
    }

    /// `flag value` when there is a value.
    fn optional<T: fmt::Display>(&mut self, flag: &str, value: &Option<T>) {
        if let Some(value) = value {
            self.0.extend([flag.to_owned(), value.to_string()]);
        }
    }

    /// The bare flag when it is on.
    fn flag(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(flag.to_owned());
        }
    }
}

/// Writes a `ValueEnum` value as its command-line name.
fn write_value_name<T: ValueEnum>(value: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let name = value
        .to_possible_value()
        .expect("every variant has a command-line name (none is skipped)");
    f.write_str(name.get_name())
}

impl fmt::Display for Requantize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

impl fmt::Display for PinThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

impl fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// A compute device named on the command line. Every build parses both; the engine refuses
/// `Cuda` at start when it was built without the CUDA backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The host CPU.
    Cpu,
    /// CUDA GPU with this ordinal (CUDA builds only).
    Cuda(usize),
}

/// Why a `--device` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSpecError {
    /// Not a device name at all.
    #[error("unknown device `{0}`; expected `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceSpecError::Unknown(other.to_string())),
        }
    }
}

/// The `--device` value that parses back to this device (`cpu`, `cuda:N`).
impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag away from its default; `--dequantize` is tried separately because it
    /// conflicts with `--requantize`.
    fn every_flag_set() -> ServeArgs {
        ServeArgs {
            model: ModelArgs {
                model: "/models/smol lm.gguf".into(),
                device: DeviceSpec::Cuda(3),
                threads: 6,
                pin_threads: PinThreads::Never,
                dequantize: false,
                requantize: Some(Requantize::Q8_0),
                kv_cache_dtype: Some(KvCacheDtype::Fp8),
                max_context_tokens: 2048,
            },
            host: "0.0.0.0".into(),
            port: 9000,
            served_name: Some("smol".into()),
            max_batch_size: 32,
            kv_cache_tokens: 65536,
            kv_cache_fraction: 0.35,
            no_prefix_caching: true,
            tensor_parallel: 2,
            expect_gpu_product: Some("nvidia-h100-80gb".into()),
            expect_gpu_memory_gib: Some(79.5),
            dtype: "bfloat16".into(),
            model_cache: Some("/var/cache/models".into()),
            max_request_bytes: 1 << 20,
            drain_timeout: 5,
        }
    }

    #[test]
    fn every_flag_round_trips_through_the_parser() {
        let all = every_flag_set();
        let defaults = ServeArgs::new(all.model.model.clone());
        assert_ne!(all.model, defaults.model);
        assert_eq!(parse_without_env(all.to_args()).expect("parses"), all);

        let mut dequantized = all;
        dequantized.model.dequantize = true;
        dequantized.model.requantize = None;
        let args = dequantized.to_args();
        assert!(args.contains(&"--dequantize".to_string()), "{args:?}");
        assert_eq!(parse_without_env(args).expect("parses"), dequantized);
    }

    #[test]
    fn defaults_render_as_the_model_alone() {
        let args = ServeArgs::new("/m.gguf".into());
        assert_eq!(args.to_args(), ["serve", "--model", "/m.gguf"]);
        assert_eq!(parse_without_env(args.to_args()).expect("parses"), args);
        assert_eq!(args.port, 8000);
        assert_eq!(args.model.device, DeviceSpec::Cpu);
        assert_eq!(args.model.pin_threads, PinThreads::Auto);
        assert_eq!(args.model.max_context_tokens, 4096);
        assert!(!args.no_prefix_caching);
    }

    #[test]
    fn devices_parse_with_their_ordinal() {
        assert_eq!("cpu".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cuda(3)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
    }
}
