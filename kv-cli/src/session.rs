//! A REPL session: what the commands run against (the cluster in this process, or a server
//! over the network) and how output is decorated; what one command produces.

use kv_cluster::Cluster;

use crate::client::{Client, ClientError};
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

/// What the REPL's commands run against. Each command (`cmd/<name>.rs`) handles both, so its
/// output is written in one place and reads the same either way.
// One per process, held for its life: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// The cluster, open in this process (`--interactive`).
    Local(Cluster),
    /// A `kvstore serve` over the network (`--connect`): data commands are Redis commands
    /// (`SET`, `GET`, `DEL`, `MSET`, `MGET`), administration is the server's `KVSTORE`
    /// command, which answers the same text the local commands print.
    Remote(Client),
}

/// A REPL session.
pub struct Session {
    pub target: Target,
    pub style: Style,
}

impl Session {
    /// The failure line of a command the server could not carry out, or that never reached
    /// it: `✗ <what>: <why>`, as a local failure reads.
    pub fn remote_failed(&self, what: &str, e: &ClientError) -> Outcome {
        Outcome::failed(self.style.fail(format!("{what}: {e}")))
    }

    /// Runs `KVSTORE <args>` on the server: its lines, decorated as the local command's.
    /// The server's own error text already names the command (`fail node9: ...`); a failed
    /// connection is prefixed with `what`.
    pub fn remote_admin(&self, client: &Client, args: &[&[u8]], what: &str) -> Outcome {
        self.remote_admin_with(client, args, what, None)
    }

    /// As [`Session::remote_admin`], for a command that runs as long as the server needs,
    /// `progress` given the server's `INFO cluster` text every second meanwhile
    /// ([`Client::call_long`]).
    pub fn remote_admin_with(
        &self,
        client: &Client,
        args: &[&[u8]],
        what: &str,
        progress: Option<&mut dyn FnMut(&str)>,
    ) -> Outcome {
        let mut full: Vec<&[u8]> = vec![b"KVSTORE"];
        full.extend_from_slice(args);
        let reply = match progress {
            Some(p) => client.call_long(&full, p),
            None => client.call(&full),
        };
        match reply.map(crate::client::bulk) {
            Ok(Ok(Some(text))) => Outcome::lines(
                String::from_utf8_lossy(&text)
                    .split('\n')
                    .map(|l| self.style.restyle(l))
                    .collect(),
            ),
            Ok(Ok(None)) => self.remote_failed(what, &client.bad("KVSTORE answered nil".into())),
            Ok(Err(other)) => {
                self.remote_failed(what, &client.bad(format!("KVSTORE answered {other:?}")))
            }
            Err(ClientError::Server(text)) => Outcome::failed(self.style.fail(text)),
            Err(e) => self.remote_failed(what, &e),
        }
    }
}
