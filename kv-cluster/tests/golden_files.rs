//! `cluster.json` files written by each metadata format version (`tests/golden/`, written by
//! the ignored `meta::tests::write_golden_files`) open with today's code into the same ring,
//! and an opened cluster stores the current format with its large integers as strings.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use kv_cluster::Cluster;

fn golden(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `u64` from a JSON number (format version 1) or decimal string (version 2).
fn int(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| v.as_str().unwrap().parse().unwrap())
}

#[test]
fn every_format_version_opens_into_the_ring_it_describes() {
    for name in ["cluster-v1.json", "cluster-v2.json"] {
        let file = golden(name);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.json"), file.to_string()).unwrap();
        let cluster = Cluster::open(dir.path(), common::disk_opts()).unwrap();
        let ring = cluster.ring();
        assert_eq!(ring.epoch(), int(&file["epoch"]), "{name}");
        assert_eq!(cluster.replication_factor(), 2, "{name}");
        let members = file["members"].as_array().unwrap();
        assert_eq!(ring.len(), members.len(), "{name}");
        for m in members {
            let tokens: Vec<u64> = m["tokens"].as_array().unwrap().iter().map(int).collect();
            assert_eq!(
                ring.tokens_of(m["id"].as_str().unwrap()),
                Some(&tokens[..]),
                "{name}"
            );
        }
        cluster.close().unwrap();

        // What the cluster stored on open: version 2, strings, a lease at or above the file's.
        let text = std::fs::read_to_string(dir.path().join("cluster.json")).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stored["format_version"], 2, "{name}");
        assert!(stored["version_lease"].is_string(), "{name}");
        assert!(
            int(&stored["version_lease"]) >= int(&file["version_lease"]),
            "{name}"
        );
        assert!(stored["members"][0]["tokens"][0].is_string(), "{name}");
    }
}
