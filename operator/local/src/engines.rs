//! Starting one runtime-node process per InferenceModel on 127.0.0.1 and waiting until each
//! reports ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hearth_crds::InferenceModel;
use hearth_node_contract::spec::serve_args;
use hearth_tenancy::meter_tokens::MeterTokens;
use tokio::process::{Child, Command};

/// A running engine process.
pub struct Engine {
    /// Served model name.
    pub served_name: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The process.
    pub child: Child,
}

/// The GGUF or safetensors path a local model serves from: `file://` sources only.
pub fn local_model_path(model: &InferenceModel) -> anyhow::Result<PathBuf> {
    let name = model.metadata.name.as_deref().unwrap_or_default();
    let uri = &model.spec.source.uri;
    let path = uri.strip_prefix("file://").map(PathBuf::from).with_context(|| {
        format!("InferenceModel {name}: spec.source.uri {uri:?}: local mode serves file:// sources only")
    })?;
    if !path.exists() {
        anyhow::bail!(
            "InferenceModel {name}: spec.source.uri: model path {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Fails early, naming the port, when something already listens on it.
pub fn ensure_port_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| {
            format!("port {port} on 127.0.0.1 is already in use (choose another with --base-port)")
        })
}

/// The runtime-node binary: the explicit path, or the one beside this executable.
pub fn runtime_node_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let beside = std::env::current_exe()?.with_file_name("runtime-node");
    if beside.exists() {
        Ok(beside)
    } else {
        anyhow::bail!(
            "runtime-node binary not found at {}; build it or pass --runtime-node-bin",
            beside.display()
        )
    }
}

/// Starts `runtime-node serve` for `model` on `port`, with the flags its spec asks for (the
/// mapping the operator's pods use) and then `engine.args`.
pub fn start_engine(binary: &Path, model: &InferenceModel, port: u16) -> anyhow::Result<Engine> {
    let path = local_model_path(model)?;
    ensure_port_free(port)?;
    let spec = &model.spec;
    let child = Command::new(binary)
        .args(engine_args(model, path, port))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Engine {
        served_name: spec.served_name.clone(),
        port,
        child,
    })
}

/// `runtime-node serve` flags for `model` served from `path` on 127.0.0.1:`port`: the spec's
/// mapping, then `engine.args`.
pub fn engine_args(model: &InferenceModel, path: PathBuf, port: u16) -> Vec<String> {
    let mut serve = serve_args(model, path);
    serve.host = "127.0.0.1".into();
    serve.port = port;
    let mut args = serve.to_args();
    args.extend(model.spec.engine.args.iter().cloned());
    args
}

/// Where a local meter listens and what it fronts.
pub struct MeterPorts<'a> {
    /// Served name of the model (for messages).
    pub served_name: &'a str,
    /// The meter's port on 127.0.0.1.
    pub port: u16,
    /// The engine's port on 127.0.0.1.
    pub engine_port: u16,
}

/// Starts `runtime-node meter` in front of the engine, checking `tokens` (passed in its
/// environment, never on its command line).
pub fn start_meter(
    binary: &Path,
    ports: &MeterPorts<'_>,
    ledger: &Path,
    tokens: &MeterTokens,
) -> anyhow::Result<Engine> {
    ensure_port_free(ports.port)?;
    let child = Command::new(binary)
        .args([
            "meter",
            "--listen",
            &format!("127.0.0.1:{}", ports.port),
            "--upstream",
            &format!("http://127.0.0.1:{}", ports.engine_port),
        ])
        .arg("--ledger-dir")
        .arg(ledger)
        // The ledger stays on disk for the next run's billing: no need to wait for a pull.
        .args(["--drain-seconds", "0"])
        .env("HEARTH_METER_PROXY_TOKEN", &tokens.proxy)
        .env("HEARTH_METER_USAGE_TOKEN", &tokens.usage)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the meter ({})", binary.display()))?;
    Ok(Engine {
        served_name: ports.served_name.to_string(),
        port: ports.port,
        child,
    })
}

/// Polls `path` until it answers 200, the process exits, or `timeout` passes.
pub async fn wait_ready(engine: &mut Engine, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = engine.child.try_wait()? {
            anyhow::bail!(
                "process for {} exited during start-up ({status})",
                engine.served_name
            );
        }
        if probe_ready(engine.port, path).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "{} on port {} not ready after {}s",
                engine.served_name,
                engine.port,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// True when `GET path` on the port answers 200 (plain HTTP/1.1 over a socket).
async fn probe_ready(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_engines_get_the_flags_the_spec_asks_for() {
        let model: InferenceModel = serde_yaml::from_str(
            "apiVersion: hearth.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: m, namespace: default}\nspec:\n  servedName: smol\n  source: {uri: 'file:///m.gguf'}\n  parallelism: {tensor: 2}\n  engine: {maxBatchSize: 4, kvCacheFraction: 0.5, prefixCaching: false, args: ['--threads', '2']}\n",
        )
        .expect("model");
        let args = engine_args(&model, "/m.gguf".into(), 8100).join(" ");
        for expected in [
            "serve --model /m.gguf",
            "--port 8100",
            "--served-name smol",
            "--max-batch-size 4",
            "--kv-cache-fraction 0.5",
            "--no-prefix-caching",
            "--tensor-parallel 2",
        ] {
            assert!(args.contains(expected), "{expected} missing from {args}");
        }
        assert!(args.ends_with("--threads 2"), "{args}");
    }
}
