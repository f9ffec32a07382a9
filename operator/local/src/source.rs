//! Local-mode config source: a folder of Tier/Tenant/InferenceModel YAML (read with local
//! mode's loader and its validation), key files as local mode writes them
//! (`<keys-dir>/<namespace>.<tenant>.<key name>`), and static backends per served name. The
//! folders are polled for changes and a new [`Config`] is swapped in, so editing a Tier's
//! limits takes effect without a restart; a broken edit keeps the last good Config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hearth_crds::{InferenceModel, Tenant, Tier};
use hearth_gateway::{Config, GatewayState};

use crate::config::{ConfigError, LocalConfig, load};
use crate::keys::LocalKey;
use crate::statuses::LocalStatuses;
use crate::supervise::DownModels;

/// A failure to build a Config from local files.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The YAML folder is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file exists but cannot be read.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// Bounded category for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Key { .. } => "key_file",
        }
    }
}

/// Reads the key files of every `apiKeys[]` entry of every tenant; missing files are skipped
/// (the key is then unknown to the gateway), unreadable ones are an error.
pub fn read_key_files(keys_dir: &Path, local: &LocalConfig) -> Result<Vec<LocalKey>, SourceError> {
    let mut keys = Vec::new();
    for (_, tenant) in &local.tenants {
        for entry in &tenant.spec.api_keys {
            let path = crate::keys::key_file_path(keys_dir, tenant, &entry.name);
            let key = match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(SourceError::Key { path, source }),
            };
            if key.is_empty() {
                continue;
            }
            keys.push(LocalKey::new(tenant, &entry.name, key, path));
        }
    }
    Ok(keys)
}

/// Where a local gateway's Config comes from.
#[derive(Debug, Clone)]
pub struct LocalSource {
    /// Folder of CR YAML.
    pub config_dir: PathBuf,
    /// Folder of key files, if any.
    pub keys_dir: Option<PathBuf>,
    /// Replicas by served name.
    pub backends: BTreeMap<String, Vec<String>>,
    /// Usage and budget conditions from local billing, laid over the tenants when present.
    pub statuses: Option<Arc<LocalStatuses>>,
    /// Models with a process down (local mode's supervisor): their backends are left out.
    pub down: Option<Arc<DownModels>>,
}

type Stamp = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn stamp_dir(dir: &Path, out: &mut Stamp) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.push((dir.to_path_buf(), None, 0));
        return;
    };
    let mut files: Stamp = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let meta = entry.metadata().ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            (entry.path(), modified, meta.map_or(0, |m| m.len()))
        })
        .collect();
    files.sort();
    out.extend(files);
}

impl LocalSource {
    /// Reads the folders into a Config.
    pub fn load(&self) -> Result<Config, SourceError> {
        let mut local = load(&self.config_dir)?;
        if let Some(statuses) = &self.statuses {
            statuses.apply(&mut local);
        }
        let keys = match &self.keys_dir {
            Some(dir) => read_key_files(dir, &local)?,
            None => Vec::new(),
        };
        let up = |name: &String| self.down.as_ref().is_none_or(|down| !down.contains(name));
        let backends: BTreeMap<String, Vec<String>> = self
            .backends
            .iter()
            .filter(|(name, _)| up(name))
            .map(|(name, urls)| (name.clone(), urls.clone()))
            .collect();
        Ok(gateway_config(&local, &keys, &backends))
    }

    /// Names, modification times and sizes of every file the Config is built from.
    fn stamp(&self) -> Stamp {
        let mut stamp = Vec::new();
        stamp_dir(&self.config_dir, &mut stamp);
        if let Some(dir) = &self.keys_dir {
            stamp_dir(dir, &mut stamp);
        }
        if let Some(statuses) = &self.statuses {
            stamp.push((PathBuf::from("<billing statuses>"), None, statuses.version()));
        }
        if let Some(down) = &self.down {
            stamp.push((PathBuf::from("<processes down>"), None, down.version()));
        }
        stamp
    }

    /// Polls the folders (and billing's statuses) every `interval` and swaps a new Config into
    /// `state` when something changed. Runs until the task is dropped.
    pub async fn watch(self, state: GatewayState, interval: Duration) {
        let mut last = self.stamp();
        loop {
            tokio::time::sleep(interval).await;
            let now = self.stamp();
            if now == last {
                continue;
            }
            last = now;
            match self.load() {
                Ok(config) => {
                    tracing::info!(
                        tenants = config.tenants.len(),
                        models = config.models.len(),
                        "configuration changed; new snapshot in force"
                    );
                    state.update(config);
                }
                Err(error) => {
                    tracing::error!(%error, category = error.category(), "configuration change refused; keeping the last good one")
                }
            }
        }
    }
}

/// Builds the gateway's snapshot from local mode's loaded folder, its key files and static backends.
pub fn gateway_config(
    local: &LocalConfig,
    keys: &[LocalKey],
    backends: &BTreeMap<String, Vec<String>>,
) -> Config {
    let tiers: Vec<Tier> = local.tiers.iter().map(|(_, t)| t.clone()).collect();
    let tenants: Vec<Tenant> = local.tenants.iter().map(|(_, t)| t.clone()).collect();
    let models: Vec<InferenceModel> = local.models.iter().map(|(_, m)| m.clone()).collect();
    let extra: Vec<(String, String, String)> = keys
        .iter()
        .map(|k| (k.tenant.clone(), k.name.clone(), k.hash.clone()))
        .collect();
    // Static backends are per served name: the first InferenceModel of a name gets them.
    let first_of_name = |model: &InferenceModel| {
        models
            .iter()
            .find(|m| m.spec.served_name == model.spec.served_name)
            .is_some_and(|first| first.metadata.name == model.metadata.name)
    };
    let replicas_of = |model: &InferenceModel| match backends.get(&model.spec.served_name) {
        Some(urls) if first_of_name(model) => urls.clone(),
        _ => Vec::new(),
    };
    Config::build(&tiers, &tenants, &models, &extra, &replicas_of)
}
