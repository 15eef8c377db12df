//! Write amplification of the outbox store: bytes the process writes (`/proc/self/io`) per
//! record stored, for a cabinet producing records a few at a time (one group commit per
//! `storage.flush_interval`, 25 ms by default). Figures, not assertions.
//!
//!   cargo run --release --example outbox_writes -- [RECORDS_PER_COMMIT] [COMMITS] [ack|hold] [DIR]
//!
//! Defaults: 3 records a commit (100 records/s at 40 commits/s), 4000 commits (100 s of such a
//! cabinet), `hold` (broker down: nothing acknowledged, the backlog grows); `ack` acknowledges
//! every record after each commit (broker up). DIR (default: a temp dir under `target/`) should be
//! on the filesystem the figure is for.

use std::time::{Duration, SystemTime};

use cabinetd::metrics::Metrics;
use cabinetd::outbox::{OutboxOptions, Store};
use cabinetd::record::{Quality, RecordBody, Stream, Telemetry};

fn io() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_commit: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let commits: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let ack = args.get(2).is_some_and(|a| a == "ack");
    let base = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let (mut store, _) =
        Store::open(dir.path(), OutboxOptions::default(), Metrics::new("bench")).expect("open");
    let points: Vec<std::sync::Arc<str>> = (0..100)
        .map(|i| format!("meter-{i:02}/r{i:03}").into())
        .collect();
    let t0 = SystemTime::now();
    let (wchar0, wb0) = io();
    let mut n = 0u64;
    for c in 0..commits {
        let mut range = None;
        for _ in 0..per_commit {
            let body = RecordBody::Telemetry(Telemetry {
                ts: t0 + Duration::from_millis(c * 25),
                point: points[(n % 100) as usize].clone(),
                value: serde_json::json!(1000 + (n % 7)),
                quality: Quality::Good,
            });
            let seq = store.append(&body).expect("append");
            range = Some(range.map_or((seq, seq), |(a, _)| (a, seq)));
            n += 1;
        }
        store.flush().expect("flush");
        // Broker up: the records of this commit are acknowledged before the next one.
        if let (true, Some((first, last))) = (ack, range) {
            store.ack(Stream::Telemetry, first, last);
        }
    }
    let (wchar1, wb1) = io();
    store.measure();
    let stats = store.stats();
    let wchar = wchar1 - wchar0;
    println!(
        "{n} records, {per_commit} a commit, {commits} commits, {}",
        if ack {
            "acknowledged"
        } else {
            "held (broker down)"
        }
    );
    println!(
        "written by the process (wchar): {wchar} bytes = {:.1} bytes a record, {:.1} KiB/s at 40 commits/s",
        wchar as f64 / n as f64,
        wchar as f64 / (commits as f64 * 0.025) / 1024.0
    );
    println!(
        "reached the device (write_bytes, includes fsync'd metadata): {} bytes",
        wb1 - wb0
    );
    println!(
        "store on disk at the end: {} bytes ({} records held)",
        stats.disk_bytes,
        stats.total_records()
    );
}
