//! Making files and directories survive a power cut: the `fsync` dance, in one place.
//!
//! A file's data and its directory entry reach the disk separately. Creating a directory,
//! or creating, renaming or deleting a file, changes the *parent* directory, which must be
//! `fsync`ed on its own: otherwise a power cut can make a file vanish even though its data
//! was flushed (its name was not), or a whole directory tree of flushed files vanish with
//! the directory that was never synced in its parent. These helpers do each step in the
//! order that leaves either the old state or the new one after a crash at any point.
//!
//! Every error is a [`durable::Error`](Error) naming the operation and the path it failed
//! on, with the I/O error as its [`source`](std::error::Error::source); it converts into
//! this crate's [`Error::Io`](crate::Error::Io), and the crates above convert it into theirs.
//!
//! # Example
//!
//! ```
//! use kv_wal::durable;
//! let root = tempfile::tempdir()?;
//! let dir = root.path().join("node1").join("hints");
//! durable::create_dir_all(&dir)?; // `node1` and `hints`, each synced into its parent
//! durable::write_file_atomic(&dir.join("state.json"), b"{}")?;
//! assert_eq!(std::fs::read(dir.join("state.json"))?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// A failed step of one of this module's functions.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
#[non_exhaustive]
pub struct Error {
    /// The step that failed (`"create directory"`, `"fsync directory"`, `"create file"`,
    /// `"write file"`, `"fsync file"` or `"rename file"`).
    pub op: &'static str,
    /// The file or directory it failed on.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl Error {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// `Result` with a [`durable::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `fsync`s a directory, so that the creations, renames and deletions of entries in it so far
/// survive a power cut.
///
/// # Errors
///
/// `"fsync directory"` if the directory cannot be opened or synced.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a"), b"x")?;
/// kv_wal::durable::sync_dir(dir.path())?; // the name `a` is durable now
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::record_sync(dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::new("fsync directory", dir, e))
}

/// Creates `dir` and every missing ancestor, oldest first, `fsync`ing the parent of each
/// directory it creates (so the new directory's name is durable). A directory that already
/// exists is left alone: it is taken to be durable already (whoever created it synced it).
///
/// `std::fs::create_dir_all` followed by syncing `dir` alone is not enough: the directories
/// it created above `dir` can vanish after a power cut, taking everything under them along.
///
/// # Errors
///
/// `"create directory"` or `"fsync directory"`, naming the level that failed; the levels
/// created before it stay.
///
/// ```
/// let root = tempfile::tempdir()?;
/// let deep = root.path().join("a").join("b").join("c");
/// kv_wal::durable::create_dir_all(&deep)?;
/// assert!(deep.is_dir());
/// kv_wal::durable::create_dir_all(&deep)?; // exists: nothing to do
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another process (or thread) created it meanwhile: it is its job to sync it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        // Something else is in the way (a file): say so rather than "File exists".
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let not_dir = io::Error::from_raw_os_error(libc::ENOTDIR);
            return Err(Error::new("create directory", dir, not_dir));
        }
        Err(e) => return Err(Error::new("create directory", dir, e)),
    }
    sync_dir(parent)
}

/// The temporary file [`write_file_atomic`] writes `path` through: its name with `.tmp`
/// appended, in the same directory (a rename is atomic only within one filesystem). A crash
/// can leave it behind; whoever owns the directory deletes such leftovers when it opens it.
///
/// ```
/// use std::path::Path;
/// let tmp = kv_wal::durable::temp_path(Path::new("/data/cluster.json"));
/// assert_eq!(tmp, Path::new("/data/cluster.json.tmp"));
/// ```
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`, atomically and durably: writes [`temp_path`]`(path)`,
/// `fsync`s it, renames it over `path`, then `fsync`s the directory. After a crash at any
/// point `path` holds either its old contents (or is absent, if it was) or `bytes`, never a
/// mix; once this returns, `bytes` survives a power cut.
///
/// # Errors
///
/// `"create file"`, `"write file"`, `"fsync file"`, `"rename file"` or `"fsync directory"`. On an error up to the rename the temporary file is removed (best
/// effort) and `path` is untouched.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("meta");
/// kv_wal::durable::write_file_atomic(&path, b"v1")?;
/// kv_wal::durable::write_file_atomic(&path, b"v2")?;
/// assert_eq!(std::fs::read(&path)?, b"v2");
/// assert!(!kv_wal::durable::temp_path(&path).exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::new("create file", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::new("write file", &tmp, e))?;
        f.sync_all().map_err(|e| Error::new("fsync file", &tmp, e))
    })();
    let renamed = written
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::new("rename file", &tmp, e)));
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        /// Every directory this thread has synced through [`sync_dir`].
        static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn record_sync(dir: &Path) {
        SYNCED.with_borrow_mut(|s| s.push(dir.to_owned()));
    }

    /// The directories this thread synced since the last call.
    pub(crate) fn take_synced() -> Vec<PathBuf> {
        SYNCED.with_borrow_mut(std::mem::take)
    }

    #[test]
    fn every_created_level_is_synced_into_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, c) = {
            let a = root.path().join("a");
            let b = a.join("b");
            let c = b.join("c");
            (a, b, c)
        };
        take_synced();
        create_dir_all(&c).unwrap();
        assert!(c.is_dir());
        // Oldest first: each parent is synced after its new child exists.
        assert_eq!(
            take_synced(),
            [root.path().to_owned(), a.clone(), b.clone()]
        );
        // Existing levels are not created or synced again.
        create_dir_all(&c).unwrap();
        assert_eq!(take_synced(), Vec::<PathBuf>::new());
        let d = b.join("d");
        create_dir_all(&d).unwrap();
        assert_eq!(take_synced(), [b]);
    }

    #[test]
    fn a_relative_path_syncs_the_current_directory() {
        // A fresh name in the working directory (the crate's, under `cargo test`).
        let name = {
            let t = tempfile::tempdir_in(".").unwrap();
            PathBuf::from(t.path().file_name().unwrap())
        };
        take_synced();
        create_dir_all(&name.join("x")).unwrap();
        let synced = take_synced();
        fs::remove_dir_all(&name).unwrap();
        assert_eq!(synced, [PathBuf::from("."), name]);
    }

    #[test]
    fn a_file_replaced_atomically_is_synced_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        take_synced();
        write_file_atomic(&path, b"one").unwrap();
        write_file_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        assert_eq!(
            take_synced(),
            [dir.path().to_owned(), dir.path().to_owned()]
        );
    }

    #[test]
    fn an_error_names_the_step_and_the_path_and_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = sync_dir(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("fsync directory {}", missing.display())
        );
        let cause = std::error::Error::source(&e).unwrap();
        let cause = cause.downcast_ref::<io::Error>().unwrap();
        assert_eq!(cause.kind(), io::ErrorKind::NotFound);
        match crate::Error::from(e) {
            crate::Error::Io { op, path, source } => {
                assert_eq!((op, path), ("fsync directory", missing));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file_atomic(&path, b"old").unwrap();
        // The rename cannot replace a non-empty directory.
        let blocked = dir.path().join("g");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(matches!(
            write_file_atomic(&blocked, b"new"),
            Err(Error {
                op: "rename file",
                ..
            })
        ));
        assert!(!temp_path(&blocked).exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        // A temporary that cannot be created: its name is taken by a directory.
        fs::create_dir(temp_path(&path)).unwrap();
        assert!(matches!(
            write_file_atomic(&path, b"new"),
            Err(Error {
                op: "create file",
                ..
            })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
