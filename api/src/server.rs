//! The accept loop: HTTP/1 and HTTP/2 connections served by hyper with the
//! timeouts `axum::serve` leaves out.
//!
//! - A client has [`Config::header_timeout`] to send a request's headers,
//!   counted from the connection's opening or from the end of the previous
//!   response, so a connection that never finishes its headers, or sits
//!   idle between requests, is closed (slow-header attacks hold nothing).
//!   A response being streamed is not affected: the clock only runs while
//!   the connection waits for headers.
//! - HTTP/2 connections are pinged every [`H2_KEEP_ALIVE`] and closed when
//!   a ping goes unanswered as long.
//! - On shutdown, the listener closes and open connections finish their
//!   requests (event streams end themselves on the same signal).
//!
//! [`Config::header_timeout`]: switchyard_common::config::Config::header_timeout

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How often an HTTP/2 connection is pinged, and how long a ping may go
/// unanswered.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Serve `router` on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: the next accept may
                    // succeed once connections close; spinning would not.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Events are small writes that must leave at once: without
        // TCP_NODELAY Nagle's algorithm holds each one back until the
        // previous is acked.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts and clients going away are routine.
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
}
