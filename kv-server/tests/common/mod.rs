//! A server started in-process on 127.0.0.1:0 over a fresh on-disk cluster, stopped (and its
//! runtime thread joined) when dropped, even when the test fails.

#![allow(dead_code)] // each test binary uses part of this

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kv_cluster::{Cluster, ClusterOptions};
use kv_server::{Server, ServerOptions};
use tokio::sync::oneshot;

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Option<Cluster>>>,
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::with_options(ServerOptions::new())
    }

    pub fn with_options(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::in_dir(dir, options)
    }

    pub fn in_dir(dir: tempfile::TempDir, options: ServerOptions) -> Self {
        Self::with_cluster(dir, options, ClusterOptions::new())
    }

    pub fn with_cluster(
        dir: tempfile::TempDir,
        options: ServerOptions,
        cluster_options: ClusterOptions,
    ) -> Self {
        let path = dir.path().to_path_buf();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let cluster =
                    Arc::new(Cluster::open(&path, cluster_options).expect("open cluster"));
                let server = Server::bind("127.0.0.1:0", Arc::clone(&cluster), options)
                    .await
                    .expect("bind");
                addr_tx.send(server.local_addr()).expect("send addr");
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("run");
                Arc::try_unwrap(cluster).ok()
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server started");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            dir: Some(dir),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A client whose reads time out, so that a missing reply fails the test instead of
    /// hanging it.
    pub fn client(&self) -> redis::Connection {
        let c = redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c
    }

    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().to_path_buf()
    }

    /// Stops the server gracefully; returns the cluster (every connection closed, so the
    /// server's reference is gone) and the data directory.
    pub fn stop(mut self) -> (Option<Cluster>, tempfile::TempDir) {
        let cluster = self.shutdown();
        (cluster, self.dir.take().expect("dir"))
    }

    fn shutdown(&mut self) -> Option<Cluster> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(cluster) = self.shutdown() {
            let _ = cluster.close();
        }
    }
}

/// Sends `request` on a raw connection and reads until `expected.len()` bytes have come.
pub fn exchange(stream: &mut TcpStream, request: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(request).expect("write");
    read_exactly(stream, expected_len)
}

pub fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    stream.read_exact(&mut got).expect("read reply");
    got
}

/// Reads until the server closes the connection.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}
