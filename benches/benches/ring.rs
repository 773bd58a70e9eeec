//! `kv-ring` benchmarks: token hashing, primary lookup and preference lists for 3, 16 and 128
//! nodes, and the transfer plan of a join to 16 nodes.
//!
//! The baseline measured beside the ring is the seed's design: a `std::map<hash, node>` walked
//! with `lower_bound` that returns a vector of node names (here a `BTreeMap<u64, String>` and a
//! `Vec<String>`), at the same 100 virtual nodes per node.
//!
//! Run: `cargo bench -p benches --bench ring`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kv_ring::{Placement, Ring, RingOptions, token, transfer_plan};

/// Both placements, at the replication factor the benchmarks use.
const PLACEMENTS: [(&str, Placement); 2] = [
    ("random", Placement::Random),
    (
        "balanced",
        Placement::Balanced {
            replication_factor: 3,
        },
    ),
];

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node{i}")).collect()
}

fn keys() -> Vec<[u8; 16]> {
    (0..1024u64)
        .map(|i| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            k
        })
        .collect()
}

/// The seed's ring: an ordered map from vnode hash to node name.
struct SeedRing(BTreeMap<u64, String>);

impl SeedRing {
    fn new(names: &[String], vnodes: u32) -> Self {
        let mut map = BTreeMap::new();
        for name in names {
            for v in 0..vnodes {
                map.insert(token(format!("{name}#{v}").as_bytes()), name.clone());
            }
        }
        SeedRing(map)
    }

    fn preference_list(&self, key: &[u8], rf: usize) -> Vec<String> {
        let t = token(key);
        let mut out: Vec<String> = Vec::with_capacity(rf);
        for (_, name) in self.0.range(t..).chain(self.0.range(..t)) {
            if !out.contains(name) {
                out.push(name.clone());
                if out.len() == rf {
                    break;
                }
            }
        }
        out
    }
}

fn lookups(c: &mut Criterion) {
    let keys = keys();
    c.bench_function("ring/token/16B", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            token(black_box(&keys[i]))
        })
    });

    let mut primary = c.benchmark_group("ring/primary");
    for n in [3, 16, 128] {
        let ring = Ring::with_nodes(RingOptions::default(), nodes(n)).expect("ring");
        primary.bench_with_input(BenchmarkId::from_parameter(n), &ring, |b, ring| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                ring.primary(black_box(&keys[i])).map(|n| n.as_str().len())
            })
        });
    }
    primary.finish();

    let mut group = c.benchmark_group("ring/preference_list_rf3");
    for n in [3, 16, 128] {
        for (name, placement) in PLACEMENTS {
            let options = RingOptions::default().placement(placement);
            let ring = Ring::with_nodes(options, nodes(n)).expect("ring");
            group.bench_with_input(BenchmarkId::new(name, n), &ring, |b, ring| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    ring.replicas_for_key(black_box(&keys[i]), 3)
                        .map(|r| r.primary().as_str().len())
                })
            });
        }
        let seed = SeedRing::new(&nodes(n), 100);
        group.bench_with_input(BenchmarkId::new("seed_btreemap", n), &seed, |b, seed| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                seed.preference_list(black_box(&keys[i]), 3)
            })
        });
    }
    group.finish();
}

fn plans(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/transfer_plan_join_16_to_17");
    group.sample_size(20);
    for (name, placement) in PLACEMENTS {
        let options = RingOptions::default().placement(placement);
        let old = Ring::with_nodes(options, nodes(16)).expect("ring");
        let new = old.add_node("node17").expect("join");
        group.bench_function(name, |b| {
            b.iter(|| transfer_plan(&old, &new, 3).map(|p| p.transfers.len()))
        });
        group.bench_function(format!("{name}/add_node"), |b| {
            b.iter(|| old.add_node("node17").map(|r| r.len()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups, plans
}
criterion_main!(benches);
