//! Storage benchmark (a bench binary, not criterion: each case is one long measured run).
//!
//! `cargo bench -p mq-broker --bench storage` prints, for 200-byte records on the disk log:
//! - append throughput with a flush after every batch (group commit as `--fsync always` does
//!   once per event-loop turn), for several batch sizes, and with a flush every 100 ms
//!   (`--fsync interval:100`);
//! - the same over 16 partitions, flushed one after another and in parallel;
//! - recovery time of a 1 GiB partition: clean, unclean (active segment scanned), and with
//!   every index lost (every segment scanned);
//! - read throughput from sealed segments.
//!
//! `MQ_BENCH_DIR` chooses where files go (default: a temp dir under /tmp... which must be a
//! real disk, not tmpfs, for flush timings to mean anything). `MQ_BENCH_GIB` scales the
//! recovery case (default 1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mq_broker::storage::disk::{DiskLog, DiskOptions};
use mq_broker::storage::PartitionLog;

const RECORD_BYTES: usize = 200;

fn dir() -> tempfile::TempDir {
    match std::env::var("MQ_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir_in("/var/tmp").unwrap(),
    }
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; RECORD_BYTES])
}

fn rate(n: u64, d: Duration) -> String {
    let per_s = n as f64 / d.as_secs_f64();
    format!("{:>12.0} records/s {:>8.1} MB/s", per_s, per_s * RECORD_BYTES as f64 / 1e6)
}

fn append_with_flush(batch: u64, total: u64) {
    let d = dir();
    let mut log = DiskLog::open(d.path(), false, DiskOptions::default()).unwrap();
    let v = value();
    let start = Instant::now();
    let mut flushes = 0;
    for i in 0..total {
        log.append(i, None, v.clone()).unwrap();
        if (i + 1) % batch == 0 {
            log.sync().unwrap();
            flushes += 1;
        }
    }
    log.sync().unwrap();
    let took = start.elapsed();
    println!(
        "append, flush every {batch:>5} records: {}  ({:.1} µs per flush incl. appends)",
        rate(total, took),
        took.as_micros() as f64 / flushes.max(1) as f64
    );
}

fn append_interval(total: u64, every: Duration) {
    let d = dir();
    let mut log = DiskLog::open(d.path(), false, DiskOptions::default()).unwrap();
    let v = value();
    let start = Instant::now();
    let mut last = start;
    for i in 0..total {
        log.append(i, None, v.clone()).unwrap();
        if i % 1024 == 0 && last.elapsed() >= every {
            log.sync().unwrap();
            last = Instant::now();
        }
    }
    log.sync().unwrap();
    println!(
        "append, flush every {:>4} ms:        {}",
        every.as_millis(),
        rate(total, start.elapsed())
    );
}

fn partitions(total: u64, batch: u64, parallel: bool) {
    let d = dir();
    let mut logs: Vec<DiskLog> = (0..16)
        .map(|p| {
            DiskLog::open(&d.path().join(p.to_string()), false, DiskOptions::default()).unwrap()
        })
        .collect();
    let v = value();
    let start = Instant::now();
    for i in 0..total {
        logs[(i % 16) as usize].append(i, None, v.clone()).unwrap();
        if (i + 1) % batch == 0 {
            if parallel {
                std::thread::scope(|s| {
                    for log in logs.iter_mut() {
                        s.spawn(move || log.sync().unwrap());
                    }
                });
            } else {
                logs.iter_mut().for_each(|l| l.sync().unwrap());
            }
        }
    }
    let how = if parallel { "parallel" } else { "serial  " };
    println!(
        "16 partitions, flush every {batch:>5} records, {how}: {}",
        rate(total, start.elapsed())
    );
}

/// Flushing through `syncfs` (one call for the whole file system), as an upper bound.
fn partitions_syncfs(total: u64, batch: u64) {
    let d = dir();
    let mut logs: Vec<DiskLog> = (0..16)
        .map(|p| {
            DiskLog::open(&d.path().join(p.to_string()), false, DiskOptions::default()).unwrap()
        })
        .collect();
    let fs = std::fs::File::open(d.path()).unwrap();
    let v = value();
    let start = Instant::now();
    for i in 0..total {
        logs[(i % 16) as usize].append(i, None, v.clone()).unwrap();
        if (i + 1) % batch == 0 {
            rustix::fs::syncfs(&fs).unwrap();
        }
    }
    println!(
        "16 partitions, flush every {batch:>5} records, syncfs  : {}",
        rate(total, start.elapsed())
    );
}

fn recovery(gib: u64) {
    let d = dir();
    let records = gib * 1024 * 1024 * 1024 / (RECORD_BYTES as u64 + 30);
    let v = value();
    let mut log = DiskLog::open(d.path(), false, DiskOptions::default()).unwrap();
    let start = Instant::now();
    for i in 0..records {
        log.append(i, None, v.clone()).unwrap();
    }
    log.sync().unwrap();
    println!(
        "wrote {records} records ({} bytes, {} segments) in {:?}",
        log.bytes_stored(),
        log.segments(),
        start.elapsed()
    );
    log.close().unwrap();
    drop(log);
    let start = Instant::now();
    let log = DiskLog::open(d.path(), true, DiskOptions::default()).unwrap();
    println!("recovery, clean shutdown:           {:>8.1} ms", start.elapsed().as_secs_f64() * 1e3);
    assert_eq!(log.next_offset(), records);
    drop(log);
    let start = Instant::now();
    let log = DiskLog::open(d.path(), false, DiskOptions::default()).unwrap();
    println!("recovery, crash (active scanned):   {:>8.1} ms", start.elapsed().as_secs_f64() * 1e3);
    assert_eq!(log.next_offset(), records);
    drop(log);
    for entry in std::fs::read_dir(d.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "index") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let start = Instant::now();
    let log = DiskLog::open(d.path(), false, DiskOptions::default()).unwrap();
    println!(
        "recovery, every index lost (full scan): {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(log.next_offset(), records);

    let start = Instant::now();
    let mut from = 0;
    let mut out = Vec::with_capacity(1024);
    while from < records {
        out.clear();
        log.read(from, 1024, usize::MAX, &mut out).unwrap();
        from = out.last().unwrap().offset + 1;
    }
    println!("read from sealed segments:          {}", rate(records, start.elapsed()));
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let gib: u64 = std::env::var("MQ_BENCH_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for batch in [1, 64, 1024] {
        append_with_flush(batch, if batch == 1 { 20_000 } else { 1_000_000 });
    }
    append_interval(2_000_000, Duration::from_millis(100));
    for parallel in [false, true] {
        partitions(1_000_000, 1024, parallel);
    }
    partitions_syncfs(1_000_000, 1024);
    if std::env::var("MQ_BENCH_SKIP_RECOVERY").is_ok() {
        return;
    }
    recovery(gib);
}
