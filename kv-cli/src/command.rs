//! REPL commands: parsing a line into a [`Command`], with one clear error for bad input.

use std::fmt;

/// Keys under this prefix belong to the built-in benchmark; user commands may not touch them.
pub const BENCH_PREFIX: &str = "__kvstore_bench__:";

/// One REPL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty line or a comment.
    Nothing,
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    Del {
        key: String,
    },
    MPut(Vec<(String, String)>),
    MGet(Vec<String>),
    Nodes,
    Stats,
    Ring,
    AddNode(String),
    RemoveNode(String),
    /// Take a node down (`fail <id>`, or `fail <id> --crash` to drop it without shutdown).
    Fail {
        id: String,
        crash: bool,
    },
    Recover(String),
    Repair,
    Benchmark(BenchArgs),
    Flush,
    Compact,
    Help,
    Exit,
}

/// `benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchArgs {
    pub ops: usize,
    pub threads: usize,
    pub value_size: usize,
    pub zipf: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            ops: 100_000,
            threads: 1,
            value_size: 100,
            zipf: false,
        }
    }
}

/// The command names, for tab completion and `help`.
pub const NAMES: &[&str] = &[
    "put",
    "get",
    "del",
    "mput",
    "mget",
    "nodes",
    "stats",
    "ring",
    "addnode",
    "removenode",
    "fail",
    "recover",
    "repair",
    "benchmark",
    "flush",
    "compact",
    "help",
    "exit",
    "quit",
];

/// What `help` prints.
pub const HELP: &str = "\
Commands:
  put <key> <value>            store a value (quote values with spaces: put k \"a b\")
  get <key>                    read a value
  del <key>                    delete a key
  mput <k> <v> [<k> <v> ...]   store several values
  mget <k> [<k> ...]           read several values
  nodes                        list the cluster's nodes
  stats                        keys per node (as primary, and every replica held)
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
  flush                        make every acknowledged write durable now
  compact                      reclaim the space of overwritten and deleted values now
  help                         this text
  exit | quit | Ctrl-D         leave";

/// A parse error: the message after `✗ `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

fn usage<T>(usage: &str) -> Result<T, ParseError> {
    err(format!("usage: {usage}"))
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

fn user_key(key: String) -> Result<String, ParseError> {
    if key.starts_with(BENCH_PREFIX) {
        return err(format!(
            "keys starting with {BENCH_PREFIX:?} are reserved for the benchmark"
        ));
    }
    Ok(key)
}

/// Parses one line (split like a shell does: quotes group words). A line starting with `#` is
/// a comment; anywhere else `#` is an ordinary character (`put tag #blue` stores `#blue`).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Command::Nothing);
    }
    let Some(words) = shlex::split(&escape_hashes(trimmed)) else {
        return err("unbalanced quote");
    };
    let Some((name, args)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let args = args.to_vec();
    let one = |u: &str| -> Result<String, ParseError> {
        match <[String; 1]>::try_from(args.clone()) {
            Ok([a]) => Ok(a),
            Err(_) => usage(u),
        }
    };
    let none = |cmd: Command, u: &str| -> Result<Command, ParseError> {
        if args.is_empty() { Ok(cmd) } else { usage(u) }
    };
    match name.to_ascii_lowercase().as_str() {
        "put" | "set" => match <[String; 2]>::try_from(args.clone()) {
            Ok([key, value]) => Ok(Command::Put {
                key: user_key(key)?,
                value,
            }),
            Err(_) => usage("put <key> <value>"),
        },
        "get" => Ok(Command::Get {
            key: user_key(one("get <key>")?)?,
        }),
        // `del` may remove a benchmark key left behind by an interrupted benchmark.
        "del" | "delete" => Ok(Command::Del {
            key: one("del <key>")?,
        }),
        "mput" => {
            if args.is_empty() || args.len() % 2 != 0 {
                return usage("mput <key> <value> [<key> <value> ...]");
            }
            let pairs = args
                .chunks_exact(2)
                .map(|p| Ok((user_key(p[0].clone())?, p[1].clone())))
                .collect::<Result<_, _>>()?;
            Ok(Command::MPut(pairs))
        }
        "mget" => {
            if args.is_empty() {
                return usage("mget <key> [<key> ...]");
            }
            Ok(Command::MGet(
                args.into_iter().map(user_key).collect::<Result<_, _>>()?,
            ))
        }
        "nodes" => none(Command::Nodes, "nodes"),
        "stats" => none(Command::Stats, "stats"),
        "ring" => none(Command::Ring, "ring"),
        "addnode" => Ok(Command::AddNode(one("addnode <id>")?)),
        "removenode" => Ok(Command::RemoveNode(one("removenode <id>")?)),
        "fail" => match args.as_slice() {
            [id] => Ok(Command::Fail {
                id: id.clone(),
                crash: false,
            }),
            [id, flag] if flag == "--crash" => Ok(Command::Fail {
                id: id.clone(),
                crash: true,
            }),
            _ => usage("fail <id> [--crash]"),
        },
        "recover" => Ok(Command::Recover(one("recover <id>")?)),
        "repair" => none(Command::Repair, "repair"),
        "benchmark" => parse_bench(&args).map(Command::Benchmark),
        "flush" => none(Command::Flush, "flush"),
        "compact" => none(Command::Compact, "compact"),
        "help" | "?" => none(Command::Help, "help"),
        "exit" | "quit" => none(Command::Exit, "exit"),
        other => err(format!("unknown command: {other} (type help)")),
    }
}

fn parse_bench(args: &[String]) -> Result<BenchArgs, ParseError> {
    const USAGE: &str =
        "benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]";
    let mut b = BenchArgs::default();
    let mut it = args.iter();
    let mut ops_seen = false;
    let number = |v: Option<&String>, what: &str, max: usize| -> Result<usize, ParseError> {
        let Some(v) = v else { return usage(USAGE) };
        match v.replace('_', "").parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => err(format!(
                "{what} must be a number from 1 to {max}, not {v:?}"
            )),
        }
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => b.threads = number(it.next(), "--threads", 64)?,
            "--value-size" => b.value_size = number(it.next(), "--value-size", 1 << 20)?,
            "--distribution" => {
                b.zipf = match it.next().map(String::as_str) {
                    Some("uniform") => false,
                    Some("zipf") => true,
                    _ => return usage(USAGE),
                }
            }
            _ if !ops_seen && !a.starts_with("--") => {
                b.ops = number(Some(a), "ops", 100_000_000)?;
                ops_seen = true;
            }
            _ => return usage(USAGE),
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Command {
        parse(s).unwrap()
    }

    fn e(s: &str) -> String {
        parse(s).unwrap_err().0
    }

    #[test]
    fn commands_parse_like_a_shell() {
        assert_eq!(
            p(r#"put user:1001 "Alice Johnson""#),
            Command::Put {
                key: "user:1001".into(),
                value: "Alice Johnson".into()
            }
        );
        assert_eq!(p("  GET k "), Command::Get { key: "k".into() });
        assert_eq!(p("del 'a b'"), Command::Del { key: "a b".into() });
        assert_eq!(p(""), Command::Nothing);
        assert_eq!(p("# a comment"), Command::Nothing);
        // `#` inside a line is data, quoted or not.
        let put = |key: &str, value: &str| Command::Put {
            key: key.into(),
            value: value.into(),
        };
        assert_eq!(p("put tag #blue"), put("tag", "#blue"));
        assert_eq!(p("put a#b c#"), put("a#b", "c#"));
        assert_eq!(p(r#"put k "x #y""#), put("k", "x #y"));
        assert_eq!(p("put k '#y'"), put("k", "#y"));
        assert_eq!(p(r"put k \#y"), put("k", "#y"));
        assert_eq!(e("put k v #comment"), "usage: put <key> <value>");
        assert_eq!(
            p("mput a 1 b 2"),
            Command::MPut(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(p("mget a b"), Command::MGet(vec!["a".into(), "b".into()]));
        assert_eq!(p("addnode node4"), Command::AddNode("node4".into()));
        assert_eq!(
            p("fail node2 --crash"),
            Command::Fail {
                id: "node2".into(),
                crash: true
            }
        );
        assert_eq!(p("recover node2"), Command::Recover("node2".into()));
        assert_eq!(p("repair"), Command::Repair);
        assert_eq!(p("quit"), Command::Exit);
        assert_eq!(
            p("put k ''"),
            Command::Put {
                key: "k".into(),
                value: String::new()
            }
        );
    }

    #[test]
    fn benchmark_arguments() {
        assert_eq!(p("benchmark"), Command::Benchmark(BenchArgs::default()));
        assert_eq!(
            p("benchmark 5000 --threads 2 --value-size 10 --distribution zipf"),
            Command::Benchmark(BenchArgs {
                ops: 5000,
                threads: 2,
                value_size: 10,
                zipf: true
            })
        );
        assert!(e("benchmark 0").contains("from 1"));
        assert!(e("benchmark 10 20").starts_with("usage"));
        assert!(e("benchmark --threads").starts_with("usage"));
        assert!(e("benchmark --distribution pareto").starts_with("usage"));
    }

    #[test]
    fn bad_input_gets_one_clear_message() {
        assert_eq!(e("frobnicate"), "unknown command: frobnicate (type help)");
        assert_eq!(e("put k"), "usage: put <key> <value>");
        assert_eq!(e("put k v extra"), "usage: put <key> <value>");
        assert_eq!(e("get"), "usage: get <key>");
        assert_eq!(e("get a b"), "usage: get <key>");
        assert_eq!(e(r#"put k "unbalanced"#), "unbalanced quote");
        assert_eq!(e("mput a"), "usage: mput <key> <value> [<key> <value> ...]");
        assert_eq!(e("nodes extra"), "usage: nodes");
        assert!(e(&format!("put {BENCH_PREFIX}1 v")).contains("reserved"));
    }
}
