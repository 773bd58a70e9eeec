//! What every connection of a server shares: the client registry, the counters, the settings.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clients::Clients;
use crate::options::ServerOptions;
use crate::stats::Stats;

/// The server-wide state commands read (`CLIENT LIST`, `INFO`).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clients: Arc<Clients>,
    pub(crate) stats: Stats,
    pub(crate) options: ServerOptions,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: crate::admin::AdminState,
}
