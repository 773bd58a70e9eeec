//! `put <key> <value> [--ttl <duration>]`: store a value, optionally expiring.

use super::{ParseError, Run, Spec, err, usage, user_key};
use crate::duration::{human, parse_ttl};
use crate::output::chain;
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "put <key> <value> [--ttl <duration>]";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["put"],
    aliases: &["set"],
    synopsis: USAGE,
    help: "store a value (quote values with spaces: put k \"a b\");\n\
           --ttl: it expires after 500ms, 30s, 5m, 2h, 1d (a number: seconds)",
    parse: |args| Ok(Box::new(Put::parse(args)?)),
};

/// `put <key> <value> [--ttl <duration>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub key: String,
    pub value: String,
    /// Milliseconds until it expires (`None`: never).
    pub ttl: Option<u64>,
}

impl Put {
    /// The key and the value come first, then the flag: a word starting with `--` in their
    /// place is data (`put k --x` stores `--x`, as before `--ttl` existed), but `--ttl`
    /// there is a misplaced flag, not a value stored by mistake.
    fn parse(args: Vec<String>) -> Result<Put, ParseError> {
        let mut words = args.into_iter();
        let mut positional = Vec::with_capacity(2);
        let mut ttl = None;
        while let Some(w) = words.next() {
            let flag_value = match w.split_once('=') {
                Some(("--ttl", v)) => Some(Some(v.to_owned())),
                _ if w == "--ttl" => Some(None),
                _ => None,
            };
            match flag_value {
                Some(_) if positional.len() < 2 => {
                    return err(format!(
                        "put: --ttl goes after the key and the value ({USAGE})"
                    ));
                }
                Some(_) if ttl.is_some() => return err("put: --ttl given twice"),
                Some(v) => {
                    let Some(text) = v.or_else(|| words.next()) else {
                        return err("put: --ttl needs a duration (e.g. 500ms, 30s, 5m, 2h, 1d)");
                    };
                    ttl = Some(parse_ttl(&text).map_err(|e| ParseError(format!("put: {e}")))?);
                }
                None if positional.len() >= 2 && w.starts_with("--") => {
                    return err(format!("put: unknown flag {w} ({USAGE})"));
                }
                None => positional.push(w),
            }
        }
        match <[String; 2]>::try_from(positional) {
            Ok([key, value]) => Ok(Put {
                key: user_key(key)?,
                value,
                ttl,
            }),
            Err(_) => usage(USAGE),
        }
    }
}

impl Run for Put {
    fn run(&self, session: &Session) -> Outcome {
        let (s, key, value) = (session.style, &self.key, &self.value);
        let stored = match (&session.target, self.ttl) {
            (Target::Local(cluster), None) => cluster
                .put(key.as_bytes(), value.as_bytes())
                .map(drop)
                .map_err(|e| chain(&e)),
            (Target::Local(cluster), Some(ms)) => {
                // At most `MAX_TTL_MILLIS`: fits an i64.
                let after = kv_cluster::Expiry::AfterMillis(i64::try_from(ms).unwrap_or(i64::MAX));
                cluster
                    .expires_at(after)
                    .and_then(|at| cluster.put_expiring(key.as_bytes(), value.as_bytes(), at))
                    .map(drop)
                    .map_err(|e| chain(&e))
            }
            (Target::Remote(client), None) => client
                .call_ok(&[b"SET", key.as_bytes(), value.as_bytes()])
                .map_err(|e| e.to_string()),
            (Target::Remote(client), Some(ms)) => client
                .call_ok(&[
                    b"SET",
                    key.as_bytes(),
                    value.as_bytes(),
                    b"PX",
                    ms.to_string().as_bytes(),
                ])
                .map_err(|e| e.to_string()),
        };
        match (stored, self.ttl) {
            (Ok(()), None) => Outcome::line(s.ok(format!("Stored: {key} -> {value}"))),
            (Ok(()), Some(ms)) => Outcome::line(s.ok(format!(
                "Stored: {key} -> {value} (expires in {})",
                human(ms)
            ))),
            (Err(why), _) => Outcome::failed(s.fail(format!("put {key}: {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    fn put(key: &str, value: &str, ttl: Option<u64>) -> Result<Put, ParseError> {
        Ok(Put {
            key: key.into(),
            value: value.into(),
            ttl,
        })
    }

    #[test]
    fn a_key_and_a_value() {
        assert_eq!(Put::parse(words("k 'a b'")), put("k", "a b", None));
        // Words like flags in the key's or the value's place are data, as they always were.
        assert_eq!(Put::parse(words("k --x")), put("k", "--x", None));
        assert_eq!(Put::parse(words("--k v")), put("--k", "v", None));
        for bad in ["", "k", "k v extra"] {
            assert_eq!(Put::parse(words(bad)), usage(USAGE), "{bad:?}");
        }
    }

    #[test]
    fn a_ttl_after_the_key_and_the_value() {
        assert_eq!(
            Put::parse(words("k v --ttl 30s")),
            put("k", "v", Some(30_000))
        );
        assert_eq!(
            Put::parse(words("k v --ttl=500ms")),
            put("k", "v", Some(500))
        );
        assert_eq!(Put::parse(words("k v --ttl 2")), put("k", "v", Some(2_000)));
        assert_eq!(
            Put::parse(words("k 'a b' --ttl 1d")),
            put("k", "a b", Some(86_400_000))
        );
    }

    #[test]
    fn a_bad_or_misplaced_ttl_is_one_clear_line() {
        let e = |line: &str| Put::parse(words(line)).unwrap_err().0;
        let misplaced = format!("put: --ttl goes after the key and the value ({USAGE})");
        assert_eq!(e("--ttl 30s k v"), misplaced);
        assert_eq!(e("k --ttl 30s v"), misplaced);
        assert_eq!(e("k --ttl=30s"), misplaced);
        assert_eq!(
            e("k v --ttl"),
            "put: --ttl needs a duration (e.g. 500ms, 30s, 5m, 2h, 1d)"
        );
        assert_eq!(e("k v --ttl 1s --ttl 2s"), "put: --ttl given twice");
        assert_eq!(
            e("k v --tll 30s"),
            format!("put: unknown flag --tll ({USAGE})")
        );
        assert_eq!(e("k v --ttl 30s extra"), format!("usage: {USAGE}"));
        assert_eq!(e("k v --ttl 0"), "put: TTL must be more than zero: 0");
        assert_eq!(e("k v --ttl -5s"), "put: TTL must be more than zero: -5s");
        assert!(e("k v --ttl soon").starts_with("put: not a duration: \"soon\""));
        assert_eq!(
            e("k v --ttl 99999999999999999999d"),
            "put: TTL too long: 99999999999999999999d (at most 36500d, 100 years)"
        );
    }
}
