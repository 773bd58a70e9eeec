// The body of the `open_segment` fuzz target (`kv-wal/fuzz`), shared with
// `tests/fuzz_open.rs`, which runs it on seeded random inputs so it is compiled and exercised
// by `cargo test` on stable. Included with `include!`, so no module-level items here but the
// function.

/// Builds a log directory from arbitrary bytes, opens it under every recovery mode, reads
/// everything back and appends: none of it may panic, and whatever is recovered must read
/// back consistently.
pub fn fuzz_open(data: &[u8]) {
    use kv_wal::{Lsn, RecoveryMode, SyncPolicy, Wal, WalOptions, layout};

    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks how the input becomes segment files, so the fuzzer also reaches
    // past the header check.
    let name = |seq: u32| format!("{seq:010}.wal");
    // The header declares the file's length, as the log writes it; the body is zero-padded to
    // a multiple of 8 to match.
    let with_header = |seq: u32, body: &[u8]| {
        let size = (layout::HEADER_LEN + body.len()).next_multiple_of(8);
        let mut v = layout::segment_header(seq, size as u32).to_vec();
        v.extend_from_slice(body);
        v.resize(size, 0);
        v
    };
    let files: Vec<(String, Vec<u8>)> = match shape % 4 {
        0 => vec![(name(1), rest.to_vec())],
        1 => vec![(name(1), with_header(1, rest))],
        2 => {
            let mid = rest.len() / 2;
            vec![
                (name(1), with_header(1, &rest[..mid])),
                (name(2), with_header(2, &rest[mid..])),
            ]
        }
        _ => vec![
            (name(5), with_header(5, rest)),
            (name(6), with_header(6, &[])),
        ],
    };
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    let Ok(dir) = dir else { return };
    for mode in [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::PointInTime,
    ] {
        for entry in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        for (n, bytes) in &files {
            if std::fs::write(dir.path().join(n), bytes).is_err() {
                return;
            }
        }
        let opts = WalOptions::new()
            .segment_size(4096)
            .sync(SyncPolicy::Never)
            .recovery(mode);
        let opened = Wal::open(dir.path(), opts.clone());
        if mode == RecoveryMode::PointInTime {
            assert!(opened.is_ok(), "PointInTime must open any content: {opened:?}");
        }
        let Ok(wal) = opened else { continue };
        let records: Vec<_> = wal.iter_from(Lsn::ZERO).collect();
        assert!(
            records.iter().all(Result::is_ok),
            "a recovered log must iterate cleanly"
        );
        assert_eq!(records.len() as u64, wal.recovery_report().records);
        for r in records.iter().flatten() {
            assert_eq!(wal.read(r.lsn).ok().as_ref(), Some(&r.payload));
        }
        let lsn = wal.append(b"appended after recovery").expect("append");
        drop(wal);
        // What was recovered and appended is there on the next open, untouched.
        let wal = Wal::open(dir.path(), opts).expect("reopen after recovery");
        assert!(wal.recovery_report().truncation.is_none());
        let again: Vec<_> = wal.iter_from(Lsn::ZERO).flatten().collect();
        assert_eq!(again.len(), records.len() + 1);
        assert_eq!(again.last().map(|r| r.lsn), Some(lsn));
    }
}
