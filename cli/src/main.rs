//! `switchyard`: the pod entrypoints (`api`, `worker`, `migrate`), a
//! one-process server for a laptop (`dev`), and a terminal chat client
//! (`chat`), API key management (`keys`) and the local model (`model`). Configuration comes from the environment; see
//! `switchyard_common::config`.

mod chat;
mod keys;
mod model;

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_common::config::{Config, Defaults};
use switchyard_common::{db, telemetry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "A backend for AI agent chat")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Api,
    /// Execute runs from the queue.
    Worker,
    /// Apply database migrations, then exit.
    Migrate,
    /// Create the database if needed, migrate, and run the API and one
    /// worker in this process (local PostgreSQL and Redis by default).
    Dev,
    /// Chat with an agent of a running server, streaming the answer.
    Chat(chat::ChatArgs),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Fetch, locate or check the local model.
    #[command(subcommand)]
    Model(model::ModelCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Chat(args) => return chat::run(args).await,
        Command::Keys(command) => return keys::run(command).await,
        Command::Model(command) => return model::run(command).await,
        command => command,
    };
    let telemetry = telemetry::init(command.role());
    let result = match command {
        Command::Api => {
            serve(
                Defaults::default(),
                Roles {
                    api: true,
                    worker: false,
                },
            )
            .await
        }
        Command::Worker => {
            serve(
                Defaults::default(),
                Roles {
                    api: false,
                    worker: true,
                },
            )
            .await
        }
        Command::Dev => {
            model::ensure_for_dev().await;
            serve(
                Defaults::LAPTOP,
                Roles {
                    api: true,
                    worker: true,
                },
            )
            .await
        }
        Command::Migrate => migrate().await,
        Command::Chat(_) | Command::Keys(_) | Command::Model(_) => {
            unreachable!("handled above")
        }
    };
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    telemetry.shutdown();
    result
}

impl Command {
    /// The process's role, naming its traces' service.
    fn role(&self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Migrate => "migrate",
            Self::Dev => "dev",
            Self::Chat(_) => "chat",
            Self::Keys(_) => "keys",
            Self::Model(_) => "model",
        }
    }
}

struct Roles {
    api: bool,
    worker: bool,
}

async fn load_config(defaults: Defaults) -> anyhow::Result<Arc<Config>> {
    Ok(Arc::new(
        Config::from_env(defaults).context("configuration")?,
    ))
}

async fn migrate() -> anyhow::Result<()> {
    let config = load_config(Defaults::default()).await?;
    let pool = db::connect(&config.database_url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    db::migrate(&pool).await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(defaults: Defaults, roles: Roles) -> anyhow::Result<()> {
    let config = load_config(defaults).await?;
    let dev = roles.api && roles.worker;
    if dev
        && db::create_database_if_missing(&config.database_url)
            .await
            .context("creating the database")?
    {
        tracing::info!("created the database");
    }
    let pool = db::connect(&config.database_url, config.db_pool_size)
        .await
        .context("connecting to PostgreSQL")?;
    if dev {
        db::migrate(&pool).await.context("applying migrations")?;
    }
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let worker = if roles.worker {
        Some(
            switchyard_worker::Worker::start(config.clone(), pool.clone(), shutdown.clone())
                .await?,
        )
    } else {
        None
    };
    if roles.worker
        && !roles.api
        && let Some(address) = config.metrics_listen
    {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} for metrics"))?;
        tracing::info!(%address, "worker metrics at /metrics");
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, worker_metrics())
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the metrics listener stopped");
            }
        });
    }
    let api = if roles.api {
        let state = switchyard_api::AppState::new(
            config.clone(),
            pool.clone(),
            tasks.clone(),
            shutdown.clone(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(address = %config.listen, "API listening; docs at /docs");
        Some(tokio::spawn(switchyard_api::serve(listener, state)))
    } else {
        None
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    if let Some(api) = api {
        api.await.context("API task")?.context("serving the API")?;
    }
    if let Some(worker) = worker {
        worker.wait().await;
    }
    Ok(())
}

/// A worker's own small HTTP surface: `/metrics`, and `/health` for probes.
fn worker_metrics() -> axum::Router {
    use axum::routing::get;
    use switchyard_common::metrics::{CONTENT_TYPE, METRICS};
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    METRICS.render(None).await,
                )
            }),
        )
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
