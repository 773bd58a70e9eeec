//! A REPL session: the open cluster and how output is decorated; what one command produces.

use kv_cluster::Cluster;

use crate::output::Style;

/// The result of one command.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines for stdout.
    pub out: Vec<String>,
    /// A failure line (`✗ ...`), for stderr in scripted mode.
    pub error: Option<String>,
    /// The REPL should end.
    pub exit: bool,
}

impl Outcome {
    /// One line of output.
    pub fn line(s: String) -> Outcome {
        Outcome::lines(vec![s])
    }

    /// Lines of output.
    pub fn lines(out: Vec<String>) -> Outcome {
        Outcome {
            out,
            ..Outcome::default()
        }
    }

    /// A failure line.
    pub fn failed(s: String) -> Outcome {
        Outcome {
            error: Some(s),
            ..Outcome::default()
        }
    }
}

/// A REPL session on an open cluster.
pub struct Session {
    pub cluster: Cluster,
    pub style: Style,
}
