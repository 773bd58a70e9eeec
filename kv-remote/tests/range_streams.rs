//! Range streams between processes' transports (`docs/membership.md` §3.4), on real sockets:
//! a source node's `RangeStreamer` sends its ranges to a destination `ReplicaServer` whose
//! `RangeReceiver` imports them into a kv-node on a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{CLUSTER, LONG};
use kv_cluster::{LocalReplica, RateLimiter, Record, Replica, StreamRate, Version, Write};
use kv_net::{Identity, PeerFilter, Peers, PeersOptions, ServerOptions};
use kv_node::{Node, NodeOptions};
use kv_remote::*;
use kv_ring::TokenRange;

const EPOCH: u64 = 1;

/// A kv-node replica on a temp dir.
fn node(id: &str) -> (tempfile::TempDir, Arc<LocalReplica>) {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::open(dir.path(), NodeOptions::new()).unwrap();
    (
        dir,
        Arc::new(LocalReplica::new(id.parse().unwrap(), Arc::new(n))),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `n` keys on `r`: 100-byte values, every 7th a tombstone, every 5th expiring in an hour,
/// each with its own version.
fn fill(r: &LocalReplica, n: u32) {
    let expires = now_ms() + 3_600_000;
    let keys: Vec<[u8; 8]> = (0..n).map(|i| u64::from(i).to_be_bytes()).collect();
    let value = [b'v'; 100];
    for (c, chunk) in keys.chunks(1000).enumerate() {
        let writes: Vec<Write<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let i = c * 1000 + j;
                let tomb = i % 7 == 0;
                Write {
                    key: k,
                    value: (!tomb).then_some(&value[..]),
                    version: Version::new(1_000_000 + i as u64),
                    expires: (!tomb && i % 5 == 0).then_some(expires),
                }
            })
            .collect();
        r.apply_batch(EPOCH, &writes).unwrap();
    }
}

/// Everything `r` holds in `ranges`, sorted by key.
fn contents(r: &dyn Replica, ranges: &[TokenRange]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for b in r.export(EPOCH, ranges, 1000).unwrap() {
        out.extend(b.unwrap());
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The destination's import target: the node, with counts of what was imported and whether
/// a sync followed.
struct Recording {
    node: Arc<LocalReplica>,
    imported: AtomicU64,
    since_sync: AtomicU64,
    syncs: AtomicU64,
}

impl ImportTarget for Recording {
    fn import_chunk(&self, epoch: u64, records: &[Record]) -> kv_cluster::Result<usize> {
        let n = Replica::import(&*self.node, epoch, records)?;
        self.imported
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        self.since_sync.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    fn sync_imported(&self) -> kv_cluster::Result<()> {
        Replica::sync(&*self.node)?;
        self.since_sync.store(0, Ordering::SeqCst);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One report as the test keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A checkpoint, with the chunks imported since the last sync when it was reported.
    Checkpoint {
        term: u64,
        range: TokenRange,
        done_through: u64,
        unsynced: u64,
    },
    /// A batch of checkpoints (a receiver with `batch_checkpoints`) of this many ranges: its
    /// checkpoints follow as `Checkpoint`s.
    Batch {
        ranges: usize,
    },
    Done {
        term: u64,
        keys: u64,
    },
    Failed {
        term: u64,
        error: String,
        superseded: bool,
        bad_input: bool,
    },
}

/// The destination: node `b` served with a receiver that records its reports.
struct Destination {
    _dir: tempfile::TempDir,
    target: Arc<Recording>,
    server: ReplicaServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn destination(members: Option<&[&str]>) -> Destination {
    destination_with(members, false)
}

fn destination_with(members: Option<&[&str]>, batched: bool) -> Destination {
    let (dir, b) = node("b");
    let target = Arc::new(Recording {
        node: Arc::clone(&b),
        imported: AtomicU64::new(0),
        since_sync: AtomicU64::new(0),
        syncs: AtomicU64::new(0),
    });
    let server =
        ReplicaServer::start(Identity::new(CLUSTER, "b"), ServerOptions::new(), b).unwrap();
    if let Some(m) = members {
        server.set_member_filter(Some(PeerFilter::only(m.iter().copied())));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, t) = (Arc::clone(&seen), Arc::clone(&target));
    let receiver = RangeReceiver::new(target.clone(), move |r: &StreamReport<'_>| {
        let term = r.header.term;
        let seen = match &r.event {
            StreamEvent::Checkpoint {
                range,
                done_through,
            } => Seen::Checkpoint {
                term,
                range: *range,
                done_through: *done_through,
                unsynced: t.since_sync.load(Ordering::SeqCst),
            },
            StreamEvent::Checkpoints(done) => {
                let unsynced = t.since_sync.load(Ordering::SeqCst);
                let mut seen = s.lock().unwrap();
                seen.push(Seen::Batch { ranges: done.len() });
                seen.extend(done.iter().map(|&(range, done_through)| Seen::Checkpoint {
                    term,
                    range,
                    done_through,
                    unsynced,
                }));
                return;
            }
            StreamEvent::Done => Seen::Done { term, keys: r.keys },
            StreamEvent::Failed(e) => Seen::Failed {
                term,
                error: e.to_string(),
                superseded: matches!(e, StreamError::Superseded { .. }),
                bad_input: matches!(
                    e,
                    StreamError::UnsupportedVersion { .. }
                        | StreamError::Decode { .. }
                        | StreamError::TooManyRecords { .. }
                        | StreamError::BadCheckpoint { .. }
                        | StreamError::Empty { .. }
                ),
            },
            _ => return,
        };
        s.lock().unwrap().push(seen);
    });
    let receiver = if batched {
        receiver.batch_checkpoints()
    } else {
        receiver
    };
    server.set_range_receiver(Some(Arc::new(receiver)));
    Destination {
        _dir: dir,
        target,
        server,
        seen,
    }
}

/// A transport of node `me` connected to the destination.
fn transport(me: &str, dst: &Destination, options: PeersOptions) -> Arc<ReplicaPeers> {
    let peers: ReplicaPeers = Peers::start(Identity::new(CLUSTER, me), options).unwrap();
    peers.add_peer("b", dst.server.local_addr()).unwrap();
    assert!(peers.wait_connected("b", LONG));
    Arc::new(peers)
}

fn task(term: u64, ranges: &[StreamRange]) -> StreamTask {
    StreamTask {
        header: StreamHeader {
            change: 1,
            task: 4,
            term,
            epoch: EPOCH,
        },
        destination: "b".into(),
        ranges: ranges.to_vec(),
    }
}

fn from_start(ranges: &[TokenRange]) -> Vec<StreamRange> {
    ranges
        .iter()
        .map(|&range| StreamRange {
            range,
            done_through: None,
        })
        .collect()
}

/// Ranges that are not the whole ring: three stretches, one wrapping past the top.
fn some_ranges() -> Vec<TokenRange> {
    vec![
        TokenRange::new(0x1000_0000_0000_0000, 0x3000_0000_0000_0000),
        TokenRange::new(0x7000_0000_0000_0000, 0x7800_0000_0000_0000),
        TokenRange::new(0xe000_0000_0000_0000, 0x0800_0000_0000_0000),
    ]
}

#[test]
fn every_key_of_the_ranges_arrives_with_its_version_and_expiry() {
    let (_a_dir, a) = node("a");
    fill(&a, 30_000);
    let dst = destination(None);
    let peers = transport("a", &dst, common::fast_options());
    let streamer = RangeStreamer::new(a.clone(), peers, Arc::new(RateLimiter::unlimited()));
    let ranges = some_ranges();
    let summary = streamer.stream(&task(1, &from_start(&ranges))).unwrap();

    let want = contents(&*a, &ranges);
    let got = contents(&*dst.target.node, &ranges);
    assert!(want.len() > 5_000, "the ranges hold {} keys", want.len());
    assert!(want.iter().any(|r| r.is_tombstone()) && want.iter().any(|r| r.expires.is_some()));
    assert_eq!(got, want, "B holds exactly A's records of the ranges");
    // Nothing outside the ranges.
    assert_eq!(
        contents(&*dst.target.node, &[TokenRange::FULL]).len(),
        want.len()
    );
    assert_eq!(summary.keys, want.len() as u64);
    assert!(summary.chunks >= (want.len() as u64).div_ceil(MAX_CHUNK_RECORDS as u64));

    let seen = dst.seen.lock().unwrap().clone();
    // Every range's end was reported, each checkpoint after a sync, then Done.
    for r in &ranges {
        assert!(
            seen.iter()
                .any(|s| matches!(s, Seen::Checkpoint { range, done_through, .. }
                if range == r && *done_through == r.end)),
            "no end checkpoint for {r:?}: {seen:?}"
        );
    }
    for s in &seen {
        if let Seen::Checkpoint { unsynced, .. } = s {
            assert_eq!(*unsynced, 0, "a checkpoint reported before the sync: {s:?}");
        }
    }
    assert_eq!(
        seen.last(),
        Some(&Seen::Done {
            term: 1,
            keys: want.len() as u64
        })
    );
}

/// A task of many small ranges (a real join's shape: one per vnode): every key of the ranges
/// arrives and nothing else, each range's end is reported once, and the ranges' ends do not
/// cut chunks short (the chunks are full, not one per range).
#[test]
fn many_small_ranges_travel_in_full_chunks_with_one_end_checkpoint_each() {
    many_small_ranges(false);
}

/// The same with a receiver that batches its checkpoints: each sync's checkpoints arrive as
/// one report, and every range's end is in exactly one.
#[test]
fn many_small_ranges_batched_report_each_sync_once() {
    many_small_ranges(true);
}

fn many_small_ranges(batched: bool) {
    let (_a_dir, a) = node("a");
    fill(&a, 30_000);
    let dst = destination_with(None, batched);
    let peers = transport("a", &dst, common::fast_options());
    let streamer = RangeStreamer::new(a.clone(), peers, Arc::new(RateLimiter::unlimited()));
    // 200 ranges of 1/800 of the ring each, one every 1/200: a quarter of the ring, about
    // 40 keys per range; one more wraps past the top.
    let stride = u64::MAX / 200;
    let mut ranges: Vec<TokenRange> = (0..200u64)
        .map(|i| TokenRange::new(i * stride + 7, i * stride + 7 + stride / 4))
        .collect();
    ranges.push(TokenRange::new(u64::MAX - stride / 8, 5));
    let summary = streamer.stream(&task(1, &from_start(&ranges))).unwrap();

    let want = contents(&*a, &ranges);
    assert!(want.len() > 5_000, "the ranges hold {} keys", want.len());
    assert_eq!(contents(&*dst.target.node, &[TokenRange::FULL]), want);
    assert_eq!(summary.keys, want.len() as u64);
    assert_eq!(
        summary.chunks,
        (want.len() as u64).div_ceil(MAX_CHUNK_RECORDS as u64),
        "full chunks"
    );
    let seen = dst.seen.lock().unwrap().clone();
    for r in &ranges {
        let ends = seen
            .iter()
            .filter(|s| {
                matches!(s, Seen::Checkpoint { range, done_through, .. }
                if range == r && *done_through == r.end)
            })
            .count();
        assert_eq!(ends, 1, "end checkpoints of {r:?}: {seen:?}");
    }
    assert!(seen.iter().all(|s| match s {
        Seen::Checkpoint { unsynced, .. } => *unsynced == 0,
        _ => true,
    }));
    let batches: Vec<usize> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Batch { ranges } => Some(*ranges),
            _ => None,
        })
        .collect();
    if batched {
        // One report per sync, each covering many ranges.
        assert!(!batches.is_empty() && batches.iter().all(|&n| n > 0));
        assert_eq!(batches.iter().sum::<usize>(), ranges.len());
        assert!(
            batches.len() as u64 <= dst.target.syncs.load(Ordering::SeqCst),
            "{batches:?}"
        );
    } else {
        assert!(batches.is_empty());
    }
    assert_eq!(
        seen.last(),
        Some(&Seen::Done {
            term: 1,
            keys: want.len() as u64
        })
    );
}

/// The source's transport is cut mid-stream (a partition, then the stall timeout abandons
/// the stream and closes its connection); a new stream from the recorded `done_through`
/// copies the rest, and at most 64 chunks' worth of records is copied twice.
#[test]
fn a_cut_stream_resumes_from_its_done_through() {
    let n = 120_000;
    let (_a_dir, a) = node("a");
    fill(&a, n);
    let dst = destination(None);
    let options = common::fast_options().stream_stall_timeout(Duration::from_millis(300));
    let peers = transport("a", &dst, options);
    // Slow enough that the cut lands mid-stream: 120 chunks in about 2.4 s.
    let limiter = Arc::new(RateLimiter::new(StreamRate {
        keys_per_sec: Some(50_000),
        bytes_per_sec: None,
    }));
    let streamer = Arc::new(RangeStreamer::new(a.clone(), Arc::clone(&peers), limiter));
    let full = [TokenRange::FULL];
    let first = {
        let (s, t) = (Arc::clone(&streamer), task(1, &from_start(&full)));
        std::thread::spawn(move || s.stream(&t))
    };
    // Cut once a first checkpoint is reported (about 64 chunks in).
    let deadline = Instant::now() + LONG;
    while !dst
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| matches!(s, Seen::Checkpoint { .. }))
    {
        assert!(Instant::now() < deadline, "no checkpoint reported");
        std::thread::sleep(Duration::from_millis(5));
    }
    peers.faults().partition("b");
    let cut = first.join().unwrap();
    assert!(
        matches!(cut, Err(Error::Transport(_))),
        "the cut stream fails: {cut:?}"
    );
    peers.faults().heal("b");
    let imported_before = dst.target.imported.load(Ordering::SeqCst);
    assert!(
        imported_before < u64::from(n),
        "the cut came after the whole stream ({imported_before} records)"
    );

    let done_through = dst
        .seen
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|s| match s {
            Seen::Checkpoint { done_through, .. } => Some(*done_through),
            _ => None,
        })
        .unwrap();
    streamer.limiter().set_rate(StreamRate::UNLIMITED);
    assert!(peers.wait_connected("b", LONG));
    let resumed = [StreamRange {
        range: TokenRange::FULL,
        done_through: Some(done_through),
    }];
    let rest = streamer.stream(&task(1, &resumed)).unwrap();
    assert!(rest.keys < u64::from(n), "the resume sent everything again");

    assert_eq!(
        contents(&*dst.target.node, &full),
        contents(&*a, &full),
        "B holds every key of A after the resume"
    );
    let total = dst.target.imported.load(Ordering::SeqCst);
    let twice = total - u64::from(n);
    assert!(
        twice <= CHECKPOINT_EVERY * MAX_CHUNK_RECORDS as u64,
        "{twice} records copied twice (more than {CHECKPOINT_EVERY} chunks)"
    );
}

#[test]
fn the_rate_limit_holds_within_20_percent() {
    let (_a_dir, a) = node("a");
    fill(&a, 30_000);
    let dst = destination(None);
    let peers = transport("a", &dst, common::fast_options());
    let rate = 20_000;
    let limiter = Arc::new(RateLimiter::new(StreamRate {
        keys_per_sec: Some(rate),
        bytes_per_sec: None,
    }));
    let streamer = RangeStreamer::new(a, peers, limiter);
    let s = streamer
        .stream(&task(1, &from_start(&[TokenRange::FULL])))
        .unwrap();
    let measured = s.keys as f64 / s.elapsed.as_secs_f64();
    assert_eq!(s.keys, 30_000);
    assert!(
        (0.8..=1.2).contains(&(measured / rate as f64)),
        "{measured:.0} keys/s against a limit of {rate}"
    );
    // Chunks hold what the rate allows in a burst (a tenth of a second: 2,000 keys here,
    // under the 1,000-record maximum) ...
    assert!(s.chunks >= 30, "{} chunks for 30,000 keys", s.chunks);
}

/// A slow rate sends small chunks often, not a full chunk and then a long wait: at 50 keys/s
/// a chunk holds 5 records, so the first keys arrive within a second and the stream of 30
/// keys is paced over about half a second, never sent at once.
#[test]
fn a_slow_rate_sends_small_chunks() {
    let (_a_dir, a) = node("a");
    fill(&a, 30);
    let dst = destination(None);
    let peers = transport("a", &dst, common::fast_options());
    let limiter = Arc::new(RateLimiter::new(StreamRate {
        keys_per_sec: Some(50),
        bytes_per_sec: None,
    }));
    let streamer = RangeStreamer::new(a, peers, limiter);
    let s = streamer
        .stream(&task(1, &from_start(&[TokenRange::FULL])))
        .unwrap();
    assert_eq!(s.keys, 30);
    assert!(
        s.chunks >= 6,
        "{} chunks for 30 keys at 50 keys/s",
        s.chunks
    );
    assert!(
        s.elapsed >= std::time::Duration::from_millis(400),
        "paced: {:?}",
        s.elapsed
    );
}

/// A re-issued task (a new leader's term) cancels the stream of the older term, on the
/// source (the same streamer) and on the destination (another sender); an older term is
/// refused once a newer one runs.
#[test]
fn a_newer_term_cancels_the_older_stream() {
    let n = 40_000;
    let (_a_dir, a) = node("a");
    fill(&a, n);
    let dst = destination(None);
    let slow = || {
        Arc::new(RateLimiter::new(StreamRate {
            keys_per_sec: Some(20_000),
            bytes_per_sec: None,
        }))
    };
    let full = from_start(&[TokenRange::FULL]);

    // On the source: term 2 on the same streamer cancels term 1.
    let streamer = Arc::new(RangeStreamer::new(
        a.clone(),
        transport("a", &dst, common::fast_options()),
        slow(),
    ));
    let old = {
        let (s, t) = (Arc::clone(&streamer), task(1, &full));
        std::thread::spawn(move || s.stream(&t))
    };
    std::thread::sleep(Duration::from_millis(300));
    streamer.limiter().set_rate(StreamRate::UNLIMITED);
    let new = streamer.stream(&task(2, &full)).unwrap();
    let old = old.join().unwrap();
    assert!(
        matches!(old, Err(Error::Superseded { term: 1, by: 2, .. })),
        "{old:?}"
    );
    assert_eq!(new.keys, u64::from(n));
    assert_eq!(
        contents(&*dst.target.node, &[TokenRange::FULL]),
        contents(&*a, &[TokenRange::FULL])
    );

    // On the destination: a stream of term 4 from another sender cancels term 3's.
    let x = Arc::new(RangeStreamer::new(
        a.clone(),
        transport("a", &dst, common::fast_options()),
        slow(),
    ));
    let y = RangeStreamer::new(
        a.clone(),
        transport("a", &dst, common::fast_options()),
        Arc::new(RateLimiter::unlimited()),
    );
    let third = {
        let t = task(3, &full);
        let x = Arc::clone(&x);
        std::thread::spawn(move || x.stream(&t))
    };
    std::thread::sleep(Duration::from_millis(300));
    y.stream(&task(4, &full)).unwrap();
    let third = third.join().unwrap();
    assert!(third.is_err(), "term 3 went on after term 4: {third:?}");
    assert!(
        dst.seen.lock().unwrap().iter().any(|s| matches!(
            s,
            Seen::Failed {
                term: 3,
                superseded: true,
                ..
            }
        )),
        "the destination reported term 3 superseded"
    );
    // An older term than the one running is refused at the destination: term 6 runs, then
    // term 5 opens.
    let six = {
        let t = task(6, &full);
        let x = Arc::clone(&x);
        std::thread::spawn(move || x.stream(&t))
    };
    std::thread::sleep(Duration::from_millis(300));
    let five = y.stream(&task(5, &full));
    assert!(
        matches!(&five, Err(Error::Transport(kv_net::Error::Stream { reason, .. })) if reason.contains("superseded")),
        "{five:?}"
    );
    x.limiter().set_rate(StreamRate::UNLIMITED);
    six.join().unwrap().unwrap();
}

/// Bad input ends the stream with a typed error and the node serves on: another format
/// version, a chunk whose length prefix lies, too many records, a checkpoint outside its
/// range, a bad header, a stream from a node that is not a member.
#[test]
fn bad_streams_are_refused_and_the_node_serves_on() {
    let dst = destination(Some(&["a", "b"]));
    let peers = transport("a", &dst, common::fast_options());
    let header = StreamHeader {
        change: 1,
        task: 9,
        term: 1,
        epoch: EPOCH,
    }
    .encode();
    let entry = Entry {
        key: Bytes::from_static(b"k"),
        value: Some(Bytes::from_static(b"v")),
        version: 5,
        expires: None,
    };
    let mut other_version = StreamMessage::Records(vec![entry.clone()]).encode();
    other_version[0] = STREAM_FORMAT_VERSION + 1;
    // Records, then a length prefix of 1,000 entries over the bytes of one.
    let mut lying = vec![STREAM_FORMAT_VERSION, 0];
    lying.extend_from_slice(&[0xe8, 0x07]);
    lying.extend_from_slice(&postcard::to_allocvec(&entry).unwrap());
    let too_many = StreamMessage::Records(vec![entry.clone(); MAX_CHUNK_RECORDS + 1]).encode();
    let outside = StreamMessage::Checkpoint {
        range: Range { start: 10, end: 20 },
        done_through: 30,
    }
    .encode();
    for (what, chunk) in [
        ("another version", other_version),
        ("a lying length", lying),
        ("too many records", too_many),
        ("a checkpoint outside its range", outside),
    ] {
        let before = dst.seen.lock().unwrap().len();
        let mut s = peers.open_stream("b", &header).unwrap();
        let sent = s.send(&chunk).and_then(|()| s.finish(LONG));
        assert!(sent.is_err(), "{what} was taken");
        let seen = dst.seen.lock().unwrap()[before..].to_vec();
        assert!(
            seen.iter().any(|s| matches!(
                s,
                Seen::Failed {
                    bad_input: true,
                    ..
                }
            )),
            "{what}: {seen:?}"
        );
    }
    // A header of another version.
    let mut bad_header = header.clone();
    bad_header[0] = 0;
    let s = peers.open_stream("b", &bad_header).unwrap();
    let e = s.finish(LONG).unwrap_err();
    assert!(
        e.to_string().contains("version") || format!("{e:?}").contains("version"),
        "{e:?}"
    );

    // A stream from a node that is not a member.
    let stranger = transport("c", &dst, common::fast_options());
    let s = stranger.open_stream("b", &header).unwrap();
    let e = s.finish(LONG).unwrap_err();
    assert!(format!("{e:?}").contains("not a member"), "{e:?}");

    // The node serves on: a good stream goes through, and a replica request is answered.
    assert_eq!(dst.target.imported.load(Ordering::SeqCst), 0);
    let mut s = peers.open_stream("b", &header).unwrap();
    s.send(&StreamMessage::Records(vec![entry]).encode())
        .unwrap();
    s.finish(LONG).unwrap();
    let remote = RemoteReplica::new("b".parse().unwrap(), peers, LONG);
    let cell = remote.read(EPOCH, b"k").unwrap().unwrap();
    assert_eq!(
        (cell.value.as_deref(), cell.version),
        (Some(&b"v"[..]), Version::new(5))
    );
}
