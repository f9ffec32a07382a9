//! Arbitrary bytes as a local-mode config file: `${VAR}` expansion from the environment (set
//! here to a path, an empty value, a value that is itself a `${...}` reference, one that is YAML
//! with a document separator, and odd Unicode), the YAML documents, their schemas, the CRDs' CEL
//! rules and the spec validation. Whatever the bytes, the result is a configuration that holds
//! together or an error naming the file.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use hearth_local::config::load;
use libfuzzer_sys::fuzz_target;

/// A folder of this process's own, in memory when the machine has `/dev/shm`.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
    let dir = base.join(format!("hearth-fuzz-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates the config folder");
    dir
});

const VARIABLES: &[(&str, &str)] = &[
    ("HEARTH_FUZZ_MODEL", "/models/smollm2.gguf"),
    ("HEARTH_FUZZ_EMPTY", ""),
    ("HEARTH_FUZZ_NESTED", "${HEARTH_FUZZ_MODEL}"),
    ("HEARTH_FUZZ_YAML", "x'\n---\nkind: Tier\nmetadata: {name: injected}\nspec: {}\n"),
    ("HEARTH_FUZZ_UNICODE", "日本語 🙂 \u{202e}\t\"'\\"),
];

fuzz_target!(
    init: {
        for (name, value) in VARIABLES {
            // SAFETY: libFuzzer runs this before any input, and no thread reads the environment.
            unsafe { std::env::set_var(name, value) };
        }
    },
    |data: &[u8]| {
        let dir = &*DIR;
        std::fs::write(dir.join("config.yaml"), data).expect("writes the config file");
        match load(dir) {
            Ok(config) => {
                assert!(!config.models.is_empty());
                for (_, tenant) in &config.tenants {
                    assert!(tenant.metadata.namespace.is_some());
                    let tier = &tenant.spec.tier_ref;
                    assert!(config.tiers.iter().any(|(_, t)| t.metadata.name.as_ref() == Some(tier)));
                }
                for (_, model) in &config.models {
                    assert!(model.metadata.namespace.is_some());
                }
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains(&*dir.to_string_lossy()), "error does not name the file: {message}");
            }
        }
    }
);
