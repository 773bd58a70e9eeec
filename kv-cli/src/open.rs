//! Opening the cluster the command line describes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kv_cluster::{Backend, Cluster, ClusterOptions, KvNodeBackend};
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
    /// The members' ids, in the order stored.
    members: Vec<String>,
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
        members: v["members"]
            .as_array()
            .map(|m| m.iter().filter_map(member_id).collect())
            .unwrap_or_default(),
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
            check_flag(
                &mut warnings,
                dir,
                "--nodes",
                args.nodes,
                s.members.len() as u64,
            );
            let (rf, vnodes) = kept(&mut warnings, dir, args, s);
            (s.members.len() as u32, rf, vnodes)
        }
    };
    let opts = options(args, rf, vnodes)
        .initial_nodes((1..=nodes).map(|i| format!("node{i}")))
        .backend(Arc::new(KvNodeBackend::new(node_options(args))));
    open_with(dir, opts, warnings)
}

/// The replication factor and vnodes of the cluster of the members `ids` (in ring order)
/// in `dir`: the stored ones if it exists (the flags' differing values are warnings), else
/// the flags'. Together with the member list they decide every slot of the ring.
pub struct MemberParams {
    pub rf: u32,
    pub vnodes: u32,
    pub warnings: Vec<String>,
}

/// [`MemberParams`] for `ids` in `dir`, read before the cluster opens (a node's cluster id
/// is derived from them). A stored cluster with other members is refused.
pub fn member_params(
    args: &ClusterArgs,
    dir: &Path,
    ids: &[String],
) -> anyhow::Result<MemberParams> {
    let mut warnings = Vec::new();
    if args.nodes.is_some() {
        warnings.push("warning: --nodes ignored: --peers lists the members".to_owned());
    }
    let (rf, vnodes) = match stored(dir)? {
        None => {
            let rf = args.replication.unwrap_or(DEFAULT_RF.min(ids.len() as u32));
            if rf as usize > ids.len() {
                bail!(
                    "--replication {rf} is more than the {} members of --peers",
                    ids.len()
                );
            }
            (rf, args.vnodes.unwrap_or(DEFAULT_VNODES))
        }
        Some(s) => {
            let mut have = s.members.clone();
            let mut want = ids.to_vec();
            have.sort();
            want.sort();
            if have != want {
                bail!(
                    "the cluster in {} has the members {}, but --peers lists {}",
                    dir.display(),
                    s.members.join(","),
                    ids.join(",")
                );
            }
            kept(&mut warnings, dir, args, &s)
        }
    };
    Ok(MemberParams {
        rf,
        vnodes,
        warnings,
    })
}

/// Opens (or creates) in `dir` the cluster of the members `ids` (in ring order) with
/// `params` (from [`member_params`]), reaching them through `backend`, with `tweak` applied
/// to the options last: what a node of a cluster of processes opens.
pub fn open_members(
    args: &ClusterArgs,
    dir: &Path,
    ids: &[String],
    params: MemberParams,
    backend: Arc<dyn Backend>,
    tweak: impl FnOnce(ClusterOptions) -> ClusterOptions,
) -> anyhow::Result<Opened> {
    let opts = tweak(
        options(args, params.rf, params.vnodes)
            .initial_nodes(ids.iter().cloned())
            .backend(backend),
    );
    open_with(dir, opts, params.warnings)
}

/// The options of every storage node.
pub fn node_options(args: &ClusterArgs) -> NodeOptions {
    NodeOptions::new()
        .cache_entries(args.cache_capacity)
        .sync(args.sync.policy())
}

/// The cluster's options from the flags (members and backend left to the caller).
fn options(args: &ClusterArgs, rf: u32, vnodes: u32) -> ClusterOptions {
    ClusterOptions::new()
        .replication_factor(rf as usize)
        .vnodes(vnodes)
        .read_consistency(args.read_consistency)
        .write_consistency(args.write_consistency)
        .sloppy_quorum(args.sloppy_quorum)
        // 0 is off; a node process chooses its own default for "not given" (`tweak`).
        .background_repair(
            args.repair_interval
                .filter(|&secs| secs > 0)
                .map(std::time::Duration::from_secs),
        )
}

/// The stored replication factor and vnodes (they win over the flags, with a warning).
fn kept(warnings: &mut Vec<String>, dir: &Path, args: &ClusterArgs, s: &Stored) -> (u32, u32) {
    check_flag(warnings, dir, "--replication", args.replication, s.rf);
    check_flag(warnings, dir, "--vnodes", args.vnodes, s.vnodes);
    (
        u32::try_from(s.rf).unwrap_or(DEFAULT_RF),
        u32::try_from(s.vnodes).unwrap_or(DEFAULT_VNODES),
    )
}

/// A warning when a flag contradicts the stored cluster.
fn check_flag(warnings: &mut Vec<String>, dir: &Path, flag: &str, given: Option<u32>, kept: u64) {
    if let Some(g) = given
        && u64::from(g) != kept
    {
        warnings.push(format!(
            "warning: {flag} {g} ignored: the cluster in {} has {kept}",
            dir.display()
        ));
    }
}

fn open_with(dir: &Path, opts: ClusterOptions, warnings: Vec<String>) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cluster = Cluster::open(dir, opts)
        .with_context(|| format!("open the cluster in {}", dir.display()))?;
    Ok(Opened { cluster, warnings })
}

/// A member's id in `cluster.json` (`{"id": "node1", ...}`).
fn member_id(m: &serde_json::Value) -> Option<String> {
    m["id"].as_str().map(str::to_owned)
}
