//! The runtime Deployment: engine container, meter sidecar, GPU scheduling, volumes, probes.

use std::collections::BTreeMap;

use hearth_crds::InferenceModel;
use hearth_crds::constants::{
    CONTAINER_ENGINE, CONTAINER_METER, NODE_LABEL_GPU_PRODUCT, PORT_ENGINE, PORT_METER, RESOURCE_GPU,
};
use hearth_crds::inference_model::AutoscalingMode;
use hearth_crds::planner::lookup_gpu;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, SleepAction, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::engines::{engine_args, engine_image, launcher, model_location};
use super::meter_secret::{PROXY_TOKEN_KEY, USAGE_TOKEN_KEY, meter_secret_name};
use super::{child_meta, labels, selector_labels};
use crate::context::Settings;
use hearth_kube::error::Result;

/// UID/GID the runtime containers run as (the distroless `nonroot` user).
const RUNTIME_UID: i64 = 65532;
/// Where the meter keeps its ledger.
const LEDGER_MOUNT: &str = "/var/lib/hearth/ledger";

/// Builds the Deployment of runtime-node pods for `model`.
///
/// Replicas: left unset under `hpa`/`keda` (the autoscaler owns them); under `gateway` the
/// current count clamped to `[min, max]` (starting at `min`, possibly 0); under `none` `min`.
pub fn build_runtime_deployment(
    model: &InferenceModel,
    settings: &Settings,
    current_replicas: Option<i32>,
) -> Result<Deployment> {
    let spec = &model.spec;
    let min = i32::try_from(spec.replicas.min).unwrap_or(i32::MAX);
    let max = i32::try_from(spec.replicas.max).unwrap_or(i32::MAX);
    let replicas = match spec.autoscaling.mode {
        AutoscalingMode::Hpa | AutoscalingMode::Keda => None,
        AutoscalingMode::Gateway => Some(current_replicas.unwrap_or(min).clamp(min, max.max(min))),
        AutoscalingMode::None => Some(min),
    };
    let uses_gpu = spec.gpu.is_some();
    let mut pod_labels = labels(model)?;
    pod_labels.remove("app.kubernetes.io/managed-by");
    Ok(Deployment {
        metadata: child_meta(model)?,
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(model)?),
                ..LabelSelector::default()
            },
            // A GPU node rarely has room for a surge pod: replace one replica at a time instead.
            strategy: uses_gpu.then(|| DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        "kubectl.kubernetes.io/default-container".to_string(),
                        CONTAINER_ENGINE.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(build_pod_spec(model, settings)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn build_pod_spec(model: &InferenceModel, settings: &Settings) -> PodSpec {
    let spec = &model.spec;
    let location = model_location(model);
    let mut volumes = vec![location.volume.clone(), empty_dir("tmp", None, None)];
    let mut mounts = vec![location.mount.clone(), mount("tmp", "/tmp")];
    if spec.gpu.is_some() {
        // NCCL moves tensors through /dev/shm; the default 64 MiB is far too small.
        volumes.push(empty_dir("dshm", Some("Memory"), Some("8Gi")));
        mounts.push(mount("dshm", "/dev/shm"));
    }
    let mut init_containers = Vec::new();
    if spec.metering.enabled {
        volumes.push(empty_dir("ledger", None, Some("1Gi")));
        init_containers.push(build_meter_sidecar(model, settings));
    }
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNTIME_UID),
            run_as_group: Some(RUNTIME_UID),
            fs_group: Some(RUNTIME_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers: vec![build_engine_container(model, settings, &location, mounts)],
        volumes: Some(volumes),
        affinity: build_affinity(model),
        tolerations: build_tolerations(model),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        priority_class_name: spec.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

/// How long a runtime pod may take to stop: the engine's 10 s preStop sleep and its drain of
/// in-flight responses, then the meter keeping its ledger served until billing has pulled it
/// (at most 60 s, the meter's `--drain-seconds`).
const TERMINATION_GRACE_SECONDS: i64 = 180;

fn build_engine_container(
    model: &InferenceModel,
    settings: &Settings,
    location: &super::ModelLocation,
    mounts: Vec<VolumeMount>,
) -> Container {
    let probes = launcher(model.spec.engine.kind).probe_paths();
    // Behind a meter the engine listens on the pod's loopback: the kubelet probes it through
    // the meter, which passes these GETs on without a token.
    let (probe_port, ports) = if model.spec.metering.enabled {
        (PORT_METER, None)
    } else {
        let port = ContainerPort {
            name: Some("engine".into()),
            container_port: PORT_ENGINE,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        };
        (PORT_ENGINE, Some(vec![port]))
    };
    Container {
        name: CONTAINER_ENGINE.into(),
        image: Some(engine_image(model, settings)),
        args: Some(engine_args(model, location)),
        env: Some(vec![
            env("HOME", "/tmp"),
            env("HF_HOME", "/models/.hf"),
            pod_name_env(),
        ]),
        ports,
        resources: Some(build_engine_resources(model)),
        // Loading weights can take many minutes: the startup probe allows up to 30 of them.
        startup_probe: Some(http_probe(probes.health, probe_port, 10, 180)),
        liveness_probe: Some(http_probe(probes.health, probe_port, 10, 3)),
        readiness_probe: Some(http_probe(probes.ready, probe_port, 5, 2)),
        lifecycle: Some(Lifecycle {
            // Keep serving while endpoints controllers drop the pod; the engine then drains on SIGTERM.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 10 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The meter runs as a native sidecar (an init container that keeps running), so it starts
/// before the engine and stops after it: no response can finish unmetered. It also records
/// the GPU time the pod holds, billed to the served model.
fn build_meter_sidecar(model: &InferenceModel, settings: &Settings) -> Container {
    let gpus = match &model.spec.gpu {
        Some(_) => model.spec.parallelism.gpu_count(),
        None => 0,
    };
    let mut env_vars = vec![
        env("HEARTH_GPUS", &gpus.to_string()),
        env("HEARTH_SERVED_NAME", &model.spec.served_name),
        pod_name_env(),
    ];
    let mut args = vec![
        "meter".into(),
        "--listen".into(),
        format!("0.0.0.0:{PORT_METER}"),
        "--upstream".into(),
        format!("http://127.0.0.1:{PORT_ENGINE}"),
        "--ledger-dir".into(),
        LEDGER_MOUNT.into(),
    ];
    match (&settings.meter_keys, meter_secret_name(model)) {
        (Some(_), Some(secret)) => {
            env_vars.push(secret_env("HEARTH_METER_PROXY_TOKEN", &secret, PROXY_TOKEN_KEY));
            env_vars.push(secret_env("HEARTH_METER_USAGE_TOKEN", &secret, USAGE_TOKEN_KEY));
        }
        _ => args.push("--unauthenticated".into()),
    }
    Container {
        env: Some(env_vars),
        name: CONTAINER_METER.into(),
        image: Some(settings.runtime_image.clone()),
        restart_policy: Some("Always".into()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("meter".into()),
            container_port: PORT_METER,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(http_probe("/meter/health", PORT_METER, 5, 2)),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(vec![mount("ledger", LEDGER_MOUNT)]),
        ..Container::default()
    }
}

/// The user's resources plus `nvidia.com/gpu: tensor × pipeline` (or the MIG resource).
fn build_engine_resources(model: &InferenceModel) -> ResourceRequirements {
    let spec = &model.spec;
    let mut resources = spec.resources.clone().unwrap_or_default();
    if let Some(gpu) = &spec.gpu {
        let resource = match &gpu.mig_profile {
            Some(profile) => format!("nvidia.com/mig-{profile}"),
            None => RESOURCE_GPU.to_string(),
        };
        let count = Quantity(spec.parallelism.gpu_count().to_string());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.clone(), count.clone());
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(resource, count);
    }
    resources
}

/// Requires nodes whose GPU product label matches `gpu.type`, merged into the user's affinity.
fn build_affinity(model: &InferenceModel) -> Option<Affinity> {
    let spec = &model.spec;
    let Some(gpu_type) = spec.gpu.as_ref().and_then(|gpu| lookup_gpu(&gpu.type_)) else {
        return spec.affinity.clone();
    };
    // Every product label the type is sold under (e.g. SXM and PCIe boards of one GPU).
    let requirement = NodeSelectorRequirement {
        key: NODE_LABEL_GPU_PRODUCT.into(),
        operator: "In".into(),
        values: Some(gpu_type.products().map(String::from).collect()),
    };
    let mut affinity = spec.affinity.clone().unwrap_or_default();
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    // Terms are ORed: the GPU requirement must hold in every one of them.
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .push(requirement.clone());
    }
    Some(affinity)
}

/// The user's tolerations plus the standard `nvidia.com/gpu` taint when GPUs are requested.
fn build_tolerations(model: &InferenceModel) -> Option<Vec<Toleration>> {
    let spec = &model.spec;
    let mut tolerations = spec.tolerations.clone();
    if spec.gpu.is_some() && !tolerations.iter().any(|t| t.key.as_deref() == Some(RESOURCE_GPU)) {
        tolerations.push(Toleration {
            key: Some(RESOURCE_GPU.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    (!tolerations.is_empty()).then_some(tolerations)
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn http_probe(path: &str, port: i32, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size_limit: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: size_limit.map(|s| Quantity(s.into())),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

/// `POD_NAME` from the downward API.
fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An environment variable from `key` of Secret `secret` (the value never enters the pod spec).
fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    fn pod_spec(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn representative_model_gets_gpus_affinity_shm_sidecar_probes_and_security() {
        let deployment =
            build_runtime_deployment(&representative(), &Settings::default(), None).expect("builds");
        let spec = deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, None, "HPA owns the replica count");
        let pod = pod_spec(&deployment);
        let engine = &pod.containers[0];
        assert_eq!(engine.name, "engine");
        let limits = engine
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits.get("nvidia.com/gpu"), Some(&Quantity("2".into())));

        let terms = &pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .expect("required node affinity")
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        let expression = &terms[0].match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(expression.key, "nvidia.com/gpu.product");
        assert_eq!(expression.operator, "In");
        assert_eq!(
            expression.values,
            Some(vec![
                "NVIDIA-A100-SXM4-80GB".to_string(),
                "NVIDIA-A100-80GB-PCIe".to_string()
            ])
        );

        let tolerations = pod.tolerations.as_ref().expect("tolerations");
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tolerations[0].effect.as_deref(), Some("NoSchedule"));

        let volumes = pod.volumes.as_ref().expect("volumes");
        let shm = volumes.iter().find(|v| v.name == "dshm").expect("shm volume");
        let shm = shm.empty_dir.as_ref().expect("emptyDir");
        assert_eq!(shm.medium.as_deref(), Some("Memory"));
        let mounts = engine.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "dshm" && m.mount_path == "/dev/shm")
        );

        let sidecars = pod.init_containers.as_ref().expect("meter sidecar");
        assert_eq!(sidecars.len(), 1);
        assert_eq!(sidecars[0].name, "meter");
        assert_eq!(sidecars[0].restart_policy.as_deref(), Some("Always"));
        let meter_env: BTreeMap<_, _> = sidecars[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(
            meter_env["HEARTH_GPUS"].value.as_deref(),
            Some("2"),
            "GPU time of tensor × pipeline GPUs"
        );
        assert_eq!(
            meter_env["HEARTH_SERVED_NAME"].value.as_deref(),
            Some("llama-3.1-8b")
        );
        let pod_name = meter_env["POD_NAME"]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref());
        assert_eq!(pod_name.map(|f| f.field_path.as_str()), Some("metadata.name"));
        assert_eq!(
            sidecars[0].args.as_ref().expect("args")[..5],
            [
                "meter",
                "--listen",
                "0.0.0.0:8001",
                "--upstream",
                "http://127.0.0.1:8000"
            ]
        );

        let startup = engine
            .startup_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("startup probe");
        assert_eq!(startup.path.as_deref(), Some("/health"));
        let readiness = engine
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(readiness.path.as_deref(), Some("/ready"));
        // The engine listens on the pod's loopback: probes go through the meter's port, and
        // the engine declares no port of its own.
        assert_eq!(
            (startup.port.clone(), readiness.port.clone()),
            (IntOrString::Int(8001), IntOrString::Int(8001))
        );
        assert!(engine.ports.is_none());
        assert!(engine.liveness_probe.is_some());
        assert_eq!(
            engine
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|p| p.sleep.as_ref())
                .map(|s| s.seconds),
            Some(10)
        );

        let security = engine
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        let pod_security = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.run_as_user, Some(65532));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn meters_take_their_tokens_from_the_models_secret_or_run_open_only_when_told() {
        use hearth_tenancy::meter_tokens::MeterKeys;
        let meter = |settings: &Settings| {
            let deployment = build_runtime_deployment(&representative(), settings, None).expect("builds");
            pod_spec(&deployment).init_containers.as_ref().expect("sidecars")[0].clone()
        };
        let keyed = Settings {
            meter_keys: Some(MeterKeys::generate().expect("keys")),
            ..Settings::default()
        };
        let with_keys = meter(&keyed);
        let env = with_keys.env.expect("env");
        for (name, key) in [
            ("HEARTH_METER_PROXY_TOKEN", PROXY_TOKEN_KEY),
            ("HEARTH_METER_USAGE_TOKEN", USAGE_TOKEN_KEY),
        ] {
            let var = env.iter().find(|v| v.name == name).expect("token variable");
            assert!(var.value.is_none(), "a token never sits in the pod spec");
            let from = var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .expect("secret ref");
            assert_eq!((from.name.as_str(), from.key.as_str()), ("llama-meter", key));
        }
        assert!(
            !with_keys
                .args
                .expect("args")
                .contains(&"--unauthenticated".to_string())
        );
        let open = meter(&Settings::default());
        assert!(
            open.args
                .expect("args")
                .contains(&"--unauthenticated".to_string())
        );
    }

    #[test]
    fn gpu_models_get_the_cuda_engine_image_and_cpu_models_the_cpu_one() {
        let settings = Settings {
            runtime_image: "registry/runtime-node:cpu".into(),
            runtime_cuda_image: "registry/runtime-node:cuda".into(),
            ..Settings::default()
        };
        let images = |model: &InferenceModel| {
            let deployment = build_runtime_deployment(model, &settings, None).expect("builds");
            let pod = pod_spec(&deployment);
            let meter = pod
                .init_containers
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| c.image.clone());
            (pod.containers[0].image.clone().expect("engine image"), meter)
        };
        // The representative model asks for GPUs and is metered.
        let (engine, meter) = images(&representative());
        assert_eq!(engine, "registry/runtime-node:cuda");
        assert_eq!(
            meter.as_deref(),
            Some("registry/runtime-node:cpu"),
            "the meter needs no GPU"
        );
        let cpu = parse(
            "metadata: {name: s, namespace: n, uid: u}\nspec: {servedName: s, source: {uri: 'file:///models/s.gguf'}}\n",
        );
        assert_eq!(images(&cpu).0, "registry/runtime-node:cpu");
        let overridden = parse(
            "metadata: {name: s, namespace: n, uid: u}\nspec: {servedName: s, source: {uri: 'hf://a/b'}, gpu: {type: nvidia-l4}, engine: {image: 'mine:1'}}\n",
        );
        assert_eq!(images(&overridden).0, "mine:1", "engine.image wins");
        assert_eq!(
            Settings::default().runtime_cuda_image,
            hearth_crds::constants::DEFAULT_RUNTIME_CUDA_IMAGE
        );
    }

    #[test]
    fn gateway_mode_with_min_zero_starts_at_zero_and_keeps_the_scaled_count() {
        let model = parse(
            "metadata: {name: q, namespace: n, uid: u}\nspec: {servedName: q, source: {uri: 'hf://Qwen/Qwen2.5-7B-Instruct'}, gpu: {type: nvidia-l4-24gb}, replicas: {min: 0, max: 2}, autoscaling: {mode: gateway}}\n",
        );
        let replicas = |current| {
            build_runtime_deployment(&model, &Settings::default(), current)
                .expect("builds")
                .spec
                .and_then(|s| s.replicas)
        };
        assert_eq!(replicas(None), Some(0));
        assert_eq!(replicas(Some(2)), Some(2), "the gateway's scale-up is kept");
        assert_eq!(replicas(Some(7)), Some(2), "clamped to replicas.max");
    }

    #[test]
    fn cpu_model_without_metering_has_no_gpu_bits() {
        let model = parse(
            "metadata: {name: s, namespace: n, uid: u}\nspec: {servedName: s, source: {uri: 'file:///models/s.gguf'}, metering: {enabled: false}}\n",
        );
        let deployment = build_runtime_deployment(&model, &Settings::default(), None).expect("builds");
        assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(1));
        let pod = pod_spec(&deployment);
        assert!(pod.init_containers.is_none());
        assert!(pod.tolerations.is_none());
        assert!(pod.affinity.is_none());
        assert!(
            !pod.volumes
                .as_ref()
                .expect("volumes")
                .iter()
                .any(|v| v.name == "dshm")
        );
        // The CPU is the engine's default device, so no `--device` flag is rendered.
        let args = pod.containers[0].args.as_ref().expect("args");
        assert!(
            !args.iter().any(|a| a == "--device" || a.starts_with("cuda")),
            "{args:?}"
        );
    }

    #[test]
    fn user_affinity_terms_each_get_the_gpu_requirement() {
        let model = parse(
            r#"
metadata: {name: a, namespace: n, uid: u}
spec:
  servedName: a
  source: {uri: "hf://a/b"}
  gpu: {type: nvidia-h100-80gb}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: zone, operator: In, values: [a]}]
          - matchExpressions: [{key: zone, operator: In, values: [b]}]
"#,
        );
        let deployment = build_runtime_deployment(&model, &Settings::default(), None).expect("builds");
        let terms = pod_spec(&deployment)
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .expect("affinity")
            .node_selector_terms
            .clone();
        assert_eq!(terms.len(), 2);
        for term in terms {
            let expressions = term.match_expressions.expect("expressions");
            assert_eq!(expressions.len(), 2);
            assert_eq!(expressions[1].key, "nvidia.com/gpu.product");
        }
    }
}
