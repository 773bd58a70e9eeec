//! What the server knows about one client connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kv_resp::{Encoder, Protocol};

use crate::clients::ClientEntry;
use crate::shared::Shared;
use crate::stats::LocalStats;

/// The state of one client connection that commands read and change.
#[derive(Debug)]
pub(crate) struct Session {
    /// The client's id (`HELLO`'s `id`, Redis's `CLIENT ID`), unique for the server's life.
    pub(crate) id: u64,
    /// RESP2 until the client sends `HELLO 3`.
    pub(crate) protocol: Protocol,
    /// Set by `QUIT`: the connection closes once the replies so far are written.
    pub(crate) quit: bool,
    /// The password clients must give, if any.
    pub(crate) requirepass: Option<Arc<str>>,
    /// Whether the client may run commands (always, without a password).
    pub(crate) authenticated: bool,
    /// The client's entry in the registry (`CLIENT SETNAME`, `CLIENT INFO`).
    pub(crate) client: Arc<ClientEntry>,
    /// The protocol version as the registry shows it.
    resp: Arc<AtomicU8>,
    /// The server-wide state.
    pub(crate) shared: Arc<Shared>,
    /// This connection's counters since they were last merged into the shared ones.
    pub(crate) stats: LocalStats,
}

impl Session {
    pub(crate) fn new(
        requirepass: Option<Arc<str>>,
        client: Arc<ClientEntry>,
        resp: Arc<AtomicU8>,
        shared: Arc<Shared>,
        commands: usize,
    ) -> Self {
        Self {
            id: client.id,
            protocol: Protocol::Resp2,
            quit: false,
            authenticated: requirepass.is_none(),
            requirepass,
            client,
            resp,
            shared,
            stats: LocalStats::new(commands),
        }
    }

    pub(crate) fn encoder(&self) -> Encoder {
        Encoder::new(self.protocol)
    }

    /// Switches protocol (`HELLO`, `RESET`).
    pub(crate) fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        let v = if protocol == Protocol::Resp3 { 3 } else { 2 };
        self.resp.store(v, Ordering::Relaxed);
    }

    /// The protocol version as a number.
    pub(crate) fn resp_version(&self) -> u8 {
        self.resp.load(Ordering::Relaxed)
    }

    /// Whether `user`/`password` are the default user's credentials: with no password
    /// configured any password is accepted for `default` (Redis's `nopass` default user).
    /// The password is compared in constant time.
    pub(crate) fn check_credentials(&self, user: &[u8], password: &[u8]) -> bool {
        if user != b"default" {
            return false;
        }
        match &self.requirepass {
            None => true,
            Some(expected) => constant_time_eq(expected.as_bytes(), password),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths' maximum, not on
/// where they differ (Redis's `time_independent_strcmp`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret\0"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
