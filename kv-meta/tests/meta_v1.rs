//! The meta protocol, version 1: golden bytes of every request and reply kind (openraft's
//! RPC types inside them included, so an openraft upgrade that changes their serde form fails
//! here, not between nodes), the variant numbers pinned, and every bad body answered with a
//! typed error: another version with `UnsupportedVersion` (by a running node's service too),
//! a body that does not decode, claims more than it holds or is too large with `BadRequest`.
//!
//! Regenerate only for a new version (keep the old files):
//! `cargo test -p kv-meta --test meta_v1 -- --ignored write_golden_files`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_meta::{
    BoxFuture, Command, MAX_META_BODY, META_PROTOCOL_VERSION, META_REQUEST_ENVELOPE, MetaError,
    MetaNode, MetaPeer, MetaRaft, MetaReply, MetaRequest, MetaResponse, MetaStatus, MetaTransport,
    RateLimit, TransportError, meta_config, request_cluster_uuid,
};
use openraft::error::{InstallSnapshotError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/meta-v1")
        .join(name)
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn membership() -> StoredMembership<u64, MetaNode> {
    let nodes: BTreeMap<u64, MetaNode> = (1..=3)
        .map(|i| {
            (
                i,
                MetaNode {
                    id: i,
                    cluster_addr: format!("127.0.0.1:700{i}"),
                },
            )
        })
        .collect();
    StoredMembership::new(
        Some(log_id(1, 1, 1)),
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes),
    )
}

fn register() -> Command {
    Command::Register {
        id: "n4".into(),
        cluster_addr: "127.0.0.1:7004".into(),
        client_addr: "127.0.0.1:6374".into(),
    }
}

fn leader() -> MetaPeer {
    MetaPeer {
        raft_id: 2,
        id: "n2".into(),
        cluster_addr: "127.0.0.1:7002".into(),
    }
}

/// Every request kind, with its variant number.
fn requests() -> Vec<(&'static str, u8, MetaRequest)> {
    vec![
        (
            "request-append-entries.bin",
            0,
            MetaRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(2, 1),
                prev_log_id: Some(log_id(2, 1, 7)),
                entries: vec![Entry {
                    log_id: log_id(2, 1, 8),
                    payload: EntryPayload::Normal(register()),
                }],
                leader_commit: Some(log_id(2, 1, 7)),
            }),
        ),
        (
            "request-vote.bin",
            1,
            MetaRequest::Vote(VoteRequest {
                vote: Vote::new(3, 2),
                last_log_id: Some(log_id(2, 1, 8)),
            }),
        ),
        (
            "request-install-snapshot.bin",
            2,
            MetaRequest::InstallSnapshot(InstallSnapshotRequest {
                vote: Vote::new_committed(2, 1),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(2, 1, 8)),
                    last_membership: membership(),
                    snapshot_id: "2-1-8".into(),
                },
                offset: 0,
                data: b"KVMETA\0\n".to_vec(),
                done: false,
            }),
        ),
        (
            "request-propose.bin",
            3,
            MetaRequest::Propose(Command::SetStreamRate {
                rate: RateLimit {
                    keys_per_sec: 1000,
                    bytes_per_sec: 0,
                },
            }),
        ),
        (
            "request-join.bin",
            4,
            MetaRequest::Join {
                id: "n4".into(),
                cluster_addr: "127.0.0.1:7004".into(),
                client_addr: "127.0.0.1:6374".into(),
                cluster_name: "prod".into(),
            },
        ),
        ("request-read-index.bin", 5, MetaRequest::ReadIndex),
        ("request-status.bin", 6, MetaRequest::Status),
    ]
}

/// Every reply kind, with its variant number.
fn replies() -> Vec<(&'static str, u8, MetaReply)> {
    vec![
        (
            "reply-append-entries.bin",
            0,
            MetaReply::AppendEntries(AppendEntriesResponse::Success),
        ),
        (
            "reply-append-entries-higher-vote.bin",
            0,
            MetaReply::AppendEntries(AppendEntriesResponse::HigherVote(Vote::new(4, 3))),
        ),
        (
            "reply-vote.bin",
            1,
            MetaReply::Vote(VoteResponse {
                vote: Vote::new(3, 2),
                vote_granted: true,
                last_log_id: Some(log_id(2, 1, 8)),
            }),
        ),
        (
            "reply-install-snapshot.bin",
            2,
            MetaReply::InstallSnapshot(Ok(InstallSnapshotResponse {
                vote: Vote::new_committed(2, 1),
            })),
        ),
        (
            "reply-install-snapshot-mismatch.bin",
            2,
            MetaReply::InstallSnapshot(Err(InstallSnapshotError::SnapshotMismatch(
                SnapshotMismatch {
                    expect: openraft::SnapshotSegmentId {
                        id: "2-1-8".into(),
                        offset: 0,
                    },
                    got: openraft::SnapshotSegmentId {
                        id: "2-1-8".into(),
                        offset: 8,
                    },
                },
            ))),
        ),
        (
            "reply-proposed.bin",
            3,
            MetaReply::Proposed {
                log_id: log_id(2, 1, 9),
                response: MetaResponse::Ok { epoch: 3 },
            },
        ),
        (
            "reply-proposed-refused.bin",
            3,
            MetaReply::Proposed {
                log_id: log_id(2, 1, 10),
                response: MetaResponse::Refused(MetaError::AlreadyMember { id: "n4".into() }),
            },
        ),
        (
            "reply-joined.bin",
            4,
            MetaReply::Joined {
                cluster_uuid: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
                raft_id: 4,
                slot: 3,
            },
        ),
        (
            "reply-read-index.bin",
            5,
            MetaReply::ReadIndex { index: 300 },
        ),
        (
            "reply-status.bin",
            6,
            MetaReply::Status(MetaStatus {
                raft_id: 1,
                leader: Some(2),
                term: 5,
                voters: vec![1, 2, 3],
                learners: vec![4],
                applied: 300,
                epoch: 4,
            }),
        ),
        (
            "reply-error-forward-to-leader.bin",
            7,
            MetaReply::Error(MetaError::ForwardToLeader {
                leader: Some(leader()),
            }),
        ),
        (
            "reply-error-unsupported-version.bin",
            7,
            MetaReply::Error(MetaError::UnsupportedVersion {
                found: 2,
                supported: 1,
            }),
        ),
    ]
}

fn files() -> Vec<(&'static str, u8, Bytes)> {
    let mut out: Vec<_> = requests()
        .into_iter()
        .map(|(n, v, r)| (n, v, r.encode().unwrap()))
        .collect();
    out.extend(
        replies()
            .into_iter()
            .map(|(n, v, r)| (n, v, r.encode().unwrap())),
    );
    out
}

#[test]
fn golden_files_read_back_exactly() {
    for (name, _, req) in requests() {
        let stored = std::fs::read(golden(name)).unwrap();
        assert_eq!(
            req.encode().unwrap(),
            stored,
            "{name}: this build writes other bytes than version 1's"
        );
        let read = MetaRequest::decode(&stored).unwrap();
        assert_eq!(format!("{read:?}"), format!("{req:?}"), "{name}");
    }
    for (name, _, reply) in replies() {
        let stored = std::fs::read(golden(name)).unwrap();
        assert_eq!(
            reply.encode().unwrap(),
            stored,
            "{name}: this build writes other bytes than version 1's"
        );
        let read = MetaReply::decode(&stored).unwrap();
        assert_eq!(format!("{read:?}"), format!("{reply:?}"), "{name}");
    }
}

#[test]
fn version_then_variant_numbers_are_pinned() {
    for (name, variant, bytes) in files() {
        assert_eq!(bytes[0], META_PROTOCOL_VERSION, "{name}");
        assert_eq!(bytes[1], variant, "{name}");
    }
    assert_eq!(META_PROTOCOL_VERSION, 1);
    assert_eq!(&MetaRequest::Status.encode().unwrap()[..], [1, 6]);
    // The protocol's errors inside `Error` (7), by their `MetaError` index.
    let error_index = |e: MetaError| MetaReply::Error(e).encode().unwrap()[2];
    let reason = String::new;
    assert_eq!(
        error_index(MetaError::UnsupportedVersion {
            found: 2,
            supported: 1
        }),
        20
    );
    assert_eq!(error_index(MetaError::BadRequest { reason: reason() }), 21);
    assert_eq!(error_index(MetaError::ForwardToLeader { leader: None }), 22);
    assert_eq!(error_index(MetaError::Unavailable { reason: reason() }), 23);
    let wrong = MetaError::WrongCluster {
        expected: reason(),
        found: reason(),
    };
    assert_eq!(error_index(wrong), 24);
    let uuid = MetaError::WrongClusterUuid {
        expected: 1,
        found: 2,
    };
    assert_eq!(error_index(uuid), 25);
    assert_eq!(error_index(MetaError::NotAMember { id: reason() }), 26);
}

/// The request envelope (version 2): the version byte, the cluster uuid little-endian in
/// 16 bytes, then the same postcard body as version 1.
#[test]
fn the_request_envelope_is_pinned() {
    let uuid = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeffu128;
    let body = MetaRequest::Status.encode_in(uuid).unwrap();
    let mut expected = vec![META_REQUEST_ENVELOPE];
    expected.extend_from_slice(&uuid.to_le_bytes());
    expected.push(6);
    assert_eq!(&body[..], &expected[..]);
    assert_eq!(META_REQUEST_ENVELOPE, 2);
    assert_eq!(request_cluster_uuid(&body), Some(uuid));
    // Every version-1 golden request reads back in an envelope, and bare, as uuid 0.
    for (name, _, req) in requests() {
        let bare = req.encode().unwrap();
        assert_eq!(MetaRequest::decode_in(&bare).unwrap().0, 0, "{name}");
        let wrapped = req.encode_in(uuid).unwrap();
        assert_eq!(&wrapped[17..], &bare[1..], "{name}");
        let (found, back) = MetaRequest::decode_in(&wrapped).unwrap();
        assert_eq!(found, uuid, "{name}");
        assert_eq!(back.name(), req.name(), "{name}");
    }
    // A header cut short, or a byte over, is a bad request, not a panic.
    for cut in [1, 10, 17] {
        assert!(matches!(
            MetaRequest::decode_in(&body[..cut]),
            Err(MetaError::BadRequest { .. })
        ));
    }
    let mut over = body.to_vec();
    over.push(0);
    assert!(matches!(
        MetaRequest::decode_in(&over),
        Err(MetaError::BadRequest { .. })
    ));
}

#[test]
fn another_version_is_a_typed_error_whatever_follows() {
    for version in [0, 3, 255] {
        let mut body = MetaRequest::ReadIndex.encode().unwrap().to_vec();
        body[0] = version;
        assert_eq!(
            MetaRequest::decode(&body).unwrap_err(),
            MetaError::UnsupportedVersion {
                found: version,
                supported: 1
            }
        );
        // Another version may reshape everything: nothing after the version byte is read.
        assert!(matches!(
            MetaReply::decode(&[version, 0xff, 0xff, 0xff]),
            Err(MetaError::UnsupportedVersion { found, .. }) if found == version
        ));
    }
}

#[test]
fn bad_bodies_are_refused_without_reserving_what_they_claim() {
    let bad = |body: &[u8]| match MetaRequest::decode(body) {
        Err(MetaError::BadRequest { reason }) => reason,
        other => panic!("{body:?} gave {other:?}"),
    };
    assert!(bad(&[]).contains("empty"));
    // An unknown request kind (a later build's), a truncated body, a byte left over.
    assert!(bad(&[1, 99]).contains("undecodable"));
    let join = MetaRequest::Join {
        id: "n4".into(),
        cluster_addr: "a".into(),
        client_addr: "b".into(),
        cluster_name: "c".into(),
    }
    .encode()
    .unwrap();
    bad(&join[..join.len() - 1]);
    let mut long = join.to_vec();
    long.push(0);
    assert!(bad(&long).contains("left over"));
    // A snapshot chunk claiming 4 GiB of data in a body of a few dozen bytes: refused when
    // the body runs out, not allocated. (An empty chunk ends with its data length, 0, and
    // `done`, 0.)
    let MetaRequest::InstallSnapshot(mut chunk) = requests().swap_remove(2).2 else {
        unreachable!()
    };
    chunk.data.clear();
    let empty = MetaRequest::InstallSnapshot(chunk).encode().unwrap();
    assert_eq!(&empty[empty.len() - 2..], [0, 0]);
    let mut claim = empty[..empty.len() - 2].to_vec();
    claim.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    claim.extend_from_slice(b"abc");
    assert!(bad(&claim).contains("undecodable"));
    // Over the limit: refused before anything is decoded.
    let mut huge = vec![1u8, 5];
    huge.resize(MAX_META_BODY + 1, 0);
    assert!(bad(&huge).contains("over the limit"));
}

/// A transport that reaches nobody: a node alone answers its own requests.
struct Nowhere;

impl MetaTransport for Nowhere {
    fn call(
        &self,
        to: &MetaPeer,
        _: Bytes,
        _: Duration,
    ) -> BoxFuture<Result<Bytes, TransportError>> {
        let peer = to.id.clone();
        Box::pin(async move {
            Err(TransportError::Unreachable {
                peer,
                reason: "no network in this test".into(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_service_answers_bad_bodies_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let raft = MetaRaft::open(dir.path(), 1, "n1", meta_config("test"), Arc::new(Nowhere))
        .await
        .unwrap();
    let service = raft.service();
    let ask = |body: Vec<u8>| {
        let answer = service.handle("n9", Bytes::from(body));
        async move { MetaReply::decode(&answer.await).unwrap() }
    };
    // Another version: answered in version 1, with the typed error.
    match ask(vec![3, 5]).await {
        MetaReply::Error(MetaError::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (3, 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ask(vec![1, 42]).await,
        MetaReply::Error(MetaError::BadRequest { .. })
    ));
    // An uninitialized node knows no leader: a proposal is sent on to nobody.
    match ask(MetaRequest::ReadIndex.encode().unwrap().to_vec()).await {
        MetaReply::Error(MetaError::ForwardToLeader { leader: None }) => {}
        other => panic!("{other:?}"),
    }
    match ask(MetaRequest::Status.encode().unwrap().to_vec()).await {
        MetaReply::Status(s) => assert_eq!((s.raft_id, s.leader, s.applied), (1, None, 0)),
        other => panic!("{other:?}"),
    }
    // Another cluster's uuid is refused with both, once this node knows its own.
    raft.set_cluster_uuid(0xaa);
    assert_eq!(raft.cluster_uuid(), 0xaa);
    match ask(MetaRequest::Status.encode_in(0xbb).unwrap().to_vec()).await {
        MetaReply::Error(MetaError::WrongClusterUuid { expected, found }) => {
            assert_eq!((expected, found), (0xaa, 0xbb));
        }
        other => panic!("{other:?}"),
    }
    // Its own uuid, or none yet (a joiner), is served.
    for uuid in [0xaa, 0] {
        let body = MetaRequest::Status.encode_in(uuid).unwrap();
        assert!(matches!(
            MetaReply::decode(&service.handle("n9", body).await).unwrap(),
            MetaReply::Status(_)
        ));
    }
    // A non-member is answered Join and Status only.
    let outsider = |req: MetaRequest| {
        let body = req.encode_in(0xaa).unwrap();
        let answer = service.handle_from("n9", false, body);
        async move { MetaReply::decode(&answer.await).unwrap() }
    };
    match outsider(MetaRequest::ReadIndex).await {
        MetaReply::Error(MetaError::NotAMember { id }) => assert_eq!(id, "n9"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        outsider(MetaRequest::Status).await,
        MetaReply::Status(_)
    ));
    raft.shutdown().await.unwrap();
    // Stopped: the service answers, and says so.
    assert!(matches!(
        ask(MetaRequest::Status.encode().unwrap().to_vec()).await,
        MetaReply::Status(_)
    ));
    match ask(MetaRequest::ReadIndex.encode().unwrap().to_vec()).await {
        MetaReply::Error(MetaError::Unavailable { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "writes the golden files: only for a new protocol version"]
fn write_golden_files() {
    std::fs::create_dir_all(golden("")).unwrap();
    for (name, _, bytes) in files() {
        std::fs::write(golden(name), bytes).unwrap();
    }
}
