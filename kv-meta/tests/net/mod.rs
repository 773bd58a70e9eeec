//! Harness of the networked raft tests: metadata rafts over kv-remote's `ReplicaServer` and
//! `MetaClient` on loopback, one process, each node with its own server, transport and
//! directory, as a node process would have them.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_cluster::MemoryReplica;
use kv_meta::{BoxFuture, Command, MetaPeer, MetaRaft, MetaTransport, NewMember, TransportError};
use kv_net::{Identity, PeerInfo, Peers, PeersOptions, ServerOptions};
use kv_remote::{MetaClient, ReplicaPeers, ReplicaServer};

pub const CLUSTER: u128 = 0x6b76_6d65_7461_0000_0000_0000_0000_0001;
pub const LONG: Duration = Duration::from_secs(20);

/// kv-remote's `MetaClient` as a [`MetaTransport`]: what the node process plugs in.
pub struct RemoteTransport(pub MetaClient);

impl MetaTransport for RemoteTransport {
    fn call(
        &self,
        to: &MetaPeer,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<Result<Bytes, TransportError>> {
        let peer = to.id.clone();
        let answer = self.0.call(&to.id, body, timeout);
        Box::pin(async move {
            answer.await.map_err(|e| match e {
                kv_remote::Error::Transport(kv_net::Error::Timeout { .. }) => {
                    TransportError::Timeout { peer, timeout }
                }
                kv_remote::Error::Transport(e) => TransportError::Unreachable {
                    peer,
                    reason: e.to_string(),
                },
                e => TransportError::Failed {
                    peer,
                    reason: e.to_string(),
                },
            })
        })
    }
}

/// Runs `f` on a blocking thread: kv-net's servers and transports start and stop runtimes
/// of their own, which must not happen on an async worker.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// One node: its server and transport (kv-net), its metadata raft, its directory.
pub struct Node {
    pub id: String,
    pub raft_id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    server: Option<ReplicaServer>,
    peers: Option<Arc<ReplicaPeers>>,
    pub raft: Option<MetaRaft>,
}

impl Node {
    pub fn raft(&self) -> &MetaRaft {
        self.raft.as_ref().expect("the node is running")
    }

    pub fn peer(&self) -> MetaPeer {
        MetaPeer {
            raft_id: self.raft_id,
            id: self.id.clone(),
            cluster_addr: self.addr.to_string(),
        }
    }

    /// Binds the node's server (port 0 the first time, its own port after a restart).
    pub async fn listen(id: &str, raft_id: u64, dir: &Path, addr: Option<SocketAddr>) -> Node {
        let ident = id.to_string();
        let server = blocking(move || {
            let options = match addr {
                Some(a) => ServerOptions::new().listen(a),
                None => ServerOptions::new().listen("127.0.0.1:0".parse().unwrap()),
            };
            ReplicaServer::start(
                Identity::new(CLUSTER, &*ident),
                options,
                Arc::new(MemoryReplica::new(&ident).unwrap()),
            )
            .unwrap()
        })
        .await;
        Node {
            id: id.to_string(),
            raft_id,
            addr: server.local_addr(),
            dir: dir.to_path_buf(),
            server: Some(server),
            peers: None,
            raft: None,
        }
    }

    /// Starts the transport to `others` and the raft with `config`, and serves its meta
    /// requests.
    pub async fn start(&mut self, others: &[(String, SocketAddr)], config: openraft::Config) {
        self.connect(others).await;
        self.open(config).await;
    }

    /// Starts the node's transport to `others`.
    pub async fn connect(&mut self, others: &[(String, SocketAddr)]) {
        let (me, others) = (self.id.clone(), others.to_vec());
        let peers = blocking(move || {
            let options = PeersOptions::new()
                .heartbeat_interval(Duration::from_millis(100))
                .liveness_timeout(Duration::from_millis(800))
                .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100));
            let peers: ReplicaPeers = Peers::start(Identity::new(CLUSTER, &*me), options).unwrap();
            for (id, addr) in others.iter().filter(|(id, _)| *id != me) {
                peers.add_peer(id, *addr).unwrap();
            }
            Arc::new(peers)
        })
        .await;
        self.peers = Some(peers);
    }

    /// The node's transport as kv-meta sees it.
    pub fn transport(&self) -> Arc<RemoteTransport> {
        let peers = self.peers.as_ref().expect("connected");
        Arc::new(RemoteTransport(MetaClient::new(Arc::clone(peers))))
    }

    /// kv-net's view of which peers are up, for the voter reconciler.
    pub fn liveness(&self) -> kv_meta::Liveness {
        let peers = Arc::clone(self.peers.as_ref().expect("connected"));
        Arc::new(move |id: &str| peers.is_alive(id))
    }

    /// Adds a peer to the node's transport.
    pub async fn add_peer(&self, id: &str, addr: SocketAddr) {
        let peers = Arc::clone(self.peers.as_ref().expect("connected"));
        let id = id.to_string();
        blocking(move || peers.add_peer(&id, addr).unwrap()).await;
    }

    /// Opens the raft (as raft node `self.raft_id`) and serves its meta requests.
    pub async fn open(&mut self, config: openraft::Config) {
        let raft = MetaRaft::open(&self.dir, self.raft_id, &self.id, config, self.transport())
            .await
            .unwrap();
        let service = raft.service();
        self.server
            .as_ref()
            .unwrap()
            .set_meta_handler(Some(Arc::new(move |from: &PeerInfo, body: Bytes| {
                service.handle(&from.node_id, body)
            })));
        self.raft = Some(raft);
    }

    /// Stops everything: the raft (its log closed), the server (listener and connections)
    /// and the transport.
    pub async fn stop(&mut self) {
        if let Some(raft) = self.raft.take() {
            raft.shutdown().await.unwrap();
        }
        let (server, peers) = (self.server.take(), self.peers.take());
        blocking(move || {
            drop(server);
            drop(peers);
        })
        .await;
    }
}

impl Drop for Node {
    /// A failed test still closes the node's sockets; on a thread of its own, as kv-net's
    /// runtimes must not stop on an async worker.
    fn drop(&mut self) {
        let (server, peers) = (self.server.take(), self.peers.take());
        if server.is_some() || peers.is_some() {
            let _ = std::thread::spawn(move || drop((server, peers))).join();
        }
    }
}

/// `Bootstrap` of `ids` at `addrs`, rf 3, a few tokens each.
pub fn bootstrap_cmd(nodes: &[(String, SocketAddr)]) -> Command {
    Command::Bootstrap {
        uuid: CLUSTER,
        name: "test".into(),
        rf: nodes.len().min(3) as u32,
        vnodes: 2,
        members: nodes
            .iter()
            .enumerate()
            .map(|(i, (id, addr))| NewMember {
                id: id.clone(),
                cluster_addr: addr.to_string(),
                client_addr: format!("127.0.0.1:{}", 6400 + i),
                weight: 1.0,
                tokens: vec![(i as u64 + 1) * 1000, (i as u64 + 1) * 1000 + 500],
            })
            .collect(),
    }
}

/// Starts `n` nodes `n1..` in `root`, bootstraps them (every node at once, as processes do)
/// and returns them with the member list.
pub async fn cluster(
    root: &Path,
    n: usize,
    config: &openraft::Config,
) -> (Vec<Node>, Vec<(String, SocketAddr)>, Command) {
    let mut nodes = Vec::new();
    for i in 1..=n {
        let id = format!("n{i}");
        nodes.push(Node::listen(&id, i as u64, &root.join(&id), None).await);
    }
    let list: Vec<(String, SocketAddr)> = nodes.iter().map(|n| (n.id.clone(), n.addr)).collect();
    for node in &mut nodes {
        node.start(&list, config.clone()).await;
    }
    let cmd = bootstrap_cmd(&list);
    let tasks: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (raft, cmd) = (node.raft().clone(), cmd.clone());
            tokio::spawn(async move { raft.bootstrap(&cmd, LONG).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    (nodes, list, cmd)
}

/// The leader every running node agrees on, once they do.
pub async fn agreed_leader(nodes: &[&Node]) -> u64 {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let leaders: Vec<Option<u64>> = nodes.iter().map(|n| n.raft().status().leader).collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| *x == Some(*l))
            && nodes.iter().any(|n| n.raft_id == *l)
        {
            return *l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops every node that is running.
pub async fn stop_all(nodes: &mut [Node]) {
    for node in nodes {
        node.stop().await;
    }
}
