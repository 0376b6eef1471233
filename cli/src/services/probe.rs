//! Whether the PostgreSQL and Redis that a URL names answer at all, before
//! anything connects: an unreachable service is told in one line saying
//! what to do, not as a connection error's chain.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// How long a service may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The two services Switchyard needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Redis,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Redis => "Redis",
        }
    }

    /// The variable holding its URL.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Postgres => "DATABASE_URL",
            Self::Redis => "REDIS_URL",
        }
    }
}

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Socket(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A service that did not answer.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach {} at {endpoint} ({cause}): start it, or set {} to one that runs; \
     `switchyard dev` runs its own",
    service.name(),
    service.variable()
)]
pub struct Unreachable {
    pub service: Service,
    pub endpoint: Endpoint,
    pub cause: String,
}

/// Where `url` (of `service`) points; `None` when the URL cannot be read,
/// which the real connection then reports.
pub fn endpoint(service: Service, url: &str) -> Option<Endpoint> {
    match service {
        Service::Postgres => {
            let options = PgConnectOptions::from_str(url).ok()?;
            let host = options.get_host();
            let socket_dir = match options.get_socket() {
                Some(dir) => Some(dir.clone()),
                None => host.starts_with('/').then(|| PathBuf::from(host)),
            };
            if let Some(dir) = socket_dir {
                let socket = format!(".s.PGSQL.{}", options.get_port());
                return Some(Endpoint::Socket(dir.join(socket)));
            }
            Some(Endpoint::Tcp {
                host: host.to_owned(),
                port: options.get_port(),
            })
        }
        Service::Redis => {
            let parsed = url::Url::parse(url).ok()?;
            match parsed.scheme() {
                "redis" | "rediss" | "valkey" | "valkeys" => Some(Endpoint::Tcp {
                    host: parsed
                        .host_str()?
                        .trim_matches(|c| c == '[' || c == ']')
                        .to_owned(),
                    port: parsed.port().unwrap_or(6379),
                }),
                "unix" | "redis+unix" => Some(Endpoint::Socket(PathBuf::from(parsed.path()))),
                _ => None,
            }
        }
    }
}

/// Check that `service` at `url` accepts connections.
pub async fn check(service: Service, url: &str) -> Result<(), Unreachable> {
    let Some(endpoint) = endpoint(service, url) else {
        return Ok(());
    };
    let attempt = async {
        match &endpoint {
            Endpoint::Tcp { host, port } => {
                tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            }
            Endpoint::Socket(path) => {
                tokio::net::UnixStream::connect(path).await?;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let cause = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => describe(&error),
        Err(_) => format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
    };
    Err(Unreachable {
        service,
        endpoint,
        cause,
    })
}

/// Why a server that answers refuses the URL's user, when the URL names
/// no password: `None` when it lets the user in, or when the URL names a
/// password (a wrong one is the user's to fix, and is reported when the
/// real connection fails).
pub async fn refuses_passwordless_login(service: Service, url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.password().is_some() {
        return None;
    }
    let attempt = async {
        match service {
            Service::Postgres => {
                // The server's own database: the configured one may not exist yet.
                let options = PgConnectOptions::from_str(url).ok()?.database("postgres");
                let user = options.get_username().to_owned();
                match sqlx::ConnectOptions::connect(&options).await {
                    Ok(conn) => {
                        let _ = sqlx::Connection::close(conn).await;
                        None
                    }
                    // invalid_password, invalid_authorization_specification
                    Err(sqlx::Error::Database(e))
                        if matches!(e.code().as_deref(), Some("28P01" | "28000")) =>
                    {
                        Some(format!("it refuses the user `{user}`: {}", e.message()))
                    }
                    Err(_) => None,
                }
            }
            Service::Redis => {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                match redis::cmd("PING").query_async::<String>(&mut conn).await {
                    Err(e)
                        if e.kind() == redis::ErrorKind::AuthenticationFailed
                            || e.code() == Some("NOAUTH") =>
                    {
                        Some("it wants a password".to_owned())
                    }
                    _ => None,
                }
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt)
        .await
        .ok()
        .flatten()
}

/// An I/O error in a few words, without the OS's error number.
fn describe(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::NotFound => "no such socket".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_from_both_kinds_of_url() {
        let tcp = |host: &str, port| {
            Some(Endpoint::Tcp {
                host: host.into(),
                port,
            })
        };
        assert_eq!(
            endpoint(Service::Postgres, "postgres://u:secret@db.local:6543/x"),
            tcp("db.local", 6543)
        );
        assert_eq!(
            endpoint(
                Service::Postgres,
                "postgres://postgres@127.0.0.1/switchyard"
            ),
            tcp("127.0.0.1", 5432)
        );
        assert_eq!(
            endpoint(Service::Postgres, "postgres://%2Frun%2Fpostgresql:5433/x"),
            Some(Endpoint::Socket("/run/postgresql/.s.PGSQL.5433".into()))
        );
        assert_eq!(
            endpoint(Service::Redis, "redis://:pw@[::1]:6380/0"),
            tcp("::1", 6380)
        );
        assert_eq!(
            endpoint(Service::Redis, "redis://cache"),
            tcp("cache", 6379)
        );
        assert_eq!(endpoint(Service::Redis, "nonsense"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_in_one_line() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let error = check(Service::Redis, &format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach Redis at 127.0.0.1:{port} (connection refused): start it, or set \
                 REDIS_URL to one that runs; `switchyard dev` runs its own"
            )
        );
    }
}
