//! Names shared by the operator, the gateway and the engine: labels, annotations, headers,
//! container and port names. One place, so a rename cannot drift between components.

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "hearth-operator";

/// `app.kubernetes.io/name` value on every child object.
pub const APP_NAME: &str = "hearth-runtime";
/// `app.kubernetes.io/managed-by` value on every child object.
pub const MANAGED_BY: &str = "hearth-operator";

/// Label naming the InferenceModel a child belongs to.
pub const LABEL_MODEL: &str = "hearth.dev/model";
/// Label carrying the InferenceModel's `servedName`, used by the gateway to find replicas.
pub const LABEL_SERVED_NAME: &str = "hearth.dev/served-name";
/// Label naming the Tenant an API-key Secret belongs to.
pub const LABEL_TENANT: &str = "hearth.dev/tenant";
/// Label naming the `apiKeys[]` entry an API-key Secret holds.
pub const LABEL_API_KEY: &str = "hearth.dev/api-key";
/// Label on pods that run the meter sidecar, so the billing aggregator can find them.
pub const LABEL_METERED: &str = "hearth.dev/metered";
/// Label of the pods allowed through a model's NetworkPolicy (the gateway and the operator,
/// whose billing pulls the meters), in the namespace the operator is told.
pub const LABEL_MODEL_ACCESS: &str = "hearth.dev/model-access";

/// Annotation on every child the operator applies: a hash of the object it last applied. The
/// server echoes annotations back unchanged, so an equal hash means "nothing of ours changed"
/// even where the server drops or normalises a field we set.
pub const ANNOTATION_APPLIED_HASH: &str = "hearth.dev/applied-hash";

/// Node label set by NVIDIA GPU feature discovery with the GPU product name.
pub const NODE_LABEL_GPU_PRODUCT: &str = "nvidia.com/gpu.product";
/// Extended resource name of NVIDIA GPUs.
pub const RESOURCE_GPU: &str = "nvidia.com/gpu";

/// Key inside an API-key Secret that holds the key itself.
pub const SECRET_KEY_FIELD: &str = "api-key";

/// Most choices (`n`) one request may ask for: the gateway refuses more, and billing bounds a
/// record's completion tokens by the model's context times this.
pub const MAX_CHOICES: u64 = 128;
/// Header the gateway sets with the authenticated tenant (`namespace/name`).
pub const HEADER_TENANT: &str = "x-hearth-tenant";
/// Header the gateway sets with the tenant's tier name.
pub const HEADER_TIER: &str = "x-hearth-tier";
/// Header the gateway sets with the request's scheduling priority (the tier's `priority`).
pub const HEADER_PRIORITY: &str = "x-hearth-priority";
/// Header carrying the request id end to end.
pub const HEADER_REQUEST_ID: &str = "x-hearth-request-id";
/// The gateway's credential toward a model's meter (its proxy token).
pub const HEADER_GATEWAY_TOKEN: &str = "x-hearth-gateway-token";

/// Name of the engine container in a runtime pod.
pub const CONTAINER_ENGINE: &str = "engine";
/// Name of the meter sidecar container in a runtime pod.
pub const CONTAINER_METER: &str = "meter";
/// Port the engine listens on inside the pod.
pub const PORT_ENGINE: i32 = 8000;
/// Port the meter sidecar listens on (the Service targets it when metering is on).
pub const PORT_METER: i32 = 8001;
/// Name of the Service port that serves the OpenAI API.
pub const PORT_NAME_HTTP: &str = "http";
/// Default runtime-node image, overridable per model with `engine.image`.
pub const DEFAULT_RUNTIME_IMAGE: &str = "ghcr.io/hearth-dev/runtime-node:0.1.0";
/// Default runtime-node image built with CUDA, for the engine of models that ask for a GPU
/// (the CPU image refuses `--device cuda`); overridable per model with `engine.image`.
pub const DEFAULT_RUNTIME_CUDA_IMAGE: &str = "ghcr.io/hearth-dev/runtime-node:0.1.0-cuda";
/// Default vLLM image used when `engine.kind: vllm`.
pub const DEFAULT_VLLM_IMAGE: &str = "vllm/vllm-openai:v0.11.0";
/// Default llama.cpp server image used when `engine.kind: llama-cpp`.
pub const DEFAULT_LLAMA_CPP_IMAGE: &str = "ghcr.io/ggml-org/llama.cpp:server";
