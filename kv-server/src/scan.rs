//! `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` over the cluster's token ring.
//!
//! The cursor is a position in token order ([`Cluster::scan`]'s): the last token covered so
//! far (`0` to start, and `0` again once the whole ring is covered). Each call covers the next
//! whole segments between consecutive ring tokens, reading every replica of each segment (a
//! node that does not answer is skipped) and keeping each key's newest record, so a key
//! present for the whole scan is returned at least once (Redis's guarantee): whichever
//! replicas a write quorum reached, one of them is read, and a ring change between calls does
//! not move the cursor, which names a token, not a node.

use bytes::{Bytes, BytesMut};
use kv_cluster::Cluster;

use crate::commands::{error, glob_match, parse_u64};
use crate::session::Session;

/// Redis's `SCAN` default `COUNT`.
const DEFAULT_COUNT: u64 = 10;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(crate) fn scan(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let Some(cursor) = parse_u64(&args[1]) else {
        return error(session, out, "ERR invalid cursor");
    };
    let mut pattern: Option<Vec<u8>> = None;
    let mut count = DEFAULT_COUNT;
    let mut only_strings = true;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"count") && more >= 1 {
            match parse_u64(&args[i + 1]).map(i64::try_from) {
                Some(Ok(n)) if n >= 1 => count = n.unsigned_abs(),
                Some(Ok(_)) => return error(session, out, "ERR syntax error"),
                _ => {
                    return error(session, out, "ERR value is not an integer or out of range");
                }
            }
        } else if opt.eq_ignore_ascii_case(b"match") && more >= 1 {
            // As Redis, `*` matches everything without a pattern check.
            pattern = (&args[i + 1][..] != b"*").then(|| args[i + 1].to_vec());
        } else if opt.eq_ignore_ascii_case(b"type") && more >= 1 {
            // Every kvstore value is a string.
            only_strings = args[i + 1].eq_ignore_ascii_case(b"string");
        } else {
            return error(session, out, "ERR syntax error");
        }
        i += 2;
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    match cluster.scan(cursor, count) {
        Ok(page) => {
            let enc = session.encoder();
            enc.array_header(out, 2);
            enc.bulk(out, page.cursor.to_string().as_bytes());
            let keys: Vec<&Bytes> = page
                .records
                .iter()
                .map(|r| &r.key)
                .filter(|k| only_strings && pattern.as_ref().is_none_or(|p| glob_match(p, k)))
                .collect();
            enc.array_header(out, keys.len());
            for k in keys {
                enc.bulk(out, k);
            }
        }
        Err(e) => error(session, out, &format!("ERR scan: {}", e.chain())),
    }
}
