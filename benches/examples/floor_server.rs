//! The machine's floor for a RESP server: a minimal tokio server answering `SET key value`,
//! `GET key` (and `PING`, `CONFIG`, anything else with `+OK`-free errors) from a sharded
//! in-memory map: no durability, no replication, one write per pipelined batch. The same
//! RESP parser as `kvstore serve` (`kv-resp`), so the gap between the two is the store and
//! the server's own work, not parsing.
//!
//! With `--cluster DIR` it answers from the default 3-node RF 3 quorum cluster instead,
//! calling `Cluster::put`/`get` inline for each command (the "naive server": no batching,
//! no storage threads), to tell the cluster's cost from the server's.
//!
//! ```text
//! cargo run --release -p benches --example floor_server -- [--port N] [--cluster DIR]
//! ```
//! Prints `floor ready on ADDR` once it accepts connections; runs until killed.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use kv_cluster::{Cluster, ClusterOptions};
use kv_resp::{CommandDecoder, Encoder, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SHARDS: usize = 64;

/// Where values live.
enum Store {
    Map {
        shards: Vec<Mutex<HashMap<Bytes, Bytes>>>,
        hasher: RandomState,
    },
    Cluster(Box<Cluster>),
}

impl Store {
    fn shard(&self, key: &[u8]) -> Option<&Mutex<HashMap<Bytes, Bytes>>> {
        match self {
            Store::Map { shards, hasher } => {
                let h = usize::try_from(hasher.hash_one(key)).unwrap_or(0);
                shards.get(h % SHARDS)
            }
            Store::Cluster(_) => None,
        }
    }

    fn set(&self, key: &Bytes, value: &Bytes) -> Result<(), String> {
        match self {
            Store::Map { .. } => {
                if let Some(shard) = self.shard(key) {
                    shard
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key.clone(), value.clone());
                }
                Ok(())
            }
            Store::Cluster(c) => c.put(key, value).map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
        match self {
            Store::Map { .. } => Ok(self.shard(key).and_then(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(key)
                    .cloned()
            })),
            Store::Cluster(c) => c.get(key).map_err(|e| e.to_string()),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut cluster_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().unwrap_or_default().parse()?,
            "--cluster" => cluster_dir = args.next(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let store = Arc::new(match cluster_dir {
        Some(dir) => Store::Cluster(Box::new(Cluster::open(dir, ClusterOptions::new())?)),
        None => Store::Map {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        },
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("floor ready on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(serve(stream, Arc::clone(&store)));
        }
    })
}

async fn serve(mut stream: TcpStream, store: Arc<Store>) {
    let mut decoder = CommandDecoder::new();
    let enc = Encoder::new(Protocol::Resp2);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let cmd = match decoder.decode(&mut input) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(e) => {
                    enc.error(&mut out, format!("ERR Protocol error: {e}").as_bytes());
                    let _ = stream.write_all(&out).await;
                    return;
                }
            };
            let args = cmd.args();
            let name = cmd.name();
            if name.eq_ignore_ascii_case(b"set") && args.len() == 3 {
                match store.set(&args[1], &args[2]) {
                    Ok(()) => enc.simple(&mut out, b"OK"),
                    Err(e) => enc.error(&mut out, format!("ERR {e}").as_bytes()),
                }
            } else if name.eq_ignore_ascii_case(b"get") && args.len() == 2 {
                match store.get(&args[1]) {
                    Ok(Some(v)) => enc.bulk(&mut out, &v),
                    Ok(None) => enc.null(&mut out),
                    Err(e) => enc.error(&mut out, format!("ERR {e}").as_bytes()),
                }
            } else if name.eq_ignore_ascii_case(b"ping") {
                enc.simple(&mut out, b"PONG");
            } else if name.eq_ignore_ascii_case(b"config") {
                // redis-benchmark asks `CONFIG GET save` and `appendonly` at start.
                enc.array_header(&mut out, 0);
            } else {
                enc.error(&mut out, b"ERR unknown command");
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
