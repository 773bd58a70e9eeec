//! The meta protocol (membership.md §1.4, §2.3; format.md, "Meta protocol"): the bodies nodes
//! exchange about the cluster metadata, carried opaquely by the replica protocol's
//! `Meta(Bytes)` variant.
//!
//! ```text
//! offset  size  field
//! 0       1     meta protocol version, 1
//! 1       rest  postcard of MetaRequest or MetaReply, with no byte left over
//! ```
//!
//! A request is sent in the version-2 envelope, which names the cluster it belongs to
//! (membership.md §2.3: the kv-net cluster id covers the name alone, so the cluster's
//! identity travels here):
//!
//! ```text
//! offset  size  field
//! 0       1     2 (the request envelope)
//! 1       16    cluster_uuid, little-endian u128 (0: not known yet, a joiner before Join)
//! 17      rest  postcard of MetaRequest, with no byte left over
//! ```
//!
//! A version-1 request (no uuid) still decodes, as uuid 0. Replies stay version 1.
//!
//! Variants are only ever appended: a new request kind is a new variant at the end, which an
//! older build answers with [`MetaError::BadRequest`]; any other change is a new version,
//! which a build answers with [`MetaError::UnsupportedVersion`] (in a version-1 reply).

use bytes::Bytes;
use openraft::LogId;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::command::{Command, MetaResponse};
use crate::error::{Error, MetaError};
use crate::raft::MetaTypes;

/// The meta protocol version this build speaks: byte 0 of every request and reply body.
pub const META_PROTOCOL_VERSION: u8 = 1;

/// The version byte of a request in its envelope (a cluster uuid before the postcard body).
pub const META_REQUEST_ENVELOPE: u8 = 2;

/// Where a request envelope's body starts: the version byte and the 16-byte uuid.
const ENVELOPE_HEADER: usize = 17;

/// The cluster uuid a request body carries, read from its fixed place without decoding the
/// rest: `Some(0)` for a version-1 body (none), `None` for a body that is neither.
///
/// # Example
///
/// ```
/// use kv_meta::{MetaRequest, request_cluster_uuid};
/// let body = MetaRequest::ReadIndex.encode_in(0xabc)?;
/// assert_eq!(request_cluster_uuid(&body), Some(0xabc));
/// # Ok::<(), kv_meta::Error>(())
/// ```
pub fn request_cluster_uuid(body: &[u8]) -> Option<u128> {
    match body.split_first()? {
        (&META_PROTOCOL_VERSION, _) => Some(0),
        (&META_REQUEST_ENVELOPE, rest) => {
            let uuid: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            Some(u128::from_le_bytes(uuid))
        }
        _ => None,
    }
}

/// The largest body read (a request or a reply): a snapshot chunk of 4 MiB fits with room to
/// spare, and a snapshot is at most [`MAX_SNAPSHOT_LEN`](crate::MAX_SNAPSHOT_LEN) (8 MiB),
/// sent in chunks of at most 4 MiB. Checked before anything is decoded.
pub const MAX_META_BODY: usize = (8 << 20) + (64 << 10);

/// A request of the meta protocol: raft's three RPCs between rafts, and what any node may ask
/// a member (usually forwarded to the leader).
///
/// The variant index is the wire format (postcard writes it first): the numbers below are
/// fixed, and new variants (the change protocol's `StartTask`, `TaskProgress`) are appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaRequest {
    /// 0: raft's `AppendEntries` (also the heartbeat).
    AppendEntries(AppendEntriesRequest<MetaTypes>),
    /// 1: raft's `RequestVote`.
    Vote(VoteRequest<u64>),
    /// 2: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<MetaTypes>),
    /// 3: commit a command; answered by the leader with [`MetaReply::Proposed`], by another
    /// node with [`MetaError::ForwardToLeader`].
    Propose(Command),
    /// 4: a node asks to join the cluster (leader only): it is registered (`Register`) and
    /// added as a raft learner.
    Join {
        /// The joiner's node id.
        id: String,
        /// `host:port` of its peer port.
        cluster_addr: String,
        /// `host:port` of its RESP port.
        client_addr: String,
        /// The cluster it means to join (refused if it is not this one).
        cluster_name: String,
    },
    /// 5: the leader's committed index, after it confirmed with a quorum that it still leads
    /// (`Raft::ensure_linearizable`).
    ReadIndex,
    /// 6: the answering node's own view of the raft and the metadata.
    Status,
}

/// A reply of the meta protocol, one per request kind, or an error.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetaReply {
    /// 0: answers [`MetaRequest::AppendEntries`].
    AppendEntries(AppendEntriesResponse<u64>),
    /// 1: answers [`MetaRequest::Vote`].
    Vote(VoteResponse<u64>),
    /// 2: answers [`MetaRequest::InstallSnapshot`] (a chunk at an unexpected offset is
    /// refused, and the sender starts the snapshot over).
    InstallSnapshot(
        std::result::Result<InstallSnapshotResponse<u64>, openraft::error::InstallSnapshotError>,
    ),
    /// 3: the command is committed at `log_id` and the state machine answered `response`
    /// (which may be a refusal).
    Proposed {
        /// Where the command is in the log.
        log_id: LogId<u64>,
        /// The state machine's answer.
        response: MetaResponse,
    },
    /// 4: the joiner is registered and is a learner.
    Joined {
        /// The cluster's uuid.
        cluster_uuid: u128,
        /// The joiner's raft id.
        raft_id: u64,
        /// The joiner's coordinator slot.
        slot: u8,
    },
    /// 5: the leader's committed (and applied) log index at the time of the request.
    ReadIndex {
        /// The index (0: nothing committed yet).
        index: u64,
    },
    /// 6: answers [`MetaRequest::Status`].
    Status(MetaStatus),
    /// 7: the request failed (not the leader, unknown version, bad body, raft stopped...).
    Error(MetaError),
}

/// A node's view of the metadata raft, as [`MetaRequest::Status`] answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaStatus {
    /// The answering node's raft id.
    pub raft_id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// The voters of the raft membership in force.
    pub voters: Vec<u64>,
    /// The learners.
    pub learners: Vec<u64>,
    /// The last log index it applied (0: none).
    pub applied: u64,
    /// The metadata epoch it applied.
    pub epoch: u64,
}

/// Version byte, then the postcard body.
fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Bytes, Error> {
    let out =
        postcard::to_extend(value, vec![META_PROTOCOL_VERSION]).map_err(|e| Error::Encode {
            what,
            reason: e.to_string(),
        })?;
    Ok(Bytes::from(out))
}

/// Checks the length and the version before decoding, and that the body is used exactly.
/// postcard decodes from the slice and never reserves more than serde's cautious bound for a
/// claimed length: a body claiming more than it holds fails when it runs out.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, MetaError> {
    if body.len() > MAX_META_BODY {
        return Err(MetaError::BadRequest {
            reason: format!(
                "body of {} bytes is over the limit of {MAX_META_BODY}",
                body.len()
            ),
        });
    }
    let Some((&version, rest)) = body.split_first() else {
        return Err(MetaError::BadRequest {
            reason: "empty body".into(),
        });
    };
    if version != META_PROTOCOL_VERSION {
        return Err(MetaError::UnsupportedVersion {
            found: version,
            supported: META_PROTOCOL_VERSION,
        });
    }
    match postcard::take_from_bytes::<T>(rest) {
        Ok((value, [])) => Ok(value),
        Ok((_, left)) => Err(MetaError::BadRequest {
            reason: format!("{} bytes left over after the body", left.len()),
        }),
        Err(e) => Err(MetaError::BadRequest {
            reason: format!("undecodable body: {e}"),
        }),
    }
}

impl MetaRequest {
    /// The request's bytes: [`META_PROTOCOL_VERSION`], then postcard.
    ///
    /// # Errors
    /// [`Error::Encode`] if postcard fails (it does not for these types).
    ///
    /// # Example
    ///
    /// ```
    /// use kv_meta::{MetaRequest, META_PROTOCOL_VERSION};
    /// let bytes = MetaRequest::ReadIndex.encode()?;
    /// assert_eq!(&bytes[..], [META_PROTOCOL_VERSION, 5]);
    /// assert!(matches!(MetaRequest::decode(&bytes), Ok(MetaRequest::ReadIndex)));
    /// # Ok::<(), kv_meta::Error>(())
    /// ```
    pub fn encode(&self) -> Result<Bytes, Error> {
        encode("meta request", self)
    }

    /// Reads a request body.
    ///
    /// # Errors
    /// [`MetaError::UnsupportedVersion`] for another version byte; [`MetaError::BadRequest`]
    /// for an empty or oversized body, one that does not decode (an unknown variant, a length
    /// beyond the body's end) or leaves bytes over. The error is what the node answers.
    pub fn decode(body: &[u8]) -> Result<MetaRequest, MetaError> {
        MetaRequest::decode_in(body).map(|(_, req)| req)
    }

    /// The request in the envelope naming `cluster_uuid` (0: not known yet): version byte
    /// [`META_REQUEST_ENVELOPE`], the uuid little-endian, then postcard.
    ///
    /// # Errors
    /// [`Error::Encode`] if postcard fails (it does not for these types).
    ///
    /// # Example
    ///
    /// ```
    /// use kv_meta::{MetaRequest, META_REQUEST_ENVELOPE};
    /// let bytes = MetaRequest::ReadIndex.encode_in(7)?;
    /// assert_eq!(bytes[0], META_REQUEST_ENVELOPE);
    /// assert!(matches!(MetaRequest::decode_in(&bytes), Ok((7, MetaRequest::ReadIndex))));
    /// # Ok::<(), kv_meta::Error>(())
    /// ```
    pub fn encode_in(&self, cluster_uuid: u128) -> Result<Bytes, Error> {
        let mut head = Vec::with_capacity(64);
        head.push(META_REQUEST_ENVELOPE);
        head.extend_from_slice(&cluster_uuid.to_le_bytes());
        let out = postcard::to_extend(self, head).map_err(|e| Error::Encode {
            what: "meta request",
            reason: e.to_string(),
        })?;
        Ok(Bytes::from(out))
    }

    /// Reads a request body of either version, with the cluster uuid it carries (0 for a
    /// version-1 body, or an envelope naming none).
    ///
    /// # Errors
    /// As [`MetaRequest::decode`].
    pub fn decode_in(body: &[u8]) -> Result<(u128, MetaRequest), MetaError> {
        if body.first() != Some(&META_REQUEST_ENVELOPE) {
            return decode(body).map(|req| (0, req));
        }
        if body.len() > MAX_META_BODY {
            return Err(MetaError::BadRequest {
                reason: format!(
                    "body of {} bytes is over the limit of {MAX_META_BODY}",
                    body.len()
                ),
            });
        }
        let Some(uuid) = request_cluster_uuid(body) else {
            return Err(MetaError::BadRequest {
                reason: format!(
                    "an envelope of {} bytes, shorter than its header",
                    body.len()
                ),
            });
        };
        match postcard::take_from_bytes::<MetaRequest>(&body[ENVELOPE_HEADER..]) {
            Ok((req, [])) => Ok((uuid, req)),
            Ok((_, left)) => Err(MetaError::BadRequest {
                reason: format!("{} bytes left over after the body", left.len()),
            }),
            Err(e) => Err(MetaError::BadRequest {
                reason: format!("undecodable body: {e}"),
            }),
        }
    }

    /// The request's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            MetaRequest::AppendEntries(_) => "AppendEntries",
            MetaRequest::Vote(_) => "Vote",
            MetaRequest::InstallSnapshot(_) => "InstallSnapshot",
            MetaRequest::Propose(_) => "Propose",
            MetaRequest::Join { .. } => "Join",
            MetaRequest::ReadIndex => "ReadIndex",
            MetaRequest::Status => "Status",
        }
    }
}

impl MetaReply {
    /// The reply's bytes: [`META_PROTOCOL_VERSION`], then postcard.
    ///
    /// # Errors
    /// [`Error::Encode`] if postcard fails (it does not for these types).
    ///
    /// # Example
    ///
    /// ```
    /// use kv_meta::{MetaError, MetaReply};
    /// let reply = MetaReply::Error(MetaError::UnsupportedVersion { found: 2, supported: 1 });
    /// let bytes = reply.encode()?;
    /// assert!(matches!(
    ///     MetaReply::decode(&bytes),
    ///     Ok(MetaReply::Error(MetaError::UnsupportedVersion { found: 2, supported: 1 }))
    /// ));
    /// # Ok::<(), kv_meta::Error>(())
    /// ```
    pub fn encode(&self) -> Result<Bytes, Error> {
        encode("meta reply", self)
    }

    /// Reads a reply body.
    ///
    /// # Errors
    /// As [`MetaRequest::decode`] (for a reply, `BadRequest` means a bad answer).
    pub fn decode(body: &[u8]) -> Result<MetaReply, MetaError> {
        decode(body)
    }
}
