//! `switchyard`: the pod entrypoints (`api`, `worker`, `migrate`), a
//! one-process server for a laptop (`dev`), and a terminal chat client
//! (`chat`), API key management (`keys`) and the local model (`model`). Configuration comes from the environment; see
//! `switchyard_common::config`.

mod chat;
mod keys;
mod model;
mod services;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_common::config::{Config, Defaults};
use switchyard_common::{db, telemetry};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use services::probe::{self, Service};

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

/// Every failure ends the process with one line on stderr saying what went
/// wrong, its causes joined by `: `, and exit code 1; never a backtrace.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Chat(args) => return exit(chat::run(args).await),
        Command::Keys(command) => return exit(keys::run(command).await),
        Command::Model(command) => return exit(model::run(command).await),
        command => command,
    };
    let telemetry = telemetry::init(command.role());
    let result = match command {
        Command::Api => {
            let roles = Roles {
                api: true,
                worker: false,
            };
            serve_from_env(roles).await
        }
        Command::Worker => {
            let roles = Roles {
                api: false,
                worker: true,
            };
            serve_from_env(roles).await
        }
        Command::Dev => with_signals(dev).await,
        Command::Migrate => migrate().await,
        Command::Chat(_) | Command::Keys(_) | Command::Model(_) => {
            unreachable!("handled above")
        }
    };
    telemetry.shutdown();
    exit(result)
}

/// The exit code of a command, its error told in one line on stderr.
fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
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

fn load_config(defaults: Defaults) -> anyhow::Result<Arc<Config>> {
    Ok(Arc::new(
        Config::from_env(defaults).context("configuration")?,
    ))
}

/// Fail in one line if PostgreSQL or Redis does not answer.
async fn check_services(config: &Config, redis: bool) -> anyhow::Result<()> {
    probe::check(Service::Postgres, &config.database_url).await?;
    if redis {
        probe::check(Service::Redis, &config.redis_url).await?;
    }
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let config = load_config(Defaults::default())?;
    check_services(&config, false).await?;
    let pool = db::connect(&config.database_url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    db::migrate(&pool).await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve_from_env(roles: Roles) -> anyhow::Result<()> {
    let config = load_config(Defaults::default())?;
    check_services(&config, true).await?;
    with_signals(|stop| serve(config, roles, stop)).await
}

/// `switchyard dev`: the built-in agents (with the local model when it
/// can be had), on the configured services or private ones.
///
/// `stop` is cancelled by SIGTERM or Ctrl-C from the start, so that a
/// signal during start-up still ends in [`services::Services::stop`].
async fn dev(stop: CancellationToken) -> anyhow::Result<()> {
    let settings = services::Settings::from_env(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let env = |name: &str, default: Option<&str>| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_owned))
            .unwrap_or_default()
    };
    let database_url = env("DATABASE_URL", Defaults::LAPTOP.database_url);
    let redis_url = env("REDIS_URL", Defaults::LAPTOP.redis_url);
    let ensured = services::ensure(&database_url, &redis_url, &settings);
    let services = tokio::select! {
        services = ensured => services.map_err(anyhow::Error::msg)?,
        // Servers started so far are killed as their handles drop.
        () = stop.cancelled() => return Ok(()),
    };
    let served = async {
        tokio::select! {
            () = model::ensure_for_dev() => {}
            () = stop.cancelled() => {}
        }
        let config = Config::from_lookup(Defaults::LAPTOP, |name| match name {
            "DATABASE_URL" => Some(services.database_url.clone()),
            "REDIS_URL" => Some(services.redis_url.clone()),
            _ => std::env::var(name).ok(),
        })
        .context("configuration")?;
        let roles = Roles {
            api: true,
            worker: true,
        };
        // Cancelled already, it starts and drains at once.
        serve(Arc::new(config), roles, stop.clone()).await
    }
    .await;
    services.stop().await;
    served
}

/// Serve until `stop` is cancelled, then drain.
async fn serve(config: Arc<Config>, roles: Roles, stop: CancellationToken) -> anyhow::Result<()> {
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
    // The HTTP servers, each ending at `shutdown`.
    let mut servers = JoinSet::new();

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
        servers.spawn(async move {
            let served = axum::serve(listener, worker_metrics())
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the metrics listener stopped");
            }
            Ok(())
        });
    }
    if roles.api {
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
        servers.spawn(async move {
            switchyard_api::serve(listener, state)
                .await
                .context("serving the API")
        });
    }

    stop.cancelled().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    while let Some(served) = servers.join_next().await {
        served.context("server task")??;
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

/// Run `command` with a token cancelled at the first SIGTERM or Ctrl-C;
/// listening starts with the command.
async fn with_signals<F>(command: impl FnOnce(CancellationToken) -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let stop = CancellationToken::new();
    let mut run = std::pin::pin!(command(stop.clone()));
    tokio::select! {
        result = &mut run => return result,
        () = shutdown_signal() => stop.cancel(),
    }
    run.await
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
