//! The accept loop: a cap on clients, one task per connection, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv_cluster::Cluster;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::admin::AdminState;
use crate::clients::Clients;
use crate::connection;
use crate::error::{Error, Result};
use crate::options::ServerOptions;
use crate::shared::Shared;
use crate::stats::Stats;

/// A bound RESP server over a [`Cluster`].
///
/// [`Server::run`] accepts clients until its shutdown future completes, then stops
/// accepting, lets every connection finish the batch it is executing (and write its
/// replies, within [`ServerOptions::shutdown_grace`]), closes them, and returns. The cluster is the caller's to flush and close
/// afterwards (the server holds it in an `Arc` that `run` drops before returning).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    options: ServerOptions,
}

impl Server {
    /// Binds `addr` (e.g. `127.0.0.1:6379`, or port 0 for any free port).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] if the address cannot be listened on.
    pub async fn bind(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        cluster: Arc<Cluster>,
        options: ServerOptions,
    ) -> Result<Self> {
        let bind_err = |source| Error::Bind {
            addr: format!("{addr:?}"),
            source,
        };
        let listener = TcpListener::bind(&addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            addr,
            cluster,
            options,
        })
    }

    /// The address the server listens on (with the port chosen, if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully (see
    /// [`Server`]).
    ///
    /// # Errors
    ///
    /// None today: a failed `accept` (out of file descriptors, a connection reset before it
    /// was accepted) is retried after a short pause, as Redis does, rather than stopping the
    /// server.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Server {
            listener,
            cluster,
            options,
            addr,
        } = self;
        let slots = Arc::new(Semaphore::new(options.get_max_clients()));
        let (stop, stopped) = watch::channel(false);
        let next_id = AtomicU64::new(1);
        let shared = Arc::new(Shared {
            clients: Arc::new(Clients::default()),
            stats: Stats::new(crate::commands::COMMANDS.len()),
            options: options.clone(),
            addr,
            admin: AdminState::default(),
        });
        // `instantaneous_ops_per_sec` samples, every 100 ms as Redis's `serverCron`.
        let sampler = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    shared.stats.sample(std::time::Instant::now());
                }
            })
        };
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            let cluster = Arc::clone(&cluster);
                            let stopped = stopped.clone();
                            shared.stats.connections_received.fetch_add(1, Ordering::Relaxed);
                            let shared = Arc::clone(&shared);
                            let registration = shared.clients.register(
                                id,
                                stream.peer_addr().ok(),
                                stream.local_addr().ok(),
                            );
                            connections.spawn(async move {
                                connection::serve(stream, cluster, shared, registration, stopped)
                                    .await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                            connections.spawn(refuse(stream));
                        }
                    }
                }
                // Reap finished connections so the set does not grow with every client ever
                // served.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        sampler.abort();
        shared.admin.cancel();
        let _ = stop.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(options.get_shutdown_grace(), drain)
            .await
            .is_err()
        {
            // Stuck writing to clients that do not read: drop them.
            connections.shutdown().await;
        }
        Ok(())
    }
}

/// Tells a client over the cap why it is disconnected, as Redis does.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}
