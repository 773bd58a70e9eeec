//! The REPL's commands, one file each: a command's names, usage, help, parsing and execution
//! sit together in `cmd/<name>.rs`, and [`TABLE`] lists them. Adding a command is a new file
//! and a line in the table; `help` and tab completion come from the table.
//!
//! A line is split like a shell does (quotes group words), its first word looked up in the
//! table, and the rest parsed by the command into a value that runs against a [`Session`].

use std::fmt;

use crate::bench::BENCH_PREFIX;
use crate::session::{Outcome, Session};

mod addnode;
mod benchmark;
mod compact;
mod del;
mod exit;
mod fail;
mod flush;
mod get;
mod help;
mod meta;
mod mget;
mod mput;
mod nodes;
mod persist;
mod put;
mod recover;
pub mod redistribution;
mod removenode;
mod repair;
mod ring;
mod stats;
mod ttl;

/// Every command, in the order `help` lists them.
pub const TABLE: &[Spec] = &[
    put::SPEC,
    get::SPEC,
    del::SPEC,
    ttl::SPEC,
    persist::SPEC,
    mput::SPEC,
    mget::SPEC,
    nodes::SPEC,
    meta::SPEC,
    stats::SPEC,
    ring::SPEC,
    addnode::SPEC,
    removenode::SPEC,
    fail::SPEC,
    recover::SPEC,
    repair::SPEC,
    benchmark::SPEC,
    flush::SPEC,
    compact::SPEC,
    help::SPEC,
    exit::SPEC,
];

/// A parsed command, ready to run.
pub trait Run: fmt::Debug {
    /// Runs the command; its output lines, or its one failure line.
    fn run(&self, session: &Session) -> Outcome;
}

/// A command parsed from its arguments, or why it cannot be.
pub type Parsed = Result<Box<dyn Run>, ParseError>;

/// What the table knows of a command.
pub struct Spec {
    /// What a user types; the first is the command's name. All of them are completed.
    pub names: &'static [&'static str],
    /// Also accepted, but neither completed nor listed (`set` for `put`).
    pub aliases: &'static [&'static str],
    /// The help's left column (`put <key> <value>`).
    pub synopsis: &'static str,
    /// The help's right column; a `\n` starts a continuation line under it.
    pub help: &'static str,
    /// Parses the words after the name.
    pub parse: fn(Vec<String>) -> Parsed,
}

impl Spec {
    fn accepts(&self, name: &str) -> bool {
        self.names.contains(&name) || self.aliases.contains(&name)
    }
}

/// The names tab completion offers, in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(|s| s.names.iter().copied())
}

/// Where the help's right column starts.
const HELP_COLUMN: usize = 31;

/// What `help` prints: one entry per command of the table.
pub fn help_text() -> String {
    let mut out = String::from("Commands:");
    let indent = " ".repeat(HELP_COLUMN);
    for spec in TABLE {
        let left = format!("  {}", spec.synopsis);
        let mut lines = spec.help.lines();
        let first = lines.next().unwrap_or_default();
        if left.len() < HELP_COLUMN {
            out.push_str(&format!("\n{left:HELP_COLUMN$}{first}"));
        } else {
            out.push_str(&format!("\n{left}\n{indent}{first}"));
        }
        for l in lines {
            out.push_str(&format!("\n{indent}{l}"));
        }
    }
    out
}

/// A parse error: the message after `✗ `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failed parse with this message.
pub fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// The `usage: ...` error.
pub fn usage<T>(usage: &str) -> Result<T, ParseError> {
    err(format!("usage: {usage}"))
}

/// The only argument, or the usage error.
pub fn one(args: Vec<String>, usage_line: &str) -> Result<String, ParseError> {
    match <[String; 1]>::try_from(args) {
        Ok([a]) => Ok(a),
        Err(_) => usage(usage_line),
    }
}

/// No argument, or the usage error.
pub fn none(args: &[String], usage_line: &str) -> Result<(), ParseError> {
    if args.is_empty() {
        Ok(())
    } else {
        usage(usage_line)
    }
}

/// `key`, unless it is one of the benchmark's.
pub fn user_key(key: String) -> Result<String, ParseError> {
    if key.starts_with(BENCH_PREFIX) {
        return err(format!(
            "keys starting with {BENCH_PREFIX:?} are reserved for the benchmark"
        ));
    }
    Ok(key)
}

/// Backslash-escapes every `#` outside quotes: shlex would take one that starts a word for a
/// comment and silently drop the rest of the line (`put k #v` would lose its value).
fn escape_hashes(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 4);
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in line.chars() {
        if escaped {
            escaped = false;
        } else {
            match c {
                '\\' if !single => escaped = true,
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                '#' if !single && !double => out.push('\\'),
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// Parses one line (split like a shell does: quotes group words); `None` for an empty line
/// or a comment. A line starting with `#` is a comment; anywhere else `#` is an ordinary
/// character (`put tag #blue` stores `#blue`).
pub fn parse(line: &str) -> Result<Option<Box<dyn Run>>, ParseError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some(words) = shlex::split(&escape_hashes(trimmed)) else {
        return err("unbalanced quote");
    };
    let mut words = words.into_iter();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let name = name.to_ascii_lowercase();
    match TABLE.iter().find(|s| s.accepts(&name)) {
        Some(spec) => (spec.parse)(words.collect()).map(Some),
        None => err(format!("unknown command: {name} (type help)")),
    }
}

/// Runs one line: parsed, then run against `session`; a parse error is the failure line.
pub fn run_line(session: &Session, line: &str) -> Outcome {
    match parse(line) {
        Ok(Some(cmd)) => cmd.run(session),
        Ok(None) => Outcome::default(),
        Err(e) => Outcome::failed(session.style.fail(e.0)),
    }
}

/// The words of `line`, split as [`parse`] splits them (for the commands' tests).
#[cfg(test)]
pub fn words(line: &str) -> Vec<String> {
    shlex::split(&escape_hashes(line)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed command, in its debug form (commands are distinct types).
    fn p(s: &str) -> String {
        format!("{:?}", parse(s).unwrap())
    }

    fn e(s: &str) -> String {
        parse(s).unwrap_err().0
    }

    fn is(expected: impl fmt::Debug) -> String {
        format!("{:?}", Some(expected))
    }

    #[test]
    fn lines_split_like_a_shell() {
        assert_eq!(
            p(r#"put user:1001 "Alice Johnson""#),
            is(put::Put {
                key: "user:1001".into(),
                value: "Alice Johnson".into(),
                ttl: None,
            })
        );
        assert_eq!(p("  GET k "), is(get::Get { key: "k".into() }));
        assert_eq!(p("del 'a b'"), is(del::Del { key: "a b".into() }));
        assert_eq!(p(""), "None");
        assert_eq!(p("# a comment"), "None");
        // `#` inside a line is data, quoted or not.
        let put = |key: &str, value: &str| {
            is(put::Put {
                key: key.into(),
                value: value.into(),
                ttl: None,
            })
        };
        assert_eq!(p("put tag #blue"), put("tag", "#blue"));
        assert_eq!(p("put a#b c#"), put("a#b", "c#"));
        assert_eq!(p(r#"put k "x #y""#), put("k", "x #y"));
        assert_eq!(p("put k '#y'"), put("k", "#y"));
        assert_eq!(p(r"put k \#y"), put("k", "#y"));
        assert_eq!(
            e("put k v #comment"),
            "usage: put <key> <value> [--ttl <duration>]"
        );
        assert_eq!(p("put k ''"), put("k", ""));
    }

    #[test]
    fn names_and_aliases_find_their_command() {
        assert_eq!(p("set k v"), p("put k v"));
        assert_eq!(p("delete k"), p("del k"));
        assert_eq!(p("?"), p("help"));
        assert_eq!(p("quit"), p("exit"));
        assert_eq!(p("REPAIR"), p("repair"));
        let completed: Vec<&str> = names().collect();
        assert!(completed.contains(&"quit"), "{completed:?}");
        assert!(!completed.contains(&"set"), "{completed:?}");
        for spec in TABLE {
            for name in spec.names.iter().chain(spec.aliases) {
                assert!(
                    parse(name).is_ok() || parse(name).is_err_and(|e| e.0.starts_with("usage"))
                );
            }
        }
    }

    #[test]
    fn bad_input_gets_one_clear_message() {
        assert_eq!(e("frobnicate"), "unknown command: frobnicate (type help)");
        assert_eq!(e("put k"), "usage: put <key> <value> [--ttl <duration>]");
        assert_eq!(
            e("put k v extra"),
            "usage: put <key> <value> [--ttl <duration>]"
        );
        assert_eq!(e("put k v --ttl 0"), "put: TTL must be more than zero: 0");
        assert_eq!(e("ttl"), "usage: ttl <key>");
        assert_eq!(e("persist a b"), "usage: persist <key>");
        assert_eq!(e("get"), "usage: get <key>");
        assert_eq!(e("get a b"), "usage: get <key>");
        assert_eq!(e(r#"put k "unbalanced"#), "unbalanced quote");
        assert_eq!(e("mput a"), "usage: mput <key> <value> [<key> <value> ...]");
        assert_eq!(e("nodes extra"), "usage: nodes");
        assert!(e(&format!("put {BENCH_PREFIX}1 v")).contains("reserved"));
    }

    #[test]
    fn help_lists_every_command_of_the_table() {
        assert_eq!(
            help_text(),
            "\
Commands:
  put <key> <value> [--ttl <duration>]
                               store a value (quote values with spaces: put k \"a b\");
                               --ttl: it expires after 500ms, 30s, 5m, 2h, 1d (a number: seconds)
  get <key>                    read a value
  del <key>                    delete a key
  ttl <key>                    time left before a key expires (or: no expiry)
  persist <key>                remove a key's expiry (it no longer expires)
  mput <k> <v> [<k> <v> ...]   store several values
  mget <k> [<k> ...]           read several values
  nodes                        list the cluster's nodes
  meta                         a node process's metadata raft: leader, voters, epoch, members
  stats                        keys per node (as primary, and every replica held), and keys
                               with a TTL (an expired one counts until it is reclaimed)
  ring                         token ownership per node
  addnode <id>                 add a node; moves only the keys it now replicates
  removenode <id>              remove a node; its keys move to the remaining ones
  fail <id> [--crash]          take a node down (cut off, or crashed: dropped without
                               shutdown); writes for it are kept as hints on live nodes
  recover <id>                 bring a node back: hints handed off, then its ranges repaired
  repair                       anti-entropy: compare replicas by Merkle trees, fix what differs
  benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]
                               writes then reads `ops` keys (default 100000) and reports
                               throughput and latency; its keys are removed afterwards
                               (in-process only: not available over --connect)
  flush                        make every acknowledged write durable now
  compact                      reclaim the space of overwritten and deleted values now
  help                         this text
  exit | quit | Ctrl-D         leave"
        );
    }
}
