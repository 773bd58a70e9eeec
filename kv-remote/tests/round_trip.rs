//! Every `Replica` method through a `ReplicaServer` answers what the served replica answers:
//! values, tombstones, versions, the epoch fence, invalid requests, exports in batches, and
//! the `start_*` forms through a `Collector`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kv_cluster::{
    Collector, Error, LocalReplica, MemoryReplica, NodeOptions, Record, Replica, Started, Swapped,
    Version, Write,
};
use kv_ring::TokenRange;

const T: Duration = Duration::from_secs(2);

fn w<'a>(key: &'a [u8], value: Option<&'a [u8]>, version: u64) -> Write<'a> {
    Write {
        key,
        value,
        version: Version::new(version),
        expires: None,
    }
}

fn all_records(r: &dyn Replica, epoch: u64) -> Vec<Record> {
    let mut out: Vec<Record> = r
        .export(epoch, &[TokenRange::FULL], 100)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[test]
fn every_method_answers_as_the_replica_it_serves() {
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let server = serve("node2", served.clone());
    let remote = remote("node2", &server, T);
    let model = MemoryReplica::new("node2").unwrap();
    let both = |f: &dyn Fn(&dyn Replica) -> String| {
        let (a, b) = (f(&remote), f(&model));
        assert_eq!(a, b);
        a
    };

    assert_eq!(remote.id().as_str(), "node2");
    assert_eq!(
        both(&|r| format!("{:?}", r.apply(1, w(b"k1", Some(b"v1"), 5)))),
        "Ok(true)"
    );
    assert_eq!(
        both(&|r| format!("{:?}", r.apply(1, w(b"k1", Some(b"v1"), 5)))),
        "Ok(false)"
    );
    both(&|r| format!("{:?}", r.apply(1, w(b"k2", None, 6))));
    // A swap reports the replaced record, value included when asked; a late one loses.
    let swapped = remote
        .apply_swap(1, w(b"k1", Some(b"v2"), 7), true)
        .unwrap();
    let Swapped::Applied { previous: Some(p) } = &swapped else {
        panic!("{swapped:?}")
    };
    assert_eq!(
        (p.version, p.live, p.value.as_deref()),
        (Version::new(5), true, Some(&b"v1"[..]))
    );
    model.apply_swap(1, w(b"k1", Some(b"v2"), 7), true).unwrap();
    assert_eq!(
        remote
            .apply_swap(1, w(b"k1", Some(b"v0"), 3), false)
            .unwrap(),
        Swapped::Kept {
            current: Version::new(7)
        }
    );
    let batch = [
        w(b"b1", Some(b"x"), 9),
        w(b"b2", None, 9),
        w(b"k1", Some(b"old"), 2),
    ];
    assert_eq!(
        both(&|r| format!("{:?}", r.apply_batch(1, &batch))),
        "Ok(2)"
    );

    // Values, tombstones, versions, absent keys.
    assert_eq!(remote.read(1, b"k1").unwrap(), Some(cell(Some("v2"), 7)));
    assert_eq!(remote.read(1, b"k2").unwrap(), Some(cell(None, 6)));
    assert_eq!(remote.read(1, b"nope").unwrap(), None);
    assert_eq!(
        remote.read_version(1, b"b2").unwrap(),
        Some(Version::new(9))
    );
    assert_eq!(remote.read_version(1, b"nope").unwrap(), None);
    let keys: [&[u8]; 4] = [b"k1", b"nope", b"k2", b"b1"];
    both(&|r| format!("{:?}", r.read_many(1, &keys)));
    assert_eq!(
        remote.read_versions(1, &keys).unwrap(),
        [
            Some(Version::new(7)),
            None,
            Some(Version::new(6)),
            Some(Version::new(9))
        ]
    );

    // Import, counts, ranges.
    let records: Vec<Record> = (0..50u32)
        .map(|i| Record {
            key: Bytes::from(format!("imp{i}")),
            value: (i % 5 != 0).then(|| Bytes::from(vec![b'z'; i as usize])),
            version: Version::new(100 + u64::from(i)),
            expires: None,
        })
        .collect();
    assert_eq!(both(&|r| format!("{:?}", r.import(1, &records))), "Ok(50)");
    assert_eq!(both(&|r| format!("{:?}", r.import(1, &records))), "Ok(0)");
    let half = TokenRange::new(0, u64::MAX / 2);
    let wrap = TokenRange::new(u64::MAX - u64::MAX / 3, u64::MAX / 5);
    both(&|r| format!("{:?}", r.count_in_ranges(&[half, wrap])));
    both(&|r| format!("{:?}", r.held()));
    let held = remote.held().unwrap();
    assert_eq!(held.live + held.tombstones, 4 + 50);
    both(&|r| format!("{:?}", r.digests(1, TokenRange::FULL, 64)));
    remote.reserve(&[half], 1000);
    remote.sync().unwrap();
    assert_eq!(remote.compact().unwrap(), Default::default());
    assert_eq!(remote.last_flush(), None);
    assert_eq!(all_records(&remote, 1), all_records(&model, 1));
    let dropped = both(&|r| format!("{:?}", r.drop_ranges(1, &[wrap])));
    assert_ne!(dropped, "Ok(0)", "the range held something");
    assert_eq!(all_records(&remote, 1), all_records(&model, 1));
    // The server's replica holds what the model holds.
    assert_eq!(all_records(served.as_ref(), 1), all_records(&model, 1));
    assert!(!remote.is_down());
}

#[test]
fn start_methods_answer_through_a_collector() {
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let server = serve("node2", served.clone());
    let remote = remote("node2", &server, T);
    let deadline = || Instant::now() + LONG;

    // Borrowed keys and values, dropped before the answer comes: encoded before the return.
    let c = Collector::new();
    for i in 0..8u64 {
        let key = format!("key{i}").into_bytes();
        let value = vec![b'v'; i as usize];
        let started = remote.start_apply(1, w(&key, Some(&value), 10 + i), c.ticket(i as usize));
        assert!(matches!(started, Started::Deferred));
    }
    let mut seen = BTreeSet::new();
    while let Some((i, r)) = c.next(deadline()) {
        assert!(r.unwrap());
        seen.insert(i);
    }
    assert_eq!(seen, (0..8).collect());
    assert_eq!(served.len(), 8);

    let c = Collector::new();
    let s = remote.start_apply_swap(1, w(b"key1", None, 99), true, c.ticket(0));
    assert!(matches!(s, Started::Deferred));
    let (i, r) = c.next(deadline()).unwrap();
    assert_eq!(i, 0);
    let Swapped::Applied { previous: Some(p) } = r.unwrap() else {
        panic!()
    };
    assert_eq!(
        (p.version, p.value.as_deref()),
        (Version::new(11), Some(&b"v"[..]))
    );

    let c = Collector::new();
    let batch = [w(b"x", Some(b"1"), 5), w(b"y", Some(b"2"), 5)];
    let _ = remote.start_apply_batch(1, &batch, c.ticket(3));
    assert_eq!(
        c.next(deadline()).map(|(i, r)| (i, r.unwrap())),
        Some((3, 2))
    );

    let c = Collector::new();
    let _ = remote.start_read(1, b"key2", c.ticket(0));
    let (_, r) = c.next(deadline()).unwrap();
    assert_eq!(r.unwrap(), Some(cell(Some("vv"), 12)));
    let c = Collector::new();
    let _ = remote.start_read_version(1, b"key1", c.ticket(0));
    assert_eq!(
        c.next(deadline()).unwrap().1.unwrap(),
        Some(Version::new(99))
    );
    let keys: [&[u8]; 3] = [b"key1", b"x", b"absent"];
    let c = Collector::new();
    let _ = remote.start_read_many(1, &keys, c.ticket(0));
    assert_eq!(
        c.next(deadline()).unwrap().1.unwrap(),
        [Some(cell(None, 99)), Some(cell(Some("1"), 5)), None]
    );
    let c = Collector::new();
    let _ = remote.start_read_versions(1, &keys, c.ticket(0));
    assert_eq!(
        c.next(deadline()).unwrap().1.unwrap(),
        [Some(Version::new(99)), Some(Version::new(5)), None]
    );
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn a_fenced_replica_refuses_stale_epochs_exactly() {
    let server = serve("node2", Arc::new(MemoryReplica::new("node2").unwrap()));
    let remote = remote("node2", &server, T);
    remote.fence(5);
    let stale = |e: Error| {
        assert!(
            matches!(&e, Error::StaleEpoch { node, epoch: 4, current: 5 } if node.as_str() == "node2"),
            "{e:?}"
        );
    };
    stale(remote.apply(4, w(b"k", Some(b"v"), 1)).unwrap_err());
    stale(remote.read(4, b"k").unwrap_err());
    let rec = Record {
        key: Bytes::from("k"),
        value: None,
        version: Version::new(1),
        expires: None,
    };
    stale(remote.import(4, &[rec]).unwrap_err());
    stale(remote.drop_ranges(4, &[TokenRange::FULL]).unwrap_err());
    stale(remote.digests(4, TokenRange::FULL, 4).unwrap_err());
    stale(remote.export(4, &[TokenRange::FULL], 10).err().unwrap());
    let c = Collector::new();
    let _ = remote.start_apply(4, w(b"k", Some(b"v"), 1), c.ticket(0));
    stale(c.next(Instant::now() + LONG).unwrap().1.unwrap_err());
    // A fence never goes down, and the current epoch passes.
    remote.fence(2);
    assert!(remote.apply(5, w(b"k", Some(b"v"), 1)).unwrap());
}

#[test]
fn invalid_requests_come_back_as_the_nodes_errors() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        LocalReplica::open("node2", dir.path(), NodeOptions::new().max_value_len(64)).unwrap(),
    );
    let server = serve("node2", local.clone());
    let remote = remote("node2", &server, T);
    let big = vec![b'x'; 65];
    let huge_key = vec![b'k'; kv_node::MAX_KEY_LEN + 1];
    let cases = [
        w(b"", Some(b"v"), 1),
        w(b"k", Some(&big), 1),
        w(&huge_key, Some(b"v"), 1),
        w(b"k", Some(b"v"), Version::LIMIT.as_u64()),
    ];
    for case in cases {
        let mine = remote.apply(1, case).unwrap_err();
        let theirs = local.apply(1, case).unwrap_err();
        assert!(mine.is_invalid_request(), "{mine:?}");
        assert_eq!(mine.chain(), theirs.chain());
        let c = Collector::new();
        let _ = remote.start_apply(1, case, c.ticket(0));
        assert!(
            c.next(Instant::now() + LONG)
                .unwrap()
                .1
                .unwrap_err()
                .is_invalid_request()
        );
    }
    // A real node's maintenance answers too.
    remote.apply(1, w(b"k", Some(b"v"), 3)).unwrap();
    remote.sync().unwrap();
    assert!(remote.last_flush().is_some());
    assert_eq!(remote.last_flush(), local.last_flush());
    assert_eq!(
        remote.digests(1, TokenRange::FULL, 16).unwrap(),
        local.digests(1, TokenRange::FULL, 16).unwrap()
    );
    let report = remote.compact().unwrap();
    assert!(report.segments_compacted <= 1, "{report:?}");
    assert_eq!(remote.held().unwrap(), local.held().unwrap());
}

#[test]
fn an_export_of_thousands_of_records_comes_in_batches() {
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let n = 5000u32;
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            key: Bytes::from(format!("key-{i:05}")),
            value: (i % 7 != 0).then(|| Bytes::from(format!("value-{i}"))),
            version: Version::new(1 + u64::from(i)),
            expires: None,
        })
        .collect();
    served.import(1, &records).unwrap();
    let server = serve("node2", served.clone());
    let remote = remote("node2", &server, T);

    let mut got = Vec::new();
    let mut batches = 0;
    for batch in remote.export(1, &[TokenRange::FULL], 300).unwrap() {
        let batch = batch.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 300, "{}", batch.len());
        batches += 1;
        got.extend(batch);
    }
    assert!(batches >= (n as usize).div_ceil(300), "{batches} batches");
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, records);

    // A wrapping sub-range: exactly its records.
    let range = TokenRange::new(u64::MAX / 3 * 2, u64::MAX / 4);
    let inside: BTreeSet<Bytes> = records
        .iter()
        .filter(|r| range.contains(kv_ring::token(&r.key)))
        .map(|r| r.key.clone())
        .collect();
    let exported: BTreeSet<Bytes> = remote
        .export(1, &[range], 64)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .map(|r| r.key)
        .collect();
    assert_eq!(exported, inside);

    // A reader that stops early frees the node's session.
    let mut partial = remote.export(1, &[TokenRange::FULL], 10).unwrap();
    assert_eq!(partial.next().unwrap().unwrap().len(), 10);
    assert_eq!(server.open_exports(), 1);
    drop(partial);
    let deadline = Instant::now() + LONG;
    while server.open_exports() != 0 {
        assert!(Instant::now() < deadline, "the session was not closed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server answering data operations inline gives the same answers, and its blocking pool
/// stays for the rest (an export, a sync).
#[test]
fn a_server_answering_data_inline_answers_the_same() {
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let server = kv_remote::ReplicaServer::start_inline_data(
        kv_net::Identity::new(CLUSTER, "node2"),
        kv_net::ServerOptions::new(),
        served.clone(),
    )
    .unwrap();
    let remote = remote("node2", &server, T);
    assert!(remote.apply(1, w(b"k", Some(b"v"), 3)).unwrap());
    assert!(
        remote
            .apply_batch(1, &[w(b"a", Some(b"1"), 4), w(b"b", None, 4)])
            .unwrap()
            == 2
    );
    let got = remote.read(1, b"k").unwrap().unwrap();
    assert_eq!(
        (got.value.as_deref(), got.version),
        (Some(&b"v"[..]), Version::new(3))
    );
    let many = remote.read_many(1, &[b"a", b"b", b"zz"]).unwrap();
    assert_eq!(many[1], Some(cell(None, 4)));
    assert_eq!(many[2], None);
    remote.sync().unwrap();
    assert_eq!(all_records(&remote, 1).len(), 3);
    assert_eq!(all_records(served.as_ref(), 1).len(), 3);
}

/// A cell without an expiry, as a replica's read answers it.
fn cell(value: Option<&'static str>, version: u64) -> kv_cluster::Cell {
    kv_cluster::Cell {
        value: value.map(Bytes::from),
        version: Version::new(version),
        expires: None,
    }
}

/// The maintenance `start_*` forms answer through a collector what the blocking methods
/// answer: counts, digests, an export page by page (and a session ended early is freed), an
/// import larger than one request's byte budget (sent as several, answered once), a sync and
/// a fence.
#[test]
fn maintenance_start_methods_answer_through_a_collector() {
    use kv_cluster::ExportPage;
    let served = Arc::new(MemoryReplica::new("node2").unwrap());
    let server = serve("node2", served.clone());
    let remote = remote("node2", &server, T);
    let deadline = || Instant::now() + LONG;
    fn one<T>(c: &Collector<T>, started: Started<T>, deadline: Instant) -> kv_cluster::Result<T> {
        match started {
            Started::Done(r) => r,
            Started::Deferred => c.next(deadline).unwrap().1,
        }
    }

    // Three values of 3 MiB: over `IMPORT_REQUEST_BYTES` (8 MiB), so two requests.
    let big = vec![b'b'; 3 << 20];
    let mut records: Vec<Record> = (0..3u64)
        .map(|i| Record {
            key: Bytes::from(format!("big-{i}")),
            value: Some(Bytes::from(big.clone())),
            version: Version::new(10 + i),
            expires: None,
        })
        .collect();
    records.extend((0..997u64).map(|i| Record {
        key: Bytes::from(format!("key-{i:04}")),
        value: Some(Bytes::from(format!("value-{i}"))),
        version: Version::new(20 + i),
        expires: None,
    }));
    let c = Collector::new();
    let started = remote.start_import(1, &records, c.ticket(0));
    assert!(matches!(started, Started::Deferred));
    assert_eq!(one(&c, started, deadline()).unwrap(), 1000);
    assert_eq!(served.len(), 1000);
    // Again: last-writer-wins, nothing changes.
    let c = Collector::new();
    let started = remote.start_import(1, &records, c.ticket(0));
    assert_eq!(one(&c, started, deadline()).unwrap(), 0);

    let c = Collector::new();
    let started = remote.start_held(c.ticket(0));
    assert_eq!(
        one(&c, started, deadline()).unwrap(),
        served.held().unwrap()
    );
    let c = Collector::new();
    let started = remote.start_digests(1, TokenRange::FULL, 16, c.ticket(0));
    assert_eq!(
        one(&c, started, deadline()).unwrap(),
        served.digests(1, TokenRange::FULL, 16).unwrap()
    );

    // Page by page, batches of 100: every record once, over several pages.
    let mut got = Vec::new();
    let mut session = None;
    let mut pages = 0;
    loop {
        let c = Collector::new();
        let started = remote.start_export_page(1, &[TokenRange::FULL], 100, session, c.ticket(0));
        let ExportPage { records, more } = one(&c, started, deadline()).unwrap();
        pages += 1;
        got.extend(records);
        match more {
            Some(s) => session = Some(s),
            None => break,
        }
    }
    assert!(pages >= 10, "{pages} pages");
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, all_records(served.as_ref(), 1));

    // A session ended after its first page is freed on the node.
    let c = Collector::new();
    let started = remote.start_export_page(1, &[TokenRange::FULL], 10, None, c.ticket(0));
    let first = one(&c, started, deadline()).unwrap();
    let session = first.more.expect("more pages");
    assert_eq!(server.open_exports(), 1);
    remote.end_export(session);
    let until = Instant::now() + LONG;
    while server.open_exports() != 0 {
        assert!(Instant::now() < until, "the session was not closed");
        std::thread::sleep(Duration::from_millis(5));
    }

    let c = Collector::new();
    let started = remote.start_sync(c.ticket(0));
    one(&c, started, deadline()).unwrap();
    let c = Collector::new();
    let started = remote.start_fence(5, c.ticket(0));
    one(&c, started, deadline()).unwrap();
    // Fenced at 5: an export at 4 is refused, through the start form too.
    let c = Collector::new();
    let started = remote.start_export_page(4, &[TokenRange::FULL], 10, None, c.ticket(0));
    assert!(matches!(
        one(&c, started, deadline()),
        Err(Error::StaleEpoch { current: 5, .. })
    ));
}
