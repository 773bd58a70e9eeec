//! Anti-entropy cost at a million keys: three identical replicas exchange only their trees'
//! roots; then one replica gets a write the others lack, and repair finds and fixes it.
//!
//! `cargo run --release -p kv-cluster --example repair_cost [keys]` (default 1,000,000).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kv_cluster::{Cluster, ClusterOptions, NodeOptions, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions::new();
    let cluster = Cluster::open(dir.path(), opts.clone())?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..keys {
        batch.push((format!("key:{i:010}"), format!("value-{i}")));
        if batch.len() == 10_000 {
            cluster.put_many(&batch)?;
            batch.clear();
        }
    }
    cluster.put_many(&batch)?;
    println!("loaded {keys} keys x 3 replicas in {:?}", started.elapsed());

    let s = cluster.repair()?;
    println!(
        "identical: {} ranges compared, {} bytes of hashes, {} leaves differing, {} records streamed, {} keys repaired, {:?}",
        s.ranges_compared,
        s.hash_bytes,
        s.leaves_differing,
        s.records_streamed,
        s.keys_repaired,
        s.elapsed
    );

    // One divergent key: node3 alone gets a newer write, behind the cluster's back.
    cluster.close()?;
    let key = format!("key:{:010}", keys / 2);
    {
        let node = kv_node::Node::open(dir.path().join("node3"), NodeOptions::new())?;
        let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        node.apply(
            key.as_bytes(),
            Some(b"diverged"),
            Version::from_parts(millis + 1, 0),
        )?;
        node.close()?;
    }
    let cluster = Cluster::open(dir.path(), opts)?;
    let s = cluster.repair()?;
    println!(
        "one divergent key: {} ranges compared, {} bytes of hashes, {} leaves differing, {} records streamed, {} keys repaired, {:?}",
        s.ranges_compared,
        s.hash_bytes,
        s.leaves_differing,
        s.records_streamed,
        s.keys_repaired,
        s.elapsed
    );
    let placement = cluster.placement_of(key.as_bytes())?;
    assert!(
        placement
            .held
            .iter()
            .all(|(_, v, _)| v.as_deref() == Some(&b"diverged"[..]))
    );
    println!("every replica now holds the newest version of {key}");
    Ok(())
}
