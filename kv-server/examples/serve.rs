//! Serves a cluster on 127.0.0.1 until Ctrl-C, for trying the server with `redis-cli` and
//! `redis-benchmark` before `kvstore serve` exists.
//!
//! `cargo run --release -p kv-server --example serve -- [PORT] [DATA_DIR]` (defaults: 6380,
//! a temporary directory removed at exit). Then e.g. `redis-cli -p 6380 set k v`.

use std::sync::Arc;

use kv_cluster::{Cluster, ClusterOptions};
use kv_server::{Server, ServerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(Ok(6380), |p| p.parse())?;
    let temp;
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let cluster = Arc::new(Cluster::open(&dir, ClusterOptions::new())?);
    let server = Server::bind(
        ("127.0.0.1", port),
        Arc::clone(&cluster),
        ServerOptions::new(),
    )
    .await?;
    println!(
        "ready to accept connections on {} (data in {})",
        server.local_addr(),
        dir.display()
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    match Arc::try_unwrap(cluster) {
        Ok(cluster) => cluster.close()?,
        Err(_) => eprintln!("a storage call outlived the shutdown; not closing the cluster"),
    }
    Ok(())
}
