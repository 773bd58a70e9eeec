//! Throwaway probe (not committed).
#![allow(clippy::unwrap_used, missing_docs)]
use kv_node::{Node, NodeOptions, Version};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().unwrap());
    let dir = tempfile::tempdir_in("/work").unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let keys: Vec<[u8; 16]> = (0..n).map(|_| rng.random()).collect();
    let val = [7u8; 100];
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    let t = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        node.apply(k, Some(&val), Version::new(i as u64 + 1))
            .unwrap();
    }
    let e = t.elapsed();
    println!("put: {:.0}/s", n as f64 / e.as_secs_f64());
    if std::env::args().nth(2).as_deref() == Some("put") {
        return;
    }
    let t = Instant::now();
    let mut found = 0;
    for _ in 0..n {
        let k = &keys[rng.random_range(0..n)];
        found += node.get(k).unwrap().is_some() as usize;
    }
    let e = t.elapsed();
    println!("cold get: {:.0}/s ({found})", n as f64 / e.as_secs_f64());
    let hot = &keys[..500];
    let t = Instant::now();
    for i in 0..n {
        node.get(&hot[i % 500]).unwrap();
    }
    let e = t.elapsed();
    println!("hot get: {:.0}/s", n as f64 / e.as_secs_f64());
    let t = Instant::now();
    node.write_hints().unwrap();
    println!("write_hints: {:?}", t.elapsed());
    node.close().unwrap();
    let t = Instant::now();
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    println!(
        "reopen with hints: {:?} {:?}",
        t.elapsed(),
        node.recovery_report().segments_from_hints
    );
    drop(node);
    for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let t = Instant::now();
    let node = Node::open(dir.path(), NodeOptions::new()).unwrap();
    println!(
        "reopen without hints: {:?} {:?}",
        t.elapsed(),
        node.stats().live_keys
    );
}
