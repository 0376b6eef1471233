//! `switchyard`: the pod entrypoints (`api`, `worker`, `migrate`), a
//! one-process server for a laptop (`dev`), and a terminal chat client
//! (`chat`). Configuration comes from the environment; see
//! `switchyard_common::config`.

mod chat;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Chat(args) = cli.command {
        return chat::run(args).await;
    }
    telemetry::init();
    let result = match cli.command {
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
        Command::Chat(_) => unreachable!("handled above"),
    };
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    result
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
