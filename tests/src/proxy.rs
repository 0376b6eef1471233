//! A TCP proxy in front of PostgreSQL or Redis that a test can cut and
//! restore: an outage of one dependency for one test, while the shared
//! servers keep serving every other test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; it stops when dropped.
pub struct Proxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped by every cut: connections of an earlier generation close.
    generation: watch::Sender<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the server a `postgres://` or `redis://` URL names.
    pub async fn to_url(url: &str) -> Self {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', '?']).next())
            .and_then(|authority| authority.rsplit('@').next())
            .expect("a host:port in the URL");
        let target = tokio::net::lookup_host(host)
            .await
            .expect("resolving")
            .next()
            .expect("an address");
        Self::start(target).await
    }

    /// Forward `127.0.0.1:<new port>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let address = listener.local_addr().expect("bound");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let server = tokio::spawn(accept(listener, target, up.clone(), generation.clone()));
        Self {
            address,
            up,
            generation,
            server,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The outage: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The end of the outage.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            // Refused: the peer sees the connection close at once.
            continue;
        }
        let mut cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            client.set_nodelay(true).ok();
            server.set_nodelay(true).ok();
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
