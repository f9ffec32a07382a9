//! Writes the CRD YAML into `crds/yaml/`, `charts/hearth/crds/` and `manifests/crds/`, and the
//! CRD reference into
//! `docs/crds.md`, under the workspace root (the first argument, or the current directory).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    for dir in hearth_crds::crdgen::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in hearth_crds::crdgen::crd_documents()? {
            std::fs::write(dir.join(name), yaml)?;
        }
    }
    let docs = root.join(hearth_crds::crd_docs::CRD_DOCS_PATH);
    if let Some(parent) = docs.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(docs, hearth_crds::crd_docs::render()?)?;
    Ok(())
}
