//! `COMMAND` and `COMMAND INFO [name ...]`: each command's entry in Redis 7's shape (name,
//! arity, flags, first key, last key, key step, ACL categories, tips, key specs,
//! subcommands), so that clients find where the keys are.

use bytes::BytesMut;
use kv_resp::Encoder;

use crate::commands::COMMANDS;

/// Flags, key positions and ACL categories of a command (Redis's for the same command,
/// simplified: no key specs or subcommand entries).
fn facts(
    name: &str,
) -> (
    &'static [&'static str],
    (i64, i64, i64),
    &'static [&'static str],
) {
    match name {
        "get" | "strlen" => (
            &["readonly", "fast"],
            (1, 1, 1),
            &["@read", "@string", "@fast"],
        ),
        "set" => (
            &["write", "denyoom"],
            (1, 1, 1),
            &["@write", "@string", "@slow"],
        ),
        "setex" | "psetex" => (
            &["write", "denyoom"],
            (1, 1, 1),
            &["@write", "@string", "@slow"],
        ),
        "getex" => (
            &["write", "fast"],
            (1, 1, 1),
            &["@write", "@string", "@fast"],
        ),
        "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" => (
            &["write", "fast"],
            (1, 1, 1),
            &["@keyspace", "@write", "@fast"],
        ),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => (
            &["readonly", "fast"],
            (1, 1, 1),
            &["@keyspace", "@read", "@fast"],
        ),
        "getdel" => (
            &["write", "fast"],
            (1, 1, 1),
            &["@write", "@string", "@fast"],
        ),
        "mget" => (
            &["readonly", "fast"],
            (1, -1, 1),
            &["@read", "@string", "@fast"],
        ),
        "mset" => (
            &["write", "denyoom"],
            (1, -1, 2),
            &["@write", "@string", "@slow"],
        ),
        "exists" => (
            &["readonly", "fast"],
            (1, -1, 1),
            &["@keyspace", "@read", "@fast"],
        ),
        "del" => (&["write"], (1, -1, 1), &["@keyspace", "@write", "@slow"]),
        "unlink" => (
            &["write", "fast"],
            (1, -1, 1),
            &["@keyspace", "@write", "@fast"],
        ),
        "dbsize" => (
            &["readonly", "fast"],
            (0, 0, 0),
            &["@keyspace", "@read", "@fast"],
        ),
        "scan" => (&["readonly"], (0, 0, 0), &["@keyspace", "@read", "@slow"]),
        "auth" | "hello" => (
            &["noscript", "loading", "stale", "fast", "no_auth"],
            (0, 0, 0),
            &["@fast", "@connection"],
        ),
        "quit" | "reset" => (
            &["noscript", "loading", "stale", "fast", "no_auth"],
            (0, 0, 0),
            &["@fast", "@connection"],
        ),
        "ping" | "echo" | "select" => (&["fast"], (0, 0, 0), &["@fast", "@connection"]),
        "kvstore" => (&["admin"], (0, 0, 0), &["@admin", "@slow", "@dangerous"]),
        "info" | "command" | "config" => (&["loading", "stale"], (0, 0, 0), &["@slow"]),
        _ => (&[], (0, 0, 0), &["@slow", "@connection"]),
    }
}

/// Appends command `name`'s entry (`name` must be in [`COMMANDS`]).
pub(crate) fn encode(enc: Encoder, out: &mut BytesMut, name: &str, arity: i32) {
    let (flags, (first, last, step), categories) = facts(name);
    enc.array_header(out, 10);
    enc.bulk(out, name.as_bytes());
    enc.integer(out, i64::from(arity));
    enc.set_header(out, flags.len());
    for f in flags {
        enc.simple(out, f.as_bytes());
    }
    enc.integer(out, first);
    enc.integer(out, last);
    enc.integer(out, step);
    enc.set_header(out, categories.len());
    for c in categories {
        enc.simple(out, c.as_bytes());
    }
    enc.set_header(out, 0); // tips
    enc.array_header(out, 0); // key specs
    enc.array_header(out, 0); // subcommands
}

/// `COMMAND` (every command) or `COMMAND INFO name...` (each, or null if unknown).
pub(crate) fn info(enc: Encoder, out: &mut BytesMut, names: Option<&[bytes::Bytes]>) {
    match names {
        None => {
            enc.array_header(out, COMMANDS.len());
            for &(name, arity) in COMMANDS {
                encode(enc, out, name, arity);
            }
        }
        Some(names) => {
            enc.array_header(out, names.len());
            for n in names {
                match COMMANDS
                    .iter()
                    .find(|(c, _)| n.eq_ignore_ascii_case(c.as_bytes()))
                {
                    Some(&(name, arity)) => encode(enc, out, name, arity),
                    None => enc.null(out),
                }
            }
        }
    }
}
