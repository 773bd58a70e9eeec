//! Executing client commands against the cluster, with Redis 7's replies.
//!
//! One function per command; the table [`COMMANDS`] holds each command's name and Redis's
//! arity (positive: exactly that many arguments, the name included; negative: at least that
//! many), checked before a command runs, as Redis's `processCommand` does.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kv_cluster::Cluster;
use kv_resp::{Command, Protocol};
use kv_wal::SyncPolicy;

use crate::session::Session;

/// The commands this server knows, with Redis's arity.
pub(crate) const COMMANDS: &[(&str, i32)] = &[
    ("auth", -2),
    ("client", -2),
    ("command", -1),
    ("config", -2),
    ("dbsize", 1),
    ("del", -2),
    ("echo", 2),
    ("exists", -2),
    ("expire", -3),
    ("expireat", -3),
    ("expiretime", 2),
    ("get", 2),
    ("getdel", 2),
    ("getex", -2),
    ("hello", -1),
    ("info", -1),
    ("kvstore", -2),
    ("mget", -2),
    ("mset", -3),
    ("persist", 2),
    ("pexpire", -3),
    ("pexpireat", -3),
    ("pexpiretime", 2),
    ("ping", -1),
    ("psetex", 4),
    ("pttl", 2),
    ("quit", -1),
    ("reset", 1),
    ("scan", -2),
    ("select", 2),
    ("set", -3),
    ("setex", 4),
    ("strlen", 2),
    ("ttl", 2),
    ("unlink", -2),
];

/// Commands a client may run before it authenticates (Redis's `no-auth` flag).
const NO_AUTH: &[&str] = &["auth", "hello", "quit", "reset"];

/// Redis's reply to a command from a client that must authenticate first.
const NOAUTH: &str = "NOAUTH Authentication required.";

/// Most consecutive `GET`s (or `SET`s) merged into one `get_many` (`put_many`).
const MAX_RUN: usize = 512;

/// Commands that read the store: they never wait for an fsync (`DBSIZE` and `INFO` read
/// counters, one call per node).
const READS: &[&str] = &[
    "get",
    "mget",
    "exists",
    "strlen",
    "dbsize",
    "info",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
];

/// Commands that write the store: one waits for an fsync under [`SyncPolicy::Always`], and
/// the write that fills a log segment flushes it (see [`may_block`]).
const WRITES: &[&str] = &[
    "set",
    "del",
    "unlink",
    "getdel",
    "mset",
    "setex",
    "psetex",
    "getex",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "persist",
];

/// Commands whose work grows with the store (a walk of keys or token ranges) or with a
/// cluster change: always run on a storage thread.
const LONG: &[&str] = &["scan", "kvstore"];

/// Whether executing `commands` may hold a thread for long: an fsync to wait for or a walk of
/// the store. Such a batch runs on a storage thread (`spawn_blocking`); any other runs on the
/// connection's task, without the hop.
///
/// Reads never wait for an fsync. A write does under `Always`; under `Never` the write that
/// fills a log segment flushes the whole segment; under `Periodic` that flush covers only
/// what the last periodic flush has not (at most one interval of writes), as short a stall
/// as Redis's own `appendfsync everysec` writes can see, so writes run inline. With the
/// policy unknown (`None`), writes are assumed to block.
///
/// With replicas in other processes (`remote`), reads and writes wait on the network. Plain
/// `GET`s and `SET`s are awaited on the connection's task (the cluster's futures), where a
/// local write runs inline as above; every other command that reads or writes may block.
pub(crate) fn may_block<'a>(
    commands: impl IntoIterator<Item = &'a Command>,
    policy: Option<SyncPolicy>,
    remote: bool,
) -> bool {
    let writes_inline = matches!(policy, Some(SyncPolicy::Periodic(_)));
    let is = |c: &Command, names: &[&str]| {
        names
            .iter()
            .any(|n| c.name().eq_ignore_ascii_case(n.as_bytes()))
    };
    commands.into_iter().any(|c| {
        if remote && (is_plain(c, "get", 2) || is_run_set(c)) {
            return !writes_inline;
        }
        if is(c, READS) {
            return remote;
        }
        if is(c, WRITES) {
            return remote || !writes_inline;
        }
        is(c, LONG)
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
///
/// A future: the runs of `GET`s and `SET`s await the cluster's futures, every other command
/// runs synchronously. On the connection's task it must only be given what
/// [`may_block`] allows there; a storage thread runs it with `Handle::block_on`.
pub(crate) async fn execute(
    cluster: &Cluster,
    session: &mut Session,
    queue: &mut VecDeque<Command>,
    out: &mut BytesMut,
    flush_at: usize,
) {
    execute_queue(cluster, session, queue, out, flush_at).await;
    // Disjoint fields: no reference count touched per batch.
    session.shared.stats.merge(&mut session.stats);
}

async fn execute_queue(
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
        if session.authenticated
            && let Some(why) = refusal(session, cmd)
        {
            queue.pop_front();
            error(session, out, &why);
            continue;
        }
        if session.authenticated && (is_plain(cmd, "get", 2) || is_run_set(cmd)) {
            let run = take_run(queue);
            let start = Instant::now();
            if run[0].len() == 2 {
                let unanswered = get_run(cluster, session, &run, out, flush_at).await;
                let calls = unanswered.start;
                session
                    .stats
                    .called(GET, count(0..calls).unsigned_abs(), start.elapsed(), 0);
                // Put back what did not fit, to be executed (read again) after the replies so
                // far are written: a run of large values must not pass the reply bound.
                for cmd in run.into_iter().skip(unanswered.start).rev() {
                    queue.push_front(cmd);
                }
            } else {
                let failed = set_run(cluster, session, &run, out).await;
                let calls = count(run.iter()).unsigned_abs();
                session.stats.called(SET, calls, start.elapsed(), failed);
            }
            continue;
        }
        if let Some(cmd) = queue.pop_front() {
            execute_one(cluster, session, &cmd, out);
        }
    }
}

/// The commands a refusing extension never refuses: the connection's own.
const NEVER_REFUSED: [&str; 11] = [
    "ping", "echo", "auth", "hello", "quit", "reset", "select", "client", "command", "info",
    "kvstore",
];

/// The extension's refusal of `cmd`, if it refuses clients now and `cmd` is not the
/// connection's own.
fn refusal(session: &Session, cmd: &Command) -> Option<String> {
    let why = session.shared.options.get_kvstore_extension()?.refusal()?;
    let own = NEVER_REFUSED
        .iter()
        .any(|n| cmd.name().eq_ignore_ascii_case(n.as_bytes()));
    (!own).then_some(why)
}

/// `GET`'s and `SET`'s places in [`COMMANDS`], for their counters.
const GET: usize = index_of("get");
const SET: usize = index_of("set");

const fn index_of(name: &str) -> usize {
    let mut i = 0;
    while i < COMMANDS.len() {
        if str_eq(COMMANDS[i].0, name) {
            return i;
        }
        i += 1;
    }
    panic!("a command of the table")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A `SET key value`, or one with a single time option (`EX|PX|EXAT|PXAT t`): what a run of
/// writes batches (the time itself is checked when the run executes).
fn is_run_set(cmd: &Command) -> bool {
    match cmd.len() {
        3 => is_plain(cmd, "set", 3),
        5 => {
            is_plain(cmd, "set", 5)
                && [&b"ex"[..], b"px", b"exat", b"pxat"]
                    .iter()
                    .any(|o| cmd.args()[3].eq_ignore_ascii_case(o))
        }
        _ => false,
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
    let is_like: fn(&Command) -> bool = if first.len() == 2 {
        |c| is_plain(c, "get", 2)
    } else {
        is_run_set
    };
    run.push(first);
    while run.len() < MAX_RUN && queue.front().is_some_and(is_like) {
        if let Some(c) = queue.pop_front() {
            run.push(c);
        }
    }
    run
}

/// Answers a run of `GET`s with one `get_many`, stopping once `out` reaches `flush_at` (at
/// least one is answered); returns the range of the run left unanswered.
async fn get_run(
    cluster: &Cluster,
    session: &mut Session,
    run: &[Command],
    out: &mut BytesMut,
    flush_at: usize,
) -> std::ops::Range<usize> {
    let keys: Vec<&[u8]> = run.iter().map(|c| &c.args()[1][..]).collect();
    let mut answered = 0;
    // A run of one (every unpipelined GET) is a plain `get`: `get_many`'s per-node batching
    // costs more than it saves for one key.
    let batch = if keys.len() > 1 {
        cluster.get_many_async(&keys).await.ok()
    } else {
        None
    };
    match batch {
        Some(values) => {
            for v in values {
                if answered > 0 && out.len() >= flush_at {
                    break;
                }
                lookup(session, v.is_some());
                value_reply(session, v, out);
                answered += 1;
            }
        }
        // A run of one, or a batch that failed: one by one, so each command gets its own
        // answer.
        None => {
            for key in keys {
                if answered > 0 && out.len() >= flush_at {
                    break;
                }
                match cluster.get_async(key).await {
                    Ok(v) => {
                        lookup(session, v.is_some());
                        value_reply(session, v, out);
                    }
                    Err(e) => cluster_error(session, &e, out),
                }
                answered += 1;
            }
        }
    }
    answered..run.len()
}

/// Answers a run of `SET`s; returns how many failed.
async fn set_run(cluster: &Cluster, session: &Session, run: &[Command], out: &mut BytesMut) -> u64 {
    let pairs: Vec<(&[u8], &[u8])> = run
        .iter()
        .map(|c| (&c.args()[1][..], &c.args()[2][..]))
        .collect();
    // Each SET's expiry, or the error its time gets; left empty (all none) for a run of plain
    // SETs, which then reads no clock.
    let mut expiries: Vec<Result<Option<u64>, String>> = Vec::new();
    if run.iter().any(|c| c.len() != 3) {
        let now = cluster.now_millis();
        expiries = run
            .iter()
            .map(|c| match c.len() {
                3 => Ok(None),
                _ => crate::expire_args::parse_set(c.args(), now).map(|s| match s.expiry {
                    crate::expire_args::NewExpiry::At(ms) => Some(ms),
                    _ => None,
                }),
            })
            .collect();
    }
    let expiry = |i: usize| expiries.get(i).cloned().unwrap_or(Ok(None));
    // A run of one (every unpipelined SET) is a single write, below.
    if pairs.len() > 1 && expiries.iter().all(Result::is_ok) {
        let expires: Vec<Option<u64>> = expiries.iter().flatten().copied().collect();
        if cluster
            .put_many_expiring_async(&pairs, &expires)
            .await
            .is_ok()
        {
            for _ in run {
                session.encoder().simple(out, b"OK");
            }
            return 0;
        }
    }
    // Some pairs may be stored: writing them again is harmless, and each command gets the
    // answer of its own write.
    let mut failed = 0;
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        let stored = match expiry(i) {
            Ok(None) => cluster.put_async(k, v).await,
            Ok(at) => cluster.put_expiring_async(k, v, at).await,
            Err(e) => {
                failed += 1;
                error(session, out, &e);
                continue;
            }
        };
        match stored {
            Ok(_) => session.encoder().simple(out, b"OK"),
            Err(e) => {
                failed += 1;
                crate::expire_cmd::cluster_error(session, "set", &e, out);
            }
        }
    }
    failed
}

/// Counts a key lookup for `keyspace_hits`/`keyspace_misses`.
pub(crate) fn lookup(session: &mut Session, hit: bool) {
    session.stats.lookups(u64::from(hit), u64::from(!hit));
}

pub(crate) fn value_reply(session: &Session, value: Option<Bytes>, out: &mut BytesMut) {
    match value {
        Some(v) => session.encoder().bulk(out, &v),
        None => session.encoder().null(out),
    }
}

pub(crate) fn cluster_error(session: &Session, e: &kv_cluster::Error, out: &mut BytesMut) {
    error(session, out, &format!("ERR {}", e.chain()));
}

/// Appends `-<text>\r\n` (`text` includes the error code, e.g. `ERR ...`).
pub(crate) fn error(session: &Session, out: &mut BytesMut, text: &str) {
    session.encoder().error(out, text.as_bytes());
}

/// Executes one command, checking that it exists and its arity first, and counts it.
fn execute_one(cluster: &Cluster, session: &mut Session, cmd: &Command, out: &mut BytesMut) {
    let Some(index) = COMMANDS
        .iter()
        .position(|(n, _)| cmd.name().eq_ignore_ascii_case(n.as_bytes()))
    else {
        return error(session, out, &unknown_command(cmd.args()));
    };
    let (name, arity) = COMMANDS[index];
    let argc = i64::try_from(cmd.len()).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if (arity > 0 && argc != arity) || argc < -arity {
        session.stats.rejected(index);
        return error(session, out, &wrong_arity(name));
    }
    // As Redis: an unknown command or a wrong arity is reported before the missing
    // authentication.
    if !session.authenticated && !NO_AUTH.contains(&name) {
        session.stats.rejected(index);
        return error(session, out, NOAUTH);
    }
    let start = Instant::now();
    let at = out.len();
    run_command(cluster, session, name, cmd, out);
    // A reply that is an error marks a failed call (Redis's `failed_calls`).
    let failed = out.get(at).is_some_and(|&b| b == b'-' || b == b'!');
    session
        .stats
        .called(index, 1, start.elapsed(), u64::from(failed));
}

/// Runs a command whose name and arity are checked.
fn run_command(
    cluster: &Cluster,
    session: &mut Session,
    name: &str,
    cmd: &Command,
    out: &mut BytesMut,
) {
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
        "config" => config(session, args, out),
        "get" => match cluster.get(&args[1]) {
            Ok(v) => {
                lookup(session, v.is_some());
                value_reply(session, v, out);
            }
            Err(e) => cluster_error(session, &e, out),
        },
        "set" => set(cluster, session, args, out),
        "mget" => {
            let keys: Vec<&[u8]> = args[1..].iter().map(|k| &k[..]).collect();
            match cluster.get_many(&keys) {
                Ok(values) => {
                    enc.array_header(out, values.len());
                    for v in values {
                        lookup(session, v.is_some());
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
                Ok(values) => {
                    let found = count(values.iter().filter(|v| v.is_some()));
                    let hits = found.unsigned_abs();
                    session
                        .stats
                        .lookups(hits, count(values.iter()).unsigned_abs() - hits);
                    enc.integer(out, found);
                }
                Err(e) => cluster_error(session, &e, out),
            }
        }
        "del" | "unlink" => del(cluster, session, args, out),
        "getdel" => getdel(cluster, session, args, out),
        "strlen" => match cluster.get(&args[1]) {
            Ok(v) => {
                lookup(session, v.is_some());
                enc.integer(out, v.map_or(0, |v| count(v.iter())));
            }
            Err(e) => cluster_error(session, &e, out),
        },
        "dbsize" => dbsize(cluster, session, out),
        "auth" => auth(session, args, out),
        "info" => crate::info::info(cluster, session, args, out),
        "reset" => {
            session.set_protocol(Protocol::Resp2);
            session.client.update_names(|n| n.name = None);
            session.authenticated = session.requirepass.is_none();
            session.encoder().simple(out, b"RESET");
        }
        "client" => crate::client_cmd::client(session, args, out),
        "scan" => crate::scan::scan(cluster, session, args, out),
        "kvstore" => crate::kvstore_cmd::kvstore(cluster, session, args, out),
        "setex" => crate::expire_cmd::setex(cluster, session, args, true, out),
        "psetex" => crate::expire_cmd::setex(cluster, session, args, false, out),
        "getex" => crate::expire_cmd::getex(cluster, session, args, out),
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            crate::expire_cmd::expire(cluster, session, name, args, out)
        }
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            crate::expire_cmd::ttl(cluster, session, name, args, out)
        }
        "persist" => crate::expire_cmd::persist(cluster, session, args, out),
        _ => error(session, out, &unknown_command(args)),
    }
}

/// `SET key value [GET]`; with other options, `expire_cmd::set`. With `GET`, one
/// write that reports the value it replaced ([`Cluster::swap`]): two clients racing never get
/// the same old value, as in Redis.
fn set(cluster: &Cluster, session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    if args.len() == 4 && args[3].eq_ignore_ascii_case(b"get") {
        return match cluster.swap(&args[1], &args[2]) {
            Ok(old) => {
                lookup(session, old.is_some());
                value_reply(session, old, out);
            }
            Err(e) => cluster_error(session, &e, out),
        };
    }
    if args.len() > 3 {
        return crate::expire_cmd::set(cluster, session, args, out);
    }
    match cluster.put(&args[1], &args[2]) {
        Ok(_) => session.encoder().simple(out, b"OK"),
        Err(e) => cluster_error(session, &e, out),
    }
}

/// `DEL key...`: the number of keys that existed, each decided by its delete itself
/// ([`Cluster::delete_many`]: the replicas report whether the tombstone replaced a value), so
/// clients deleting the same keys at once count each key once, as in Redis. A key named
/// twice counts once.
fn del(cluster: &Cluster, session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let mut keys: Vec<&[u8]> = args[1..].iter().map(|k| &k[..]).collect();
    keys.sort_unstable();
    keys.dedup();
    match cluster.delete_many(&keys) {
        Ok(existed) => session
            .encoder()
            .integer(out, count(existed.iter().filter(|e| **e))),
        Err(e) => cluster_error(session, &e, out),
    }
}

/// `GETDEL key`: one delete that reports the value it replaced ([`Cluster::take`]), so of
/// clients racing on a key exactly one gets its value.
fn getdel(cluster: &Cluster, session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    match cluster.take(&args[1]) {
        Ok(old) => {
            lookup(session, old.is_some());
            value_reply(session, old, out);
        }
        Err(e) => cluster_error(session, &e, out),
    }
}

/// `DBSIZE`: [`Cluster::key_count`], from the nodes' live-key counters (one call per node,
/// not a walk over the keys). Exact when the replicas are in sync and no node is down or
/// joining; an estimate otherwise (Redis's is always exact).
fn dbsize(cluster: &Cluster, session: &Session, out: &mut BytesMut) {
    match cluster.key_count() {
        Ok(c) => session
            .encoder()
            .integer(out, i64::try_from(c.keys).unwrap_or(i64::MAX)),
        Err(e) => cluster_error(session, &e, out),
    }
}

/// `AUTH [user] password`, as Redis's `authCommand` with the default user only.
fn auth(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    if args.len() > 3 {
        return error(session, out, "ERR syntax error");
    }
    let (user, password): (&[u8], &[u8]) = if args.len() == 2 {
        if session.requirepass.is_none() {
            return error(
                session,
                out,
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        (b"default", &args[1])
    } else {
        (&args[1], &args[2])
    };
    if session.check_credentials(user, password) {
        session.authenticated = true;
        session.encoder().simple(out, b"OK");
    } else {
        error(session, out, WRONGPASS);
    }
}

/// Redis's reply to wrong credentials.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: authenticates, names the client and
/// switches protocol, each only once the whole command is valid, then answers Redis's map of
/// server facts (Redis's `helloCommand`).
fn hello(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    let mut protocol = session.protocol;
    if let Some(v) = args.get(1) {
        match parse_i64(v) {
            None => {
                return error(
                    session,
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
            }
            Some(2) => protocol = Protocol::Resp2,
            Some(3) => protocol = Protocol::Resp3,
            Some(_) => return error(session, out, "NOPROTO unsupported protocol version"),
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = &args[j];
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials = Some((&args[j + 1], &args[j + 2]));
            j += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            if let Err(text) = crate::client_cmd::validate_name(&args[j + 1]) {
                return error(session, out, text);
            }
            name = Some(args[j + 1].clone());
            j += 2;
        } else {
            let text = format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(c_str(opt, usize::MAX))
            );
            return error(session, out, &text);
        }
    }
    if let Some((user, password)) = credentials {
        if !session.check_credentials(user, password) {
            return error(session, out, WRONGPASS);
        }
        session.authenticated = true;
    }
    if !session.authenticated {
        return error(
            session,
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        session
            .client
            .update_names(|n| n.name = (!name.is_empty()).then_some(name));
    }
    session.set_protocol(protocol);
    let enc = session.encoder();
    enc.map_header(out, 7);
    enc.bulk(out, b"server");
    enc.bulk(out, b"kvstore");
    enc.bulk(out, b"version");
    enc.bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
    enc.bulk(out, b"proto");
    enc.integer(out, i64::from(session.resp_version()));
    enc.bulk(out, b"id");
    enc.integer(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    enc.bulk(out, b"mode");
    enc.bulk(out, b"standalone");
    enc.bulk(out, b"role");
    enc.bulk(out, b"master");
    enc.bulk(out, b"modules");
    enc.array_header(out, 0);
}

/// `COMMAND`, `COMMAND INFO [name...]`, `COMMAND COUNT`, `COMMAND DOCS [name...]` (what
/// `redis-cli` builds its hints from).
fn command(session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let enc = session.encoder();
    let Some(sub) = args.get(1) else {
        return crate::command_info::info(enc, out, None);
    };
    if sub.eq_ignore_ascii_case(b"info") {
        // As Redis 7: no names is every command.
        let names = (args.len() > 2).then(|| &args[2..]);
        crate::command_info::info(enc, out, names);
    } else if sub.eq_ignore_ascii_case(b"count") {
        if args.len() != 2 {
            return error(session, out, &wrong_arity("command|count"));
        }
        enc.integer(out, count(COMMANDS.iter()));
    } else if sub.eq_ignore_ascii_case(b"docs") {
        // As Redis: the names asked for that exist (`client|id` for a subcommand), or all.
        let mut found: Vec<&crate::docs::Doc> = Vec::new();
        if args.len() == 2 {
            found.extend(crate::docs::DOCS);
        } else {
            for name in &args[2..] {
                let name = name.to_ascii_lowercase();
                let all = crate::docs::DOCS
                    .iter()
                    .flat_map(|d| std::iter::once(d).chain(d.subcommands()));
                if let Some(d) = all.into_iter().find(|d| d.name.as_bytes() == name) {
                    found.push(d);
                }
            }
        }
        enc.map_header(out, found.len());
        for d in found {
            enc.bulk(out, d.name.as_bytes());
            crate::docs::encode(enc, out, d);
        }
    } else {
        let text = format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(c_str(sub, 128))
        );
        error(session, out, &text);
    }
}

/// The configuration `CONFIG GET` reports: what `redis-benchmark` asks at start (`save`,
/// `appendonly`), so that it prints no warning, and the database count.
const CONFIG: &[(&str, &str)] = &[("appendonly", "no"), ("databases", "1"), ("save", "")];

/// `CONFIG GET pattern...` (glob patterns, as in Redis 7); other subcommands are refused.
fn config(session: &Session, args: &[Bytes], out: &mut BytesMut) {
    let sub = &args[1];
    if !sub.eq_ignore_ascii_case(b"get") {
        let text = if [&b"set"[..], b"resetstat", b"rewrite"]
            .iter()
            .any(|s| sub.eq_ignore_ascii_case(s))
        {
            format!(
                "ERR CONFIG {} is not supported by kvstore",
                String::from_utf8_lossy(sub).to_ascii_uppercase()
            )
        } else {
            format!(
                "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(c_str(sub, 128))
            )
        };
        return error(session, out, &text);
    }
    if args.len() < 3 {
        return error(session, out, &wrong_arity("config|get"));
    }
    let matching: Vec<&(&str, &str)> = CONFIG
        .iter()
        .filter(|(name, _)| {
            args[2..]
                .iter()
                .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    let enc = session.encoder();
    enc.map_header(out, matching.len());
    for (name, value) in matching {
        enc.bulk(out, name.as_bytes());
        enc.bulk(out, value.as_bytes());
    }
}

/// Glob matching with `*` and `?` (Redis's `stringmatchlen` without classes or escapes).
pub(crate) fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

fn count<T>(it: impl Iterator<Item = T>) -> i64 {
    i64::try_from(it.count()).unwrap_or(i64::MAX)
}

/// Redis's text for a command with the wrong number of arguments (`name` is Redis's
/// lower-case full name, e.g. `get` or `command|count`).
pub(crate) fn wrong_arity(name: &str) -> String {
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
pub(crate) fn c_str(s: &[u8], max: usize) -> &[u8] {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(max);
    &s[..end]
}

/// Redis's `string2ull`-like parse of an unsigned argument (a `SCAN` cursor).
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Redis's `string2ll` on an argument.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
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

    fn decode(line: &str) -> Command {
        let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
        kv_resp::CommandDecoder::new()
            .decode(&mut buf)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{line} decodes"))
    }

    #[test]
    fn reads_never_leave_the_connection_task() {
        let periodic = SyncPolicy::Periodic(std::time::Duration::from_secs(1));
        for policy in [
            None,
            Some(SyncPolicy::Always),
            Some(SyncPolicy::Never),
            Some(periodic),
        ] {
            for line in [
                "GET k", "MGET a b", "EXISTS k", "STRLEN k", "PING", "ECHO x",
            ] {
                assert!(
                    !may_block(&[decode(line)], policy, false),
                    "{line} under {policy:?}"
                );
            }
        }
    }

    #[test]
    fn writes_run_inline_only_under_periodic_sync() {
        let periodic = SyncPolicy::Periodic(std::time::Duration::from_secs(1));
        for line in ["SET k v", "del k", "UNLINK k", "GETDEL k", "MSET a 1 b 2"] {
            let batch = [decode("GET k"), decode(line)];
            assert!(!may_block(&batch, Some(periodic), false), "{line}");
            for policy in [None, Some(SyncPolicy::Always), Some(SyncPolicy::Never)] {
                assert!(may_block(&batch, policy, false), "{line} under {policy:?}");
            }
        }
    }

    #[test]
    fn with_remote_replicas_only_plain_gets_and_sets_are_awaited_on_the_task() {
        let periodic = SyncPolicy::Periodic(std::time::Duration::from_secs(1));
        let plain = [decode("GET k"), decode("SET k v"), decode("get x")];
        assert!(!may_block(&plain, Some(periodic), true));
        for policy in [None, Some(SyncPolicy::Always), Some(SyncPolicy::Never)] {
            assert!(may_block(&plain, policy, true), "under {policy:?}");
        }
        // Everything else that reads or writes waits on a storage thread (the cluster's
        // blocking API), even in a batch of plain GETs.
        for line in [
            "MGET a b",
            "EXISTS k",
            "DBSIZE",
            "DEL k",
            "MSET a 1 b 2",
            "SET k v GET",
        ] {
            let batch = [decode("GET k"), decode(line)];
            assert!(may_block(&batch, Some(periodic), true), "{line}");
        }
        assert!(!may_block(&[decode("PING")], Some(periodic), true));
    }

    #[test]
    fn walks_of_the_store_always_go_to_a_storage_thread() {
        let periodic = SyncPolicy::Periodic(std::time::Duration::from_secs(1));
        for line in [
            "SCAN 0",
            "SCAN 0 COUNT 1000",
            "KVSTORE STATS",
            "KVSTORE ADDNODE n4",
        ] {
            assert!(may_block(&[decode(line)], Some(periodic), false), "{line}");
        }
    }

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
    fn glob_matching() {
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"sa?e", b"save"));
        assert!(glob_match(b"*only", b"appendonly"));
        assert!(glob_match(b"a*e*y", b"appendonly"));
        assert!(!glob_match(b"save*x", b"save"));
        assert!(!glob_match(b"sav", b"save"));
        assert!(glob_match(b"", b""));
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
