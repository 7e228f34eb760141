//! Measures how many scope changesets per second [`Store::append_changesets`] makes durable,
//! for several batch sizes, on a fresh database file (`synchronous=FULL`, as in production).
//!
//! ```text
//! cargo run --release -p tether-store --example scope_append -- [--dir DIR] [--bytes N] [--seconds S] [--batches 1,10,100,1000]
//! ```
//!
//! Each batch size gets its own scope and appends back to back from one task, awaiting each
//! append before sending the next, as a scope actor does (it collects the next batch while one
//! commits). Afterwards it times loading a scope with a 100,000-entry log and snapshotting it.
//! `--dir` picks the file system to measure (default: the system temp dir); the database is
//! removed afterwards.

use std::path::PathBuf;
use std::time::Duration;

use tether_store::{SqliteStore, Store};
use tokio::time::Instant;

/// Command-line settings.
struct Args {
    dir: PathBuf,
    bytes: usize,
    seconds: f64,
    batches: Vec<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: std::env::temp_dir().join(format!("tether-scope-bench-{}", std::process::id())),
        bytes: 300,
        seconds: 3.0,
        batches: vec![1, 10, 100, 1000],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => {
                args.dir = PathBuf::from(value).join(format!("tether-scope-bench-{}", std::process::id()))
            }
            "--bytes" => args.bytes = value.parse().expect("--bytes: a number"),
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--batches" => {
                args.batches = value
                    .split(',')
                    .map(|b| b.parse().expect("--batches: numbers, comma-separated"))
                    .collect();
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A changeset-sized payload that does not compress to nothing (the store never looks inside).
fn changeset(seq: u64, bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes);
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(bytes);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let store = SqliteStore::open_in_dir(&args.dir).expect("open the store");
    let budget = Duration::from_secs_f64(args.seconds);
    println!(
        "changeset size {} bytes, {:.1} s per batch size, file {}",
        args.bytes,
        args.seconds,
        store.path().display()
    );
    println!("{:>6} {:>14} {:>12} {:>14}", "batch", "changesets/s", "appends/s", "µs per append");

    for &batch in &args.batches {
        let key = format!("bench/{batch}");
        store.create_scope(&key, [7; 16], b"{}".to_vec()).await.expect("create");
        let mut seq = 0;
        let mut appends = 0_u64;
        let start = Instant::now();
        while start.elapsed() < budget {
            let entries: Vec<(u64, Vec<u8>)> =
                (seq + 1..=seq + batch).map(|s| (s, changeset(s, args.bytes))).collect();
            store.append_changesets(&key, entries).await.expect("append");
            seq += batch;
            appends += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{batch:>6} {:>14.0} {:>12.0} {:>14.1}",
            seq as f64 / secs,
            appends as f64 / secs,
            secs * 1e6 / appends as f64
        );
    }

    // A big log: load it whole, then fold it into a snapshot.
    let key = "bench/load";
    store.create_scope(key, [8; 16], b"{}".to_vec()).await.expect("create");
    let total = 100_000_u64;
    for first in (1..=total).step_by(1000) {
        let entries = (first..first + 1000).map(|s| (s, changeset(s, args.bytes))).collect();
        store.append_changesets(key, entries).await.expect("append");
    }
    let start = Instant::now();
    let scope = store.load_scope(key).await.expect("load").expect("exists");
    let load = start.elapsed();
    assert_eq!(scope.log.len() as u64, total);
    assert!(scope.log.iter().zip(1..).all(|((seq, bytes), want)| *seq == want && bytes.len() == args.bytes));
    let start = Instant::now();
    store.save_snapshot(key, total, vec![0; 1 << 20]).await.expect("snapshot");
    let snapshot = start.elapsed();
    println!(
        "load of a {total}-entry log: {:.1} ms; save_snapshot (1 MiB, trims the log): {:.1} ms",
        load.as_secs_f64() * 1e3,
        snapshot.as_secs_f64() * 1e3
    );

    drop(store);
    let _ = std::fs::remove_dir_all(&args.dir);
}
