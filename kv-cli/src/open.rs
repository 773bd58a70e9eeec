//! Opening the cluster the command line describes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kv_cluster::{Cluster, ClusterOptions, KvNodeBackend};
use kv_node::NodeOptions;

use crate::args::{ClusterArgs, DEFAULT_NODES, DEFAULT_RF, DEFAULT_VNODES};

/// An open cluster and what the user should be told about it.
pub struct Opened {
    pub cluster: Cluster,
    /// Flags that contradict the stored cluster (the stored values win).
    pub warnings: Vec<String>,
}

/// What `cluster.json` says, if it exists.
struct Stored {
    rf: u64,
    vnodes: u64,
    members: usize,
}

fn stored(dir: &Path) -> anyhow::Result<Option<Stored>> {
    let path = dir.join("cluster.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(Some(Stored {
        rf: v["replication_factor"].as_u64().unwrap_or(0),
        vnodes: v["vnodes"].as_u64().unwrap_or(0),
        members: v["members"].as_array().map_or(0, Vec::len),
    }))
}

/// Opens (or creates) the cluster in `dir` with the options of `args`: the demo, the REPL and
/// `serve` open it here, so one flag means the same in each.
pub fn open(args: &ClusterArgs, dir: &Path) -> anyhow::Result<Opened> {
    let mut warnings = Vec::new();
    let previous = stored(dir)?;
    let (nodes, rf, vnodes) = match &previous {
        None => {
            let nodes = args.nodes.unwrap_or(DEFAULT_NODES);
            let rf = args.replication.unwrap_or(DEFAULT_RF.min(nodes));
            if rf > nodes {
                bail!("--replication {rf} is more than the {nodes} nodes of the cluster (--nodes)");
            }
            (nodes, rf, args.vnodes.unwrap_or(DEFAULT_VNODES))
        }
        Some(s) => {
            let mut check = |flag: &str, given: Option<u32>, kept: u64| {
                if let Some(g) = given
                    && u64::from(g) != kept
                {
                    warnings.push(format!(
                        "warning: {flag} {g} ignored: the cluster in {} has {kept}",
                        dir.display()
                    ));
                }
            };
            check("--nodes", args.nodes, s.members as u64);
            check("--replication", args.replication, s.rf);
            check("--vnodes", args.vnodes, s.vnodes);
            (
                s.members as u32,
                u32::try_from(s.rf).unwrap_or(DEFAULT_RF),
                u32::try_from(s.vnodes).unwrap_or(DEFAULT_VNODES),
            )
        }
    };
    let node_options = NodeOptions::new()
        .cache_entries(args.cache_capacity)
        .sync(args.sync.policy());
    let opts = ClusterOptions::new()
        .replication_factor(rf as usize)
        .vnodes(vnodes)
        .initial_nodes((1..=nodes).map(|i| format!("node{i}")))
        .read_consistency(args.read_consistency)
        .write_consistency(args.write_consistency)
        .sloppy_quorum(args.sloppy_quorum)
        .background_repair(args.repair_interval.map(std::time::Duration::from_secs))
        .backend(Arc::new(KvNodeBackend::new(node_options)));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cluster = Cluster::open(dir, opts)
        .with_context(|| format!("open the cluster in {}", dir.display()))?;
    Ok(Opened { cluster, warnings })
}
