//! The guided demo: every feature, step by step, in under a minute; one function per step.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use kv_cluster::{ChangeSummary, Cluster, Consistency};
use kv_ring::token;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::args::Args;
use crate::bench::BenchArgs;
use crate::cmd::redistribution::report;
use crate::output::{Style, WriteFailed};
use crate::session::{Session, Target};
use crate::{bench, cmd, open};

/// `println!` that returns the error of a failed write instead of panicking: when stdout is
/// gone (`kvstore | head`) the demo ends there, quietly ([`crate::output::is_closed`]).
macro_rules! say {
    ($($arg:tt)*) => {{
        writeln!(std::io::stdout(), $($arg)*).map_err(WriteFailed::stdout)?
    }};
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "  {what} {{bar:30}} {{pos}}/{{len}} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

fn key(i: usize) -> String {
    format!("user:{i:06}")
}

fn value(i: usize, round: usize) -> String {
    format!("profile {i} v{round}")
}

/// The first `node<N>` not yet in the cluster (a `--data-dir` may hold a bigger one).
fn fresh_id(cluster: &kv_cluster::Cluster) -> String {
    let taken: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
    (1..)
        .map(|i| format!("node{i}"))
        .find(|id| !taken.contains(id))
        .unwrap_or_else(|| "node-demo".into())
}

fn step(s: Style, n: usize, title: &str) -> anyhow::Result<()> {
    say!();
    say!("{}", s.heading(format!("Step {n}: {title}")));
    Ok(())
}

/// How many of the demo's keys would move under naive `hash % N` placement when `from` nodes
/// become `to`.
fn naive_moves(keys: usize, from: u64, to: u64) -> usize {
    (0..keys)
        .filter(|&i| {
            let t = token(key(i).as_bytes());
            t % from != t % to
        })
        .count()
}

fn print_change(s: Style, summary: &ChangeSummary, keys: usize, rf: usize) -> anyhow::Result<()> {
    for l in report(summary, s) {
        say!("{l}");
    }
    say!(
        "  {} copies moved of the {} stored ({:.1}%), in {:.0?} (ring epoch {} -> {})",
        summary.keys_moved,
        keys * rf,
        summary.keys_moved as f64 * 100.0 / (keys * rf).max(1) as f64,
        summary.elapsed,
        summary.from_epoch,
        summary.to_epoch
    );
    Ok(())
}

/// Runs the demo.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let s = Style::detect();
    let started = Instant::now();
    let keys = if args.quick { 2_000 } else { 20_000 };
    let temp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("create a temporary directory")?;
            temp.path().to_owned()
        }
    };
    say!("{}", s.heading("kvstore guided demo"));
    say!("Data directory: {}", dir.display());

    let session = initialisation(args, &dir, s)?;
    population(&session, keys)?;
    distribution(&session)?;
    let added = adding_a_node(&session, keys)?;
    removing_a_node(&session, keys, &added)?;
    zero_downtime(&session, keys)?;
    node_failure(&session, keys)?;
    let session = crash_recovery(session, args, &dir, keys)?;
    benchmark(&session, args.quick)?;

    say!();
    say!(
        "{}",
        s.ok(format!("Demo complete in {:.1?}", started.elapsed()))
    );
    into_cluster(session)?
        .close()
        .context("close the cluster")?;
    Ok(())
}

/// The demo's cluster: the demo always runs it in this process.
fn cluster(session: &Session) -> anyhow::Result<&Cluster> {
    match &session.target {
        Target::Local(cluster) => Ok(cluster),
        Target::Remote(_) => bail!("the demo runs on a cluster in this process"),
    }
}

/// [`cluster`], taken out of the session.
fn into_cluster(session: Session) -> anyhow::Result<Cluster> {
    match session.target {
        Target::Local(cluster) => Ok(cluster),
        Target::Remote(_) => bail!("the demo runs on a cluster in this process"),
    }
}

/// Step 1: the cluster opens (or is created) in `dir`.
fn initialisation(args: &Args, dir: &Path, s: Style) -> anyhow::Result<Session> {
    step(s, 1, "Cluster initialisation")?;
    let opened = open::open(&args.cluster, dir)?;
    for w in &opened.warnings {
        writeln!(std::io::stderr(), "{w}").map_err(WriteFailed::stderr)?;
    }
    let session = Session {
        target: Target::Local(opened.cluster),
        style: s,
    };
    let cluster = cluster(&session)?;
    say!(
        "{} nodes, replication factor {}, consistent hashing with virtual nodes",
        cluster.nodes().len(),
        cluster.replication_factor()
    );
    show(&session, "nodes")?;
    Ok(session)
}

/// Step 2: `keys` keys written in batches, one read back.
fn population(session: &Session, keys: usize) -> anyhow::Result<()> {
    let (s, cluster) = (session.style, cluster(session)?);
    step(s, 2, "Data population")?;
    let b = bar(keys as u64, "writing");
    let t = Instant::now();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let pairs: Vec<(String, String)> = chunk.iter().map(|&i| (key(i), value(i, 0))).collect();
        cluster.put_many(&pairs)?;
        b.inc(chunk.len() as u64);
    }
    b.finish_and_clear();
    say!(
        "{}",
        s.ok(format!(
            "Stored {keys} keys (x{} replicas) in {:.0?}",
            cluster.replication_factor(),
            t.elapsed()
        ))
    );
    show(session, "get user:000042")
}

/// Step 3: how the keys spread over the nodes.
fn distribution(session: &Session) -> anyhow::Result<()> {
    step(session.style, 3, "Data distribution")?;
    show(session, "stats")
}

/// Step 4: a node joins; only the keys it now replicates move (against naive `hash % N`).
/// Returns the new node's id.
fn adding_a_node(session: &Session, keys: usize) -> anyhow::Result<String> {
    let (s, cluster) = (session.style, cluster(session)?);
    step(s, 4, "Smart redistribution: adding a node")?;
    let n = cluster.nodes().len() as u64;
    let added = fresh_id(cluster);
    let summary = cluster
        .add_node(&added)
        .with_context(|| format!("add {added}"))?;
    print_change(s, &summary, keys, cluster.replication_factor())?;
    let naive = naive_moves(keys, n, n + 1);
    say!(
        "  Naive hash % N placement ({n} -> {} nodes) would have moved {naive} of {keys} keys ({:.1}%): {} copies with {} replicas each",
        n + 1,
        naive as f64 * 100.0 / keys as f64,
        naive * cluster.replication_factor(),
        cluster.replication_factor()
    );
    show(session, "stats")?;
    Ok(added)
}

/// Step 5: the node added in step 4 leaves again.
fn removing_a_node(session: &Session, keys: usize, added: &str) -> anyhow::Result<()> {
    let (s, cluster) = (session.style, cluster(session)?);
    step(s, 5, "Removing a node")?;
    let summary = cluster
        .remove_node(added)
        .with_context(|| format!("remove {added}"))?;
    print_change(s, &summary, keys, cluster.replication_factor())?;
    show(session, "nodes")
}

/// Step 6: four client threads read and write while a node joins; every acknowledged write
/// reads back its latest value afterwards.
fn zero_downtime(session: &Session, keys: usize) -> anyhow::Result<()> {
    let (s, cluster) = (session.style, cluster(session)?);
    step(
        s,
        6,
        "Zero downtime: clients keep working during a redistribution",
    )?;
    let stop = AtomicBool::new(false);
    let (acked, failures, summary) = std::thread::scope(|sc| -> anyhow::Result<_> {
        let clients: Vec<_> = (0..4u64)
            .map(|t| {
                let stop = &stop;
                sc.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(t);
                    let mut acked: HashMap<usize, usize> = HashMap::new();
                    let mut failures = 0usize;
                    let mut round = 1;
                    // Bounded: until the change ends, or this many operations.
                    for _ in 0..2_000_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Each client owns the keys i % 4 == t, so its view is the truth.
                        let i = rng.random_range(0..keys / 4) * 4 + t as usize;
                        if rng.random_ratio(1, 2) {
                            round += 1;
                            match cluster.put(key(i).as_bytes(), value(i, round).as_bytes()) {
                                Ok(_) => {
                                    acked.insert(i, round);
                                }
                                Err(_) => failures += 1,
                            }
                        } else if cluster.get(key(i).as_bytes()).is_err() {
                            failures += 1;
                        }
                    }
                    (acked, failures)
                })
            })
            .collect();
        let b = bar(0, "moving");
        let joining = fresh_id(cluster);
        let result = cluster.add_node_with_progress(&joining, |p| {
            b.set_length(p.estimated_keys.max(p.keys));
            b.set_position(p.keys);
            std::ops::ControlFlow::Continue(())
        });
        // Let the clients run a moment on the new ring too.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        b.finish_and_clear();
        let mut acked = HashMap::new();
        let mut failures = 0;
        for c in clients {
            let (a, f) = c
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
            acked.extend(a);
            failures += f;
        }
        Ok((acked, failures, result?))
    })?;
    print_change(s, &summary, keys, cluster.replication_factor())?;
    let mut lost = 0;
    for (&i, &round) in &acked {
        if cluster.get(key(i).as_bytes())?.as_deref() != Some(value(i, round).as_bytes()) {
            lost += 1;
        }
    }
    say!(
        "  4 client threads made {} acknowledged writes during the change; {} operations failed",
        acked.len(),
        failures
    );
    ensure!(
        failures == 0,
        "{failures} client operations failed during the change"
    );
    ensure!(lost == 0, "{lost} acknowledged writes were lost");
    say!(
        "{}",
        s.ok("Every acknowledged write reads back its latest value: nothing lost")
    );
    Ok(())
}

/// Step 8: the cluster is dropped without a clean shutdown and reopened from its logs; a
/// sample of keys reads back unchanged. Returns the reopened session.
fn crash_recovery(
    session: Session,
    args: &Args,
    dir: &Path,
    keys: usize,
) -> anyhow::Result<Session> {
    let s = session.style;
    step(s, 8, "Crash recovery")?;
    say!("Dropping the cluster without a clean shutdown, then reopening it from its logs...");
    let expect: Vec<(String, Option<bytes::Bytes>)> = (0..keys)
        .step_by(97)
        .map(|i| Ok((key(i), cluster(&session)?.get(key(i).as_bytes())?)))
        .collect::<anyhow::Result<_>>()?;
    drop(into_cluster(session)?); // no close(): as if the process had died (the logs are memory-mapped)
    let t = Instant::now();
    let opened = open::open(&args.cluster, dir)?;
    let session = Session {
        target: Target::Local(opened.cluster),
        style: s,
    };
    for (k, v) in &expect {
        if cluster(&session)?.get(k.as_bytes())? != *v {
            bail!("{k} differs after recovery");
        }
    }
    say!(
        "{}",
        s.ok(format!(
            "Recovered {} nodes in {:.0?}; {} sampled keys read back unchanged",
            cluster(&session)?.nodes().len(),
            t.elapsed(),
            expect.len()
        ))
    );
    show(&session, "stats")?;
    Ok(session)
}

/// Step 9: the built-in benchmark, two threads.
fn benchmark(session: &Session, quick: bool) -> anyhow::Result<()> {
    step(session.style, 9, "Benchmark")?;
    let args = BenchArgs {
        ops: if quick { 2_000 } else { 50_000 },
        threads: 2,
        ..BenchArgs::default()
    };
    let report = bench::run(cluster(session)?, args)?;
    for l in report.lines() {
        say!("{l}");
    }
    Ok(())
}

/// Step 7: a node fails; quorum reads and writes go on (writes for it kept as hints); it
/// recovers, gets its hints, and is repaired; every write made meanwhile is on every replica.
fn node_failure(session: &Session, keys: usize) -> anyhow::Result<()> {
    let s = session.style;
    let cluster = cluster(session)?;
    step(s, 7, "Node failure: hinted handoff and repair")?;
    let rf = cluster.replication_factor();
    let quorum = Consistency::Quorum;
    if quorum.required(rf) >= rf {
        say!("  Skipped: with replication factor {rf}, a quorum needs every replica up.");
        return Ok(());
    }
    let nodes = cluster.nodes();
    let Some(victim) = nodes.get(1).or(nodes.first()).map(|n| n.id.to_string()) else {
        bail!("the cluster has no nodes");
    };
    show(session, &format!("fail {victim}"))?;
    let writes = (keys / 10).max(1);
    let mut failures = 0usize;
    let mut acked: Vec<(usize, kv_cluster::Version)> = Vec::with_capacity(writes);
    for i in 0..writes {
        let v = value(i, 1000);
        match cluster.put_with(key(i).as_bytes(), v.as_bytes(), quorum) {
            Ok(version) => acked.push((i, version)),
            Err(_) => failures += 1,
        }
        match cluster.get_with(key(i).as_bytes(), quorum) {
            Ok(Some(got)) if got == v.as_bytes() => {}
            _ => failures += 1,
        }
    }
    let hints = cluster.stats()?.hints;
    say!(
        "  {writes} writes and {writes} reads at quorum while {victim} was down: {failures} failed; {hints} writes kept as hints for {victim}"
    );
    ensure!(
        failures == 0,
        "{failures} operations failed with one node down"
    );
    show(session, &format!("recover {victim}"))?;
    let mut stale = 0;
    for &(i, version) in &acked {
        let p = cluster.placement_of(key(i).as_bytes())?;
        if p.held.len() != rf || p.held.iter().any(|(_, _, v)| *v != version) {
            stale += 1;
        }
    }
    ensure!(
        stale == 0,
        "{stale} keys are missing a replica after recovery"
    );
    say!(
        "{}",
        s.ok(format!(
            "All {} writes made while {victim} was down are on all {rf} replicas",
            acked.len()
        ))
    );
    show(session, "repair")
}

/// Prints a REPL command and its output, as if typed.
fn show(session: &Session, line: &str) -> anyhow::Result<()> {
    say!("kvstore> {line}");
    let o = cmd::run_line(session, line);
    for l in o.out {
        say!("{l}");
    }
    if let Some(e) = o.error {
        say!("{e}");
    }
    Ok(())
}
