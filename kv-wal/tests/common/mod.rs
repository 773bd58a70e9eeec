//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kv_wal::{Lsn, Wal};

/// A deterministic payload for record number `n`: 0..=120 bytes, self-describing.
pub fn payload(n: u64) -> Vec<u8> {
    let len = ((n.wrapping_mul(7919) ^ (n >> 3)) % 121) as usize;
    let mut v = n.to_le_bytes().to_vec();
    v.extend((0..len).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8)));
    v
}

/// Every record of the log, in order.
pub fn collect(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    wal.iter_from(Lsn::ZERO)
        .map(|r| {
            r.map(|r| (r.lsn, r.payload.to_vec()))
                .expect("iterating a recovered log")
        })
        .collect()
}

/// A temporary directory on tmpfs when there is one: for tests that open a log hundreds of
/// times and do not need a real disk (fsync is nearly free there).
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("tempdir")
}

/// The segment files of a log directory, in order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Replaces the contents of a directory's segment files with `files` (name -> bytes).
pub fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    for p in segment_files(dir) {
        std::fs::remove_file(p).expect("remove");
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}

/// Reads every segment file of a directory (name -> bytes).
pub fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect()
}
