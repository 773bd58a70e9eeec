//! Group commit's gain under `SyncPolicy::Always` as one number: records/s of `N` writers
//! appending under `Always`, divided by records/s of the naive baseline (one thread, `write` +
//! `fdatasync` per record on a growing file), measured in *alternating slices* so that both
//! sides of each ratio see the same disk and the same neighbours.
//!
//! On a shared machine the criterion bench (`cargo bench -p benches --bench wal`) measures the
//! baseline and the writers minutes apart, and another process's disk traffic can make the
//! baseline 40x slower in one of them (seen: 0.3 K/s to 18 K/s within ten minutes). Here each
//! pair is a baseline slice and a writers slice back to back (in ABBA order, so drift cancels),
//! and the median of the per-pair ratios is reported with the spread and the load.
//!
//! Run: `cargo run --release -p benches --example wal_always_ratio -- [threads] [size] [pairs]
//! [slice_ms]` (defaults 64, 100, 15, 300). The logs live under `KV_WAL_BENCH_DIR` (default:
//! the system temp dir), which must be on the real disk, not tmpfs.

use std::{
    fs::OpenOptions,
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use kv_wal::{FlushEvent, SyncPolicy, Wal, WalOptions};

fn arg(n: usize, default: u64) -> anyhow::Result<u64> {
    match std::env::args().nth(n) {
        Some(s) => s.parse().with_context(|| format!("argument {n}: {s:?}")),
        None => Ok(default),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Records/s of one thread doing `write` + `fdatasync` per record for `slice`.
fn baseline(file: &mut std::fs::File, record: &[u8], slice: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < slice {
        file.write_all(record)?;
        file.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Records/s of `threads` writers appending `payload` under `Always` for `slice`, and the
/// appends per flush.
fn writers(
    wal: &Wal,
    flushes: &AtomicU64,
    payload: &[u8],
    threads: u64,
    slice: Duration,
) -> (f64, f64) {
    let stop = AtomicBool::new(false);
    let appended = AtomicU64::new(0);
    let flushes_before = flushes.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if wal.append(payload).is_err() {
                        break;
                    }
                    n += 1;
                }
                appended.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(slice);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = appended.load(Ordering::Relaxed) as f64;
    let f = (flushes.load(Ordering::Relaxed) - flushes_before).max(1) as f64;
    (n / elapsed, n / f)
}

fn main() -> anyhow::Result<()> {
    let threads = arg(1, 64)?;
    let size = arg(2, 100)? as usize;
    let pairs = arg(3, 15)?;
    let slice = Duration::from_millis(arg(4, 300)?);
    let root = std::env::var_os("KV_WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(root)?;

    let flushes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&flushes);
    let opts = WalOptions::new()
        .sync(SyncPolicy::Always)
        .flush_hook(Arc::new(move |_ev: &FlushEvent<'_>| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
    let wal = Wal::open(dir.path().join("wal"), opts)?;
    let payload = vec![0xA5u8; size];
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("naive.log"))?;
    // Framed like a WAL record: an 8-byte header and the payload.
    let record = vec![0x5Au8; size + 8];

    println!("{threads} writers, {size} B records, {pairs} pairs of {slice:?} slices");
    println!("pair | load (1/5/15 min) | baseline rec/s | writers rec/s | appends/flush | ratio");
    let (mut bases, mut ws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let load = loadavg();
        let (b, (w, per_flush)) = if i % 2 == 0 {
            let b = baseline(&mut file, &record, slice)?;
            (b, writers(&wal, &flushes, &payload, threads, slice))
        } else {
            let w = writers(&wal, &flushes, &payload, threads, slice);
            (baseline(&mut file, &record, slice)?, w)
        };
        println!(
            "{i:4} | {load} | {b:.0} | {w:.0} | {per_flush:.1} | {:.1}x",
            w / b
        );
        bases.push(b);
        ws.push(w);
        ratios.push(w / b);
        // Keep the disk footprint bounded.
        wal.truncate_before(wal.end_lsn())?;
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "median baseline {:.0} rec/s, median writers {:.0} rec/s, median ratio {:.1}x (min {lo:.1}x, max {hi:.1}x)",
        median(&mut bases),
        median(&mut ws),
        median(&mut ratios)
    );
    Ok(())
}
