//! Balance of the two placements and the data movement of a join, measured deterministically.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use kv_ring::{Placement, Ring, RingOptions, token, transfer_plan};

const KEYS: u64 = 100_000;

fn keys() -> impl Iterator<Item = [u8; 8]> {
    (0..KEYS).map(|k| k.to_be_bytes())
}

fn node(i: usize) -> String {
    format!("node{i}")
}

fn max_over_mean(ring: &Ring, rf: usize) -> f64 {
    let own = ring.ownership(rf).unwrap();
    let mean = own.iter().map(|o| o.replica).sum::<f64>() / own.len() as f64;
    own.iter().map(|o| o.replica).fold(0.0, f64::max) / mean
}

/// Random (hash-derived) positions: the busiest node holds at most 1.35x the mean, for N in
/// 3..=32 at 100 vnodes (theory: a spread of about 1/sqrt(vnodes) = 10% per node).
#[test]
fn random_placement_is_within_1_35x_of_the_mean() {
    let mut ring = Ring::new(RingOptions::default());
    for n in 1..=32 {
        ring = ring.add_node(&node(n)).unwrap();
        if n >= 3 {
            let primary = max_over_mean(&ring, 1);
            let replicated = max_over_mean(&ring, 3);
            assert!(primary <= 1.35, "N={n}: max/mean {primary:.3} (primary)");
            assert!(replicated <= 1.35, "N={n}: max/mean {replicated:.3} (rf 3)");
        }
    }
}

/// Balanced placement: the busiest node, counting all three replicas, holds at most 1.05x the
/// mean for N in 3..=64, with every node added one at a time as a cluster grows.
#[test]
fn balanced_placement_is_within_1_05x_of_the_mean() {
    let options = RingOptions::default().placement(Placement::Balanced {
        replication_factor: 3,
    });
    let mut ring = Ring::new(options);
    let mut worst: f64 = 0.0;
    for n in 1..=64 {
        ring = ring.add_node(&node(n)).unwrap();
        if n >= 3 {
            let m = max_over_mean(&ring, 3);
            worst = worst.max(m);
            assert!(m <= 1.05, "N={n}: max/mean {m:.4} (rf 3)");
        }
    }
    eprintln!("balanced, rf 3, N in 3..=64: worst max/mean {worst:.4}");
}

/// Fractions of the 100,000 keys that a join of `node(n + 1)` to `ring` moves: at the primary
/// position, and counting all three replicas (keys that gain the new node as a replica).
fn moved_by_join(ring: &Ring, grown: &Ring, n: usize) -> (f64, f64) {
    let primary = keys()
        .filter(|k| ring.primary(k).unwrap() != grown.primary(k).unwrap())
        .count() as f64;
    let copies = keys()
        .filter(|k| grown.replicas_for_key(k, 3).unwrap().contains(&node(n + 1)))
        .count() as f64;
    // Nothing else moves: a key whose replicas changed gained exactly the new node.
    for k in keys() {
        let (before, after) = (
            ring.replicas_for_key(&k, 3).unwrap(),
            grown.replicas_for_key(&k, 3).unwrap(),
        );
        if before.to_vec() != after.to_vec() {
            assert!(
                after.contains(&node(n + 1)),
                "a key moved between old nodes"
            );
        }
    }
    (primary / KEYS as f64, copies / KEYS as f64)
}

/// Balanced placement: adding a node to N nodes moves each replica position's share within 20%
/// of the optimal 1/(N+1), measured on 100,000 keys, for every N in 3..=10.
#[test]
fn a_balanced_join_moves_one_over_n_plus_one() {
    let options = RingOptions::default().placement(Placement::Balanced {
        replication_factor: 3,
    });
    let mut ring = Ring::with_nodes(options, (1..=3).map(node)).unwrap();
    for n in 3..=10usize {
        let grown = ring.add_node(&node(n + 1)).unwrap();
        let optimal = 1.0 / (n + 1) as f64;
        let (primary, copies) = moved_by_join(&ring, &grown, n);
        assert!(
            (primary / optimal - 1.0).abs() <= 0.2,
            "N={n}: primary moved {primary:.4}"
        );
        assert!(
            (copies / (3.0 * optimal) - 1.0).abs() <= 0.2,
            "N={n}: rf 3 copies {copies:.4}"
        );
        let plan = transfer_plan(&ring, &grown, 3).unwrap();
        assert!((plan.fraction_moved() - copies).abs() < 0.01);
        ring = grown;
    }
}

/// Random placement: a join moves exactly what the new node takes, which is 1/(N+1) on average
/// but, like every node's share, spread by about 1/sqrt(vnodes) = 10%: one join in N = 3..=10
/// (N = 7 at the primary position, +26%) is outside 20% of the optimum. Bound the mean within 20%
/// and each join by the 1.35x balance bound.
#[test]
fn a_random_join_moves_one_over_n_plus_one_on_average() {
    let mut ring = Ring::with_nodes(RingOptions::default(), (1..=3).map(node)).unwrap();
    let mut ratios = Vec::new();
    for n in 3..=10usize {
        let grown = ring.add_node(&node(n + 1)).unwrap();
        let optimal = 1.0 / (n + 1) as f64;
        let (primary, copies) = moved_by_join(&ring, &grown, n);
        assert!(
            primary / optimal <= 1.35 && copies / (3.0 * optimal) <= 1.35,
            "N={n}"
        );
        let plan = transfer_plan(&ring, &grown, 3).unwrap();
        assert!((plan.fraction_moved() - copies).abs() < 0.01);
        ratios.extend([primary / optimal, copies / (3.0 * optimal)]);
        ring = grown;
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    assert!((mean - 1.0).abs() <= 0.2, "mean moved/optimal {mean:.3}");
}

/// Balanced placement stays within 1.05x after nodes leave, too.
#[test]
fn balanced_placement_stays_balanced_after_leaves() {
    let options = RingOptions::default().placement(Placement::Balanced {
        replication_factor: 3,
    });
    let mut ring = Ring::with_nodes(options, (1..=24).map(node)).unwrap();
    for gone in [5, 17, 1, 24, 9, 12, 2, 20] {
        ring = ring.remove_node(&node(gone)).unwrap();
        let m = max_over_mean(&ring, 3);
        assert!(
            m <= 1.05,
            "after removing {} ({} left): {m:.4}",
            node(gone),
            ring.len()
        );
    }
}

/// For comparison, `hash % N` moves N/(N+1) of the keys on a join: what consistent hashing saves.
#[test]
fn modulo_hashing_moves_almost_everything() {
    for n in 3..=10u64 {
        let moved = keys()
            .filter(|k| token(k) % n != token(k) % (n + 1))
            .count() as f64
            / KEYS as f64;
        let expected = n as f64 / (n + 1) as f64;
        assert!(
            (moved - expected).abs() < 0.01,
            "N={n}: {moved:.4} vs {expected:.4}"
        );
    }
}

/// Weights: a node of weight 2 holds twice the share of the others, in both placements.
#[test]
fn weighted_nodes_hold_their_weighted_share() {
    for (placement, tolerance) in [
        (
            Placement::Balanced {
                replication_factor: 3,
            },
            0.02,
        ),
        (Placement::Random, 0.25),
    ] {
        let ring = Ring::with_nodes(
            RingOptions::default().placement(placement),
            (1..=6).map(node),
        )
        .unwrap()
        .add_weighted_node("heavy", 2.0)
        .unwrap();
        let own = ring.ownership(1).unwrap();
        let fair = 1.0 / 8.0;
        for o in &own {
            let expected = if o.node.as_str() == "heavy" {
                2.0 * fair
            } else {
                fair
            };
            assert!(
                (o.primary / expected - 1.0).abs() <= tolerance,
                "{placement:?}: {} holds {:.4}, expected {expected:.4}",
                o.node,
                o.primary
            );
        }
    }
}
