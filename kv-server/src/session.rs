//! What the server knows about one client connection.

use kv_resp::{Encoder, Protocol};

/// The state of one client connection that commands read and change.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The client's id (`HELLO`'s `id`, Redis's `CLIENT ID`), unique for the server's life.
    pub(crate) id: u64,
    /// RESP2 until the client sends `HELLO 3`.
    pub(crate) protocol: Protocol,
    /// Set by `QUIT`: the connection closes once the replies so far are written.
    pub(crate) quit: bool,
}

impl Session {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            protocol: Protocol::Resp2,
            quit: false,
        }
    }

    pub(crate) fn encoder(&self) -> Encoder {
        Encoder::new(self.protocol)
    }
}
