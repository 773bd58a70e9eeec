//! Success and failure lines, coloured only on a terminal and never under `NO_COLOR`.

use std::io::IsTerminal;

/// How to decorate output.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour if stdout and stderr (where scripted errors go) are terminals and `NO_COLOR` is
    /// not set.
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// `✓ <msg>`.
    pub fn ok(&self, msg: impl AsRef<str>) -> String {
        if self.color {
            format!("\x1b[32m✓\x1b[0m {}", msg.as_ref())
        } else {
            format!("✓ {}", msg.as_ref())
        }
    }

    /// `✗ <msg>`.
    pub fn fail(&self, msg: impl AsRef<str>) -> String {
        if self.color {
            format!("\x1b[31m✗\x1b[0m {}", msg.as_ref())
        } else {
            format!("✗ {}", msg.as_ref())
        }
    }

    /// A section heading.
    pub fn heading(&self, msg: impl AsRef<str>) -> String {
        if self.color {
            format!("\x1b[1m=== {} ===\x1b[0m", msg.as_ref())
        } else {
            format!("=== {} ===", msg.as_ref())
        }
    }
}

impl Style {
    /// A line as the server's `KVSTORE` command sends it (undecorated: `✓ ...`, `✗ ...`,
    /// `=== ... ===`), decorated as the local command decorates it.
    pub fn restyle(&self, line: &str) -> String {
        if let Some(rest) = line.strip_prefix("✓ ") {
            self.ok(rest)
        } else if let Some(rest) = line.strip_prefix("✗ ") {
            self.fail(rest)
        } else if let Some(inner) = line
            .strip_prefix("=== ")
            .and_then(|l| l.strip_suffix(" ==="))
        {
            self.heading(inner)
        } else {
            line.to_owned()
        }
    }
}

/// An error and its causes on one line, `a: b: c`. Every error type of the workspace leaves
/// its source out of its own message, so each cause appears once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Bytes shown as text (invalid UTF-8 replaced).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A write to stdout or stderr failed.
#[derive(Debug)]
pub struct WriteFailed {
    stream: &'static str,
    source: std::io::Error,
}

impl WriteFailed {
    /// A failed write to stdout.
    pub fn stdout(source: std::io::Error) -> WriteFailed {
        WriteFailed {
            stream: "stdout",
            source,
        }
    }

    /// A failed write to stderr.
    pub fn stderr(source: std::io::Error) -> WriteFailed {
        WriteFailed {
            stream: "stderr",
            source,
        }
    }
}

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "write to {}", self.stream)
    }
}

impl std::error::Error for WriteFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether `e` is a write of ours to a reader that went away (`kvstore | head -1`): the
/// program then ends quietly and successfully, as one killed by `SIGPIPE` would, instead of
/// reporting it. A broken pipe anywhere else (a cause of a failed operation) is an error.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<WriteFailed>()
            .is_some_and(|w| w.source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use anyhow::Context as _;

    use super::*;

    #[test]
    fn only_our_own_writes_to_a_closed_pipe_end_the_program_quietly() {
        let closed = || Error::from(ErrorKind::BrokenPipe);
        assert!(is_closed(&WriteFailed::stdout(closed()).into()));
        let wrapped = Err::<(), _>(WriteFailed::stderr(closed())).context("report");
        assert!(is_closed(&wrapped.unwrap_err()));
        // A broken pipe that caused a failed operation is reported.
        assert!(!is_closed(&anyhow::Error::new(closed()).context("put k")));
        assert!(!is_closed(
            &WriteFailed::stdout(Error::from(ErrorKind::StorageFull)).into()
        ));
    }

    #[test]
    fn server_lines_are_decorated_as_local_ones() {
        let color = Style { color: true };
        let plain = Style { color: false };
        for line in [
            "✓ Stored: k -> v",
            "✗ Key not found: k",
            "=== Ring ===",
            "  Moving 2 keys",
        ] {
            assert_eq!(plain.restyle(line), line);
        }
        assert_eq!(
            color.restyle("✓ Stored: k -> v"),
            color.ok("Stored: k -> v")
        );
        assert_eq!(
            color.restyle("✗ Key not found: k"),
            color.fail("Key not found: k")
        );
        assert_eq!(color.restyle("=== Ring ==="), color.heading("Ring"));
        assert_eq!(color.restyle("- Node: node1"), "- Node: node1");
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = WriteFailed::stdout(Error::other("disk full"));
        assert_eq!(chain(&e), "write to stdout: disk full");
    }
}
