//! Where the engine finds the weights of a source URI, and the volume that holds them.

use hearth_crds::InferenceModel;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

/// Mount point of model volumes in the engine container.
pub const MODEL_MOUNT: &str = "/models";

/// How the engine reaches the weights of a source URI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLocation {
    /// What the engine's model argument should be.
    pub model_arg: String,
    /// Volume holding the weights (a PVC) or the download cache (an emptyDir).
    pub volume: Volume,
    /// Where that volume is mounted.
    pub mount: VolumeMount,
    /// True when the engine downloads the weights into the cache volume at start.
    pub downloads: bool,
}

/// Resolves `source.uri` to an engine argument and a volume.
/// `pvc://claim/path` mounts the claim read-only; `file://` paths are used as they are (an
/// image or node path); `hf://`, `s3://` and `http(s)://` are downloaded by the engine into
/// an emptyDir cache.
pub fn model_location(model: &InferenceModel) -> ModelLocation {
    let uri = model.spec.source.uri.as_str();
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
        return ModelLocation {
            model_arg: format!("{MODEL_MOUNT}/{path}").trim_end_matches('/').to_string(),
            volume: Volume {
                name: "model".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            },
            mount: VolumeMount {
                name: "model".into(),
                mount_path: MODEL_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            downloads: false,
        };
    }
    let cache = Volume {
        name: "model-cache".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "model-cache".into(),
        mount_path: MODEL_MOUNT.into(),
        ..VolumeMount::default()
    };
    match uri.strip_prefix("file://") {
        Some(path) => ModelLocation {
            model_arg: path.into(),
            volume: cache,
            mount,
            downloads: false,
        },
        None => ModelLocation {
            model_arg: uri.into(),
            volume: cache,
            mount,
            downloads: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::{parse, representative};

    #[test]
    fn hf_source_downloads_into_the_cache() {
        let location = model_location(&representative());
        assert!(location.downloads);
        assert_eq!(location.model_arg, "hf://meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(location.mount.mount_path, MODEL_MOUNT);
    }

    #[test]
    fn pvc_source_mounts_read_only() {
        let model = parse(
            "metadata: {name: m, namespace: n}\nspec: {servedName: m, source: {uri: 'pvc://weights/qwen/7b'}, engine: {kind: vllm}}\n",
        );
        let location = model_location(&model);
        assert_eq!(location.model_arg, "/models/qwen/7b");
        assert_eq!(
            location
                .volume
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("weights")
        );
        assert_eq!(location.mount.read_only, Some(true));
        assert!(!location.downloads);
    }
}
