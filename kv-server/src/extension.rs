//! `KVSTORE` subcommands that the program embedding the server provides, such as `FAULT` in a
//! node of a cluster of processes started with `--enable-debug-faults`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Extra `KVSTORE` subcommands, run on a storage thread like the built-in ones.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use kv_server::{KvstoreExtension, ServerOptions};
///
/// #[derive(Debug)]
/// struct Hello;
///
/// impl KvstoreExtension for Hello {
///     fn handles(&self, sub: &str) -> bool {
///         sub == "hello"
///     }
///     fn call(&self, args: &[Bytes]) -> Result<Vec<String>, String> {
///         Ok(vec![format!("hello, {} arguments", args.len())])
///     }
/// }
///
/// let opts = ServerOptions::new().kvstore_extension(Some(Arc::new(Hello)));
/// assert!(opts.get_kvstore_extension().is_some_and(|e| e.handles("hello")));
/// ```
pub trait KvstoreExtension: Send + Sync + fmt::Debug {
    /// Whether `sub` (the subcommand, lowercased) is one of these.
    fn handles(&self, sub: &str) -> bool;

    /// Runs `KVSTORE <sub> ...` (`args` is the whole command, `KVSTORE` included): the reply's
    /// lines, or an error message without its `ERR ` prefix.
    ///
    /// # Errors
    /// A message for the client (wrong arguments, the operation failed).
    fn call(&self, args: &[Bytes]) -> Result<Vec<String>, String>;

    /// Why clients' commands are refused right now, as the error line to answer them
    /// (`TRYAGAIN metadata catching up`, say); `None` (the default): they are served. Asked
    /// before every command but the connection's own (`PING`, `ECHO`, `AUTH`, `HELLO`,
    /// `QUIT`, `RESET`, `SELECT`, `CLIENT`, `COMMAND`, `INFO`, `KVSTORE`), so it must be cheap
    /// (an atomic load).
    fn refusal(&self) -> Option<String> {
        None
    }

    /// Extra lines (`field:value`) at the end of `INFO cluster`; none by default. When one
    /// of them is `kvstore_change_in_progress:...`, the extension reports the change and the
    /// in-process cluster's own line is left out.
    fn info_cluster(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An extension in [`ServerOptions`](crate::ServerOptions): equal only to itself.
#[derive(Clone, Debug)]
pub(crate) struct Extension(pub(crate) Arc<dyn KvstoreExtension>);

impl PartialEq for Extension {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Extension {}
