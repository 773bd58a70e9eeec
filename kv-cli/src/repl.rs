//! The REPL: rustyline on a terminal, plain lines from stdin otherwise (scripted mode: no
//! prompt, errors on stderr, a non-zero exit code if any command failed).
//!
//! It runs on a cluster opened in this process, or (`--connect HOST:PORT`) as a client of a
//! `kvstore serve` ([`crate::client`]); the commands and the way their output is shown are
//! the same either way.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::args::Args;
use crate::client::{Client, Timeouts};
use crate::cmd;
use crate::open;
use crate::output::{Style, WriteFailed};
use crate::session::{Session, Target};

/// The default data directory of the REPL.
pub const DEFAULT_DIR: &str = "kvstore-data";

/// The environment variable `--connect` reads the server's password from when `--password`
/// is not given (as `redis-cli` reads `REDISCLI_AUTH`).
pub const AUTH_ENV: &str = "KVSTORE_AUTH";

/// Runs the REPL; returns whether every command succeeded.
pub fn run(args: &Args) -> anyhow::Result<bool> {
    if let Some(addr) = &args.connect {
        return run_remote(args, addr);
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let opened = open::open(&args.cluster, &dir)?;
    let session = Session {
        target: Target::Local(opened.cluster),
        style: Style::detect(),
    };
    // The cluster is closed however the session ends, a closed output included.
    let result = greet(&session, &opened.warnings).and_then(|()| {
        if std::io::stdin().is_terminal() {
            terminal(&session, Some(&dir.join(HISTORY)), "kvstore> ")
        } else {
            scripted(&session)
        }
    });
    let closed = match session.target {
        Target::Local(cluster) => cluster.close().context("close the cluster"),
        Target::Remote(_) => Ok(()),
    };
    let ok = result?;
    closed?;
    Ok(ok)
}

/// The history file's name: in the data directory, or (`--connect`) in the home directory.
const HISTORY: &str = ".kvstore_history";

/// The REPL as a client of the server at `addr`. A server that cannot be reached, or refuses
/// the password, ends it before the banner (exit code 1).
fn run_remote(args: &Args, addr: &str) -> anyhow::Result<bool> {
    let password = args
        .password
        .clone()
        .or_else(|| std::env::var(AUTH_ENV).ok().filter(|p| !p.is_empty()));
    let timeouts = Timeouts {
        reply: Duration::from_secs(args.timeout),
        ..Timeouts::default()
    };
    let client = Client::connect(addr, password, timeouts)?;
    let session = Session {
        target: Target::Remote(client),
        style: Style::detect(),
    };
    greet(&session, &[])?;
    if std::io::stdin().is_terminal() {
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(HISTORY));
        terminal(&session, history.as_deref(), &format!("kvstore {addr}> "))
    } else {
        scripted(&session)
    }
}

/// The warnings about the flags, then the banner.
fn greet(session: &Session, warnings: &[String]) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for w in warnings {
        writeln!(stderr, "{w}").map_err(WriteFailed::stderr)?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", session.style.heading("INTERACTIVE DEMO MODE"))
        .map_err(WriteFailed::stdout)?;
    writeln!(
        stdout,
        "Commands: put <key> <value>, get <key>, del <key>, nodes, benchmark, addnode <id>, removenode <id>, fail <id>, recover <id>, repair, stats, exit (help for more)"
    )
    .map_err(WriteFailed::stdout)?;
    writeln!(stdout).map_err(WriteFailed::stdout)?;
    stdout.flush().map_err(WriteFailed::stdout)?;
    Ok(())
}

/// Prints an outcome; returns (failed, exit).
///
/// # Errors
///
/// A failed write to stdout or stderr ([`crate::output::is_closed`] tells a reader that went
/// away): the session ends there, as a program killed by `SIGPIPE` would.
fn show(session: &Session, line: &str, scripted: bool) -> anyhow::Result<(bool, bool)> {
    let outcome = cmd::run_line(session, line);
    let mut stdout = std::io::stdout().lock();
    for l in &outcome.out {
        writeln!(stdout, "{l}").map_err(WriteFailed::stdout)?;
    }
    if let Some(e) = &outcome.error {
        if scripted {
            stdout.flush().map_err(WriteFailed::stdout)?;
            writeln!(std::io::stderr().lock(), "{e}").map_err(WriteFailed::stderr)?;
        } else {
            writeln!(stdout, "{e}").map_err(WriteFailed::stdout)?;
        }
    }
    // Flushed before the next command is read: a client watching the output knows a
    // `✓ Stored` write is acknowledged.
    stdout.flush().map_err(WriteFailed::stdout)?;
    Ok((outcome.error.is_some(), outcome.exit))
}

fn scripted(session: &Session) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut stdin = std::io::stdin().lock();
    let mut raw = Vec::new();
    for number in 1.. {
        raw.clear();
        match stdin.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let msg = session.style.fail(format!("cannot read input: {e}"));
                writeln!(std::io::stderr().lock(), "{msg}").map_err(WriteFailed::stderr)?;
                return Ok(false);
            }
        }
        let Ok(line) = std::str::from_utf8(&raw) else {
            // One bad line is one error; the session goes on.
            let msg = session
                .style
                .fail(format!("line {number} is not valid UTF-8"));
            writeln!(std::io::stderr().lock(), "{msg}").map_err(WriteFailed::stderr)?;
            all_ok = false;
            continue;
        };
        let (failed, exit) = show(session, line.trim_end_matches(['\n', '\r']), true)?;
        all_ok &= !failed;
        if exit {
            break;
        }
    }
    Ok(all_ok)
}

/// Tab completion of the command names of [`cmd::TABLE`].
struct Commands;

impl Helper for Commands {}
impl Highlighter for Commands {}
impl Validator for Commands {}
impl Hinter for Commands {
    type Hint = String;
}

impl Completer for Commands {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let matches = cmd::names()
            .filter(|n| n.starts_with(head))
            .map(|n| Pair {
                display: n.to_owned(),
                replacement: format!("{n} "),
            })
            .collect();
        Ok((0, matches))
    }
}

/// The line editor's loop; `history` is loaded and saved if given (a history that cannot be
/// read or written only loses the history).
fn terminal(session: &Session, history: Option<&Path>, prompt: &str) -> anyhow::Result<bool> {
    let mut editor: Editor<Commands, rustyline::history::DefaultHistory> =
        Editor::new().context("start the line editor")?;
    editor.set_helper(Some(Commands));
    let save = |editor: &mut Editor<Commands, _>| {
        if let Some(h) = history {
            let _ = editor.save_history(h);
        }
    };
    if let Some(h) = history {
        let _ = editor.load_history(h);
    }
    let mut all_ok = true;
    loop {
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let (failed, exit) = match show(session, &line, false) {
                    Ok(r) => r,
                    Err(e) => {
                        save(&mut editor);
                        return Err(e);
                    }
                };
                all_ok &= !failed;
                if exit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("read a command"),
        }
    }
    save(&mut editor);
    Ok(all_ok)
}
