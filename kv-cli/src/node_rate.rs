//! The stream rate limit of a node process (membership.md §3.4): `--stream-rate`,
//! `KVSTORE CHANGE RATE` and the rate in force.
//!
//! Every source process paces the range streams it sends with one shared
//! [`kv_cluster::RateLimiter`] (keys/s and bytes/s). Its rate comes from two places:
//!
//! - `kvstore serve --stream-rate KEYS_PER_S[,BYTES_PER_S]`: this process's rate until a
//!   rate is committed (default: unlimited);
//! - `KVSTORE CHANGE RATE <keys/s|unlimited> [bytes/s]` on any node: commits
//!   `SetStreamRate` through the metadata leader: one rate, which each source process
//!   applies to its own streams (three sources at 5,000 keys/s copy up to 15,000 keys/s). **Once a rate is committed it overrides
//!   every node's flag**, `unlimited` included: the cluster's operator speaks last. Each
//!   node follows the committed metadata and sets its limiter's rate as the entry is
//!   applied, so every stream running picks it up at its next chunk.
//!
//! The metadata's `RateLimit` counts 0 as "no limit", and its default (both 0) is also what a
//! cluster that never committed a rate holds. So that a committed `unlimited` can override
//! a flag, it is committed as [`UNLIMITED_KEYS`] keys/s (a rate no stream reaches): the
//! default means "nothing committed, the flag applies", and `u64::MAX` is read as no limit.

use std::sync::{Arc, Mutex};

use kv_cluster::{RateLimiter, StreamRate};
use kv_meta::{ClusterMeta, Command, MetaRaft, MetaResponse, RateLimit};

/// The keys/s a committed `CHANGE RATE unlimited` carries: read as no limit, and unlike 0
/// not the never-set default, so it overrides `--stream-rate`.
pub const UNLIMITED_KEYS: u64 = u64::MAX;

/// Where the rate in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A committed `SetStreamRate` (`KVSTORE CHANGE RATE`).
    Committed,
    /// This process's `--stream-rate` (or its default, unlimited): nothing is committed.
    Flag,
}

/// This process's `--stream-rate`, kept for `KVSTORE CHANGE` (set when the limiter is built).
static FLAG: Mutex<StreamRate> = Mutex::new(StreamRate::UNLIMITED);

fn flag() -> StreamRate {
    FLAG.lock().map(|f| *f).unwrap_or(StreamRate::UNLIMITED)
}

/// Parses `KEYS_PER_S[,BYTES_PER_S]`: positive integers (`_` allowed between digits), either
/// one `unlimited`; `unlimited` alone is no limit. `0` is refused: say `unlimited`.
///
/// # Errors
/// A line naming what is wrong with `s`.
pub fn parse_rate(s: &str) -> Result<StreamRate, String> {
    let usage = "KEYS_PER_S[,BYTES_PER_S], each a positive integer or `unlimited` \
                 (e.g. 50000 or 50000,10000000)";
    let one = |part: &str, what: &str| -> Result<Option<u64>, String> {
        let part = part.trim();
        if part.eq_ignore_ascii_case("unlimited") {
            return Ok(None);
        }
        let digits: String = part.chars().filter(|&c| c != '_').collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {part:?} is not a number: {usage}"));
        }
        match digits.parse::<u64>() {
            Ok(0) => Err(format!(
                "{what} 0 would stop every stream: give a positive rate, or `unlimited`"
            )),
            // u64::MAX is the committed `unlimited`: it means no limit, which it is anyway.
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(format!("{what} {part:?} is too large: {usage}")),
        }
    };
    let mut parts = s.split(',');
    let keys = one(parts.next().unwrap_or(""), "keys/s")?;
    let bytes = match parts.next() {
        Some(b) => one(b, "bytes/s")?,
        None => None,
    };
    if parts.next().is_some() {
        return Err(format!("{s:?}: at most two rates, {usage}"));
    }
    Ok(StreamRate {
        keys_per_sec: keys,
        bytes_per_sec: bytes,
    })
}

/// The rate in force on a node whose flag is `flag`, given the committed `RateLimit`.
pub fn resolve(committed: RateLimit, flag: StreamRate) -> (StreamRate, Origin) {
    if committed == RateLimit::default() {
        return (flag, Origin::Flag);
    }
    let limit = |v: u64| (v != 0 && v != UNLIMITED_KEYS).then_some(v);
    (
        StreamRate {
            keys_per_sec: limit(committed.keys_per_sec),
            bytes_per_sec: limit(committed.bytes_per_sec),
        },
        Origin::Committed,
    )
}

/// What `SetStreamRate` commits for `rate` (see the module's docs for `unlimited`).
pub fn to_committed(rate: StreamRate) -> RateLimit {
    if rate.is_unlimited() {
        return RateLimit {
            keys_per_sec: UNLIMITED_KEYS,
            bytes_per_sec: 0,
        };
    }
    RateLimit {
        keys_per_sec: rate.keys_per_sec.unwrap_or(0),
        bytes_per_sec: rate.bytes_per_sec.unwrap_or(0),
    }
}

/// `2000 keys/s`, `2000 keys/s 10000000 bytes/s`, `10000000 bytes/s` or `unlimited`.
pub fn describe(rate: StreamRate) -> String {
    let parts: Vec<String> = [
        rate.keys_per_sec
            .filter(|&k| k != 0 && k != UNLIMITED_KEYS)
            .map(|k| format!("{k} keys/s")),
        rate.bytes_per_sec
            .filter(|&b| b != 0 && b != UNLIMITED_KEYS)
            .map(|b| format!("{b} bytes/s")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "unlimited".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `KVSTORE CHANGE`'s rate lines: the rate in force on this node and where it comes from.
pub fn report_lines(meta: &ClusterMeta) -> Vec<String> {
    let (rate, origin) = resolve(meta.stream_rate, flag());
    vec![
        format!("stream_rate:{}", describe(rate)),
        format!(
            "stream_rate_from:{}",
            match origin {
                Origin::Committed => "committed",
                Origin::Flag => "flag",
            }
        ),
    ]
}

/// `lines` (`KVSTORE CHANGE`'s report) with the rate lines before the first task line.
pub fn with_rate(mut lines: Vec<String>, meta: &ClusterMeta) -> Vec<String> {
    let at = lines
        .iter()
        .position(|l| l.starts_with("task:"))
        .unwrap_or(lines.len());
    lines.splice(at..at, report_lines(meta));
    lines
}

/// The process's shared stream limiter: at the rate in force now, and kept at the rate in
/// force by a task on `runtime` that follows the committed metadata (each applied
/// `SetStreamRate` is set at once; streams pick it up at their next chunk).
pub fn limiter(
    raft: &MetaRaft,
    runtime: &tokio::runtime::Handle,
    flag_rate: StreamRate,
) -> Arc<RateLimiter> {
    if let Ok(mut f) = FLAG.lock() {
        *f = flag_rate;
    }
    let mut watch = raft.watch();
    let (rate, _) = resolve(watch.borrow().meta.stream_rate, flag_rate);
    let limiter = Arc::new(RateLimiter::new(rate));
    let follow = Arc::clone(&limiter);
    runtime.spawn(async move {
        loop {
            let (rate, origin) = resolve(watch.borrow_and_update().meta.stream_rate, flag_rate);
            if follow.rate() != rate {
                follow.set_rate(rate);
                eprintln!(
                    "kvstore: stream rate now {} ({})",
                    describe(rate),
                    if origin == Origin::Committed {
                        "committed"
                    } else {
                        "--stream-rate"
                    }
                );
            }
            // The sender is dropped when the raft shuts down: nothing left to follow.
            if watch.changed().await.is_err() {
                break;
            }
        }
    });
    limiter
}

/// `KVSTORE CHANGE RATE ...`: with no argument, the rate lines; with `<keys/s|unlimited>
/// [bytes/s]` (or `keys,bytes`), commits `SetStreamRate` through the leader.
///
/// # Errors
/// A usage line for bad arguments, or the metadata's refusal or unavailability.
pub fn command(
    raft: &MetaRaft,
    runtime: &tokio::runtime::Handle,
    args: &[bytes::Bytes],
) -> Result<Vec<String>, String> {
    let words: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if words.is_empty() {
        let state = raft.watch().borrow().clone();
        return Ok(report_lines(&state.meta));
    }
    if words.len() > 2 {
        return Err("usage: KVSTORE CHANGE RATE <keys/s|unlimited> [bytes/s]".to_owned());
    }
    let rate = parse_rate(&words.join(","))?;
    let committed = to_committed(rate);
    // Called on a server thread of the runtime: the proposal runs on a thread of its own,
    // which waits for it on the runtime (as ADDNODE does).
    let (raft, runtime) = (raft.clone(), runtime.clone());
    let index = std::thread::spawn(move || {
        match runtime.block_on(raft.propose(Command::SetStreamRate { rate: committed })) {
            Ok((log_id, MetaResponse::Ok { .. })) => Ok(log_id.index),
            Ok((_, MetaResponse::Refused(e))) => Err(format!("refused: {e}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .join()
    .map_err(|_| "CHANGE RATE failed".to_owned())??;
    Ok(vec![format!(
        "OK stream rate {} committed at index {index}",
        describe(rate)
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn keys(k: u64) -> StreamRate {
        StreamRate {
            keys_per_sec: Some(k),
            bytes_per_sec: None,
        }
    }

    #[test]
    fn the_flag_takes_keys_and_bytes_and_refuses_zero_junk_and_a_third_rate() {
        assert_eq!(parse_rate("2000"), Ok(keys(2000)));
        assert_eq!(parse_rate("50_000"), Ok(keys(50_000)));
        assert_eq!(
            parse_rate("2000,10000000"),
            Ok(StreamRate {
                keys_per_sec: Some(2000),
                bytes_per_sec: Some(10_000_000)
            })
        );
        assert_eq!(
            parse_rate("unlimited,1000"),
            Ok(StreamRate {
                keys_per_sec: None,
                bytes_per_sec: Some(1000)
            })
        );
        assert_eq!(parse_rate("Unlimited"), Ok(StreamRate::UNLIMITED));
        let e = parse_rate("0").unwrap_err();
        assert!(e.contains("stop every stream"), "{e}");
        let e = parse_rate("2000,0").unwrap_err();
        assert!(e.starts_with("bytes/s 0"), "{e}");
        for bad in ["", "-5", "1.5", "2k", "1,2,3", "99999999999999999999999"] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains("KEYS_PER_S"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn serve_takes_the_flag_through_clap_with_the_parsers_error() {
        use clap::Parser as _;
        let parse = |v: &str| {
            crate::args::Args::try_parse_from([
                "kvstore",
                "serve",
                "--node-id",
                "n1",
                "--peers",
                "n1@127.0.0.1:7001",
                "--stream-rate",
                v,
            ])
        };
        let Some(crate::args::Command::Serve(s)) = parse("3000,1000000").unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(
            s.stream_rate,
            Some(StreamRate {
                keys_per_sec: Some(3000),
                bytes_per_sec: Some(1_000_000)
            })
        );
        let e = parse("fast").unwrap_err().to_string();
        assert!(
            e.contains("--stream-rate") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn a_committed_rate_overrides_the_flag_and_committed_unlimited_does_too() {
        let flag = keys(2000);
        assert_eq!(
            resolve(RateLimit::default(), flag),
            (flag, Origin::Flag),
            "nothing committed: the flag"
        );
        let c = to_committed(keys(500));
        assert_eq!(resolve(c, flag), (keys(500), Origin::Committed));
        let c = to_committed(StreamRate::UNLIMITED);
        assert_ne!(
            c,
            RateLimit::default(),
            "unlimited is not the never-set default"
        );
        assert_eq!(resolve(c, flag), (StreamRate::UNLIMITED, Origin::Committed));
        let bytes_only = StreamRate {
            keys_per_sec: None,
            bytes_per_sec: Some(9),
        };
        assert_eq!(
            resolve(to_committed(bytes_only), flag),
            (bytes_only, Origin::Committed)
        );
    }

    #[test]
    fn the_rate_lines_go_before_the_tasks_and_say_where_the_rate_comes_from() {
        assert_eq!(describe(StreamRate::UNLIMITED), "unlimited");
        assert_eq!(
            describe(StreamRate {
                keys_per_sec: Some(2000),
                bytes_per_sec: Some(5)
            }),
            "2000 keys/s 5 bytes/s"
        );
        let meta = ClusterMeta {
            stream_rate: to_committed(keys(2000)),
            ..ClusterMeta::default()
        };
        let lines = with_rate(
            vec![
                "change:3".into(),
                "waiting_for:".into(),
                "task:1 a->b".into(),
            ],
            &meta,
        );
        assert_eq!(
            lines,
            [
                "change:3",
                "waiting_for:",
                "stream_rate:2000 keys/s",
                "stream_rate_from:committed",
                "task:1 a->b"
            ]
        );
        let none = with_rate(vec!["change:none".into(), "epoch:1".into()], &meta);
        assert_eq!(none[2], "stream_rate:2000 keys/s");
    }
}
