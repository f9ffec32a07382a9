//! `hearth-operator local`: the same Tier/Tenant/InferenceModel YAML a cluster takes, served on
//! this machine: validated like the API server would, planned, and one runtime-node process
//! per InferenceModel on 127.0.0.1.

pub mod config;
pub mod engines;
pub mod keys;

use std::time::Duration;

use crate::cli::LocalArgs;

/// Runs local mode until Ctrl-C (or, with `--check`, validates and exits).
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let config = config::load(&args.config)?;
    let mut all_keys = Vec::new();
    for (_, tenant) in &config.tenants {
        all_keys.extend(keys::ensure_keys(&args.state_dir, tenant)?);
    }
    println!(
        "hearth local: {} tier(s), {} tenant(s), {} model(s) from {}",
        config.tiers.len(),
        config.tenants.len(),
        config.models.len(),
        args.config.display()
    );
    if args.check {
        for (_, model) in &config.models {
            engines::local_model_path(model)?;
        }
        println!("configuration is valid");
        return Ok(());
    }
    let binary = engines::runtime_node_binary(args.runtime_node_bin.as_deref())?;
    let mut running = Vec::new();
    for (index, (_, model)) in config.models.iter().enumerate() {
        let port = args
            .base_port
            .saturating_add(u16::try_from(index).unwrap_or(u16::MAX));
        let mut engine = engines::start_engine(&binary, model, port)?;
        engines::wait_ready(&mut engine, Duration::from_secs(300)).await?;
        println!("model {} ready on http://127.0.0.1:{port}/v1", engine.served_name);
        running.push(engine);
    }
    let first = &running[0];
    println!();
    println!("export OPENAI_BASE_URL=http://127.0.0.1:{}/v1", first.port);
    if let Some(key) = all_keys.first() {
        println!("export OPENAI_API_KEY={}", key.key);
        println!(
            "# key of tenant {} ({}) stored in {}",
            key.tenant,
            key.name,
            key.path.display()
        );
    }
    println!(
        "curl -s $OPENAI_BASE_URL/chat/completions -H \"Authorization: Bearer $OPENAI_API_KEY\" -H 'content-type: application/json' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'",
        first.served_name
    );
    println!("Ctrl-C stops everything.");
    crate::controller::shutdown_signal().await;
    for mut engine in running {
        if let Some(pid) = engine.child.id() {
            // SIGTERM lets the engine drain; kill after a grace period.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(10), engine.child.wait())
            .await
            .is_err()
        {
            let _ = engine.child.kill().await;
        }
    }
    println!("stopped");
    Ok(())
}
