//! openraft's own storage test suite (`openraft::testing::Suite::test_all`) against both log
//! stores with the state machine: `MemLog` + `MetaMachine` in memory, and `MetaLog` (kv-wal)
//! + `MetaMachine` with its snapshot on disk.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use kv_meta::{MemLog, MetaLog, MetaMachine, MetaTypes};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct InMemory;

impl StoreBuilder<MetaTypes, MemLog, MetaMachine, ()> for InMemory {
    async fn build(&self) -> Result<((), MemLog, MetaMachine), StorageError<u64>> {
        Ok(((), MemLog::new(), MetaMachine::in_memory()))
    }
}

struct OnDisk;

impl StoreBuilder<MetaTypes, MetaLog, MetaMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, MetaLog, MetaMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = MetaLog::open(&dir.path().join("log")).await.unwrap();
        let machine = MetaMachine::open(dir.path()).unwrap();
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_suite_passes_on_the_memory_log() {
    Suite::test_all(InMemory).unwrap();
}

#[test]
fn openraft_suite_passes_on_the_wal_log() {
    Suite::test_all(OnDisk).unwrap();
}
