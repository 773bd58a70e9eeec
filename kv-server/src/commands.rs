//! Executing client commands against the cluster, with Redis 7's replies.
//!
//! One function per command; the table [`COMMANDS`] holds each command's name and Redis's
//! arity (positive: exactly that many arguments, the name included; negative: at least that
//! many), checked before a command runs, as Redis's `processCommand` does.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use kv_cluster::Cluster;
use kv_resp::{Command, Protocol};

use crate::session::Session;

/// The commands this server knows, with Redis's arity.
const COMMANDS: &[(&str, i32)] = &[
    ("command", -1),
    ("del", -2),
    ("echo", 2),
    ("exists", -2),
    ("get", 2),
    ("hello", -1),
    ("mget", -2),
    ("mset", -3),
    ("ping", -1),
    ("quit", -1),
    ("select", 2),
    ("set", -3),
];

/// Redis's `SET` options, none of which the store supports yet: answered with an error naming
/// the option, never ignored (a client using `SET NX` as a lock must not be told it got it).
const SET_OPTIONS: &[&str] = &["nx", "xx", "get", "ex", "px", "exat", "pxat", "keepttl"];

/// Most consecutive `GET`s (or `SET`s) merged into one `get_many` (`put_many`).
const MAX_RUN: usize = 512;

/// Whether any command in `commands` reads or writes the store (and so may block).
pub(crate) fn needs_storage<'a>(commands: impl IntoIterator<Item = &'a Command>) -> bool {
    commands.into_iter().any(|c| {
        ["get", "set", "del", "exists", "mget", "mset"]
            .iter()
            .any(|n| c.name().eq_ignore_ascii_case(n.as_bytes()))
    })
}

/// Executes commands from the front of `queue`, appending their replies to `out`, until the
/// queue is empty, `QUIT` was executed, or `out` holds at least `flush_at` bytes (so a batch
/// of large replies is written, and the client's reading awaited, before more are built).
///
/// A run of consecutive `GET`s becomes one `get_many` and a run of consecutive `SET`s one
/// `put_many`: each is a batch per node instead of a round per command. Replies stay in command
/// order, and a `GET` after a `SET` of the same key in the same batch sees it (runs never span
/// a command of another kind; `put_many` applies its pairs in order).
pub(crate) fn execute(
    cluster: &Cluster,
    session: &mut Session,
    queue: &mut VecDeque<Command>,
    out: &mut BytesMut,
    flush_at: usize,
) {
    while let Some(cmd) = queue.front() {
        if session.quit || out.len() >= flush_at {
            return;
        }
        if is_plain(cmd, "get", 2) || is_plain(cmd, "set", 3) {
            let run = take_run(queue);
            if run[0].len() == 2 {
                let unanswered = get_run(cluster, session, &run, out, flush_at);
                // Put back what did not fit, to be executed (read again) after the replies so
                // far are written: a run of large values must not pass the reply bound.
                for cmd in run.into_iter().skip(unanswered.start).rev() {
                    queue.push_front(cmd);
                }
            } else {
                set_run(cluster, session, &run, out);
            }
            continue;
        }
        if let Some(cmd) = queue.pop_front() {
            execute_one(cluster, session, &cmd, out);
        }
    }
}

/// A command called `name` with exactly `argc` arguments.
fn is_plain(cmd: &Command, name: &str, argc: usize) -> bool {
    cmd.len() == argc && cmd.name().eq_ignore_ascii_case(name.as_bytes())
}

/// Pops the run of commands like the front one (plain `GET`s, or plain `SET`s).
fn take_run(queue: &mut VecDeque<Command>) -> Vec<Command> {
    let mut run = Vec::new();
    let Some(first) = queue.pop_front() else {
        return run;
    };
    let (name, argc) = if first.len() == 2 {
        ("get", 2)
    } else {
        ("set", 3)
    };
    run.push(first);
    while run.len() < MAX_RUN && queue.front().is_some_and(|c| is_plain(c, name, argc)) {
        if let Some(c) = queue.pop_front() {
            run.push(c);
        }
    }
    run
}

/// Answers a run of `GET`s with one `get_many`, stopping once `out` reaches `flush_at` (at
/// least one is answered); returns the range of the run left unanswered.
fn get_run(
    cluster: &Cluster,
    session: &Session,
    run: &[Command],
    out: &mut BytesMut,
    flush_at: usize,
) -> std::ops::Range<usize> {
    let keys: Vec<&[u8]> = run.iter().map(|c| &c.args()[1][..]).collect();
    let mut answered = 0;
    match cluster.get_many(&keys) {
        Ok(values) => {
            for v in values {
                if answered > 0 && out.len() >= flush_at {
                    break;
                }
                value_reply(session, v, out);
                answered += 1;
            }
        }
        // One answer per command: retry one by one so each gets its own result.
        Err(_) => {
            for key in keys {
                if answered > 0 && out.len() >= flush_at {
                    break;
                }
                match cluster.get(key) {
                    Ok(v) => value_reply(session, v, out),
                    Err(e) => cluster_error(session, &e, out),
                }
                answered += 1;
            }
        }
    }
    answered..run.len()
}

fn set_run(cluster: &Cluster, session: &Session, run: &[Command], out: &mut BytesMut) {
    let pairs: Vec<(&[u8], &[u8])> = run
        .iter()
        .map(|c| (&c.args()[1][..], &c.args()[2][..]))
        .collect();
    if cluster.put_many(&pairs).is_ok() {
        for _ in run {
            session.encoder().simple(out, b"OK");
        }
        return;
    }
    // Some pairs may be stored: writing them again is harmless, and each command gets the
    // answer of its own write.
    for (k, v) in pairs {
        match cluster.put(k, v) {
            Ok(_) => session.encoder().simple(out, b"OK"),
            Err(e) => cluster_error(session, &e, out),
        }
    }
}

fn value_reply(session: &Session, value: Option<Bytes>, out: &mut BytesMut) {
    match value {
        Some(v) => session.encoder().bulk(out, &v),
        None => session.encoder().null(out),
    }
}

fn cluster_error(session: &Session, e: &kv_cluster::Error, out: &mut BytesMut) {
    error(session, out, &format!("ERR {e}"));
}

/// Appends `-<text>\r\n` (`text` includes the error code, e.g. `ERR ...`).
fn error(session: &Session, out: &mut BytesMut, text: &str) {
    session.encoder().error(out, text.as_bytes());
}

/// Executes one command, checking that it exists and its arity first.
fn execute_one(cluster: &Cluster, session: &mut Session, cmd: &Command, out: &mut BytesMut) {
    let Some(&(name, arity)) = COMMANDS
        .iter()
        .find(|(n, _)| cmd.name().eq_ignore_ascii_case(n.as_bytes()))
    else {
        return error(session, out, &unknown_command(cmd.args()));
    };
    let argc = i64::try_from(cmd.len()).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if (arity > 0 && argc != arity) || argc < -arity {
        return error(session, out, &wrong_arity(name));
    }
    let args = cmd.args();
    let enc = session.encoder();
    match name {
        "ping" => match args.len() {
            1 => enc.simple(out, b"PONG"),
            2 => enc.bulk(out, &args[1]),
            _ => error(session, out, &wrong_arity("ping")),
        },
        "echo" => enc.bulk(out, &args[1]),
        "quit" => {
            enc.simple(out, b"OK");
            session.quit = true;
        }
        "select" => match parse_i64(&args[1]) {
            Some(0) => enc.simple(out, b"OK"),
            Some(_) => error(session, out, "ERR DB index is out of range"),
            None => error(session, out, "ERR value is not an integer or out of range"),
        },
        "hello" => hello(session, args, out),
        "command" => command(session, args, out),
        "get" => match cluster.get(&args[1]) {
            Ok(v) => value_reply(session, v, out),
            Err(e) => cluster_error(session, &e, out),
        },
        "set" => set(cluster, session, args, out),
        "mget" => {
            let keys: Vec<&[u8]> = args[1..].iter().map(|k| &k[..]).collect();
            match cluster.get_many(&keys) {
                Ok(values) => {
                    enc.array_header(out, values.len());
                    for v in values {
                        value_reply(session, v, out);
                    }
                }
                Err(e) => cluster_error(session, &e, out),
            }
        }
        "mset" => {
            // Redis: arity -3, then an even number of arguments after the name.
            if args.len().is_multiple_of(2) {
                return error(session, out, &wrong_arity("mset"));
            }
            let pairs: Vec<(&[u8], &[u8])> = args[1..]
                .chunks_exact(2)
                .map(|p| (&p[0][..], &p[1][..]))
                .collect();
            match cluster.put_many(&pairs) {
                Ok(_) => enc.simple(out, b"OK"),
                Err(e) => cluster_error(session, &e, out),
            }
        }
        "exists" => {
            let keys: Vec<&[u8]> = args[1..].iter().map(|k| &k[..]).collect();
            match cluster.get_many(&keys) {
                // Redis counts a key named twice twice.
                Ok(values) => enc.integer(out, count(values.iter().filter(|v| v.is_some()))),
                Err(e) => cluster_error(session, &e, out),
            }
        }
        "del" => del(cluster, session, args, out),
        _ => error(session, out, &unknown_command(args)),
    }
}

/// `SET key value` only: every Redis option is refused by name.
fn set(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    if let Some(opt) = args.get(3) {
        let known = SET_OPTIONS
            .iter()
            .any(|o| opt.eq_ignore_ascii_case(o.as_bytes()));
        if known {
            let text = format!(
                "ERR SET option '{}' is not supported by kvstore",
                String::from_utf8_lossy(opt).to_ascii_uppercase()
            );
            return error(session, out, &text);
        }
        return error(session, out, "ERR syntax error");
    }
    match cluster.put(&args[1], &args[2]) {
        Ok(_) => session.encoder().simple(out, b"OK"),
        Err(e) => cluster_error(session, &e, out),
    }
}

/// `DEL key...`: the number of keys that existed. A key named twice counts once, as in Redis.
/// The existence check and the deletes are separate steps (the store has no delete that
/// reports whether the key was there), so a concurrent write can make the count off by the
/// keys it touches.
fn del(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let mut keys: Vec<&[u8]> = args[1..].iter().map(|k| &k[..]).collect();
    keys.sort_unstable();
    keys.dedup();
    let present = match cluster.get_many(&keys) {
        Ok(values) => values,
        Err(e) => return cluster_error(session, &e, out),
    };
    let mut deleted = 0;
    for (key, value) in keys.iter().zip(present) {
        if value.is_some() {
            if let Err(e) = cluster.delete(key) {
                return cluster_error(session, &e, out);
            }
            deleted += 1;
        }
    }
    session.encoder().integer(out, deleted);
}

/// `HELLO [protover]`: switches protocol and answers Redis's map of server facts. `AUTH` and
/// `SETNAME` options are not supported yet.
fn hello(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    if let Some(v) = args.get(1) {
        match parse_i64(v) {
            None => {
                return error(
                    session,
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
            }
            Some(2) => session.protocol = Protocol::Resp2,
            Some(3) => session.protocol = Protocol::Resp3,
            Some(_) => return error(session, out, "NOPROTO unsupported protocol version"),
        }
    }
    if let Some(opt) = args.get(2) {
        let text = format!(
            "ERR Syntax error in HELLO option '{}'",
            String::from_utf8_lossy(opt)
        );
        return error(session, out, &text);
    }
    let enc = session.encoder();
    enc.map_header(out, 7);
    enc.bulk(out, b"server");
    enc.bulk(out, b"kvstore");
    enc.bulk(out, b"version");
    enc.bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
    enc.bulk(out, b"proto");
    enc.integer(
        out,
        if session.protocol == Protocol::Resp3 {
            3
        } else {
            2
        },
    );
    enc.bulk(out, b"id");
    enc.integer(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    enc.bulk(out, b"mode");
    enc.bulk(out, b"standalone");
    enc.bulk(out, b"role");
    enc.bulk(out, b"master");
    enc.bulk(out, b"modules");
    enc.array_header(out, 0);
}

/// `COMMAND COUNT`; `COMMAND` and `COMMAND DOCS` answer empty (clients such as redis-cli then
/// show no hints).
fn command(session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let enc = session.encoder();
    let Some(sub) = args.get(1) else {
        return enc.array_header(out, 0);
    };
    if sub.eq_ignore_ascii_case(b"count") {
        if args.len() != 2 {
            return error(session, out, &wrong_arity("command|count"));
        }
        enc.integer(out, count(COMMANDS.iter()));
    } else if sub.eq_ignore_ascii_case(b"docs") {
        enc.map_header(out, 0);
    } else {
        let text = format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(c_str(sub, 128))
        );
        error(session, out, &text);
    }
}

fn count<T>(it: impl Iterator<Item = T>) -> i64 {
    i64::try_from(it.count()).unwrap_or(i64::MAX)
}

/// Redis's text for a command with the wrong number of arguments (`name` is Redis's
/// lower-case full name, e.g. `get` or `command|count`).
fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis's text for an unknown command: the name and the arguments quoted, each cut at its
/// first NUL (Redis formats C strings), at most 128 bytes of name and about 128 of
/// arguments.
fn unknown_command(args: &[Bytes]) -> String {
    let name = args.first().map_or(&[][..], |n| c_str(n, 128));
    let mut list: Vec<u8> = Vec::new();
    for a in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(c_str(a, room));
        list.extend_from_slice(b"' ");
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(name);
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&list);
    // The reply is written as bytes; non-UTF-8 bytes of the arguments become U+FFFD here.
    String::from_utf8_lossy(&text).into_owned()
}

/// `%.{max}s` of a C string: up to the first NUL, at most `max` bytes.
fn c_str(s: &[u8], max: usize) -> &[u8] {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(max);
    &s[..end]
}

/// Redis's `string2ll` on an argument.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.starts_with('+') || (text.len() > 1 && text.starts_with('0')) || text.starts_with("-0")
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_text_matches_redis() {
        let args = [
            Bytes::from_static(b"foo"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
        ];
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&args[..1]),
            "ERR unknown command 'foo', with args beginning with: "
        );
        let long = Bytes::from(vec![b'x'; 200]);
        let text = unknown_command(&[Bytes::from_static(b"foo"), long.clone(), long]);
        // One argument cut to 128 bytes, then the list is full.
        assert_eq!(
            text,
            format!(
                "ERR unknown command 'foo', with args beginning with: '{}' ",
                "x".repeat(128)
            )
        );
    }

    #[test]
    fn integers_parse_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-3"), Some(-3));
        assert_eq!(parse_i64(b"+3"), None);
        assert_eq!(parse_i64(b"03"), None);
        assert_eq!(parse_i64(b" 3"), None);
    }
}
