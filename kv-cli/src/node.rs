//! `kvstore serve --node-id ID --peers ...`: one node of a cluster of processes.
//!
//! Each node is its own process with its own data directory: it holds its own storage node
//! and the hints it keeps for the others, coordinates any client request it gets (a plain
//! Redis client may talk to any node), and serves its storage node to the other coordinators
//! on its *cluster port* (the client port + 10000, as Redis Cluster's bus).
//!
//! - **Static membership.** `--peers id@host:port,...` lists every member (this node
//!   included) with its client address, in the same order on every node: the ring is built
//!   from the list in its order, so every node given the same list agrees on the same ring.
//!   A restart with another member list than the one stored is refused.
//! - **The cluster's name** (`--cluster-name`, default `kvstore`) is written to the data
//!   directory on first start; a restart under another name is refused. The handshake's
//!   cluster id covers the name alone ([`cluster_id`]), so a node that is not a member yet
//!   (a joiner) can connect; it is answered only the metadata's `Join` until it is one. The
//!   cluster's identity is its uuid ([`cluster_uuid`]: the name, the ordered member list, RF
//!   and vnodes of the bootstrap), carried by every metadata request and checked: a node of
//!   another ring is refused there, and both sides log the likely cause.
//! - **Metadata through raft** ([`crate::node_meta`]): the membership the node routes by is
//!   kv-meta's, in `<data-dir>/meta/`, bootstrapped from the list by its first node and
//!   installed epoch by epoch; clients get `TRYAGAIN` until the node has caught up on it
//!   ([`NodeProcess::start_ready`]); `KVSTORE META` shows it.
//! - **Versions.** The node's position in the list is its coordinator slot, so two
//!   coordinators never mint the same version.
//! - **Catching up.** A watcher (a task on the node's runtime) notices a peer that was down
//!   and is alive again, and hands it the hints held for it and repairs its ranges
//!   ([`Cluster::catch_up_async`], which records its phase and result for `KVSTORE NODES`
//!   and `INFO`, and waits on the peers without holding a worker thread); hints held for a
//!   peer that stayed up (a write's follow-up keeps them) are handed off every 2 s while no
//!   change runs.
//! - **TLS** on the cluster port (`--tls-ca`, `--tls-cert`, `--tls-key`, [`load_tls`]):
//!   mutual authentication against the cluster's CA, the node id still the handshake's; a
//!   refused handshake is logged with its likely cause (`Refusals`). The client port stays
//!   plain.
//! - **Anti-entropy** runs in the background every [`DEFAULT_REPAIR_INTERVAL`] unless
//!   `--repair-interval` says otherwise.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kv_cluster::{Backend, Cluster, KvNodeBackend};
use kv_remote::{RemoteBackend, ReplicaServer};
use kv_ring::NodeId;

use crate::args::{ServeArgs, TlsFiles};
use crate::{node_meta, open};

/// How long a coordinator waits for a peer's answer to a maintenance request (a digest pass,
/// an import of hinted or repaired records).
pub const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the cluster port is added to the client port.
pub const CLUSTER_PORT_OFFSET: u16 = 10_000;

/// The cluster port of a node whose client port is `port`.
pub fn cluster_port(port: u16) -> Option<u16> {
    port.checked_add(CLUSTER_PORT_OFFSET)
}

/// One member as `--peers` gives it: `id@host:port` (the client address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The member's node id.
    pub id: NodeId,
    /// Its client address (its cluster port is this port + 10000).
    pub addr: SocketAddr,
}

impl Peer {
    /// The address its storage node is served on to other nodes.
    pub fn cluster_addr(&self) -> anyhow::Result<SocketAddr> {
        let port = cluster_port(self.addr.port()).with_context(|| {
            format!(
                "peer {}: client port {} leaves no cluster port (port + {CLUSTER_PORT_OFFSET})",
                self.id,
                self.addr.port()
            )
        })?;
        Ok(SocketAddr::new(self.addr.ip(), port))
    }
}

/// Parses `id@host:port,id@host:port,...`.
///
/// # Errors
/// An entry without `@`, an invalid node id, an address that does not resolve, a duplicate
/// id, an empty list.
pub fn parse_peers(list: &str) -> Result<Vec<Peer>, String> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("{entry:?}: expected id@host:port"))?;
        let id = NodeId::new(id).map_err(|e| format!("{entry:?}: {e}"))?;
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| format!("{entry:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{entry:?}: the address resolves to nothing"))?;
        if addr.port() == 0 {
            return Err(format!("{entry:?}: a member needs a fixed port, not 0"));
        }
        if peers.iter().any(|p| p.id == id) {
            return Err(format!("{id} is listed twice"));
        }
        peers.push(Peer { id, addr });
    }
    if peers.is_empty() {
        return Err("the list of members is empty".to_owned());
    }
    Ok(peers)
}

/// Parses `--join`'s `id@host:port`: one member, as `--peers` lists it.
///
/// # Errors
/// As [`parse_peers`], for a single entry (a list is refused).
pub fn parse_seed(entry: &str) -> Result<Peer, String> {
    if entry.contains(',') {
        return Err(format!("{entry:?}: --join takes one member, not a list"));
    }
    let mut peers = parse_peers(entry)?;
    peers.pop().ok_or_else(|| format!("{entry:?}: no member"))
}

/// The 128-bit cluster id every handshake carries: FNV-1a over the length-prefixed cluster
/// name alone (membership.md §2.3), so a node joining a running cluster computes it without
/// knowing the members. Stable across builds and platforms. Builds from before it covered the
/// member list compute other ids: kv-net refuses to mix them.
pub fn cluster_id(name: &str) -> u128 {
    fnv_fields(&[name.as_bytes()])
}

/// FNV-1a over `fields`, each length-prefixed (so no two inputs share an encoding).
fn fnv_fields(fields: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    fields.iter().fold(OFFSET, |h, bytes| {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        len.to_le_bytes()
            .iter()
            .chain(bytes.iter())
            .fold(h, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
    })
}

/// The uuid of a cluster bootstrapped from `--peers`: FNV-1a over the cluster's name, its
/// members in ring order, its replication factor and vnodes per node, each length-prefixed.
/// Every listed node computes the same one without coordination; nodes given the same name
/// but a `--peers` list in another order, other members, or another `--replication` or
/// `--vnodes` would build other rings: their uuids differ, and each refuses the other's
/// metadata requests (kv-meta's `WrongClusterUuid`).
pub fn cluster_uuid(name: &str, members: &[String], rf: u32, vnodes: u32) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let fold = |h: u128, bytes: &[u8]| {
        bytes
            .iter()
            .fold(h, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
    };
    let field = |h: u128, bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        fold(fold(h, &len.to_le_bytes()), bytes)
    };
    let mut h = field(OFFSET, name.as_bytes());
    h = fold(
        h,
        &u32::try_from(members.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for m in members {
        h = field(h, m.as_bytes());
    }
    fold(fold(h, &rf.to_le_bytes()), &vnodes.to_le_bytes())
}

/// How often a node process runs a background repair round unless `--repair-interval`
/// says otherwise: a round compares each range's Merkle trees (each replica hashes the keys
/// it holds in the range) and streams only what differs.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(600);

/// The background repair interval of a node process: `--repair-interval`, 0 for none, else
/// [`DEFAULT_REPAIR_INTERVAL`].
pub fn repair_interval(given: Option<u64>) -> Option<Duration> {
    match given {
        None => Some(DEFAULT_REPAIR_INTERVAL),
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
    }
}

/// Reads and checks the TLS files of `--tls-ca`, `--tls-cert` and `--tls-key`, before
/// anything else starts: a file that cannot be read, holds no PEM block of the kind its flag
/// needs, or does not parse is a startup error naming the flag and the file.
///
/// # Errors
/// A file unreadable, empty or of the wrong kind; a certificate or key that does not parse;
/// a key that is not the certificate's.
pub fn load_tls(files: &TlsFiles) -> anyhow::Result<kv_net::Tls> {
    // (flag, path, what its PEM must hold, the PEM labels that hold it)
    let specs: [(&str, &Path, &str, &[&str]); 3] = [
        ("--tls-ca", &files.ca, "certificate", &["CERTIFICATE"]),
        ("--tls-cert", &files.cert, "certificate", &["CERTIFICATE"]),
        (
            "--tls-key",
            &files.key,
            "private key",
            &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        ),
    ];
    let mut pems = Vec::with_capacity(3);
    for (flag, path, what, labels) in specs {
        let pem = read_bounded(path).with_context(|| format!("{flag} {}", path.display()))?;
        // kv-net's parser skips what is not PEM, so a garbage certificate file would read
        // as an empty chain and fail later as a confusing "loading the node certificate":
        // the kind of block each file needs is checked here, to name the file.
        if !has_pem_block(&pem, labels) {
            bail!(
                "{flag} {}: no PEM-encoded {what} in the file (expected a \"-----BEGIN {}-----\" \
                 block)",
                path.display(),
                labels[0]
            );
        }
        pems.push(pem);
    }
    kv_net::Tls::from_pem(&pems[0], &pems[1], &pems[2]).map_err(|e| {
        let named = match &e {
            kv_net::Error::Tls { what, .. } => match *what {
                w if w.contains("CA certificate") => format!("--tls-ca {}", files.ca.display()),
                w if w.contains("node key") => format!("--tls-key {}", files.key.display()),
                w if w.contains("reading the node certificate") => {
                    format!("--tls-cert {}", files.cert.display())
                }
                // Loading the chain with its key: the two files do not go together, or one
                // holds something rustls cannot use.
                _ => format!(
                    "--tls-cert {} with --tls-key {}",
                    files.cert.display(),
                    files.key.display()
                ),
            },
            _ => format!(
                "--tls-ca {}, --tls-cert {}, --tls-key {}",
                files.ca.display(),
                files.cert.display(),
                files.key.display()
            ),
        };
        anyhow::Error::new(e).context(named)
    })
}

/// The largest TLS file read (a CA bundle of a few hundred certificates fits): a path
/// pointing at something huge by mistake is refused instead of read into memory.
const MAX_TLS_FILE: u64 = 1 << 20;

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).context("cannot open the file")?;
    let mut bytes = Vec::new();
    file.take(MAX_TLS_FILE + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the file")?;
    if bytes.len() as u64 > MAX_TLS_FILE {
        bail!("larger than {MAX_TLS_FILE} bytes: not a PEM certificate or key");
    }
    Ok(bytes)
}

/// Whether `pem` holds a `-----BEGIN <label>-----` line for one of `labels`.
fn has_pem_block(pem: &[u8], labels: &[&str]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.lines().any(|line| {
        labels
            .iter()
            .any(|label| line.trim() == format!("-----BEGIN {label}-----"))
    })
}

/// A node of a cluster of processes, opened: the cluster it coordinates, the server of its
/// storage node for the other nodes, the watcher of its peers.
pub struct NodeProcess {
    /// The coordinator (its own storage node in this process, the others remote).
    pub cluster: Arc<Cluster>,
    replica_server: Option<Arc<ReplicaServer>>,
    watcher: Option<Watcher>,
    /// This node's own storage.
    pub local: Arc<dyn kv_cluster::Replica>,
    /// `KVSTORE FAULT`, with `--enable-debug-faults`.
    pub extension: Option<Arc<dyn kv_server::KvstoreExtension>>,
    meta: Option<NodeMetaRun>,
}

/// The node's metadata raft and what it needs to become ready.
struct NodeMetaRun {
    raft: kv_meta::MetaRaft,
    /// The static bootstrap (`--peers`); `None` for a joiner (the cluster has one).
    bootstrap: Option<kv_meta::Command>,
    timeout: Duration,
    follower: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    runtime: tokio::runtime::Handle,
    /// Set once clients may be served (read by `KVSTORE`'s extension).
    ready: Arc<AtomicBool>,
    ready_task: Option<tokio::task::AbortHandle>,
}

impl NodeProcess {
    /// Starts, on the runtime, what opens the node to clients (membership.md §2.5, §2.6):
    /// the static bootstrap applied (the first listed node proposes it once a majority of
    /// the members runs; the others wait for it), then the leader's committed index applied
    /// and its topology installed; then clients are served. Until then they are answered
    /// `-TRYAGAIN metadata catching up`, while the replica serves the other nodes at or above
    /// its fence. Each wait logs a line every `--meta-catch-up-timeout` and goes on trying.
    pub fn start_ready(&mut self) {
        let Some(meta) = &mut self.meta else {
            return;
        };
        let (raft, bootstrap, timeout) = (meta.raft.clone(), meta.bootstrap.clone(), meta.timeout);
        let (cluster, ready) = (Arc::clone(&self.cluster), Arc::clone(&meta.ready));
        let task = meta.runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            while let Some(bootstrap) = &bootstrap
                && let Err(e) = raft.bootstrap(bootstrap, timeout).await
            {
                eprintln!(
                    "kvstore: the cluster's metadata is not bootstrapped after {:?} ({e}): the \
                     first node of --peers bootstraps it once a majority of the members runs; \
                     start them, or check that they reach each other on their cluster ports \
                     (still trying; clients get TRYAGAIN meanwhile)",
                    started.elapsed()
                );
            }
            let took = node_meta::catch_up(&raft, timeout).await;
            // The follower installs what was applied; clients are served once it has.
            let epoch = raft.watch().borrow().meta.epoch;
            while cluster.topology().is_none_or(|t| t.epoch < epoch) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // A quick restart waits out what is left of its version lease (at most a second in
            // the normal case; design.md, versions across restarts) so that its writes are not
            // versioned ahead of the other coordinators'.
            let lease_wait = cluster.lease_wait();
            if !lease_wait.is_zero() {
                tokio::time::sleep(lease_wait).await;
            }
            ready.store(true, Ordering::Release);
            eprintln!(
                "kvstore: metadata caught up in {took:?} (epoch {epoch}; waited {lease_wait:?} \
                 for the version lease): serving clients"
            );
        });
        meta.ready_task = Some(task.abort_handle());
    }

    /// Stops serving other nodes and watching them (before the cluster closes), and the
    /// metadata raft. Call it off the runtime (it waits for the raft on it).
    pub fn stop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
        if let Some(mut meta) = self.meta.take() {
            if let Some(task) = meta.ready_task.take() {
                task.abort();
            }
            if let Some((stop, handle)) = meta.follower.take() {
                stop.store(true, Ordering::Relaxed);
                let _ = handle.join();
            }
            if tokio::runtime::Handle::try_current().is_err()
                && let Err(e) = meta.runtime.block_on(meta.raft.shutdown())
            {
                let _ = writeln!(std::io::stderr(), "kvstore: stopping the metadata: {e}");
            }
        }
        self.replica_server.take();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens node `node_id` of the cluster `peers` describes, in `args.data_dir`, and starts
/// serving its storage node on its cluster port.
///
/// # Errors
/// The node not in the list, a data directory of another cluster or another member list,
/// the cluster port in use, the storage node failing to open.
pub fn open(
    args: &ServeArgs,
    node_id: &str,
    peers: &[Peer],
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(NodeProcess, Vec<String>)> {
    let me = NodeId::new(node_id).context("--node-id")?;
    if args.cluster.sloppy_quorum {
        bail!(
            "--sloppy-quorum is not supported with --node-id: a node process keeps the hints it \
             writes on its own disk, so a hint could not stand in for a replica on another node"
        );
    }
    if let Some(p) = peers.iter().find(|p| p.id.as_str() == "meta") {
        bail!(
            "{}: the node id \"meta\" is reserved (the metadata lives in <data-dir>/meta/)",
            p.id
        );
    }
    let Some(slot) = peers.iter().position(|p| p.id == me) else {
        bail!("--node-id {me} is not one of the members listed in --peers");
    };
    let own = &peers[slot];
    if own.addr.port() != args.port {
        bail!(
            "--peers gives {me} the port {}, but --port is {}: they must agree (the other \
             nodes reach this one at the address in --peers)",
            own.addr.port(),
            args.port
        );
    }
    let listen = SocketAddr::new(args.bind, own.cluster_addr()?.port());
    // Before the data directory is touched: a bad file is a startup error and nothing else.
    let tls = args.tls_files().as_ref().map(load_tls).transpose()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    check_cluster_name(&args.data_dir, &args.cluster_name)?;
    let ids: Vec<String> = peers.iter().map(|p| p.id.to_string()).collect();
    let params = open::member_params(&args.cluster, &args.data_dir, &ids)?;
    let id = cluster_uuid(&args.cluster_name, &ids, params.rf, params.vnodes);
    let vnodes = params.vnodes;
    let identity = kv_net::Identity::new(cluster_id(&args.cluster_name), me.as_str());
    let timeout = Duration::from_millis(args.replica_timeout);
    let others = peers
        .iter()
        .filter(|p| p.id != me)
        .map(|p| Ok((p.id.clone(), p.cluster_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local: Arc<dyn Backend> = Arc::new(KvNodeBackend::new(open::node_options(&args.cluster)));
    // The server's runtime: a client's connection task awaiting the other replicas is woken
    // by the transport's reader without a hop between runtimes.
    let mut peers_options = kv_net::PeersOptions::new().runtime(runtime.clone());
    if let Some(tls) = &tls {
        peers_options = peers_options.tls(tls.clone());
    }
    let backend = Arc::new(
        RemoteBackend::new(
            me.clone(),
            local,
            others,
            identity.clone(),
            peers_options,
            timeout,
        )
        .context("start the transport to the other nodes")?
        // A repair or a hint handoff sent into a partition holds the admin lock until this
        // passes: long enough for a digest pass or an 8 MiB import, no longer.
        .with_maintenance_timeout(MAINTENANCE_TIMEOUT.max(timeout)),
    );
    let opened = open::open_members(
        &args.cluster,
        &args.data_dir,
        &ids,
        params,
        Arc::clone(&backend) as Arc<dyn Backend>,
        |opts| {
            opts.coordinator_slot(slot as u8)
                .own_hints(me.clone())
                .replica_timeout(timeout)
                .background_repair(repair_interval(args.cluster.repair_interval))
                // The membership comes from the metadata raft (`node_meta`), not cluster.json.
                .external_topology(true)
                // Other coordinators mint versions too: a restart waits out its version
                // lease (`start_ready`) instead of running ahead of them.
                .other_coordinators(true)
        },
    )?;
    let cluster = Arc::new(opened.cluster);
    let replica = backend
        .local_replica()
        .context("the cluster did not open this node's own storage")?;
    // The static list until the metadata is applied; then its members (`node_meta`).
    let members = node_meta::Members::new(ids.iter().cloned());
    // The metadata raft, in `<data-dir>/meta/`, over the same connections. `open` replays the
    // snapshot and the log up to the saved committed index before it returns.
    let transport = Arc::new(node_meta::RemoteTransport::new(Arc::clone(&backend)));
    let raft = open_meta(args, runtime, slot as u64 + 1, &me, transport)?;
    let replayed = Arc::clone(&raft.watch().borrow());
    node_meta::check_uuid(&replayed.meta, id)?;
    let statics: Vec<node_meta::StaticMember> = peers
        .iter()
        .map(|p| {
            Ok(node_meta::StaticMember {
                id: p.id.clone(),
                client_addr: p.addr,
                cluster_addr: p.cluster_addr()?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let bootstrap =
        node_meta::static_bootstrap(&cluster, id, &args.cluster_name, vnodes, &statics)?;
    let follower = node_meta::Follower {
        cluster: Arc::clone(&cluster),
        local: Arc::clone(&replica),
        backend: Arc::clone(&backend),
        members: members.clone(),
        me: me.clone(),
    };
    // A restart: the epoch this node had applied is installed and fenced before the replica
    // server accepts anything (membership.md §2.6 step 1); a node never serves below it.
    follower.apply(&replayed)?;
    if replayed.meta.is_bootstrapped() {
        let _ = writeln!(
            std::io::stderr(),
            "kvstore: metadata replayed: epoch {}, log index {}",
            replayed.meta.epoch,
            replayed.last_log_id.map_or(0, |l| l.index)
        );
    }
    let replica_server = start_replica_server(
        args,
        identity,
        listen,
        tls,
        Arc::clone(&replica),
        runtime,
        &me,
    )?;
    raft.set_cluster_uuid(id);
    serve_meta(&replica_server, &raft, &members, &me);
    start_roles(
        args,
        runtime,
        follower,
        raft,
        replica_server,
        Some(bootstrap),
        opened.warnings,
    )
}

/// Opens node `node_id` joining the running cluster `seed` belongs to (`--join`,
/// membership.md §2.5): on a first start it asks `seed` (forwarded to the leader) to
/// register it and add it as a raft learner, and keeps the answer in
/// `<data-dir>/meta/joined`; a restart with that file asks nothing (it is a member) and dials
/// the members its replayed metadata names. It opens its storage with the coordinator slot
/// it was given, serves it to the other nodes (it holds no range until a change gives it
/// some), and catches up on the metadata before it serves clients.
///
/// # Errors
/// As [`open()`]; besides, a `--replication`/`--vnodes` the joined cluster does not have is
/// found once the metadata is applied (logged), and another cluster's uuid in a stored
/// registration is refused.
pub fn open_joiner(
    args: &ServeArgs,
    node_id: &str,
    seed: &Peer,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(NodeProcess, Vec<String>)> {
    let me = NodeId::new(node_id).context("--node-id")?;
    if args.cluster.sloppy_quorum {
        bail!("--sloppy-quorum is not supported with --node-id");
    }
    if me.as_str() == "meta" {
        bail!("the node id \"meta\" is reserved (the metadata lives in <data-dir>/meta/)");
    }
    if seed.id == me {
        bail!("--join names this node ({me}): give another member of the cluster");
    }
    let own = Peer {
        id: me.clone(),
        addr: SocketAddr::new(args.bind, args.port),
    };
    let listen = SocketAddr::new(args.bind, own.cluster_addr()?.port());
    let tls = args.tls_files().as_ref().map(load_tls).transpose()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    check_cluster_name(&args.data_dir, &args.cluster_name)?;
    let stored = kv_meta::Joined::load(&args.data_dir)?;
    let identity = kv_net::Identity::new(cluster_id(&args.cluster_name), me.as_str());
    let timeout = Duration::from_millis(args.replica_timeout);
    let local: Arc<dyn Backend> = Arc::new(KvNodeBackend::new(open::node_options(&args.cluster)));
    let mut peers_options = kv_net::PeersOptions::new().runtime(runtime.clone());
    if let Some(tls) = &tls {
        peers_options = peers_options.tls(tls.clone());
    }
    let backend = Arc::new(
        RemoteBackend::new(
            me.clone(),
            local,
            // A restart dials the members its replayed metadata names, not the seed.
            match stored {
                Some(_) => Vec::new(),
                None => vec![(seed.id.clone(), seed.cluster_addr()?)],
            },
            identity.clone(),
            peers_options,
            timeout,
        )
        .context("start the transport to the other nodes")?
        .with_maintenance_timeout(MAINTENANCE_TIMEOUT.max(timeout)),
    );
    let transport = Arc::new(node_meta::RemoteTransport::new(Arc::clone(&backend)));
    let joined = match stored {
        Some(joined) => {
            let _ = writeln!(
                std::io::stderr(),
                "kvstore: {me} joined the cluster {:032x} before (raft id {}, slot {}): --join \
                 ignored",
                joined.cluster_uuid,
                joined.raft_id,
                joined.slot
            );
            joined
        }
        None => {
            let joined = runtime.block_on(node_meta::join(
                transport.as_ref(),
                seed,
                &kv_meta::JoinRequest {
                    id: me.to_string(),
                    cluster_addr: listen.to_string(),
                    client_addr: own.addr.to_string(),
                    cluster_name: args.cluster_name.clone(),
                },
                Duration::from_secs(args.meta_catch_up_timeout),
            ))?;
            joined.save(&args.data_dir).with_context(|| {
                format!(
                    "keep the registration in {}",
                    args.data_dir.join("meta").display()
                )
            })?;
            let _ = writeln!(
                std::io::stderr(),
                "kvstore: {me} joined the cluster {:032x} through {}: raft id {}, slot {}",
                joined.cluster_uuid,
                seed.id,
                joined.raft_id,
                joined.slot
            );
            joined
        }
    };
    // The metadata first: the raft, on a replica server over this node's own storage
    // (opened alone: no ring routes to it yet), caught up until it names this node. The
    // cluster opens after, with the metadata's RF, vnodes and ring.
    let replica = backend
        .open(&me, &args.data_dir.join(me.as_str()))
        .context("open this node's storage")?;
    let members = node_meta::Members::anyone();
    let raft = open_meta(args, runtime, joined.raft_id, &me, transport)?;
    raft.set_cluster_uuid(joined.cluster_uuid);
    let replayed = Arc::clone(&raft.watch().borrow());
    node_meta::check_uuid(&replayed.meta, joined.cluster_uuid)?;
    add_member_peers(&backend, &replayed.meta, &me)?;
    let replica_server = start_replica_server(
        args,
        identity,
        listen,
        tls,
        Arc::clone(&replica),
        runtime,
        &me,
    )?;
    serve_meta(&replica_server, &raft, &members, &me);
    let catch_up = Duration::from_secs(args.meta_catch_up_timeout);
    runtime.block_on(node_meta::catch_up(&raft, catch_up));
    let applied = Arc::clone(&raft.watch().borrow());
    let meta = &applied.meta;
    if !meta.members.contains_key(me.as_str()) {
        bail!("the metadata caught up on does not name {me} as a member");
    }
    if let Some(rf) = args.cluster.replication
        && rf != meta.replication_factor
    {
        bail!(
            "--replication {rf}: the cluster joined has {}",
            meta.replication_factor
        );
    }
    if let Some(vnodes) = args.cluster.vnodes
        && vnodes != meta.vnodes
    {
        bail!("--vnodes {vnodes}: the cluster joined has {}", meta.vnodes);
    }
    // Every member's address, before the cluster opens handles to them.
    add_member_peers(&backend, meta, &me)?;
    // The ring it opens with is the metadata's members in raft order (the static ring, for a
    // cluster that never changed: the install below then has nothing to do); any later epoch
    // is installed by the follower.
    let mut ring: Vec<(u64, String)> = meta
        .ring_members()
        .iter()
        .filter_map(|m| meta.members.get(&m.id).map(|x| (x.raft_id, m.id.clone())))
        .collect();
    ring.sort();
    let ids: Vec<String> = ring.into_iter().map(|(_, id)| id).collect();
    let params = open::MemberParams {
        rf: meta.replication_factor,
        vnodes: meta.vnodes,
        warnings: Vec::new(),
    };
    let opened = open::open_members(
        &args.cluster,
        &args.data_dir,
        &ids,
        params,
        Arc::clone(&backend) as Arc<dyn Backend>,
        |opts| {
            opts.coordinator_slot(joined.slot)
                .own_hints(me.clone())
                .replica_timeout(timeout)
                .background_repair(repair_interval(args.cluster.repair_interval))
                .external_topology(true)
                .other_coordinators(true)
        },
    )?;
    let cluster = Arc::new(opened.cluster);
    let follower = node_meta::Follower {
        cluster: Arc::clone(&cluster),
        local: Arc::clone(&replica),
        backend: Arc::clone(&backend),
        members: members.clone(),
        me: me.clone(),
    };
    follower.apply(&applied)?;
    start_roles(
        args,
        runtime,
        follower,
        raft,
        replica_server,
        None,
        opened.warnings,
    )
}

/// Starts what runs beside the opened cluster, the same for a listed and a joining node:
/// the metadata follower (its own thread), the change driver, the peer watcher (a task) and
/// the `KVSTORE` commands of a node; clients are served once [`NodeProcess::start_ready`]
/// finds the metadata caught up.
fn start_roles(
    args: &ServeArgs,
    runtime: &tokio::runtime::Handle,
    follower: node_meta::Follower,
    raft: kv_meta::MetaRaft,
    replica_server: Arc<ReplicaServer>,
    bootstrap: Option<kv_meta::Command>,
    warnings: Vec<String>,
) -> anyhow::Result<(NodeProcess, Vec<String>)> {
    let (cluster, replica, backend, me) = (
        Arc::clone(&follower.cluster),
        Arc::clone(&follower.local),
        Arc::clone(&follower.backend),
        follower.me.clone(),
    );
    let follower_stop = Arc::new(AtomicBool::new(false));
    let follower_thread = follower.spawn(&raft, runtime.clone(), Arc::clone(&follower_stop))?;
    crate::node_change::ChangeRoles {
        raft: raft.clone(),
        runtime: runtime.clone(),
        replica: Arc::clone(&replica),
        peers: Arc::clone(backend.peers()),
        me: me.to_string(),
        stream_rate: args.stream_rate.unwrap_or_default(),
    }
    .start(&replica_server, Arc::clone(&follower_stop))
    .context("start the change driver")?;
    let watcher = watch(
        Arc::clone(&cluster),
        Arc::clone(&backend),
        Arc::clone(&replica_server),
        me,
        runtime,
    );
    let commands = Arc::new(crate::node_commands::NodeCommands::new(
        backend.peers(),
        args.enable_debug_faults,
        Some((raft.clone(), runtime.clone())),
    ));
    Ok((
        NodeProcess {
            cluster,
            replica_server: Some(replica_server),
            watcher: Some(watcher),
            local: replica,
            extension: Some(Arc::clone(&commands) as Arc<dyn kv_server::KvstoreExtension>),
            meta: Some(NodeMetaRun {
                raft,
                bootstrap,
                timeout: Duration::from_secs(args.meta_catch_up_timeout),
                follower: Some((follower_stop, follower_thread)),
                runtime: runtime.clone(),
                ready: commands.ready_flag(),
                ready_task: None,
            }),
        },
        warnings,
    ))
}
/// Opens the metadata raft in `<data-dir>/meta/` as raft node `raft_id`; it replays the
/// snapshot and the log up to the saved committed index before it returns.
fn open_meta(
    args: &ServeArgs,
    runtime: &tokio::runtime::Handle,
    raft_id: u64,
    me: &NodeId,
    transport: Arc<node_meta::RemoteTransport>,
) -> anyhow::Result<kv_meta::MetaRaft> {
    runtime
        .block_on(kv_meta::MetaRaft::open(
            &args.data_dir,
            raft_id,
            me.as_str(),
            kv_meta::meta_config(&args.cluster_name),
            transport,
        ))
        .with_context(|| {
            format!(
                "open the metadata in {}",
                args.data_dir.join("meta").display()
            )
        })
}

/// Serves this node's storage to the other nodes on `listen`: any node presenting the
/// cluster's id connects (a joiner is not a member yet); the member filter set by
/// [`serve_meta`] answers a non-member only the metadata's `Join`.
fn start_replica_server(
    args: &ServeArgs,
    identity: kv_net::Identity,
    listen: SocketAddr,
    tls: Option<kv_net::Tls>,
    replica: Arc<dyn kv_cluster::Replica>,
    runtime: &tokio::runtime::Handle,
    me: &NodeId,
) -> anyhow::Result<Arc<ReplicaServer>> {
    let mut server_options = kv_net::ServerOptions::new()
        .runtime(runtime.clone())
        .listen(listen)
        .peer_filter(kv_net::PeerFilter::new({
            let me = me.to_string();
            move |id: &str| id != me
        }));
    if let Some(tls) = tls {
        server_options = server_options.tls(tls);
    }
    // Under periodic sync a write never waits for an fsync and a read never blocks: both are
    // answered on the connection's task, saving two thread hops per replica request.
    let inline = matches!(args.cluster.sync.policy(), kv_wal::SyncPolicy::Periodic(_));
    let start = if inline {
        ReplicaServer::start_inline_data
    } else {
        ReplicaServer::start
    };
    let replica_server = start(identity, server_options, replica)
        .map(Arc::new)
        .with_context(|| format!("serve the storage node to the other nodes on {listen}"))?;
    let _ = writeln!(
        std::io::stderr(),
        "kvstore: node {me} serves its storage to the other nodes on {}{}",
        replica_server.local_addr(),
        if args.tls_files().is_some() {
            " (TLS, peers' certificates checked against --tls-ca)"
        } else {
            ""
        }
    );
    Ok(replica_server)
}

/// Answers the metadata's requests on the replica server: members get every request, a
/// non-member only `Join` and `Status`; a request from another cluster's uuid is logged
/// once per peer.
fn serve_meta(
    replica_server: &ReplicaServer,
    raft: &kv_meta::MetaRaft,
    members: &node_meta::Members,
    me: &NodeId,
) {
    replica_server.set_member_filter(Some(members.filter(me.as_str())));
    let service = raft.service();
    let (filter, refused) = (members.clone(), node_meta::UuidRefusals::default());
    let uuid_of = raft.clone();
    replica_server.set_meta_handler(Some(Arc::new(
        move |from: &kv_net::PeerInfo, body: bytes::Bytes| {
            refused.check(&from.node_id, uuid_of.cluster_uuid(), &body);
            service.handle_from(&from.node_id, filter.contains(&from.node_id), body)
        },
    )));
}

/// Adds every member of `meta` but `me` that `backend` has no address for.
fn add_member_peers(
    backend: &RemoteBackend,
    meta: &kv_meta::ClusterMeta,
    me: &NodeId,
) -> anyhow::Result<()> {
    let known: Vec<String> = backend
        .peers()
        .status()
        .into_iter()
        .map(|p| p.node_id)
        .collect();
    for (id, m) in meta.members.iter().filter(|(id, _)| **id != me.as_str()) {
        if known.contains(id) {
            continue;
        }
        let node = NodeId::new(id).with_context(|| format!("member {id:?}"))?;
        let addr: SocketAddr = m
            .cluster_addr
            .parse()
            .with_context(|| format!("member {id}'s address {:?}", m.cluster_addr))?;
        backend
            .add_peer(node, addr)
            .with_context(|| format!("add the peer {id}"))?;
    }
    Ok(())
}

/// Refuses a data directory of another cluster; writes the name on first start.
fn check_cluster_name(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join("cluster-name");
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim_end() == name => Ok(()),
        Ok(stored) => bail!(
            "the data directory {} belongs to the cluster {:?}, not {name:?} (--cluster-name)",
            dir.display(),
            stored.trim_end()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            kv_node::durable::write_file_atomic(&path, format!("{name}\n").as_bytes())
                .with_context(|| format!("write {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The peer watcher: a task on the node's runtime (no thread of its own).
struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// How often, at most, the watcher hands off the hints held for peers that stayed up.
const HAND_OFF_EVERY: Duration = Duration::from_secs(2);

/// How long, at most, such a handoff holds the admin gate.
const HAND_OFF_FOR: Duration = Duration::from_secs(2);

/// Every half second, looks at which peers are alive; a peer that was not and now is gets
/// its hints and a repair of its ranges; hints held for a peer that stayed up are handed
/// off every [`HAND_OFF_EVERY`]. A task on `runtime`: the catch-ups are
/// [`Cluster::catch_up_async`], which awaits the peers' answers and the admin gate, so a
/// peer that answers late (or never, until the maintenance timeout) holds no worker thread.
fn watch(
    cluster: Arc<Cluster>,
    backend: Arc<RemoteBackend>,
    server: Arc<ReplicaServer>,
    me: NodeId,
    runtime: &tokio::runtime::Handle,
) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let task = runtime.spawn(async move {
        let peers = || -> Vec<NodeId> {
            cluster
                .ring()
                .nodes()
                .filter(|id| **id != me)
                .cloned()
                .collect()
        };
        // Every peer counts as down until seen alive: this node may hold hints for it from
        // before a restart.
        let mut down: Vec<NodeId> = peers();
        // This node itself catches up once, when a peer is first alive (it may have been
        // down, however briefly: a restart quicker than the peers' heartbeats notice is no
        // down time to them).
        let mut caught_up = false;
        let mut log = Log::default();
        let mut refusals = Refusals::default();
        let mut last_hand_off = std::time::Instant::now();
        while !stopped.load(Ordering::Relaxed) {
            refusals.check(&backend, &server);
            let all = peers();
            // A joiner holds no range until a change gives it some: nothing to catch up.
            let routed = cluster.ring().nodes().any(|id| *id == me);
            if !caught_up && routed && all.iter().any(|id| !down.contains(id)) {
                match cluster.catch_up_async(me.as_str()).await {
                    Ok(_) => caught_up = true,
                    Err(e) => log.error(&me, &e),
                }
            }
            for id in all {
                let alive = backend.peers().is_alive(id.as_str());
                let was_down = down.contains(&id);
                if !alive && !was_down {
                    down.push(id);
                } else if alive && was_down {
                    let started = std::time::Instant::now();
                    match cluster.catch_up_async(id.as_str()).await {
                        Ok(r) => {
                            eprintln!(
                                "kvstore: {id} is back: {} hints handed off, {} keys repaired in {:?}",
                                r.hints_applied,
                                r.repair.keys_repaired,
                                started.elapsed()
                            );
                            down.retain(|d| *d != id);
                        }
                        Err(e) => log.error(&id, &e),
                    }
                }
            }
            // Hints for a peer that stayed up: a write's follow-up keeps one for a replica
            // that timed out, or refused the write's epoch as stale, after `W` was met (a
            // write acknowledged at `Mid` on a replica already at `Final`). The catch-up above
            // runs only for a peer that comes back, so these are handed off here; only on a
            // stable topology (the handoff holds the admin gate, which a change's epoch
            // installs need), and for at most `HAND_OFF_FOR` (a peer that stopped answering
            // but is not seen down yet; the handoff is idempotent and starts again).
            let stable = cluster.topology().is_some_and(|t| t.extra_write.is_none());
            let pending = stable
                && peers()
                    .iter()
                    .any(|id| !down.contains(id) && cluster.hints_pending_for(id.as_str()) > 0);
            if pending && last_hand_off.elapsed() >= HAND_OFF_EVERY {
                last_hand_off = std::time::Instant::now();
                // Past `HAND_OFF_FOR` it is dropped (and tried again at the next turn).
                if let Ok(Err(e)) =
                    tokio::time::timeout(HAND_OFF_FOR, cluster.hand_off_hints_async()).await
                {
                    log.error(&me, &e);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Watcher { stop, task }
}

impl Watcher {
    /// Stops the task and waits (at most `MAINTENANCE_TIMEOUT`) until it is gone, with its
    /// handle on the cluster. A catch-up in progress is dropped at its next await point:
    /// it is idempotent (last-writer-wins; a hint store is deleted only once handed off), so
    /// the next start does it again. Called from outside the runtime.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        let deadline = std::time::Instant::now() + MAINTENANCE_TIMEOUT;
        while !self.task.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The watcher's failures to catch a node up, each logged once until it changes (it is
/// retried every half second).
#[derive(Default)]
struct Log {
    last: std::collections::HashMap<NodeId, String>,
}

impl Log {
    fn error(&mut self, id: &NodeId, e: &kv_cluster::Error) {
        let text = e.chain();
        if self.last.get(id) != Some(&text) {
            eprintln!("kvstore: catching up {id}: {text}");
            self.last.insert(id.clone(), text);
        }
    }
}

/// A kind of refused handshake the watcher explains in the log: a piece of the text of
/// kv-net's error, and the likely cause.
struct Refusal {
    /// What the error text contains.
    says: &'static str,
    /// The likely cause, for the log line.
    cause: &'static str,
}

/// The refusals the watcher explains, first match wins.
const REFUSALS: [Refusal; 3] = [
    // `Error::ClusterMismatch`.
    Refusal {
        says: "belongs to cluster",
        cause: "the nodes were likely started with a different --cluster-name, or one runs a \
                build from before the cluster id covered the name alone",
    },
    // A failed TLS handshake, either side (kv-net's error text carries no more than the
    // step and the address).
    Refusal {
        says: "TLS handshake",
        cause: "a certificate was likely signed by another CA than the other side's \
                --tls-ca, does not name its node's id (checked on the certificate of the node \
                dialed), or has expired; or one side runs without TLS (every member needs \
                --tls-ca, --tls-cert and --tls-key, or none does)",
    },
    // A TLS ClientHello (a record of type 0x16, handshake) where a plain node expects the
    // peer protocol's magic (refused at its first wrong byte, so only the first is sure to
    // be there).
    Refusal {
        says: "bad magic [16, ",
        cause: "the peer speaks TLS and this node does not (every member needs --tls-ca, \
                --tls-cert and --tls-key, or none does)",
    },
];

/// The refusal `error` is, if the watcher explains it.
fn refusal(error: &str) -> Option<&'static Refusal> {
    REFUSALS.iter().find(|r| error.contains(r.says))
}

/// The handshakes refused for a cause an operator can fix (another cluster's id, TLS): one
/// log line naming the likely cause per peer and error (for connections this node makes),
/// and per kind at most once a minute while the refusal count grows (for connections it
/// accepts, whose text carries the caller's ephemeral port).
#[derive(Default)]
struct Refusals {
    dialed: std::collections::HashMap<String, String>,
    accepted: std::collections::HashMap<&'static str, (u64, std::time::Instant)>,
}

impl Refusals {
    fn check(&mut self, backend: &RemoteBackend, server: &ReplicaServer) {
        for peer in backend.peers().status() {
            let Some((e, kind)) = peer
                .last_error
                .and_then(|e| refusal(&e).map(|kind| (e, kind)))
            else {
                // Connected, or failing for another reason (down, say): the next refusal
                // is news, even with the text of the last one.
                self.dialed.remove(&peer.node_id);
                continue;
            };
            if self.dialed.get(&peer.node_id) != Some(&e) {
                eprintln!(
                    "kvstore: peer {} is refused: {e}: {}",
                    peer.node_id, kind.cause
                );
                self.dialed.insert(peer.node_id, e);
            }
        }
        let stats = server.stats();
        let Some(e) = stats.last_error else {
            return;
        };
        let Some(kind) = refusal(&e) else {
            return;
        };
        let quiet = self.accepted.get(kind.says).is_some_and(|(refused, at)| {
            *refused == stats.refused || at.elapsed() < Duration::from_secs(60)
        });
        if !quiet {
            eprintln!("kvstore: refused a peer's connection: {e}: {}", kind.cause);
            self.accepted
                .insert(kind.says, (stats.refused, std::time::Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sloppy_quorum_is_refused_for_a_node_process() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("n1");
        let args = crate::args::Args::try_parse_from([
            "kvstore",
            "serve",
            "--node-id",
            "n1",
            "--port",
            "7001",
            "--peers",
            "n1@127.0.0.1:7001,n2@127.0.0.1:7002,n3@127.0.0.1:7003",
            "--sloppy-quorum",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .unwrap();
        let Some(crate::args::Command::Serve(serve)) = args.command else {
            panic!("not serve");
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let peers = serve.peers.clone().unwrap();
        let err = open(&serve, "n1", &peers, rt.handle()).err().unwrap();
        assert!(format!("{err:#}").contains("--sloppy-quorum"), "{err:#}");
        assert!(!data.exists(), "the data directory was touched");
    }

    #[test]
    fn peers_parse_in_order() {
        let p = parse_peers("n1@127.0.0.1:7001, n2@127.0.0.1:7002,n3@127.0.0.1:7003").unwrap();
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n2", "n3"]);
        assert_eq!(p[1].cluster_addr().unwrap().port(), 17002);
    }

    #[test]
    fn bad_peer_lists_are_refused_with_the_entry_named() {
        for (list, says) in [
            ("n1127.0.0.1:7001", "expected id@host:port"),
            ("n1@127.0.0.1:7001,n1@127.0.0.1:7002", "listed twice"),
            ("n1@127.0.0.1:0", "fixed port"),
            ("", "empty"),
            ("n1@nowhere", "n1@nowhere"),
        ] {
            let e = parse_peers(list).unwrap_err();
            assert!(e.contains(says), "{list:?}: {e}");
        }
        let high = parse_peers("n1@127.0.0.1:60000").unwrap();
        assert!(high[0].cluster_addr().is_err());
    }

    #[test]
    fn cluster_uuids_are_stable_and_differ_by_anything_that_changes_the_ring() {
        let ids = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let abc = ids(&["a", "b", "c"]);
        let id = cluster_uuid("kvstore", &abc, 3, 100);
        assert_eq!(id, cluster_uuid("kvstore", &abc, 3, 100));
        for other in [
            cluster_uuid("kvstore2", &abc, 3, 100),
            cluster_uuid("kvstore", &ids(&["b", "a", "c"]), 3, 100),
            cluster_uuid("kvstore", &ids(&["a", "b", "d"]), 3, 100),
            cluster_uuid("kvstore", &ids(&["a", "b"]), 3, 100),
            cluster_uuid("kvstore", &abc, 2, 100),
            cluster_uuid("kvstore", &abc, 3, 64),
            // The lengths are part of the encoding: moving a byte between fields changes it.
            cluster_uuid("kvstore", &ids(&["ab", "", "c"]), 3, 100),
        ] {
            assert_ne!(id, other);
        }
        // Pinned: a node of another build must compute the same id.
        assert_eq!(cluster_uuid("kvstore", &abc, 3, 100), PINNED);
    }

    /// `cluster_uuid("kvstore", ["a", "b", "c"], 3, 100)`.
    const PINNED: u128 = 0x7840_8cd0_6be5_0ec0_218b_1ce0_b32e_3513;

    /// The handshake's id covers the name alone: a joiner computes it without the members.
    #[test]
    fn the_cluster_id_is_the_names_alone_and_pinned() {
        assert_eq!(cluster_id("kvstore"), cluster_id("kvstore"));
        assert_ne!(cluster_id("kvstore"), cluster_id("kvstore2"));
        assert_ne!(cluster_id(""), cluster_id("kvstore"));
        // Another build must compute the same id.
        assert_eq!(cluster_id("kvstore"), NAME_PINNED);
        // Never the uuid of a cluster of that name: the two are different things.
        let abc: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_ne!(cluster_id("kvstore"), cluster_uuid("kvstore", &abc, 3, 100));
    }

    /// `cluster_id("kvstore")`.
    const NAME_PINNED: u128 = 0x93dc_5efb_cf0f_72d3_21ce_c6f0_fcfb_a658;

    /// Regression guard: the watcher recognises refusals by kv-net's error texts; a change
    /// there must show here, not as a silent log.
    #[test]
    fn refusals_are_recognised_in_kv_nets_error_texts() {
        let addr: SocketAddr = "127.0.0.1:17001".parse().unwrap();
        let says = |e: kv_net::Error| refusal(&e.to_string()).map(|r| r.says);
        let mismatch = kv_net::Error::ClusterMismatch {
            addr,
            node: "n2".into(),
            expected: 1,
            found: 2,
        };
        assert_eq!(says(mismatch), Some("belongs to cluster"));
        let tls = kv_net::Error::Io {
            op: "TLS handshake with",
            addr,
            source: std::io::Error::other("invalid peer certificate"),
        };
        assert_eq!(says(tls), Some("TLS handshake"));
        let mut hello = [0u8; 8];
        hello[0] = 0x16;
        let plain = kv_net::Error::BadMagic { addr, found: hello };
        assert_eq!(says(plain), Some("bad magic [16, "));
        let garbage = kv_net::Error::BadMagic {
            addr,
            found: *b"GET / HT",
        };
        assert_eq!(says(garbage), None);
        let closed = kv_net::Error::ClosedDuringHandshake { addr };
        assert_eq!(says(closed), None);
    }

    fn tls_files(dir: &Path) -> (TlsFiles, TlsFiles) {
        use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for n in ["n1", "n2"] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![n.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.join(format!("{n}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{n}.key")), key.serialize_pem()).unwrap();
        }
        let files = |n: &str| TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{n}.pem")),
            key: dir.join(format!("{n}.key")),
        };
        (files("n1"), files("n2"))
    }

    #[test]
    fn tls_files_load_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (n1, n2) = tls_files(dir.path());
        load_tls(&n1).unwrap();
        let err = |files: &TlsFiles| format!("{:#}", load_tls(files).unwrap_err());
        // n2's key with n1's certificate.
        let mismatched = TlsFiles {
            key: n2.key.clone(),
            ..n1.clone()
        };
        let e = err(&mismatched);
        assert!(
            e.contains(&format!("--tls-key {}", n2.key.display())) && e.contains("--tls-cert"),
            "{e}"
        );
        // A CA file holding a block that is no certificate.
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(&TlsFiles {
            ca: bad.clone(),
            ..n1.clone()
        });
        assert!(e.starts_with(&format!("--tls-ca {}", bad.display())), "{e}");
        // A key file holding a certificate.
        let e = err(&TlsFiles {
            key: n1.cert.clone(),
            ..n1.clone()
        });
        assert!(
            e.starts_with(&format!(
                "--tls-key {}: no PEM-encoded private key",
                n1.cert.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_node_repairs_every_ten_minutes_unless_told_otherwise() {
        assert_eq!(repair_interval(None), Some(Duration::from_secs(600)));
        assert_eq!(repair_interval(Some(0)), None);
        assert_eq!(repair_interval(Some(5)), Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_data_directory_keeps_its_cluster_name() {
        let dir = tempfile::tempdir().unwrap();
        check_cluster_name(dir.path(), "a").unwrap();
        check_cluster_name(dir.path(), "a").unwrap();
        let e = check_cluster_name(dir.path(), "b").unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains("\"b\""), "{e}");
    }
}
