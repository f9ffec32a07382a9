//! `InferenceModel`: one served model — where its weights live, the engine that runs it, the
//! GPUs it needs, how it scales and who may call it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A model served behind an OpenAI-compatible endpoint.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hearth.dev",
    version = "v1alpha1",
    kind = "InferenceModel",
    plural = "inferencemodels",
    shortname = "im",
    namespaced,
    status = "InferenceModelStatus",
    printcolumn = r#"{"name":"Served","type":"string","jsonPath":".spec.servedName"}"#,
    printcolumn = r#"{"name":"GPU","type":"string","jsonPath":".spec.gpu.type"}"#,
    printcolumn = r#"{"name":"TP","type":"integer","jsonPath":".spec.parallelism.tensor"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Fits","type":"string","jsonPath":".status.conditions[?(@.type==\"Fits\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.source.uri == oldSelf.source.uri || self.source.allowUriChange").message("source.uri is immutable; set source.allowUriChange: true to replace the model in place"))]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelSpec {
    /// The OpenAI model id clients send. Several InferenceModels in one namespace may share one
    /// (canary/A-B); the name belongs to the namespace of its oldest InferenceModel, and one in
    /// another namespace asking for it gets `Ready=False`, reason `ServedNameConflict`.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub served_name: String,
    /// Traffic weight against other InferenceModels with the same `servedName`.
    #[serde(default = "default_traffic_weight")]
    #[schemars(range(max = 1000))]
    pub weight: u32,
    /// Where the weights come from.
    pub source: ModelSource,
    /// The engine and its serving limits.
    #[serde(default)]
    pub engine: EngineSpec,
    /// Tensor and pipeline parallelism; the pod asks for `tensor × pipeline` GPUs.
    #[serde(default)]
    pub parallelism: Parallelism,
    /// GPU type per replica; absent means CPU serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSpec>,
    /// CPU/memory requests and limits for the engine container (GPU limits are added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Replica bounds; `min: 0` allows scale to zero.
    #[serde(default)]
    pub replicas: Replicas,
    /// Who scales the replicas.
    #[serde(default)]
    pub autoscaling: Autoscaling,
    /// Tier names this InferenceModel serves; empty means every tier. Each variant of a
    /// shared `servedName` serves only its own tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// Billing sidecar settings.
    #[serde(default)]
    pub metering: Metering,
    /// Passed through to the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Passed through to the pod (the GPU toleration is always added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Passed through to the pod; merged with the GPU-product node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Passed through to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

fn default_traffic_weight() -> u32 {
    100
}

/// Location and format of the weights.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// `hf://org/name`, `pvc://claim/path`, `s3://bucket/key`, `http(s)://…` or `file://…`.
    #[schemars(length(min = 1, max = 2048), pattern(r"^(hf|pvc|s3|https?|file)://.+$"))]
    pub uri: String,
    /// Revision (branch, tag or commit) for `hf://` sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Weight format; inferred from the URI when absent (`.gguf` → gguf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// Allows changing `uri` on an existing object (otherwise immutable).
    #[serde(default)]
    pub allow_uri_change: bool,
}

/// Weight file formats the engines load.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Safetensors,
    /// A single GGUF file.
    Gguf,
}

/// Which engine runs the model.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Hearth's own engine.
    #[default]
    RuntimeNode,
    /// vLLM's OpenAI server.
    Vllm,
    /// llama.cpp's server.
    LlamaCpp,
}

/// Engine settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// `runtime-node`, `vllm` or `llama-cpp`.
    #[serde(default)]
    pub kind: EngineKind,
    /// Container image; defaults per engine kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Sequences decoded together.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_batch_size: u32,
    /// Longest prompt plus completion, in tokens.
    #[serde(default = "default_max_context_tokens")]
    #[schemars(range(min = 16, max = 1048576))]
    pub max_context_tokens: u32,
    /// Fraction of free device memory given to the KV cache.
    #[serde(default = "default_kv_cache_fraction")]
    #[schemars(range(min = 0.05, max = 0.98))]
    pub kv_cache_fraction: f64,
    /// Share KV blocks between requests with identical prompt prefixes.
    #[serde(default = "default_true")]
    pub prefix_caching: bool,
    /// Compute dtype: `auto`, `float16`, `bfloat16` or `float32`.
    #[serde(default = "default_dtype")]
    #[schemars(pattern(r"^(auto|float16|bfloat16|float32)$"))]
    pub dtype: String,
    /// Weight quantization, e.g. `fp8`, `awq`, `q4_k_m`; absent means the source's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Extra engine arguments appended verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            kind: EngineKind::default(),
            image: None,
            max_batch_size: default_max_batch_size(),
            max_context_tokens: default_max_context_tokens(),
            kv_cache_fraction: default_kv_cache_fraction(),
            prefix_caching: true,
            dtype: default_dtype(),
            quantization: None,
            args: Vec::new(),
        }
    }
}

fn default_max_batch_size() -> u32 {
    16
}
fn default_max_context_tokens() -> u32 {
    4096
}
fn default_kv_cache_fraction() -> f64 {
    0.9
}
fn default_true() -> bool {
    true
}
fn default_dtype() -> String {
    "auto".to_string()
}

/// Model parallelism within one replica.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Parallelism {
    /// Tensor-parallel degree: 1, 2, 4 or 8.
    #[serde(default = "default_one")]
    #[x_kube(validation = Rule::new("self in [1, 2, 4, 8]").message("parallelism.tensor must be a power of two no larger than 8"))]
    pub tensor: u32,
    /// Pipeline-parallel stages.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 16))]
    pub pipeline: u32,
}

impl Default for Parallelism {
    fn default() -> Self {
        Self {
            tensor: 1,
            pipeline: 1,
        }
    }
}

impl Parallelism {
    /// GPUs one replica needs.
    pub fn gpu_count(&self) -> u32 {
        self.tensor.saturating_mul(self.pipeline)
    }
}

fn default_one() -> u32 {
    1
}

/// GPU type of each replica.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// A GPU type from the catalog, e.g. `nvidia-h100-80gb`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63))]
    pub type_: String,
    /// Memory per GPU; defaults to the catalog's figure for `type`.
    #[serde(default, rename = "memoryGiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub memory_gib: Option<u32>,
    /// MIG profile, e.g. `1g.10gb`; the pod then asks for `nvidia.com/mig-<profile>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+g\.[0-9]+gb$"))]
    pub mig_profile: Option<String>,
}

/// Replica bounds.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
pub struct Replicas {
    /// Lower bound; 0 allows scale to zero.
    #[serde(default = "default_one")]
    #[schemars(range(max = 1000))]
    pub min: u32,
    /// Upper bound.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: u32,
}

impl Default for Replicas {
    fn default() -> Self {
        Self { min: 1, max: 1 }
    }
}

/// Who owns the replica count.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMode {
    /// The gateway scales from its own queue and in-flight counts (and from zero).
    Gateway,
    /// A HorizontalPodAutoscaler on a custom metric.
    Hpa,
    /// A KEDA ScaledObject.
    Keda,
    /// Fixed at `replicas.min`.
    #[default]
    None,
}

/// The signal an autoscaler follows.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AutoscalingMetric {
    /// Requests being served per replica.
    #[default]
    InflightRequests,
    /// Requests waiting per replica.
    QueueDepth,
    /// KV-cache utilisation per replica, as a fraction of the pool (0 to 1).
    KvCacheUtilization,
}

impl AutoscalingMetric {
    /// The Prometheus metric the engine exports for this signal.
    pub fn prometheus_name(self) -> &'static str {
        match self {
            Self::InflightRequests => "hearth_engine_running_sequences",
            Self::QueueDepth => "hearth_engine_waiting_requests",
            Self::KvCacheUtilization => "hearth_engine_kv_cache_utilization",
        }
    }
}

/// Autoscaling settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// `gateway`, `hpa`, `keda` or `none`.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// The signal to follow.
    #[serde(default)]
    pub metric: AutoscalingMetric,
    /// Target value of the metric per replica.
    #[serde(default = "default_autoscaling_target")]
    #[schemars(range(min = 1, max = 100000))]
    pub target: u32,
    /// Idle time before scaling to zero (when `replicas.min` is 0), e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{1,6}(s|m|h)$"))]
    pub scale_to_zero_after: Option<String>,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::default(),
            metric: AutoscalingMetric::default(),
            target: default_autoscaling_target(),
            scale_to_zero_after: None,
        }
    }
}

fn default_autoscaling_target() -> u32 {
    8
}

/// Billing sidecar settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metering {
    /// Run the meter sidecar in front of the engine.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for Metering {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Observed state of an InferenceModel.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceModelStatus {
    /// `Ready`, `Progressing`, `Degraded`, `Fits`, `InvalidObject`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the runtime Deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing readiness.
    #[serde(default)]
    pub ready_replicas: i32,
    /// In-cluster URL of the model's OpenAI endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The VRAM plan behind the `Fits` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_plan: Option<MemoryPlanStatus>,
}

/// The memory plan in GiB (one decimal), per GPU unless stated.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPlanStatus {
    /// Architecture the plan used (catalog name or "config.json").
    pub architecture: String,
    /// Weights of the whole model.
    pub weights_gi_b: String,
    /// KV cache for `maxContextTokens × maxBatchSize`, whole model.
    pub kv_cache_gi_b: String,
    /// Activation and runtime headroom per GPU.
    pub activation_gi_b: String,
    /// Planned total per GPU.
    pub per_gpu_gi_b: String,
    /// Memory of one GPU.
    pub gpu_gi_b: String,
    /// GPU memory minus the plan; negative when it does not fit.
    pub headroom_gi_b: String,
}
