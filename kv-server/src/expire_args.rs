//! The expiry arguments of Redis 7's commands, parsed and checked exactly as Redis does, with
//! its error replies: `SET ... EX|PX|EXAT|PXAT|KEEPTTL`, `SETEX`, `PSETEX`, `GETEX`, the
//! `EXPIRE` family with `NX|XX|GT|LT`, and the replies of `TTL`, `PTTL`, `EXPIRETIME` and
//! `PEXPIRETIME`.
//!
//! Times are milliseconds since the Unix epoch, as Redis's `mstime()` and the store's
//! expiry. Redis computes in signed 64 bits and refuses what would overflow (`invalid expire
//! time in '<command>' command`); so does this module, before anything reaches the store.
//! Nothing here touches the store: the caller passes the cluster's "now".

use bytes::Bytes;
use kv_cluster::ExpireIf;

/// Redis's reply to an argument that is not a 64-bit integer.
pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's reply to a bad combination of options.
pub(crate) const SYNTAX_ERROR: &str = "ERR syntax error";

/// Redis's reply to an expiry out of range for `command` (lowercase).
pub(crate) fn invalid_expire(command: &str) -> String {
    format!("ERR invalid expire time in '{command}' command")
}

/// What a write does to its key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewExpiry {
    /// The key is written without one (a plain `SET` removes any it had).
    None,
    /// The key keeps the one it has (`SET ... KEEPTTL`).
    Keep,
    /// The key expires at this time (ms since the epoch).
    At(u64),
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetArgs {
    pub(crate) expiry: NewExpiry,
    pub(crate) get: bool,
    pub(crate) nx: bool,
    pub(crate) xx: bool,
}

/// `GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST]`: what it does to the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetexExpiry {
    /// Nothing (no option).
    Unchanged,
    /// Removes it.
    Persist,
    /// Sets it to this time.
    At(u64),
}

/// How an option gives its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// `EX`: seconds from now.
    Seconds,
    /// `PX`: milliseconds from now.
    Millis,
    /// `EXAT`: a Unix time in seconds.
    AtSeconds,
    /// `PXAT`: a Unix time in milliseconds.
    AtMillis,
}

impl Unit {
    fn of(opt: &[u8]) -> Option<Unit> {
        [
            (&b"ex"[..], Unit::Seconds),
            (b"px", Unit::Millis),
            (b"exat", Unit::AtSeconds),
            (b"pxat", Unit::AtMillis),
        ]
        .into_iter()
        .find(|(name, _)| opt.eq_ignore_ascii_case(name))
        .map(|(_, u)| u)
    }
}

/// A 64-bit signed integer as Redis's `string2ll` reads it, or Redis's error.
fn parse_i64(arg: &[u8]) -> Result<i64, String> {
    crate::commands::parse_i64(arg).ok_or_else(|| NOT_AN_INTEGER.to_owned())
}

/// The absolute expiry an option's argument gives (Redis's `getExpireMillisecondsOrReply`):
/// positive, in range once converted to milliseconds and added to `now`.
fn expire_at(command: &str, arg: &[u8], unit: Unit, now: u64) -> Result<u64, String> {
    let value = parse_i64(arg)?;
    let seconds = matches!(unit, Unit::Seconds | Unit::AtSeconds);
    if value <= 0 || (seconds && value > i64::MAX / 1000) {
        return Err(invalid_expire(command));
    }
    let mut ms = if seconds { value * 1000 } else { value };
    if matches!(unit, Unit::Seconds | Unit::Millis) {
        let now = i64::try_from(now).map_err(|_| invalid_expire(command))?;
        ms = ms.checked_add(now).ok_or_else(|| invalid_expire(command))?;
    }
    u64::try_from(ms).map_err(|_| invalid_expire(command))
}

/// The options of `SET` (from its fourth argument) or `GETEX` (from its third), parsed in one
/// pass as Redis 7's `parseExtendedStringArgumentsOrReply` does for both: an option given
/// twice is allowed, two that exclude each other are a syntax error, as is an option of the
/// other command, an unknown one or a missing time. The time is checked afterwards.
#[derive(Default)]
struct Options<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keep: bool,
    persist: bool,
    timed: Option<(Unit, &'a Bytes)>,
}

fn parse_options(args: &[Bytes], set: bool) -> Result<Options<'_>, String> {
    let mut o = Options::default();
    let mut j = if set { 3 } else { 2 };
    while j < args.len() {
        let opt = &args[j][..];
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        let other_time = |u: Unit| o.timed.is_some_and(|(t, _)| t != u);
        if set && is("nx") && !o.xx {
            o.nx = true;
        } else if set && is("xx") && !o.nx {
            o.xx = true;
        } else if set && is("get") {
            o.get = true;
        } else if set && is("keepttl") && o.timed.is_none() {
            o.keep = true;
        } else if !set && is("persist") && o.timed.is_none() {
            o.persist = true;
        } else if let Some(unit) = Unit::of(opt)
            && !o.keep
            && !o.persist
            && !other_time(unit)
            && let Some(next) = args.get(j + 1)
        {
            o.timed = Some((unit, next));
            j += 1;
        } else {
            return Err(SYNTAX_ERROR.to_owned());
        }
        j += 1;
    }
    Ok(o)
}

/// Parses `SET`'s options (`args` is the whole command).
pub(crate) fn parse_set(args: &[Bytes], now: u64) -> Result<SetArgs, String> {
    let o = parse_options(args, true)?;
    let expiry = match o.timed {
        Some((unit, arg)) => NewExpiry::At(expire_at("set", arg, unit, now)?),
        None if o.keep => NewExpiry::Keep,
        None => NewExpiry::None,
    };
    Ok(SetArgs {
        expiry,
        get: o.get,
        nx: o.nx,
        xx: o.xx,
    })
}

/// `SETEX key seconds value` (`seconds`) or `PSETEX key milliseconds value`: the expiry.
pub(crate) fn parse_setex(
    command: &str,
    arg: &[u8],
    seconds: bool,
    now: u64,
) -> Result<u64, String> {
    let unit = if seconds { Unit::Seconds } else { Unit::Millis };
    expire_at(command, arg, unit, now)
}

/// Parses `GETEX`'s options (`args` is the whole command).
pub(crate) fn parse_getex(args: &[Bytes], now: u64) -> Result<GetexExpiry, String> {
    let o = parse_options(args, false)?;
    Ok(match o.timed {
        Some((unit, arg)) => GetexExpiry::At(expire_at("getex", arg, unit, now)?),
        None if o.persist => GetexExpiry::Persist,
        None => GetexExpiry::Unchanged,
    })
}

/// `EXPIRE key seconds`, `PEXPIRE key ms`, `EXPIREAT key ts`, `PEXPIREAT key ms-ts`, each
/// `[NX|XX|GT|LT]`, parsed as Redis's `expireGenericCommand` does: the options first, then
/// the time, which may be zero or negative (the key is then deleted) but must not overflow.
/// Returns the absolute time in milliseconds (possibly in the past) and the condition.
pub(crate) fn parse_expire(
    command: &str,
    args: &[Bytes],
    seconds: bool,
    relative: bool,
    now: u64,
) -> Result<(i64, ExpireIf), String> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        if opt.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"gt") {
            gt = true;
        } else if opt.eq_ignore_ascii_case(b"lt") {
            lt = true;
        } else {
            return Err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    // `XX GT` is `GT`: without an expiry (an infinite one) nothing is later.
    let c = match (nx, xx, gt, lt) {
        (true, ..) => ExpireIf::NoExpiry,
        (_, true, false, true) => ExpireIf::HasExpiryEarlier,
        (_, true, false, false) => ExpireIf::HasExpiry,
        (_, _, true, _) => ExpireIf::Later,
        (_, _, _, true) => ExpireIf::Earlier,
        _ => ExpireIf::Always,
    };
    let mut when = parse_i64(&args[2])?;
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid_expire(command));
        }
        when *= 1000;
    }
    let base = if relative {
        i64::try_from(now).map_err(|_| invalid_expire(command))?
    } else {
        0
    };
    if when > i64::MAX - base {
        return Err(invalid_expire(command));
    }
    Ok((when + base, c))
}

/// The reply of `TTL` (`millis` false), `PTTL`, `EXPIRETIME` (`absolute`) or `PEXPIRETIME`
/// for a live key expiring at `expires` (`None`: it has no expiry, -1), at `now`.
pub(crate) fn ttl_reply(expires: Option<u64>, now: u64, millis: bool, absolute: bool) -> i64 {
    let Some(at) = expires else {
        return -1;
    };
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let ttl = if absolute { at } else { (at - now).max(0) };
    if millis {
        ttl
    } else {
        ttl.saturating_add(500) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn set(line: &str) -> Result<SetArgs, String> {
        parse_set(&args(line), NOW)
    }

    #[test]
    fn set_options_give_the_expiry_redis_computes() {
        assert_eq!(set("SET k v").unwrap().expiry, NewExpiry::None);
        assert_eq!(
            set("SET k v EX 10").unwrap().expiry,
            NewExpiry::At(NOW + 10_000)
        );
        assert_eq!(
            set("SET k v px 10").unwrap().expiry,
            NewExpiry::At(NOW + 10)
        );
        assert_eq!(set("SET k v EXAT 5").unwrap().expiry, NewExpiry::At(5_000));
        assert_eq!(set("SET k v PXAT 5").unwrap().expiry, NewExpiry::At(5));
        assert_eq!(set("SET k v KEEPTTL").unwrap().expiry, NewExpiry::Keep);
        // The same option twice: the last wins, as in Redis.
        assert_eq!(
            set("SET k v EX 1 EX 2").unwrap().expiry,
            NewExpiry::At(NOW + 2_000)
        );
        let s = set("SET k v GET NX EX 1").unwrap();
        assert!(s.get && s.nx && !s.xx);
    }

    #[test]
    fn set_option_errors_are_redis_s() {
        for bad in [
            "SET k v EX 1 PX 1",
            "SET k v EX 1 KEEPTTL",
            "SET k v KEEPTTL EX 1",
            "SET k v NX XX",
            "SET k v EX",
            "SET k v PERSIST",
            "SET k v FOO",
        ] {
            assert_eq!(set(bad).unwrap_err(), SYNTAX_ERROR, "{bad}");
        }
        for bad in [
            "SET k v EX 0",
            "SET k v PX -1",
            "SET k v EX 9223372036854776",
        ] {
            assert_eq!(set(bad).unwrap_err(), invalid_expire("set"), "{bad}");
        }
        // PX past i64::MAX once now is added.
        assert_eq!(
            set("SET k v PX 9223372036854775000").unwrap_err(),
            invalid_expire("set")
        );
        for bad in [
            "SET k v EX ten",
            "SET k v EX 1.5",
            "SET k v EX +1",
            "SET k v EX 01",
            "SET k v EX -0",
        ] {
            assert_eq!(set(bad).unwrap_err(), NOT_AN_INTEGER, "{bad}");
        }
    }

    #[test]
    fn getex_options() {
        let g = |l: &str| parse_getex(&args(l), NOW);
        assert_eq!(g("GETEX k").unwrap(), GetexExpiry::Unchanged);
        assert_eq!(g("GETEX k PERSIST").unwrap(), GetexExpiry::Persist);
        assert_eq!(g("GETEX k EX 2").unwrap(), GetexExpiry::At(NOW + 2_000));
        assert_eq!(g("GETEX k PERSIST EX 2").unwrap_err(), SYNTAX_ERROR);
        assert_eq!(g("GETEX k KEEPTTL").unwrap_err(), SYNTAX_ERROR);
        assert_eq!(g("GETEX k EX 0").unwrap_err(), invalid_expire("getex"));
    }

    #[test]
    fn expire_conditions_follow_redis() {
        let e = |l: &str| parse_expire("expire", &args(l), true, true, NOW);
        let (when, c) = e("EXPIRE k 10").unwrap();
        assert_eq!((when, c), (NOW as i64 + 10_000, ExpireIf::Always));
        // Zero and negative times are accepted (the key is deleted).
        assert_eq!(e("EXPIRE k -5").unwrap().0, NOW as i64 - 5_000);
        for (opts, cond) in [
            ("NX", ExpireIf::NoExpiry),
            ("xx", ExpireIf::HasExpiry),
            ("GT", ExpireIf::Later),
            ("XX GT", ExpireIf::Later),
            ("LT", ExpireIf::Earlier),
            ("LT XX", ExpireIf::HasExpiryEarlier),
            ("NX NX", ExpireIf::NoExpiry),
        ] {
            assert_eq!(e(&format!("EXPIRE k 10 {opts}")).unwrap().1, cond, "{opts}");
        }
        assert_eq!(
            e("EXPIRE k 10 NX GT").unwrap_err(),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            e("EXPIRE k 10 GT LT").unwrap_err(),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            e("EXPIRE k 10 FOO").unwrap_err(),
            "ERR Unsupported option FOO"
        );
        // Options are checked before the time, as in Redis.
        assert_eq!(
            e("EXPIRE k x FOO").unwrap_err(),
            "ERR Unsupported option FOO"
        );
        assert_eq!(e("EXPIRE k x").unwrap_err(), NOT_AN_INTEGER);
        assert_eq!(
            e("EXPIRE k 9223372036854776").unwrap_err(),
            invalid_expire("expire")
        );
        let at = parse_expire("pexpireat", &args("PEXPIREAT k 5"), false, false, NOW).unwrap();
        assert_eq!(at.0, 5);
    }

    #[test]
    fn ttl_replies_round_as_redis() {
        assert_eq!(ttl_reply(None, NOW, false, false), -1);
        assert_eq!(ttl_reply(Some(NOW + 1_499), NOW, false, false), 1);
        assert_eq!(ttl_reply(Some(NOW + 1_500), NOW, false, false), 2);
        assert_eq!(ttl_reply(Some(NOW + 1_500), NOW, true, false), 1_500);
        assert_eq!(ttl_reply(Some(NOW - 3), NOW, true, false), 0);
        assert_eq!(ttl_reply(Some(5_400), NOW, false, true), 5);
        assert_eq!(ttl_reply(Some(5_400), NOW, true, true), 5_400);
    }
}
