//! Local-mode API keys: generated once per `apiKeys[]` entry and kept in the state folder
//! (mode 0600), the same way the cluster keeps them in a Secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use hearth_crds::Tenant;

use hearth_tenancy::keys::{generate_key, hash_key};

/// A tenant key as local mode holds it.
#[derive(Debug, Clone)]
pub struct LocalKey {
    /// `namespace/tenant`.
    pub tenant: String,
    /// `apiKeys[].name`.
    pub name: String,
    /// The key (printed once for the demo tenant).
    pub key: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// File holding the key.
    pub path: PathBuf,
}

impl LocalKey {
    /// The key `key_name` of `tenant`, held in the file at `path`, with its hash.
    pub fn new(tenant: &Tenant, key_name: &str, key: String, path: PathBuf) -> Self {
        let namespace = tenant.metadata.namespace.as_deref().unwrap_or("default");
        let name = tenant.metadata.name.as_deref().unwrap_or_default();
        Self {
            tenant: format!("{namespace}/{name}"),
            name: key_name.to_string(),
            hash: hash_key(&key),
            key,
            path,
        }
    }
}

/// Reads or creates the key file of every `apiKeys[]` entry of `tenant` under `state_dir/keys`.
pub fn ensure_keys(state_dir: &Path, tenant: &Tenant) -> anyhow::Result<Vec<LocalKey>> {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let dir = state_dir.join("keys");
    std::fs::create_dir_all(&dir)?;
    let mut keys = Vec::new();
    for entry in &tenant.spec.api_keys {
        if entry.secret_ref.is_some() {
            anyhow::bail!(
                "Tenant {name}: spec.apiKeys[{}].secretRef is not supported in local mode; remove it and a key is generated",
                entry.name
            );
        }
        let path = key_file_path(&dir, tenant, &entry.name);
        let key = match std::fs::read_to_string(&path) {
            Ok(existing) if !existing.trim().is_empty() => existing.trim().to_string(),
            _ => {
                let key = generate_key()?;
                write_private(&path, &key)?;
                key
            }
        };
        keys.push(LocalKey::new(tenant, &entry.name, key, path));
    }
    Ok(keys)
}

/// The file holding key `key_name` of `tenant` under `keys_dir`: `<namespace>.<tenant>.<key>`
/// (key names have no dots, so the name is unambiguous). Local mode writes it; the gateway reads it.
pub fn key_file_path(keys_dir: &Path, tenant: &Tenant, key_name: &str) -> PathBuf {
    let namespace = tenant.metadata.namespace.as_deref().unwrap_or("default");
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    keys_dir.join(format!("{namespace}.{name}.{key_name}"))
}

/// Writes `text` to a file only the owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("hearth-keys-{}", std::process::id()));
        let tenant: Tenant = serde_yaml::from_str(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: demo, namespace: default}\nspec: {tierRef: local, apiKeys: [{name: demo}]}\n",
        )
        .expect("tenant");
        let first = ensure_keys(&dir, &tenant).expect("generated");
        let second = ensure_keys(&dir, &tenant).expect("reused");
        assert_eq!(first[0].key, second[0].key);
        assert_eq!(first[0].hash, hash_key(&first[0].key));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first[0].path)
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
