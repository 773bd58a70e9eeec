//! The command line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kv_cluster::Consistency;

/// A distributed key-value store: a guided demo (default), an interactive REPL (on a cluster
/// in this process, or on a server's with --connect), or a server speaking the Redis protocol
/// (`kvstore serve`).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kvstore",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// What to run instead of the demo or the REPL.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Open the interactive REPL instead of running the demo (reads commands from stdin when
    /// it is not a terminal).
    #[arg(long)]
    pub interactive: bool,

    /// Run the REPL as a client of a running `kvstore serve` at HOST:PORT instead of on a
    /// cluster in this process: the same commands (but `benchmark`), the same output.
    /// Implies --interactive.
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with_all = [
            "data_dir", "quick", "nodes", "replication", "vnodes", "cache_capacity", "sync",
            "read_consistency", "write_consistency", "sloppy_quorum", "repair_interval",
        ]
    )]
    pub connect: Option<String>,

    /// With --connect: the server's password (its --requirepass). Also read from the
    /// KVSTORE_AUTH environment variable, which keeps it out of the process list.
    #[arg(long, value_name = "PASS", requires = "connect")]
    pub password: Option<String>,

    /// With --connect: seconds to wait for a reply before giving up on the connection.
    /// Long administration commands (addnode, removenode, recover, repair, compact) wait
    /// as long as they run, as long as the server answers a progress check within this time.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        requires = "connect",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: u64,

    /// Where the cluster keeps its data. The REPL defaults to ./kvstore-data; the demo to a
    /// fresh temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How the cluster is built and how it reads and writes.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// A smaller demo (for tests).
    #[arg(long, hide = true)]
    pub quick: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Serve the cluster on the network, speaking the Redis protocol (redis-cli,
    /// redis-benchmark and Redis client libraries are its clients).
    #[command(long_about = SERVE_ABOUT)]
    Serve(ServeArgs),
}

const SERVE_ABOUT: &str = "\
Serve the cluster on the network, speaking the Redis protocol (RESP2 and RESP3): redis-cli,
redis-benchmark and Redis client libraries are its clients.

It opens the cluster as the REPL does (the same options, the same data directory), prints one
line when it is ready to accept connections (`kvstore ready to accept connections on
ADDR:PORT`, with the real port when --port 0 asks for any free one), and on SIGINT or SIGTERM
stops accepting, finishes the commands in flight, flushes and closes the cluster, and exits 0.

The default port is 7379, so that it does not collide with a local Redis on 6379. As Redis's
protected mode, it refuses to listen on an address other than loopback without a password.";

/// The default port of `kvstore serve` (Redis's 6379 is left to a local Redis).
pub const DEFAULT_PORT: u16 = 7379;

/// `kvstore serve`'s own options, then the cluster's.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("membership").args(["peers", "join"]).multiple(false)))]
pub struct ServeArgs {
    /// The address to listen on. Anything but loopback (127.0.0.0/8, ::1) needs a password
    /// (--requirepass), as Redis's protected mode.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,

    /// The TCP port; 0 asks for any free one (the ready line gives it).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Where the cluster keeps its data.
    #[arg(long, value_name = "DIR", default_value = crate::repl::DEFAULT_DIR)]
    pub data_dir: PathBuf,

    /// A password clients must give (AUTH, or HELLO with AUTH) before other commands; needed
    /// to listen on anything but loopback.
    #[arg(long, value_name = "PASS")]
    pub requirepass: Option<String>,

    /// Most clients connected at once; the next one gets `-ERR max number of clients
    /// reached`, as in Redis.
    #[arg(
        long,
        value_name = "N",
        default_value_t = kv_server::DEFAULT_MAX_CLIENTS,
        value_parser = parse_max_clients
    )]
    pub maxclients: usize,

    /// Threads serving clients and peers (the async runtime's workers). Default: one per
    /// core. Several nodes sharing a machine do better with fewer each (a 3-node cluster on
    /// 2 cores: 1), as every thread more is another context switch per request.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// This node's id in a cluster of processes (one process per node); needs --peers or
    /// --join. Without it, the whole cluster runs in this process.
    #[arg(long, value_name = "ID", requires = "membership")]
    pub node_id: Option<String>,

    /// Every member of a cluster of processes, this node included, as
    /// `id@host:port,...` (client addresses; each node's cluster port is its port + 10000),
    /// in the same order on every node: the ring is built from it. Needs --node-id.
    #[arg(long, value_name = "LIST", requires = "node_id", value_parser = crate::node::parse_peers)]
    pub peers: Option<std::vec::Vec<crate::node::Peer>>,

    /// Join a running cluster through one of its members, `id@host:port` (its client
    /// address, as in --peers; its cluster port is port + 10000): the node is registered in
    /// the cluster's metadata and becomes a raft learner, and keeps what it was given in
    /// `<data-dir>/meta/joined`. A restart with that file ignores --join (the node is a
    /// member). Exclusive with --peers; needs --node-id.
    #[arg(long, value_name = "ID@HOST:PORT", requires = "node_id", value_parser = crate::node::parse_seed)]
    pub join: Option<crate::node::Peer>,

    /// The cluster's name: written to the data directory on first start, and carried in
    /// every handshake between nodes (a node of another cluster is refused).
    #[arg(long, value_name = "NAME", default_value = "kvstore")]
    pub cluster_name: String,

    /// How long a coordinator waits for a replica's answer, in milliseconds, before counting
    /// it as not answering.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub replica_timeout: u64,

    /// How long a node waits, in seconds, for the cluster's metadata: for its bootstrap on
    /// a first start (the first node of --peers proposes it once a majority runs), and on
    /// every start for the leader's latest metadata before the client port opens (a line is
    /// logged each time this passes, and it keeps trying). Needs --node-id.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "node_id", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub meta_catch_up_timeout: u64,

    /// The rate this node streams ranges to other nodes at during a membership change, in
    /// keys/s and optionally bytes/s (keys and values), shared by all its streams: e.g.
    /// `50000` or `50000,10000000`; default unlimited. A rate committed with `KVSTORE CHANGE
    /// RATE <keys/s|unlimited>` (on any node) overrides this flag on every node once set.
    /// Needs --node-id.
    #[arg(
        long,
        value_name = "KEYS_PER_S[,BYTES_PER_S]",
        requires = "node_id",
        value_parser = crate::node_rate::parse_rate
    )]
    pub stream_rate: Option<kv_cluster::StreamRate>,

    /// Accept `KVSTORE FAULT ...` (drop, delay, duplicate or partition this node's messages
    /// to a peer): for tests and drills, never in production. Needs --node-id.
    #[arg(long, requires = "node_id")]
    pub enable_debug_faults: bool,

    /// TLS on the cluster port, with mutual authentication: the cluster CA's certificate
    /// (PEM). A node accepts only peers whose certificate this CA signed, and checks that a
    /// peer it dials presents a certificate naming that peer's node id. Needs --tls-cert,
    /// --tls-key and --node-id; every member needs them (a node without TLS is refused). The
    /// client (Redis protocol) port stays plain.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["node_id", "tls_cert", "tls_key"],
        help_heading = "TLS between nodes"
    )]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate chain (PEM), signed by the --tls-ca CA, naming the node id
    /// (--node-id) as a DNS subject alternative name. Needs --tls-ca and --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["node_id", "tls_ca", "tls_key"],
        help_heading = "TLS between nodes"
    )]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM: PKCS#8, PKCS#1 or SEC1), the key of --tls-cert. Needs
    /// --tls-ca and --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["node_id", "tls_ca", "tls_cert"],
        help_heading = "TLS between nodes"
    )]
    pub tls_key: Option<PathBuf>,

    /// How the cluster is built and how it reads and writes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The files of `--tls-ca`, `--tls-cert` and `--tls-key` (clap lets through all three or
/// none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

impl ServeArgs {
    /// The TLS files, when the three flags are given.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

fn parse_max_clients(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least one client must be allowed".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The cluster's options, shared by the demo, the REPL and `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Nodes of a new cluster (node1..nodeN) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub nodes: Option<u32>,

    /// Replication factor of a new cluster [default: 3]
    #[arg(long, value_name = "RF", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub replication: Option<u32>,

    /// Virtual nodes per node of a new cluster [default: 100]
    #[arg(long, value_name = "V", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vnodes: Option<u32>,

    /// Cache entries per node.
    #[arg(long, value_name = "C", default_value_t = 1000)]
    pub cache_capacity: u64,

    /// When the write-ahead logs are flushed to disk.
    #[arg(long, value_enum, default_value_t = SyncMode::Periodic)]
    pub sync: SyncMode,

    /// Replicas that must answer a read: one, quorum or all.
    #[arg(long, value_name = "LEVEL", default_value = "quorum")]
    pub read_consistency: Consistency,

    /// Replicas that must acknowledge a write: one, quorum or all.
    #[arg(long, value_name = "LEVEL", default_value = "quorum")]
    pub write_consistency: Consistency,

    /// Sloppy quorum (as Dynamo): while replicas are down, a hint kept for one on another
    /// live node counts towards the write consistency level.
    #[arg(long)]
    pub sloppy_quorum: bool,

    /// Run anti-entropy repair in the background, this many seconds after the last round
    /// finished; 0 turns it off. Default: off for a cluster in this process, 600 for a node
    /// of a cluster of processes (--node-id).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400 * 365))]
    pub repair_interval: Option<u64>,
}

/// `--sync`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write is on disk before it is acknowledged (group commit).
    Always,
    /// Flushed every second in the background (a crash of the process loses nothing).
    Periodic,
    /// The operating system decides.
    Never,
}

impl SyncMode {
    /// The log's policy.
    pub fn policy(self) -> kv_wal::SyncPolicy {
        match self {
            SyncMode::Always => kv_wal::SyncPolicy::Always,
            SyncMode::Periodic => kv_wal::SyncPolicy::Periodic(std::time::Duration::from_secs(1)),
            SyncMode::Never => kv_wal::SyncPolicy::Never,
        }
    }
}

/// Defaults for a new cluster.
pub const DEFAULT_NODES: u32 = 3;
/// Default replication factor.
pub const DEFAULT_RF: u32 = 3;
/// Default virtual nodes per node.
pub const DEFAULT_VNODES: u32 = 100;

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn serve_takes_the_cluster_options_after_it() {
        let args = Args::try_parse_from([
            "kvstore",
            "serve",
            "--port",
            "0",
            "--nodes",
            "5",
            "--replication",
            "2",
            "--sync",
            "always",
            "--write-consistency",
            "all",
        ])
        .unwrap();
        let Some(Command::Serve(serve)) = args.command else {
            panic!("not serve: {args:?}");
        };
        assert_eq!(serve.port, 0);
        assert_eq!(serve.cluster.nodes, Some(5));
        assert_eq!(serve.cluster.replication, Some(2));
        assert_eq!(serve.cluster.sync, SyncMode::Always);
        assert_eq!(serve.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(serve.data_dir, PathBuf::from("kvstore-data"));
    }

    #[test]
    fn serve_defaults_to_loopback_on_7379() {
        let args = Args::try_parse_from(["kvstore", "serve"]).unwrap();
        let Some(Command::Serve(serve)) = args.command else {
            panic!("not serve: {args:?}");
        };
        assert_eq!(
            (serve.bind, serve.port),
            ("127.0.0.1".parse().unwrap(), 7379)
        );
        assert_eq!(serve.maxclients, kv_server::DEFAULT_MAX_CLIENTS);
        assert_eq!(serve.requirepass, None);
        assert_eq!(serve.threads, None);
    }

    #[test]
    fn serve_threads_is_a_positive_count() {
        let serve = |n: &str| Args::try_parse_from(["kvstore", "serve", "--threads", n]);
        let Ok(Args {
            command: Some(Command::Serve(s)),
            ..
        }) = serve("1")
        else {
            panic!("--threads 1 refused");
        };
        assert_eq!(s.threads, Some(1));
        for bad in ["0", "-1", "many", "5000"] {
            assert!(serve(bad).is_err(), "--threads {bad} accepted");
        }
    }

    #[test]
    fn repl_flags_before_serve_are_refused() {
        assert!(Args::try_parse_from(["kvstore", "--interactive", "serve"]).is_err());
        assert!(Args::try_parse_from(["kvstore", "--nodes", "5", "serve"]).is_err());
    }

    #[test]
    fn connect_takes_no_cluster_options() {
        let args =
            Args::try_parse_from(["kvstore", "--connect", "127.0.0.1:7379", "--password", "p"])
                .unwrap();
        assert_eq!(args.connect.as_deref(), Some("127.0.0.1:7379"));
        assert_eq!(args.password.as_deref(), Some("p"));
        assert_eq!(args.timeout, 30);
        for extra in [
            &["--data-dir", "d"][..],
            &["--nodes", "5"],
            &["--sync", "always"],
            &["--sloppy-quorum"],
        ] {
            let mut argv = vec!["kvstore", "--connect", "h:1"];
            argv.extend_from_slice(extra);
            assert!(Args::try_parse_from(&argv).is_err(), "{extra:?}");
        }
        assert!(Args::try_parse_from(["kvstore", "--password", "p"]).is_err());
        assert!(Args::try_parse_from(["kvstore", "--timeout", "5"]).is_err());
        assert!(Args::try_parse_from(["kvstore", "--connect", "h:1", "--timeout", "0"]).is_err());
        assert!(Args::try_parse_from(["kvstore", "--connect", "h:1", "serve"]).is_err());
    }

    #[test]
    fn join_names_one_member_and_excludes_peers() {
        let serve = |extra: &[&str]| {
            let mut argv = vec!["kvstore", "serve"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        let args = serve(&["--node-id", "n4", "--join", "n1@127.0.0.1:7001"]).unwrap();
        let Some(Command::Serve(s)) = args.command else {
            panic!("not serve: {args:?}");
        };
        let seed = s.join.unwrap();
        assert_eq!(seed.id.as_str(), "n1");
        assert_eq!(seed.addr.port(), 7001);
        // Exclusive with --peers; needs --node-id; one member, named.
        let peers = ["--peers", "n1@127.0.0.1:7001"];
        let join = ["--join", "n1@127.0.0.1:7001"];
        let both: Vec<&str> = ["--node-id", "n4"]
            .iter()
            .chain(&peers)
            .chain(&join)
            .copied()
            .collect();
        assert!(serve(&both).is_err());
        assert!(serve(&join).is_err());
        assert!(
            serve(&["--node-id", "n4"]).is_err(),
            "a node id needs --peers or --join"
        );
        for bad in [
            "127.0.0.1:7001",
            "n1@127.0.0.1:7001,n2@127.0.0.1:7002",
            "n1@",
        ] {
            assert!(serve(&["--node-id", "n4", "--join", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_takes_all_three_files_and_a_node_id() {
        let node = [
            "kvstore",
            "serve",
            "--node-id",
            "n1",
            "--peers",
            "n1@127.0.0.1:7001",
        ];
        let tls = [
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "n1.pem",
            "--tls-key",
            "n1.key",
        ];
        let args = Args::try_parse_from(node.iter().chain(&tls)).unwrap();
        let Some(Command::Serve(serve)) = args.command else {
            panic!("not serve: {args:?}");
        };
        assert_eq!(
            serve.tls_files(),
            Some(TlsFiles {
                ca: "ca.pem".into(),
                cert: "n1.pem".into(),
                key: "n1.key".into(),
            })
        );
        let plain = Args::try_parse_from(node).unwrap();
        let Some(Command::Serve(plain)) = plain.command else {
            panic!("not serve");
        };
        assert_eq!(plain.tls_files(), None);
        // Any one or two of the three are refused, naming a missing one.
        for (give, missing) in [
            (&tls[0..2], "--tls-cert"),
            (&tls[2..4], "--tls-ca"),
            (&tls[4..6], "--tls-ca"),
            (&tls[0..4], "--tls-key"),
            (&tls[2..6], "--tls-ca"),
        ] {
            let err = Args::try_parse_from(node.iter().chain(give)).unwrap_err();
            assert!(err.to_string().contains(missing), "{give:?}: {err}");
        }
        // Only for a node of a cluster of processes.
        let err = Args::try_parse_from(["kvstore", "serve"].iter().chain(&tls)).unwrap_err();
        assert!(err.to_string().contains("--node-id"), "{err}");
    }

    #[test]
    fn zero_max_clients_is_refused() {
        let err = Args::try_parse_from(["kvstore", "serve", "--maxclients", "0"]).unwrap_err();
        assert!(err.to_string().contains("at least one client"), "{err}");
    }
}
