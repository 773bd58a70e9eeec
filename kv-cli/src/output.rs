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

/// Whether `e` comes from a write to a reader that went away (`kvstore | head -1`): the
/// program then ends quietly and successfully, as one killed by `SIGPIPE` would, instead of
/// reporting it.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
