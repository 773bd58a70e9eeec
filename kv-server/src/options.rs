//! The server's settings.

use std::sync::Arc;
use std::time::Duration;

use kv_resp::Limits;
use kv_wal::SyncPolicy;

/// Default [`ServerOptions::max_clients`]: Redis's `maxclients` default.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default [`ServerOptions::max_pending_reply_bytes`]: 1 MiB.
pub const DEFAULT_MAX_PENDING_REPLY_BYTES: usize = 1 << 20;
/// Default [`ServerOptions::max_batch`]: commands taken from the read buffer per batch.
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Default [`ServerOptions::shutdown_grace`]: 10 seconds.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the server treats its clients.
///
/// ```
/// let opts = kv_server::ServerOptions::new().max_clients(100);
/// assert_eq!(opts.get_max_clients(), 100);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServerOptions {
    requirepass: Option<Arc<str>>,
    sync_policy: Option<SyncPolicy>,
    max_clients: usize,
    max_pending_reply_bytes: usize,
    max_batch: usize,
    limits: Limits,
    shutdown_grace: Duration,
    extension: Option<crate::extension::Extension>,
    remote_replicas: bool,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never printed.
        f.debug_struct("ServerOptions")
            .field("requirepass", &self.requirepass.as_ref().map(|_| "<set>"))
            .field("sync_policy", &self.sync_policy)
            .field("max_clients", &self.max_clients)
            .field("max_pending_reply_bytes", &self.max_pending_reply_bytes)
            .field("max_batch", &self.max_batch)
            .field("limits", &self.limits)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("extension", &self.extension)
            .field("remote_replicas", &self.remote_replicas)
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerOptions {
    /// The defaults.
    pub const fn new() -> Self {
        Self {
            requirepass: None,
            sync_policy: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending_reply_bytes: DEFAULT_MAX_PENDING_REPLY_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            limits: Limits::new(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            extension: None,
            remote_replicas: false,
        }
    }

    /// Whether some of the cluster's replicas are in other processes (a node of a cluster of
    /// processes): every read and write then waits on the network, so each batch of them runs
    /// on a storage thread instead of the connection's task. Default `false`.
    ///
    /// ```
    /// let opts = kv_server::ServerOptions::new().remote_replicas(true);
    /// assert!(opts.get_remote_replicas());
    /// ```
    pub fn remote_replicas(mut self, remote: bool) -> Self {
        self.remote_replicas = remote;
        self
    }

    /// Whether some replicas are in other processes.
    pub fn get_remote_replicas(&self) -> bool {
        self.remote_replicas
    }

    /// Extra `KVSTORE` subcommands ([`KvstoreExtension`](crate::KvstoreExtension)); `None`
    /// (the default): only the built-in ones.
    pub fn kvstore_extension(
        mut self,
        extension: Option<std::sync::Arc<dyn crate::KvstoreExtension>>,
    ) -> Self {
        self.extension = extension.map(crate::extension::Extension);
        self
    }

    /// The extra `KVSTORE` subcommands, if any.
    pub fn get_kvstore_extension(&self) -> Option<&std::sync::Arc<dyn crate::KvstoreExtension>> {
        self.extension.as_ref().map(|e| &e.0)
    }

    /// The password clients must give (`AUTH pass`, `AUTH default pass` or
    /// `HELLO 3 AUTH default pass`) before any command but `AUTH`, `HELLO`, `QUIT` and `RESET`,
    /// as Redis's `requirepass` (the default user's password). `None` (the default): no
    /// password, every client is authenticated from the start.
    ///
    /// ```
    /// let opts = kv_server::ServerOptions::new().requirepass(Some("secret".to_string()));
    /// assert_eq!(opts.get_requirepass(), Some("secret"));
    /// ```
    pub fn requirepass(mut self, password: Option<String>) -> Self {
        self.requirepass = password.map(Arc::from);
        self
    }

    /// See [`ServerOptions::requirepass`].
    pub fn get_requirepass(&self) -> Option<&str> {
        self.requirepass.as_deref()
    }

    /// The sync policy the cluster was opened with, for `INFO persistence` to report (the
    /// cluster does not expose it). `None` (the default): reported as `unknown`.
    pub fn sync_policy(mut self, policy: Option<SyncPolicy>) -> Self {
        self.sync_policy = policy;
        self
    }

    /// See [`ServerOptions::sync_policy`].
    pub fn get_sync_policy(&self) -> Option<SyncPolicy> {
        self.sync_policy
    }

    /// Most clients connected at once; the next one gets `-ERR max number of clients reached`
    /// and is disconnected, as in Redis.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Replies built for a client before they are written: once a batch's replies reach this
    /// size they are written, and the server waits for the client to take them (the write
    /// completes) before executing more of its commands or reading from it again. A client
    /// that does not read its replies therefore stops being read (backpressure).
    pub fn max_pending_reply_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_reply_bytes = bytes;
        self
    }

    /// Most commands taken from a client's read buffer for one batch (one trip to the storage
    /// threads).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// The protocol parser's limits (bulk, array and line lengths).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a shutdown waits for connections to finish the batch they are executing and
    /// write its replies; connections still busy then (a client that stopped reading its
    /// replies) are dropped.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// See [`ServerOptions::shutdown_grace`].
    pub const fn get_shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// See [`ServerOptions::max_clients`].
    pub const fn get_max_clients(&self) -> usize {
        self.max_clients
    }

    /// See [`ServerOptions::max_pending_reply_bytes`].
    pub const fn get_max_pending_reply_bytes(&self) -> usize {
        self.max_pending_reply_bytes
    }

    /// See [`ServerOptions::max_batch`].
    pub const fn get_max_batch(&self) -> usize {
        self.max_batch
    }

    /// See [`ServerOptions::limits`].
    pub const fn get_limits(&self) -> Limits {
        self.limits
    }
}
