//! One client connection: read, decode every complete command, execute the batch, write all
//! its replies at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kv_cluster::Cluster;
use kv_resp::{Command, CommandDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clients::Registration;
use crate::commands::{execute, may_block};
use crate::options::ServerOptions;
use crate::session::Session;
use crate::shared::Shared;

/// Bytes asked of the socket per read (Redis's `PROTO_IOBUF_LEN`).
const READ_CHUNK: usize = 16 * 1024;
/// A read buffer grown past this by a large command is replaced once empty.
const LARGE_BUFFER: usize = 1 << 20;

/// Serves one client until it disconnects, sends `QUIT`, breaks the protocol, or the server
/// shuts down (checked between batches: a batch being executed is finished and its replies
/// written first).
pub(crate) async fn serve(
    mut stream: TcpStream,
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    registration: Registration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
    let options = &shared.options;
    let mut decoder = CommandDecoder::with_limits(options.get_limits());
    let mut session = Session::new(
        options.get_requirepass().map(Arc::from),
        Arc::clone(&registration.entry),
        Arc::clone(&registration.resp),
        Arc::clone(&shared),
        crate::commands::COMMANDS.len(),
    );
    let mut queue: VecDeque<Command> = VecDeque::new();
    let mut replies = BytesMut::new();
    loop {
        // Take every complete command already in the buffer (up to a batch).
        let mut protocol_error = None;
        let mut batch_full = false;
        // An unauthenticated client's commands are decoded one at a time: the command after
        // `AUTH` gets the authenticated limits, as in Redis.
        decoder.set_authenticated(session.authenticated);
        let max_batch = if session.authenticated {
            options.get_max_batch()
        } else {
            1
        };
        loop {
            if queue.len() >= max_batch {
                batch_full = true;
                break;
            }
            match decoder.decode(&mut read_buf) {
                Ok(Some(cmd)) => queue.push_back(cmd),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        if let Some(last) = queue.back() {
            registration.entry.touch(last.args());
        }
        while !queue.is_empty() && !session.quit {
            let Some((s, q, r)) = run_batch(&cluster, session, queue, replies, options).await
            else {
                // The storage thread panicked: nothing sensible can be answered; close.
                return;
            };
            (session, queue, replies) = (s, q, r);
            // All the replies built so far in one write; wait for it before doing more
            // (backpressure).
            if stream.write_all(&replies).await.is_err() {
                return;
            }
            replies.clear();
            if replies.capacity() > 2 * options.get_max_pending_reply_bytes() {
                // One large reply must not keep its buffer for the connection's life.
                replies = BytesMut::new();
            }
        }
        if session.quit {
            return;
        }
        if let Some(e) = protocol_error {
            // As Redis: reply, then close the connection.
            let text = format!("ERR Protocol error: {e}");
            session.encoder().error(&mut replies, text.as_bytes());
            if stream.write_all(&replies).await.is_ok() {
                close_gracefully(stream).await;
            }
            return;
        }
        if batch_full {
            // The batch limit stopped decoding: decode the rest before reading.
            continue;
        }
        if read_buf.is_empty() && read_buf.capacity() > LARGE_BUFFER {
            // Nor one large command its read buffer.
            read_buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if read_buf.capacity() - read_buf.len() < READ_CHUNK / 4 {
            read_buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = stream.read_buf(&mut read_buf) => match read {
                // EOF, possibly in the middle of a command: that command is dropped.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Closes after an error reply so that the client reads the reply: sends FIN, then discards
/// what the client still sends for a moment. Closing with unread input would send a TCP
/// reset, which can destroy the reply in the client's receive buffer before it is read.
async fn close_gracefully(mut stream: TcpStream) {
    const DRAIN_BYTES: usize = 1 << 20;
    const DRAIN_TIME: Duration = Duration::from_secs(1);
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = vec![0u8; READ_CHUNK];
        let mut drained = 0;
        while drained < DRAIN_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Executes commands from the queue on a storage thread if any may block
/// ([`may_block`]: an fsync to wait for, a walk of the store), inline otherwise.
async fn run_batch(
    cluster: &Arc<Cluster>,
    mut session: Session,
    mut queue: VecDeque<Command>,
    mut replies: BytesMut,
    options: &ServerOptions,
) -> Option<(Session, VecDeque<Command>, BytesMut)> {
    let flush_at = options.get_max_pending_reply_bytes();
    if !may_block(
        &queue,
        options.get_sync_policy(),
        options.get_remote_replicas(),
    ) {
        execute(cluster, &mut session, &mut queue, &mut replies, flush_at).await;
        return Some((session, queue, replies));
    }
    let cluster = Arc::clone(cluster);
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        runtime.block_on(execute(
            &cluster,
            &mut session,
            &mut queue,
            &mut replies,
            flush_at,
        ));
        (session, queue, replies)
    });
    task.await.ok()
}
