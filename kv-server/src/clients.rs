//! The server's registry of connected clients, for `CLIENT LIST` and `INFO clients`.
//!
//! Touched when a client connects, disconnects or names itself, and once per batch of commands
//! (its last command and activity time, for `cmd=` and `idle=`), never per command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;

/// What `CLIENT SETNAME`, `HELLO ... SETNAME` and `CLIENT SETINFO` set.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientNames {
    pub(crate) name: Option<Bytes>,
    pub(crate) lib_name: Option<Bytes>,
    pub(crate) lib_ver: Option<Bytes>,
}

/// One connected client.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub(crate) id: u64,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) laddr: Option<SocketAddr>,
    pub(crate) connected: Instant,
    names: Mutex<ClientNames>,
    /// Milliseconds from `connected` to the start of the client's last batch (`idle=`).
    last_active_ms: AtomicU64,
    /// The last command the client ran, as Redis's `cmd=` shows it (`get`, `client|list`);
    /// empty before the first.
    last_cmd: Mutex<Vec<u8>>,
}

impl ClientEntry {
    pub(crate) fn names(&self) -> ClientNames {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update_names(&self, f: impl FnOnce(&mut ClientNames)) {
        f(&mut self.names.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Records that the client starts a batch whose last command is `args` (once per batch,
    /// so the lock is taken once per batch and only changes the name when it changes).
    pub(crate) fn touch(&self, args: &[Bytes]) {
        let ms = u64::try_from(self.connected.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
        let Some(name) = args.first() else {
            return;
        };
        // Commands with subcommands show as `name|sub`, as in Redis.
        let sub = args
            .get(1)
            .filter(|_| {
                ["client", "config", "command", "kvstore"]
                    .iter()
                    .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
            })
            .filter(|s| s.len() <= 32);
        let mut last = self.last_cmd.lock().unwrap_or_else(PoisonError::into_inner);
        let same = last.len() == name.len() + sub.map_or(0, |s| s.len() + 1)
            && last[..name.len()].eq_ignore_ascii_case(name)
            && sub.is_none_or(|s| last[name.len() + 1..].eq_ignore_ascii_case(s));
        if !same {
            last.clear();
            last.extend(name.iter().map(u8::to_ascii_lowercase));
            if let Some(s) = sub {
                last.push(b'|');
                last.extend(s.iter().map(u8::to_ascii_lowercase));
            }
        }
    }

    /// Redis's `CLIENT LIST`/`CLIENT INFO` line (without the trailing newline), with the
    /// fields kvstore knows; `resp` is the client's protocol version.
    pub(crate) fn info_line(&self, resp: u8, now: Instant) -> Vec<u8> {
        let names = self.names();
        let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let mut line = format!(
            "id={} addr={} laddr={} fd=-1 name=",
            self.id,
            show(self.addr),
            show(self.laddr)
        )
        .into_bytes();
        line.extend_from_slice(names.name.as_deref().unwrap_or_default());
        line.extend_from_slice(
            format!(
                " age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 cmd=",
                now.duration_since(self.connected).as_secs(),
                self.idle(now).as_secs()
            )
            .as_bytes(),
        );
        let cmd = self
            .last_cmd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        line.extend_from_slice(if cmd.is_empty() { b"NULL" } else { &cmd });
        line.extend_from_slice(format!(" user=default redir=-1 resp={resp} lib-name=").as_bytes());
        line.extend_from_slice(names.lib_name.as_deref().unwrap_or_default());
        line.extend_from_slice(b" lib-ver=");
        line.extend_from_slice(names.lib_ver.as_deref().unwrap_or_default());
        line
    }

    /// Time since the start of the client's last batch (since it connected, before any).
    pub(crate) fn idle(&self, now: Instant) -> std::time::Duration {
        let active = std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        now.duration_since(self.connected).saturating_sub(active)
    }
}

/// A registered client: its entry and its protocol version.
type Registered = (Arc<ClientEntry>, Arc<AtomicU8>);

/// Every connected client, by id.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    map: Mutex<BTreeMap<u64, Registered>>,
}

impl Clients {
    /// Registers a client; it is removed when the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        addr: Option<SocketAddr>,
        laddr: Option<SocketAddr>,
    ) -> Registration {
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            connected: Instant::now(),
            names: Mutex::new(ClientNames::default()),
            last_active_ms: AtomicU64::new(0),
            last_cmd: Mutex::new(Vec::new()),
        });
        let resp = Arc::new(AtomicU8::new(2));
        self.lock()
            .insert(id, (Arc::clone(&entry), Arc::clone(&resp)));
        Registration {
            clients: Arc::clone(self),
            entry,
            resp,
        }
    }

    /// How many clients are connected.
    #[allow(dead_code)] // used by INFO
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// `CLIENT LIST`: one line per client, in id order, each ending with a newline.
    pub(crate) fn list(&self) -> Vec<u8> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (entry, resp) in self.lock().values() {
            out.extend_from_slice(&entry.info_line(resp.load(Ordering::Relaxed), now));
            out.push(b'\n');
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Registered>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's place in the registry; dropping it removes the client.
#[derive(Debug)]
pub(crate) struct Registration {
    clients: Arc<Clients>,
    pub(crate) entry: Arc<ClientEntry>,
    /// The client's protocol version, as `CLIENT LIST` shows it.
    pub(crate) resp: Arc<AtomicU8>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.entry.id);
    }
}
