//! TLS between the nodes of a cluster of processes (`--tls-ca`, `--tls-cert`, `--tls-key`),
//! with certificates made here with rcgen: a cluster CA, one certificate per node naming
//! its node id, and a second, foreign CA.
//!
//! - three TLS nodes serve writes and reads at quorum through every node;
//! - a node whose certificate the foreign CA signed is refused by the others (a log line on
//!   them) and cannot reach quorum through them, while they serve on; restarted with a
//!   certificate of the cluster CA it joins;
//! - a node without TLS is refused the same way, and itself logs that its peers speak TLS;
//! - flags given in part or without --node-id, and files missing, unreadable, of the wrong
//!   kind, garbage or not going together, stop the server at start with a message naming
//!   the flag and the file, exit non-zero, no panic, the data directory untouched.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use common::{ONE_CLUSTER, Served, free_port_pair};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis::Commands as _;

/// A certificate authority: its certificate file and what signs with it.
struct Ca {
    pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA, its certificate written to `dir/<name>.pem`.
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `node` (its id as a DNS name, for both ends of a connection),
    /// signed by this CA: written to `dir/<file>.pem` and its key to `dir/<file>.key`.
    fn node_cert(&self, dir: &Path, node: &str, file: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![node.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// The `--tls-*` flags of a node trusting `ca`, with its certificate and key.
fn tls_flags(ca: &Path, (cert, key): &(PathBuf, PathBuf)) -> Vec<String> {
    [
        "--tls-ca".into(),
        ca.display().to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
    .into()
}

/// Three members' ports and directories, a cluster CA with a certificate per member, and
/// the processes while they run.
struct Cluster {
    _one: MutexGuard<'static, ()>,
    root: tempfile::TempDir,
    ports: Vec<u16>,
    ca: Ca,
    certs: Vec<(PathBuf, PathBuf)>,
    running: Vec<Option<Served>>,
}

impl Cluster {
    /// The members and their certificates; nothing started.
    fn new() -> Cluster {
        // A test that failed while holding the lock poisons it; the next one may still run.
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        let root = common::data_dir();
        let ca = Ca::new(root.path(), "cluster-ca");
        let certs = (1..=3)
            .map(|i| ca.node_cert(root.path(), &format!("n{i}"), &format!("n{i}")))
            .collect();
        Cluster {
            _one: one,
            ports: (0..3).map(|_| free_port_pair()).collect(),
            root,
            ca,
            certs,
            running: vec![None, None, None],
        }
    }

    /// The TLS flags of member `i` with its own certificate of the cluster CA.
    fn tls(&self, i: usize) -> Vec<String> {
        tls_flags(&self.ca.pem, &self.certs[i])
    }

    /// Starts member `i` with `extra` (its TLS flags, or none) on top of the membership
    /// flags, replacing (and killing) a running one.
    fn start(&mut self, i: usize, extra: &[String]) {
        self.running[i] = None;
        let args = common::member_args(i, &self.ports, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dir = self.root.path().join(format!("n{}", i + 1));
        self.running[i] = Some(Served::start(&dir, &args));
    }

    fn node(&self, i: usize) -> &Served {
        self.running[i].as_ref().expect("node running")
    }
}

/// Waits until a write and a read at quorum through `node` succeed (its peers have
/// connected: a node reconnects with backoff, so one started before its peers listened may
/// take a few seconds).
fn wait_serving(node: &Served, what: &str) -> redis::Connection {
    let mut c = node.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = c
            .set::<_, _, ()>("serving?", what)
            .and_then(|()| c.get::<_, Option<String>>("serving?"));
        match probe {
            Ok(_) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what} never served: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits (at most 30 s) for `node`'s stderr to hold every one of `needles`; gives it.
fn wait_log(node: &Served, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = node.stderr_so_far();
        if needles.iter().all(|n| log.contains(n)) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needles:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `node` cannot reach quorum: for 2 s, every write and every read through it fails
/// (it is a replica of every key with RF 3 of 3 nodes, and needs one other).
fn assert_no_quorum_through(node: &Served) {
    let mut c = node.client();
    let until = Instant::now() + Duration::from_secs(2);
    let mut tries = 0;
    while Instant::now() < until {
        let set = c.set::<_, _, ()>(format!("cut-off-{tries}"), "v");
        assert!(set.is_err(), "a write through the cut-off node succeeded");
        let get = c.get::<_, Option<String>>("serving?");
        assert!(
            get.is_err(),
            "a read through the cut-off node succeeded: {get:?}"
        );
        tries += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tries >= 2, "only {tries} tries in 2 s");
}

#[test]
fn a_tls_cluster_serves_quorum_writes_and_reads_through_every_node() {
    let mut cluster = Cluster::new();
    for i in 0..3 {
        let tls = cluster.tls(i);
        cluster.start(i, &tls);
    }
    for i in 0..3 {
        wait_log(
            cluster.node(i),
            &["serves its storage to the other nodes on", "(TLS"],
        );
    }
    let mut c: Vec<redis::Connection> = (0..3)
        .map(|i| wait_serving(cluster.node(i), &format!("n{}", i + 1)))
        .collect();
    // Keys written through each node, at quorum, read at quorum through every node (with
    // RF 3, W = R = 2 of three replicas, so each read reaches a replica the write did).
    for (i, conn) in c.iter_mut().enumerate() {
        for k in 0..20 {
            conn.set::<_, _, ()>(format!("k{i}-{k}"), format!("v{i}-{k}"))
                .unwrap();
        }
    }
    for (j, conn) in c.iter_mut().enumerate() {
        for i in 0..3 {
            for k in 0..20 {
                let got: Option<String> = conn.get(format!("k{i}-{k}")).unwrap();
                assert_eq!(
                    got.as_deref(),
                    Some(format!("v{i}-{k}").as_str()),
                    "k{i}-{k} written through n{}, read through n{}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
    // Every member sees each other one up (heartbeats over TLS).
    for (i, conn) in c.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes: String = redis::cmd("KVSTORE").arg("NODES").query(conn).unwrap();
            let all_listed = ["n1", "n2", "n3"]
                .iter()
                .all(|id| nodes.contains(&format!("Node: {id}")));
            if all_listed && !nodes.contains("(down") && !nodes.contains("(unreachable") {
                break;
            }
            assert!(Instant::now() < deadline, "through n{}: {nodes}", i + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for i in 0..3 {
        let log = cluster.node(i).stderr_so_far();
        assert!(
            !log.contains("is refused") && !log.contains("refused a peer"),
            "{log}"
        );
    }
}

#[test]
fn a_node_signed_by_another_ca_is_refused_until_it_has_a_certificate_of_the_cluster_ca() {
    let mut cluster = Cluster::new();
    for i in 0..2 {
        let tls = cluster.tls(i);
        cluster.start(i, &tls);
    }
    // n3 trusts the cluster's CA but its own certificate is a foreign CA's.
    let foreign = Ca::new(cluster.root.path(), "foreign-ca");
    let rogue = foreign.node_cert(cluster.root.path(), "n3", "n3-foreign");
    cluster.start(2, &tls_flags(&cluster.ca.pem, &rogue));
    let mut c1 = wait_serving(cluster.node(0), "n1");
    wait_serving(cluster.node(1), "n2");
    // Both sides of the refusal on n1: n3's connections to it, and its own to n3 (whose
    // certificate it does not trust either).
    for i in 0..2 {
        wait_log(
            cluster.node(i),
            &[
                "kvstore: refused a peer's connection: TLS handshake",
                "kvstore: peer n3 is refused: TLS handshake",
                "signed by another CA than the other side's --tls-ca",
            ],
        );
    }
    assert_no_quorum_through(cluster.node(2));
    // The two members serve on at quorum meanwhile.
    c1.set::<_, _, ()>("while-n3-is-refused", "v").unwrap();
    assert_eq!(
        c1.get::<_, Option<String>>("while-n3-is-refused")
            .unwrap()
            .as_deref(),
        Some("v")
    );
    // The same node, the same directory, a certificate of the cluster CA: it joins (so the
    // certificate was the reason), and reads what was written while it was refused.
    let tls = cluster.tls(2);
    cluster.start(2, &tls);
    let mut c3 = wait_serving(cluster.node(2), "n3");
    assert_eq!(
        c3.get::<_, Option<String>>("while-n3-is-refused")
            .unwrap()
            .as_deref(),
        Some("v")
    );
}

#[test]
fn a_node_without_tls_is_refused_by_tls_nodes() {
    let mut cluster = Cluster::new();
    for i in 0..2 {
        let tls = cluster.tls(i);
        cluster.start(i, &tls);
    }
    cluster.start(2, &[]);
    let mut c1 = wait_serving(cluster.node(0), "n1");
    for i in 0..2 {
        wait_log(
            cluster.node(i),
            &[
                "kvstore: refused a peer's connection: TLS handshake",
                "kvstore: peer n3 is refused: TLS handshake",
                "one side runs without TLS",
            ],
        );
    }
    // The plain node sees TLS where it expects the peer protocol, and says so.
    wait_log(
        cluster.node(2),
        &[
            "refused a peer's connection: bad magic",
            "the peer speaks TLS and this node does not",
        ],
    );
    assert_no_quorum_through(cluster.node(2));
    c1.set::<_, _, ()>("k", "v").unwrap();
    assert_eq!(
        c1.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v")
    );
}

/// Runs `kvstore serve` as node n1 of a one-member list with `tls` (and the port the list
/// gives), expecting it to exit before it is ready; gives its stderr.
fn refused_at_start(root: &Path, port: u16, tls: &[String]) -> String {
    let port_s = port.to_string();
    let peers = format!("n1@127.0.0.1:{port}");
    let mut args: Vec<&str> = vec!["--port", &port_s, "--node-id", "n1", "--peers", &peers];
    args.extend(tls.iter().map(String::as_str));
    // A directory that does not exist: a refused start must not create it.
    let dir = root.join("never-created");
    match Served::try_start(&dir, &args) {
        Ok(_) => panic!("started with {tls:?}"),
        Err(refused) => {
            assert!(!refused.status.success(), "{refused:?}");
            assert!(
                !refused.stderr.contains("panicked"),
                "{tls:?}: {}",
                refused.stderr
            );
            assert!(!dir.exists(), "{tls:?} created the data directory");
            refused.stderr
        }
    }
}

#[test]
fn bad_tls_flags_and_files_stop_the_server_with_the_file_named() {
    let root = common::data_dir();
    let dir = root.path();
    let ca = Ca::new(dir, "ca");
    let n1 = ca.node_cert(dir, "n1", "n1");
    let other = ca.node_cert(dir, "n1", "n1-other");
    let port = free_port_pair();
    let s = |p: &Path| p.display().to_string();

    // Flags in part, or without a node id: clap's usage error (exit 2) names what lacks.
    for (flags, says) in [
        (vec!["--tls-ca", "ca.pem"], "--tls-cert"),
        (
            vec!["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            "--tls-ca",
        ),
        (vec!["--tls-ca", "a", "--tls-cert", "b"], "--tls-key"),
    ] {
        let flags: Vec<String> = flags.into_iter().map(String::from).collect();
        let err = refused_at_start(dir, port, &flags);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    let all = tls_flags(&ca.pem, &n1);
    let alone = Served::try_start(
        &dir.join("never-created"),
        &all.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let alone = alone
        .err()
        .expect("TLS flags without --node-id were accepted");
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    assert!(alone.stderr.contains("--node-id"), "{}", alone.stderr);

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    // A CERTIFICATE block whose contents are not a certificate.
    let bad_block = dir.join("bad-block.pem");
    std::fs::write(
        &bad_block,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let a_dir = dir.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let huge = dir.join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 2 << 20]).unwrap();
    let (cert, key) = (&n1.0, &n1.1);
    for ((ca_f, cert_f, key_f), flag, names, says) in [
        (
            (&missing, cert, key),
            "--tls-ca",
            &missing,
            "cannot open the file",
        ),
        (
            (&ca.pem, &missing, key),
            "--tls-cert",
            &missing,
            "cannot open",
        ),
        (
            (&ca.pem, cert, &missing),
            "--tls-key",
            &missing,
            "cannot open",
        ),
        ((&a_dir, cert, key), "--tls-ca", &a_dir, "cannot read"),
        ((&huge, cert, key), "--tls-ca", &huge, "larger than"),
        (
            (&garbage, cert, key),
            "--tls-ca",
            &garbage,
            "no PEM-encoded certificate",
        ),
        (
            (&ca.pem, &garbage, key),
            "--tls-cert",
            &garbage,
            "no PEM-encoded certificate",
        ),
        (
            (&ca.pem, cert, &garbage),
            "--tls-key",
            &garbage,
            "no PEM-encoded private key",
        ),
        // The key where the certificate goes, and the other way round.
        (
            (&ca.pem, key, cert),
            "--tls-cert",
            key,
            "no PEM-encoded certificate",
        ),
        (
            (&bad_block, cert, key),
            "--tls-ca",
            &bad_block,
            "CA certificate",
        ),
        ((&ca.pem, &bad_block, key), "--tls-cert", &bad_block, "TLS"),
        // A certificate with another certificate's key.
        (
            (&ca.pem, cert, &other.1),
            "--tls-key",
            &other.1,
            "--tls-cert",
        ),
    ] {
        let flags = tls_flags(ca_f, &(cert_f.clone(), key_f.clone()));
        let err = refused_at_start(dir, port, &flags);
        let named = format!("{flag} {}", s(names));
        assert!(
            err.contains(&named) && err.contains(says),
            "{flags:?}: expected {named:?} and {says:?} in:\n{err}"
        );
    }
}
