//! `kvstore serve`: the cluster on the network, speaking the Redis protocol through
//! `kv-server`.
//!
//! The cluster opens exactly as in the REPL ([`open::open`]); the server runs on a tokio
//! runtime built here. Order matters at both ends:
//! - signal handlers are installed before the cluster is opened, so a SIGTERM sent while it
//!   opens (a large store takes a while) or as soon as a supervisor (or a test) reads the
//!   ready line closes the cluster cleanly and exits 0 instead of killing the process;
//! - on shutdown the runtime is dropped before the cluster is closed: dropping it waits for
//!   the storage threads (`spawn_blocking`) still finishing a batch, which hold the cluster, so
//!   the close that follows sees every acknowledged write. A node of a cluster of processes
//!   runs its transport on the runtime: it closes first (every batch in flight has finished
//!   when the server returns), then the runtime goes.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kv_cluster::Cluster;
use kv_server::{Server, ServerOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::args::ServeArgs;
use crate::{fd_limit, node, open};

/// The line printed once the server accepts connections, followed by its address.
pub const READY: &str = "kvstore ready to accept connections on";

/// Runs the server until SIGINT or SIGTERM; then closes the cluster.
///
/// # Errors
///
/// Refused options (a password, a non-loopback address without one), a cluster that cannot
/// be opened (its directory locked by another process, ...), an address that cannot be
/// listened on, a failure to flush the cluster when closing it.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    check_access(args.bind, args.requirepass.as_deref())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = builder
        .enable_all()
        .thread_name("kvstore-serve")
        .build()
        .context("start the async runtime")?;
    // Before the cluster opens (which takes a while on a large store): a signal that comes
    // meanwhile is held for the check below instead of killing the process half-open.
    let mut signals = runtime.block_on(async { Signals::install() })?;
    // One node of a cluster of processes, or the whole cluster in this process.
    let (mut node, cluster, warnings) = match (&args.node_id, &args.peers, &args.join) {
        (Some(id), Some(peers), _) => {
            let (node, warnings) = node::open(args, id, peers, runtime.handle())?;
            let cluster = Arc::clone(&node.cluster);
            (Some(node), cluster, warnings)
        }
        (Some(id), None, Some(seed)) => {
            let (node, warnings) = node::open_joiner(args, id, seed, runtime.handle())?;
            let cluster = Arc::clone(&node.cluster);
            (Some(node), cluster, warnings)
        }
        _ => {
            let opened = open::open(&args.cluster, &args.data_dir)?;
            (None, Arc::new(opened.cluster), opened.warnings)
        }
    };
    for w in &warnings {
        // A closed stderr must not stop a server that can still serve.
        let _ = writeln!(std::io::stderr(), "{w}");
    }
    let served = fd_limit::fit(args.maxclients).and_then(|(max_clients, warning)| {
        if let Some(w) = warning {
            let _ = writeln!(std::io::stderr(), "{w}");
        }
        if let Some(name) = runtime.block_on(signals.pending()) {
            let _ = writeln!(
                std::io::stderr(),
                "kvstore: {name} received while opening the cluster: closing it"
            );
            return Ok(());
        }
        // A node of a cluster of processes answers clients TRYAGAIN until its metadata is
        // bootstrapped and caught up (its replica serves the other nodes meanwhile).
        if let Some(node) = &mut node {
            node.start_ready();
        }
        let addr = SocketAddr::new(args.bind, args.port);
        let options = ServerOptions::new()
            .max_clients(max_clients)
            .requirepass(args.requirepass.clone())
            .sync_policy(Some(args.cluster.sync.policy()))
            .kvstore_extension(node.as_ref().and_then(|n| n.extension.clone()))
            .remote_replicas(node.is_some());
        runtime.block_on(serve(addr, Arc::clone(&cluster), options, signals))
    });
    // A node of a cluster of processes: its transport runs on this runtime, so the cluster
    // closes (flushing what it can reach) before the runtime goes; the other nodes stop
    // reaching this one's storage before it closes.
    let local = node.take().map(|mut node| {
        node.stop();
        Arc::clone(&node.local)
    });
    if local.is_none() {
        // Waits for the storage threads still holding the cluster.
        drop(runtime);
    }
    let closed = match local {
        // A node of a cluster of processes answers for its own storage: it is flushed, or
        // the exit says why. The others flush theirs when they stop (they may be gone).
        Some(local) => local.sync().context("flush this node's storage").map(|()| {
            if let Err(e) = close(cluster) {
                let _ = writeln!(
                    std::io::stderr(),
                    "kvstore: warning: closing the cluster: {e:#}"
                );
            }
        }),
        None => close(cluster).context("close the cluster"),
    };
    served?;
    closed
}

/// The signals that shut the server down, handled from the moment they are installed.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    /// Replaces the default action (ending the process) of SIGTERM and SIGINT. Must run on
    /// the runtime.
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("handle SIGINT")?,
        })
    }

    /// Waits for one; its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// One that arrived since they were installed, without waiting.
    async fn pending(&mut self) -> Option<&'static str> {
        tokio::select! {
            biased;
            name = self.recv() => Some(name),
            () = std::future::ready(()) => None,
        }
    }
}

/// Refuses, as Redis's protected mode, an address other than loopback without a password
/// (and an empty password, which would protect nothing).
fn check_access(bind: IpAddr, password: Option<&str>) -> anyhow::Result<()> {
    if password.is_some_and(str::is_empty) {
        bail!("--requirepass must not be empty");
    }
    if password.is_none() && !bind.to_canonical().is_loopback() {
        bail!(
            "refusing to listen on {bind} without a password (protected mode: anyone who can \
             reach it could read and write every key); set one with --requirepass, or bind a \
             loopback address (127.0.0.1, the default, or ::1)"
        );
    }
    Ok(())
}

/// Binds, says it is ready, serves until a signal.
async fn serve(
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    options: ServerOptions,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let server = Server::bind(addr, cluster, options).await?;
    {
        let mut stdout = std::io::stdout().lock();
        // Nobody reading the ready line is no reason to stop serving.
        let _ = writeln!(stdout, "{READY} {}", server.local_addr());
        let _ = stdout.flush();
    }
    let shutdown = async move {
        let name = signals.recv().await;
        let _ = writeln!(
            std::io::stderr(),
            "kvstore: {name} received: finishing the commands in flight, then closing the cluster"
        );
    };
    server.run(shutdown).await.context("serve")
}

/// Flushes and closes the cluster. Every connection and storage thread is gone by now, so
/// the server's references are dropped; if one were left, the writes are still flushed.
fn close(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    match Arc::try_unwrap(cluster) {
        Ok(cluster) => cluster.close()?,
        Err(shared) => shared.sync()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(bind: &str, password: Option<&str>) -> Option<String> {
        check_access(bind.parse().unwrap(), password)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn loopback_without_a_password_is_served() {
        for bind in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(refused(bind, None), None, "{bind}");
        }
    }

    #[test]
    fn any_other_address_without_a_password_is_refused() {
        for bind in [
            "0.0.0.0",
            "::",
            "192.168.1.10",
            "10.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let why = refused(bind, None).unwrap_or_else(|| panic!("{bind} served"));
            assert!(why.contains("protected mode"), "{why}");
            assert!(why.contains(bind), "{why}");
        }
    }

    #[test]
    fn any_address_with_a_password_is_served() {
        for bind in ["127.0.0.1", "0.0.0.0", "::"] {
            assert_eq!(refused(bind, Some("secret")), None, "{bind}");
        }
        assert!(refused("127.0.0.1", Some("")).is_some());
    }
}
