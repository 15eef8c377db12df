use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::record::{CommandResult, CommandStatus, Quality, Telemetry};

fn telemetry(i: u64) -> RecordBody {
    RecordBody::Telemetry(Telemetry {
        ts: UNIX_EPOCH + Duration::from_millis(1_795_680_000_000 + i),
        point: "meter-main/active_power".into(),
        value: serde_json::json!(i),
        quality: Quality::Good,
    })
}

fn result(id: &str) -> RecordBody {
    RecordBody::Result(CommandResult {
        ts: SystemTime::now(),
        id: id.into(),
        status: CommandStatus::Succeeded,
        reason: String::new(),
    })
}

fn open(dir: &Path) -> (Arc<Outbox>, Option<Recovery>) {
    Outbox::open(dir, OutboxOptions::default(), Metrics::new("test")).unwrap()
}

fn seqs(batch: &Batch) -> Vec<u64> {
    batch
        .records()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(r).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn seqs_start_at_one_per_stream_and_only_durable_records_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, rec) = open(dir.path());
    assert!(rec.is_none());
    assert_eq!(ob.append(&telemetry(0)).unwrap(), 1);
    assert_eq!(ob.append(&telemetry(1)).unwrap(), 2);
    assert_eq!(ob.append(&result("c1")).unwrap(), 1);
    assert!(ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .is_none());
    let durable = ob.subscribe_durable();
    ob.flush().await.unwrap();
    assert!(durable.has_changed().unwrap());
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!((b.first_seq, b.last_seq), (1, 2));
    assert_eq!(seqs(&b), vec![1, 2]);
    assert_eq!(ob.durable_seq(Stream::Results), 1);
    assert_eq!(ob.durable_seq(Stream::Events), 0);
}

#[tokio::test]
async fn read_batch_is_bounded_by_bytes_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path());
    for i in 0..10 {
        ob.append(&telemetry(i)).unwrap();
    }
    ob.flush().await.unwrap();
    let one = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(one.len(), 1);
    let size = one.json_bytes();
    let three = ob
        .read_batch(Stream::Telemetry, 4, u64::MAX, size * 3 + 2, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&three), vec![4, 5, 6]);
    let two = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, 2)
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&two), vec![1, 2]);
    let capped = ob
        .read_batch(Stream::Telemetry, 9, 9, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&capped), vec![9]);
}

#[tokio::test]
async fn seq_continues_across_reopen_even_after_everything_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ob, _) = open(dir.path());
        for i in 0..5 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().await.unwrap();
        assert_eq!(ob.ack(Stream::Telemetry, 1, 5).unwrap(), 5);
        assert_eq!(ob.stats().streams[0].records, 0);
        ob.flush().await.unwrap();
    }
    let (ob, rec) = open(dir.path());
    assert!(rec.is_none());
    assert_eq!(ob.first_stored(Stream::Telemetry).unwrap(), None);
    assert_eq!(ob.append(&telemetry(9)).unwrap(), 6);
}

#[tokio::test]
async fn unacked_records_survive_reopen_and_ack_deletes_only_its_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ob, _) = open(dir.path());
        for i in 0..6 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().await.unwrap();
        assert_eq!(ob.ack(Stream::Telemetry, 1, 2).unwrap(), 2);
        // Acking again (a duplicate PUBACK after replay) removes nothing and is harmless.
        assert_eq!(ob.ack(Stream::Telemetry, 1, 2).unwrap(), 0);
        ob.flush().await.unwrap();
    }
    let (ob, _) = open(dir.path());
    let st = &ob.stats().streams[0];
    assert_eq!((st.records, st.last_seq, st.durable_seq), (4, 6, 6));
    assert_eq!(ob.first_stored(Stream::Telemetry).unwrap(), Some(3));
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&b), vec![3, 4, 5, 6]);
    assert_eq!(ob.append(&telemetry(7)).unwrap(), 7);
}

#[tokio::test]
async fn counters_and_metrics_follow_appends_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("test");
    let (ob, _) = Outbox::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
    for i in 0..3 {
        ob.append(&telemetry(i)).unwrap();
    }
    ob.flush().await.unwrap();
    assert_eq!(
        metrics
            .outbox_records
            .with_label_values(&["telemetry"])
            .get(),
        3
    );
    assert!(metrics.outbox_oldest_record_age_seconds.get() > 0.0);
    ob.ack(Stream::Telemetry, 1, 3).unwrap();
    assert_eq!(
        metrics
            .outbox_records
            .with_label_values(&["telemetry"])
            .get(),
        0
    );
    assert_eq!(
        metrics
            .published_records_total
            .with_label_values(&["telemetry"])
            .get(),
        3
    );
    assert_eq!(metrics.outbox_oldest_record_age_seconds.get(), 0.0);
    let stats = ob.stats();
    assert_eq!(stats.total_records(), 0);
    assert_eq!(stats.streams[0].bytes, 0);
}

#[tokio::test]
async fn too_large_records_are_refused_without_using_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OutboxOptions {
        max_record_bytes: 120,
        ..OutboxOptions::default()
    };
    let (ob, _) = Outbox::open(dir.path(), opts, Metrics::new("t")).unwrap();
    let big = RecordBody::Result(CommandResult {
        ts: SystemTime::now(),
        id: "x".repeat(200),
        status: CommandStatus::Failed,
        reason: String::new(),
    });
    let err = ob.append(&big).unwrap_err();
    assert!(matches!(err, OutboxError::TooLarge { .. }) && !err.is_transient());
    assert_eq!(ob.append(&result("ok")).unwrap(), 1);
}

#[tokio::test]
async fn flush_raises_the_seq_marks_ceiling_before_seqs_cross_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path());
    ob.append(&telemetry(0)).unwrap();
    ob.flush().await.unwrap();
    let m = marks::read(dir.path()).unwrap().unwrap();
    assert_eq!(m.ceiling, [1 + marks::BLOCK, 0, 0]);
    // Within the block, the file is not rewritten.
    ob.append(&telemetry(1)).unwrap();
    ob.flush().await.unwrap();
    assert_eq!(marks::read(dir.path()).unwrap().unwrap(), m);
}

#[tokio::test]
async fn a_lost_store_resumes_numbering_above_the_marks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ob, _) = open(dir.path());
        for i in 0..3 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.append(&result("a")).unwrap();
        ob.flush().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("outbox")).unwrap();
    let metrics = Metrics::new("t");
    let (ob, rec) = Outbox::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
    let rec = rec.expect("a missing store next to seq-marks is reported");
    assert_eq!(rec.moved_to, None);
    assert_eq!(rec.next_seq[0], (Stream::Telemetry, 3 + marks::BLOCK + 1));
    assert_eq!(
        metrics
            .store_recoveries_total
            .with_label_values(&["missing"])
            .get(),
        1
    );
    assert_eq!(ob.append(&telemetry(5)).unwrap(), 3 + marks::BLOCK + 1);
    assert_eq!(ob.append(&result("b")).unwrap(), 1 + marks::BLOCK + 1);
    assert_eq!(
        ob.append(&RecordBody::Event(crate::record::Event {
            ts: SystemTime::now(),
            kind: crate::event::EventKind::parse("k").unwrap(),
            severity: Severity::Info,
            source: "cabinetd".into(),
            message: "m".into(),
            data: serde_json::json!({}),
        }))
        .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_corrupt_store_is_moved_aside_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("t");
    {
        let (ob, _) = open(dir.path());
        for i in 0..4 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().await.unwrap();
    }
    // Overwrite every file of the store with garbage.
    let db_dir = dir.path().join("outbox");
    for entry in walk(&db_dir) {
        let len = std::fs::metadata(&entry).unwrap().len().max(64) as usize;
        std::fs::write(&entry, vec![0xA5u8; len]).unwrap();
    }
    let (ob, rec) = Outbox::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
    let rec = rec.expect("recovery reported");
    let moved_to = rec.moved_to.expect("moved aside");
    assert!(moved_to.exists(), "corrupt store kept at {moved_to:?}");
    assert!(moved_to
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("outbox.corrupt-"));
    assert_eq!(rec.next_seq[0], (Stream::Telemetry, 4 + marks::BLOCK + 1));
    assert_eq!(ob.append(&telemetry(9)).unwrap(), 4 + marks::BLOCK + 1);
    assert_eq!(
        metrics
            .store_recoveries_total
            .with_label_values(&["corrupt"])
            .get(),
        1
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn eviction_drops_oldest_telemetry_first_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("t");
    let opts = OutboxOptions {
        // Live budget = max_bytes / 3 ≈ 30 records of ~130 bytes.
        max_bytes: 12_000,
        ..OutboxOptions::default()
    };
    let (ob, _) = Outbox::open(dir.path(), opts, metrics.clone()).unwrap();
    ob.append(&result("r1")).unwrap();
    for i in 0..100 {
        ob.append(&telemetry(i)).unwrap();
    }
    ob.flush().await.unwrap();
    let evicted = ob.enforce_budget().unwrap();
    assert!(evicted > 0);
    let stats = ob.stats();
    // Everything but the eviction event itself fits the live budget.
    let live = stats.streams[0].bytes + stats.streams[2].bytes;
    assert!(live <= 12_000 / 3, "live bytes {live}");
    // The result survived, the oldest telemetry went, the newest is still there.
    assert_eq!(stats.streams[2].records, 1);
    let first = ob.first_stored(Stream::Telemetry).unwrap().unwrap();
    assert_eq!(first, evicted + 1);
    assert_eq!(
        metrics
            .evicted_records_total
            .with_label_values(&["telemetry"])
            .get(),
        evicted
    );
    // An outbox_evicted event names the range.
    ob.flush().await.unwrap();
    let ev = ob
        .read_batch(Stream::Events, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(ev.records().next().unwrap()).unwrap();
    assert_eq!(v["kind"], "outbox_evicted");
    assert_eq!(v["data"]["stream"], "telemetry");
    assert_eq!(v["data"]["first_seq"], 1);
    assert_eq!(v["data"]["last_seq"], evicted);
}

#[tokio::test]
async fn events_and_results_are_evicted_only_when_no_telemetry_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OutboxOptions {
        max_bytes: 3_000,
        ..OutboxOptions::default()
    };
    let (ob, _) = Outbox::open(dir.path(), opts, Metrics::new("t")).unwrap();
    for i in 0..5 {
        ob.append(&telemetry(i)).unwrap();
    }
    for i in 0..30 {
        ob.append(&result(&format!("cmd-{i}"))).unwrap();
    }
    ob.enforce_budget().unwrap();
    let stats = ob.stats();
    assert_eq!(stats.streams[0].records, 0, "all telemetry evicted first");
    assert!(stats.streams[2].records < 30, "then the oldest results");
    assert!(ob.first_stored(Stream::Results).unwrap().unwrap() > 1);
}

#[tokio::test]
async fn flusher_makes_records_durable_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path());
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(ob.clone().run_flusher(Duration::from_millis(10), stop_rx));
    let mut durable = ob.subscribe_durable();
    ob.append(&telemetry(0)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while ob.durable_seq(Stream::Telemetry) < 1 {
            durable.changed().await.unwrap();
        }
    })
    .await
    .expect("flushed within 5 s");
    let beat = ob.flusher_heartbeat().expect("a flush round completed");
    assert!(beat.elapsed() < Duration::from_secs(5));
    ob.append(&telemetry(1)).unwrap();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ob.durable_seq(Stream::Telemetry),
        2,
        "final flush at shutdown"
    );
}

#[tokio::test]
async fn a_store_held_by_another_handle_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path());
    ob.append(&telemetry(0)).unwrap();
    ob.flush().await.unwrap();
    let err = match Outbox::open(dir.path(), OutboxOptions::default(), Metrics::new("t")) {
        Err(e) => e,
        Ok(_) => panic!("a second handle on the same store must be refused"),
    };
    assert!(err.is_transient(), "{err}");
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|e| e.starts_with("outbox.corrupt-")),
        "{entries:?}"
    );
    assert_eq!(ob.stats().streams[0].records, 1);
}

/// Regression: the segment size follows the budget for new stores only. Reopening a store after
/// `storage.max_bytes` changed once made sled refuse it ("cannot change the io buffer size"), and
/// the store was moved aside as if corrupt, its records no longer sent.
#[tokio::test]
async fn a_budget_change_keeps_the_store_and_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = OutboxOptions {
        max_bytes: 256 * 1024 * 1024,
        ..OutboxOptions::default()
    };
    {
        let (ob, rec) = Outbox::open(dir.path(), big, Metrics::new("t")).unwrap();
        assert!(rec.is_none());
        for i in 0..3 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().await.unwrap();
    }
    let small = OutboxOptions {
        max_bytes: 2 * 1024 * 1024,
        ..OutboxOptions::default()
    };
    let (ob, rec) = Outbox::open(dir.path(), small, Metrics::new("t")).unwrap();
    assert!(rec.is_none(), "store kept, not recovered: {rec:?}");
    assert_eq!(ob.stats().total_records(), 3);
    assert_eq!(ob.append(&telemetry(9)).unwrap(), 4);
}

#[test]
fn new_stores_get_a_segment_size_that_fits_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(segment_size_for(dir.path(), 2 * 1024 * 1024), 64 * 1024);
    assert_eq!(segment_size_for(dir.path(), 256 * 1024 * 1024), 512 * 1024);
    assert_eq!(segment_size_for(dir.path(), 100 * 1024), 32 * 1024);
}
