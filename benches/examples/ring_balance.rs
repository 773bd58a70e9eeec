//! Prints the balance and data-movement tables of `BENCHMARKS.md` (section kv-ring).
//!
//! Run: `cargo run --release -p benches --example ring_balance`.

use kv_ring::{Placement, Ring, RingOptions, token};

const KEYS: u64 = 100_000;
const RF: usize = 3;

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node{i}")).collect()
}

/// (max/mean, stddev/mean) of the replicated share (all `rf` replicas) of each node.
fn spread(ring: &Ring, rf: usize) -> anyhow::Result<(f64, f64)> {
    let shares: Vec<f64> = ring.ownership(rf)?.iter().map(|o| o.replica).collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len() as f64;
    Ok((
        shares.iter().cloned().fold(0.0, f64::max) / mean,
        var.sqrt() / mean,
    ))
}

fn main() -> anyhow::Result<()> {
    println!("Balance: max/mean and stddev/mean of each node's share, counting all {RF} replicas");
    println!();
    println!(
        "| vnodes | placement | N=16 max/mean | N=16 stddev | N=64 max/mean | N=64 stddev | worst max/mean, N in 3..=64 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for vnodes in [16, 100, 256] {
        for (name, placement) in [
            ("random", Placement::Random),
            (
                "balanced",
                Placement::Balanced {
                    replication_factor: RF,
                },
            ),
        ] {
            let options = RingOptions::default().vnodes(vnodes)?.placement(placement);
            let mut ring = Ring::new(options);
            let (mut worst, mut at16, mut at64) = (0.0f64, (0.0, 0.0), (0.0, 0.0));
            for (i, id) in nodes(64).iter().enumerate() {
                ring = ring.add_node(id)?;
                let n = i + 1;
                if n >= 3 {
                    let s = spread(&ring, RF)?;
                    worst = worst.max(s.0);
                    if n == 16 {
                        at16 = s;
                    }
                    if n == 64 {
                        at64 = s;
                    }
                }
            }
            println!(
                "| {vnodes} | {name} | {:.3} | {:.1}% | {:.3} | {:.1}% | {worst:.3} |",
                at16.0,
                at16.1 * 100.0,
                at64.0,
                at64.1 * 100.0
            );
        }
    }

    println!();
    println!("Data moved when a node joins N nodes ({KEYS} keys, 100 vnodes); optimum 1/(N+1)");
    println!();
    println!("| N -> N+1 | optimal | ring random | ring balanced | hash % N |");
    println!("|---|---|---|---|---|");
    let keys: Vec<[u8; 8]> = (0..KEYS).map(|k| k.to_be_bytes()).collect();
    for n in [3usize, 4, 8, 16, 32] {
        let mut cells = Vec::new();
        for placement in [
            Placement::Random,
            Placement::Balanced {
                replication_factor: RF,
            },
        ] {
            let old = Ring::with_nodes(RingOptions::default().placement(placement), nodes(n))?;
            let new = old.add_node(&format!("node{}", n + 1))?;
            let mut moved = 0u64;
            for k in &keys {
                if old.primary(k)? != new.primary(k)? {
                    moved += 1;
                }
            }
            cells.push(moved as f64 / KEYS as f64);
        }
        let modulo = keys
            .iter()
            .filter(|k| token(&k[..]) % n as u64 != token(&k[..]) % (n as u64 + 1))
            .count() as f64
            / KEYS as f64;
        println!(
            "| {n} -> {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            n + 1,
            100.0 / (n + 1) as f64,
            cells[0] * 100.0,
            cells[1] * 100.0,
            modulo * 100.0
        );
    }
    Ok(())
}
