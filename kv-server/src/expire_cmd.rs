//! The commands of expiring keys, with Redis 7's replies: `SET` with `EX|PX|EXAT|PXAT|KEEPTTL`,
//! `SETEX`, `PSETEX`, `GETEX`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `TTL`, `PTTL`,
//! `EXPIRETIME`, `PEXPIRETIME` and `PERSIST`.
//!
//! Arguments are checked by [`crate::expire_args`] against the cluster's clock
//! ([`Cluster::now_millis`]), which also judges expiry; the writes and rewrites are the
//! cluster's (`put_expiring`, `swap_expiring`, `set_keep_ttl`, `expire`, `get_and_expire`),
//! whose guarantees are written there. An expiry the store cannot hold (past
//! [`kv_cluster::MAX_EXPIRES`], about the year 10889) is refused with Redis's "invalid expire
//! time" error.

use bytes::{Bytes, BytesMut};
use kv_cluster::{Cluster, Error, Expiry};

use crate::commands::{error, lookup, value_reply};
use crate::expire_args::{
    GetexExpiry, NewExpiry, SYNTAX_ERROR, invalid_expire, parse_expire, parse_getex, parse_set,
    parse_setex, ttl_reply,
};
use crate::session::Session;

/// The error reply of a cluster error in `command` (an expiry out of the store's range is
/// Redis's "invalid expire time").
pub(crate) fn cluster_error(session: &Session, command: &str, e: &Error, out: &mut BytesMut) {
    if matches!(e, Error::ExpiryOutOfRange { .. }) {
        return error(session, out, &invalid_expire(command));
    }
    crate::commands::cluster_error(session, e, out);
}

/// `SET key value` with options other than a lone `GET` (the plain forms are in
/// `commands.rs`). `NX` and `XX` are refused by name: the store has no conditional write.
pub(crate) fn set(cluster: &Cluster, session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    let opts = match parse_set(args, cluster.now_millis()) {
        Ok(o) => o,
        Err(e) => return error(session, out, &e),
    };
    if opts.nx || opts.xx {
        let name = if opts.nx { "NX" } else { "XX" };
        return error(
            session,
            out,
            &format!("ERR SET option '{name}' is not supported by kvstore"),
        );
    }
    let (key, value) = (&args[1][..], &args[2][..]);
    let expiry = match opts.expiry {
        NewExpiry::None => Expiry::Never,
        NewExpiry::Keep => Expiry::Keep,
        NewExpiry::At(ms) => Expiry::AtMillis(i64::try_from(ms).unwrap_or(i64::MAX)),
    };
    let result = match (opts.get, expiry) {
        (true, Expiry::Never) => cluster.swap(key, value),
        (true, e) => cluster.swap_expiring(key, value, e),
        (false, Expiry::Keep) => cluster.set_keep_ttl(key, value, false),
        (false, e) => cluster
            .expires_at(e)
            .and_then(|at| cluster.put_expiring(key, value, at))
            .map(|_| None),
    };
    match result {
        Ok(old) if opts.get => {
            lookup(session, old.is_some());
            value_reply(session, old, out);
        }
        Ok(_) => session.encoder().simple(out, b"OK"),
        Err(e) => cluster_error(session, "set", &e, out),
    }
}

/// `SETEX key seconds value` (`seconds`) and `PSETEX key milliseconds value`.
pub(crate) fn setex(
    cluster: &Cluster,
    session: &mut Session,
    args: &[Bytes],
    seconds: bool,
    out: &mut BytesMut,
) {
    let command = if seconds { "setex" } else { "psetex" };
    let at = match parse_setex(command, &args[2], seconds, cluster.now_millis()) {
        Ok(at) => at,
        Err(e) => return error(session, out, &e),
    };
    match cluster.put_expiring(&args[1], &args[3], Some(at)) {
        Ok(_) => session.encoder().simple(out, b"OK"),
        Err(e) => cluster_error(session, command, &e, out),
    }
}

/// `GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST]`.
pub(crate) fn getex(cluster: &Cluster, session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    let expiry = match parse_getex(args, cluster.now_millis()) {
        Ok(GetexExpiry::Unchanged) => None,
        Ok(GetexExpiry::Persist) => Some(Expiry::Never),
        Ok(GetexExpiry::At(ms)) => Some(Expiry::AtMillis(i64::try_from(ms).unwrap_or(i64::MAX))),
        Err(e) if e == SYNTAX_ERROR => return error(session, out, &e),
        // Redis looks the key up before it checks the time: an absent key answers nil.
        Err(e) => {
            return match cluster.get_entry(&args[1]) {
                Ok(None) => {
                    lookup(session, false);
                    value_reply(session, None, out);
                }
                Ok(Some(_)) => error(session, out, &e),
                Err(e) => cluster_error(session, "getex", &e, out),
            };
        }
    };
    match cluster.get_and_expire(&args[1], expiry) {
        Ok(v) => {
            lookup(session, v.is_some());
            value_reply(session, v, out);
        }
        Err(e) => cluster_error(session, "getex", &e, out),
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (`name`, lowercase) `key time
/// [NX|XX|GT|LT]`: 1 if the expiry was set (or the key deleted, for a time in the past), 0 if
/// the key is absent or the condition refused it.
pub(crate) fn expire(
    cluster: &Cluster,
    session: &mut Session,
    name: &str,
    args: &[Bytes],
    out: &mut BytesMut,
) {
    let seconds = !name.starts_with('p');
    let relative = !name.ends_with("at");
    let (when, cond) = match parse_expire(name, args, seconds, relative, cluster.now_millis()) {
        Ok(parsed) => parsed,
        Err(e) => return error(session, out, &e),
    };
    match cluster.expire(&args[1], Expiry::AtMillis(when), cond) {
        Ok(done) => session.encoder().integer(out, i64::from(done)),
        Err(e) => cluster_error(session, name, &e, out),
    }
}

/// `PERSIST key`: 1 if the key had an expiry and lost it, else 0.
pub(crate) fn persist(
    cluster: &Cluster,
    session: &mut Session,
    args: &[Bytes],
    out: &mut BytesMut,
) {
    match cluster.persist_key(&args[1]) {
        Ok(done) => session.encoder().integer(out, i64::from(done)),
        Err(e) => cluster_error(session, "persist", &e, out),
    }
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME` (`name`, lowercase) `key`: -2 for a key that
/// does not exist, -1 for one without an expiry, else the time left (seconds rounded as
/// Redis does, or milliseconds) or the expiry itself.
pub(crate) fn ttl(
    cluster: &Cluster,
    session: &mut Session,
    name: &str,
    args: &[Bytes],
    out: &mut BytesMut,
) {
    let millis = name.starts_with('p');
    let absolute = name.ends_with("expiretime");
    match cluster.get_entry(&args[1]) {
        Ok(None) => session.encoder().integer(out, -2),
        Ok(Some(entry)) => {
            let now = cluster.now_millis();
            let reply = ttl_reply(entry.expires, now, millis, absolute);
            session.encoder().integer(out, reply);
        }
        Err(e) => cluster_error(session, name, &e, out),
    }
}
