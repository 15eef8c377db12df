use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::store::segment_size_for;
use super::*;
use crate::metrics::Metrics;
use crate::record::{CommandResult, CommandStatus, Quality, RecordBody, Severity, Telemetry};

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

fn open(dir: &Path) -> (Store, Option<Recovery>) {
    Store::open(dir, OutboxOptions::default(), Metrics::new("test")).unwrap()
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

#[test]
fn seqs_start_at_one_per_stream_and_only_durable_records_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, rec) = open(dir.path());
    assert!(rec.is_none());
    assert_eq!(ob.append(&telemetry(0)).unwrap(), 1);
    assert_eq!(ob.append(&telemetry(1)).unwrap(), 2);
    assert_eq!(ob.append(&result("c1")).unwrap(), 1);
    assert!(ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .is_none());
    ob.flush().unwrap();
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!((b.first_seq, b.last_seq), (1, 2));
    assert_eq!(seqs(&b), vec![1, 2]);
    assert_eq!(ob.durable_seq(Stream::Results), 1);
    assert_eq!(ob.durable_seq(Stream::Events), 0);
}

#[test]
fn read_batch_is_bounded_by_bytes_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, _) = open(dir.path());
    for i in 0..10 {
        ob.append(&telemetry(i)).unwrap();
    }
    ob.flush().unwrap();
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

#[test]
fn seq_continues_across_reopen_even_after_everything_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        for i in 0..5 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().unwrap();
        assert_eq!(ob.ack(Stream::Telemetry, 1, 5), 5);
        assert_eq!(ob.stats().streams[0].records, 0);
        ob.flush().unwrap();
    }
    let (mut ob, rec) = open(dir.path());
    assert!(rec.is_none());
    assert_eq!(ob.first_stored(Stream::Telemetry), None);
    assert_eq!(ob.append(&telemetry(9)).unwrap(), 6);
}

#[test]
fn unacked_records_survive_reopen_and_ack_deletes_only_its_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        for i in 0..6 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().unwrap();
        assert_eq!(ob.ack(Stream::Telemetry, 1, 2), 2);
        // Acking again (a duplicate PUBACK after replay) removes nothing and is harmless.
        assert_eq!(ob.ack(Stream::Telemetry, 1, 2), 0);
        ob.flush().unwrap();
    }
    let (mut ob, _) = open(dir.path());
    let st = &ob.stats().streams[0];
    assert_eq!((st.records, st.last_seq, st.durable_seq), (4, 6, 6));
    assert_eq!(ob.first_stored(Stream::Telemetry), Some(3));
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&b), vec![3, 4, 5, 6]);
    assert_eq!(ob.append(&telemetry(7)).unwrap(), 7);
}

#[test]
fn counters_and_metrics_follow_appends_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("test");
    let (mut ob, _) = Store::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
    for i in 0..3 {
        ob.append(&telemetry(i)).unwrap();
    }
    ob.flush().unwrap();
    assert_eq!(
        metrics
            .outbox_records
            .with_label_values(&["telemetry"])
            .get(),
        3
    );
    assert!(metrics.outbox_oldest_record_age_seconds.get() > 0.0);
    ob.ack(Stream::Telemetry, 1, 3);
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

#[test]
fn too_large_records_are_refused_without_using_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OutboxOptions {
        max_record_bytes: 120,
        ..OutboxOptions::default()
    };
    let (mut ob, _) = Store::open(dir.path(), opts, Metrics::new("t")).unwrap();
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

#[test]
fn flush_raises_the_seq_marks_ceiling_before_seqs_cross_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, _) = open(dir.path());
    ob.append(&telemetry(0)).unwrap();
    ob.flush().unwrap();
    let m = match marks::read(dir.path()) {
        marks::MarksFile::Valid(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.ceiling, [1 + marks::BLOCK, 0, 0]);
    // Within the block, the file is not rewritten.
    ob.append(&telemetry(1)).unwrap();
    ob.flush().unwrap();
    assert_eq!(
        match marks::read(dir.path()) {
            marks::MarksFile::Valid(m) => m,
            other => panic!("{other:?}"),
        },
        m
    );
}

#[test]
fn a_lost_store_resumes_numbering_above_the_marks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        for i in 0..3 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.append(&result("a")).unwrap();
        ob.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("outbox")).unwrap();
    let metrics = Metrics::new("t");
    let (mut ob, rec) = Store::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
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

#[test]
fn a_corrupt_store_is_moved_aside_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("t");
    {
        let (mut ob, _) = open(dir.path());
        for i in 0..4 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().unwrap();
    }
    // Overwrite every file of the store with garbage.
    let db_dir = dir.path().join("outbox");
    for entry in walk(&db_dir) {
        let len = std::fs::metadata(&entry).unwrap().len().max(64) as usize;
        std::fs::write(&entry, vec![0xA5u8; len]).unwrap();
    }
    let (mut ob, rec) = Store::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
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

/// Telemetry records of the benchmark's shape, enough for several sealed blocks.
fn fill_blocks(ob: &mut Store, n: u64) {
    for i in 0..n {
        ob.append(&telemetry(i)).unwrap();
    }
}

#[test]
fn eviction_drops_oldest_telemetry_blocks_first_and_names_the_exact_range() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("t");
    let opts = OutboxOptions {
        max_bytes: 20_000,
        ..OutboxOptions::default()
    };
    let (mut ob, _) = Store::open(dir.path(), opts, metrics.clone()).unwrap();
    ob.append(&result("r1")).unwrap();
    fill_blocks(&mut ob, 3000);
    ob.flush().unwrap();
    let blocks_before = ob.stats().streams[0].blocks;
    assert!(blocks_before >= 5, "{blocks_before} blocks");
    // Acknowledge the first records: the eviction must not name them.
    assert_eq!(ob.ack(Stream::Telemetry, 1, 10), 10);
    let evictions = ob.enforce_budget();
    assert!(!evictions.is_empty());
    let e = evictions[0];
    assert_eq!((e.stream, e.first_seq), (Stream::Telemetry, 11));
    assert_eq!(e.records, e.last_seq - 10);
    let stats = ob.stats();
    assert!(stats.streams[0].blocks < blocks_before);
    // The result survived, the oldest telemetry went, the newest is still there.
    assert_eq!(stats.streams[2].records, 1);
    assert_eq!(ob.first_stored(Stream::Telemetry), Some(e.last_seq + 1));
    assert_eq!(
        metrics
            .evicted_records_total
            .with_label_values(&["telemetry"])
            .get(),
        e.records
    );
    // An outbox_evicted event names the range.
    ob.flush().unwrap();
    let ev = ob
        .read_batch(Stream::Events, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(ev.records().next().unwrap()).unwrap();
    assert_eq!(v["kind"], "outbox_evicted");
    assert_eq!(v["data"]["stream"], "telemetry");
    assert_eq!(v["data"]["first_seq"], 11);
    assert_eq!(v["data"]["last_seq"], e.last_seq);
}

#[test]
fn events_and_results_are_evicted_only_when_no_telemetry_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OutboxOptions {
        max_bytes: 3_000,
        ..OutboxOptions::default()
    };
    let (mut ob, _) = Store::open(dir.path(), opts, Metrics::new("t")).unwrap();
    fill_blocks(&mut ob, 5);
    for i in 0..3000 {
        ob.append(&result(&format!("cmd-{i}"))).unwrap();
    }
    ob.flush().unwrap();
    ob.enforce_budget();
    let stats = ob.stats();
    assert_eq!(stats.streams[0].records, 0, "all telemetry evicted first");
    assert!(stats.streams[2].records < 3000, "then the oldest results");
    assert!(ob.first_stored(Stream::Results).unwrap() > 1);
}

#[test]
fn partial_acks_survive_a_clean_restart_and_whole_blocks_go() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        fill_blocks(&mut ob, 1000);
        ob.flush().unwrap();
        // Out of order: a later range first, then the start of the first block.
        assert_eq!(ob.ack(Stream::Telemetry, 500, 520), 21);
        assert_eq!(ob.ack(Stream::Telemetry, 1, 5), 5);
        ob.flush().unwrap();
    }
    let (mut ob, _) = open(dir.path());
    assert_eq!(ob.stats().streams[0].records, 1000 - 26);
    assert_eq!(ob.first_stored(Stream::Telemetry), Some(6));
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
        .unwrap();
    let got = seqs(&b);
    assert_eq!(got.len(), 1000 - 26);
    assert!(!got.contains(&3) && !got.contains(&510) && got.contains(&521));
    // Acknowledging everything deletes every block.
    assert_eq!(ob.ack(Stream::Telemetry, 1, 1000), 1000 - 26);
    assert_eq!(ob.stats().streams[0].blocks, 0);
    ob.flush().unwrap();
    drop(ob);
    let (ob, _) = open(dir.path());
    assert_eq!(ob.stats().streams[0].records, 0);
}

#[tokio::test]
async fn the_outbox_thread_flushes_by_itself_and_closes_with_a_final_flush() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OutboxOptions {
        flush_interval: Duration::from_millis(10),
        ..OutboxOptions::default()
    };
    let (ob, _) = Outbox::open(dir.path(), opts.clone(), Metrics::new("t")).unwrap();
    let mut durable = ob.subscribe_durable();
    assert_eq!(ob.append(telemetry(0)).await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            durable.changed().await.unwrap();
            let (_, d) = ob.session_start().await.unwrap();
            if d[0] >= 1 {
                break;
            }
        }
    })
    .await
    .expect("flushed within 5 s");
    let beat = ob.flusher_heartbeat().expect("a flush round completed");
    assert!(beat.elapsed() < Duration::from_secs(5));
    let b = ob
        .read_batch(Stream::Telemetry, 1, u64::MAX, 1 << 20, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&b), vec![1]);
    ob.push(vec![telemetry(1), telemetry(2)]).await.unwrap();
    ob.close().await.unwrap();
    assert!(matches!(ob.flush().await, Err(OutboxError::Stopped)));
    let (store, _) = Store::open(dir.path(), opts, Metrics::new("t")).unwrap();
    assert_eq!(
        store.durable_seq(Stream::Telemetry),
        3,
        "final flush at close"
    );
}

#[test]
fn a_store_held_by_another_handle_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, _) = open(dir.path());
    ob.append(&telemetry(0)).unwrap();
    ob.flush().unwrap();
    let err = match Store::open(dir.path(), OutboxOptions::default(), Metrics::new("t")) {
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
#[test]
fn a_budget_change_keeps_the_store_and_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = OutboxOptions {
        max_bytes: 256 * 1024 * 1024,
        ..OutboxOptions::default()
    };
    {
        let (mut ob, rec) = Store::open(dir.path(), big, Metrics::new("t")).unwrap();
        assert!(rec.is_none());
        for i in 0..3 {
            ob.append(&telemetry(i)).unwrap();
        }
        ob.flush().unwrap();
    }
    let small = OutboxOptions {
        max_bytes: 2 * 1024 * 1024,
        ..OutboxOptions::default()
    };
    let (mut ob, rec) = Store::open(dir.path(), small, Metrics::new("t")).unwrap();
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

/// Every stored record of a stream, by seq, with its JSON `value` (telemetry) or `kind` (events).
fn all_records(ob: &mut Store, stream: Stream) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut from = 1;
    while let Some(b) = ob
        .read_batch(stream, from, u64::MAX, 1 << 20, usize::MAX)
        .unwrap()
    {
        out.extend(
            b.records()
                .map(|r| serde_json::from_slice::<serde_json::Value>(r).unwrap()),
        );
        from = b.last_seq + 1;
    }
    out
}

#[test]
fn the_open_block_is_written_as_chunks_and_survives_a_crash_at_any_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        // Three group commits of a few records each: three chunks, no sealed block yet.
        for commit in 0..3 {
            for i in 0..3 {
                ob.append(&telemetry(commit * 3 + i)).unwrap();
            }
            ob.flush().unwrap();
        }
        // Appended after the last commit: lost by the crash below, never published.
        ob.append(&telemetry(99)).unwrap();
        // A crash: no flush, no clean close.
        drop(ob);
    }
    let (mut ob, _) = open(dir.path());
    let recs = all_records(&mut ob, Stream::Telemetry);
    let values: Vec<u64> = recs.iter().map(|r| r["value"].as_u64().unwrap()).collect();
    assert_eq!(values, (0..9).collect::<Vec<_>>());
    assert_eq!(ob.append(&telemetry(9)).unwrap(), 10, "numbering goes on");
    ob.flush().unwrap();
    // Enough records to seal blocks; the chunks of a sealed block go with the same flush.
    fill_blocks(&mut ob, 2000);
    ob.flush().unwrap();
    drop(ob);
    let (mut ob, _) = open(dir.path());
    let recs = all_records(&mut ob, Stream::Telemetry);
    assert_eq!(recs.len(), 2010);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"].as_u64().unwrap(), i as u64 + 1);
    }
    assert!(ob.stats().streams[0].blocks >= 2);
}

#[test]
fn a_nearly_full_filesystem_numbers_telemetry_without_storing_it_and_announces_the_hole() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("t");
    let (mut ob, _) = Store::open(dir.path(), OutboxOptions::default(), metrics.clone()).unwrap();
    let reserve = ob.reserve();
    fill_blocks(&mut ob, 10);
    ob.flush().unwrap();
    // Less than the reserve is free: the next flush sees it.
    ob.set_free_bytes_for_test(Some(reserve / 2));
    ob.append(&telemetry(10)).unwrap();
    ob.flush().unwrap();
    assert_eq!(ob.pressure(), store::Pressure::Hard);
    for i in 11..20 {
        assert_eq!(
            ob.append(&telemetry(i)).unwrap(),
            i + 1,
            "seq stays contiguous"
        );
    }
    // Events and results still use the reserve.
    assert_eq!(ob.append(&result("c1")).unwrap(), 1);
    // storage_full is raised; nothing is evicted (deleting costs writes before it gives room
    // back) and the hole is announced once it closes (or after a minute).
    assert!(ob.enforce_budget().is_empty());
    assert!(ob.storage_full());
    // Room again: telemetry is stored again after the hole, which is announced.
    ob.set_free_bytes_for_test(Some(100 * reserve));
    ob.flush().unwrap();
    assert_eq!(ob.pressure(), store::Pressure::Normal);
    assert_eq!(ob.append(&telemetry(20)).unwrap(), 21);
    let evictions = ob.enforce_budget();
    assert_eq!(
        evictions,
        [Eviction {
            stream: Stream::Telemetry,
            first_seq: 12,
            last_seq: 20,
            records: 9
        }]
    );
    assert!(!ob.storage_full());
    ob.flush().unwrap();
    let stored: Vec<u64> = all_records(&mut ob, Stream::Telemetry)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, [(1..=11).collect::<Vec<_>>(), vec![21]].concat());
    let events = all_records(&mut ob, Stream::Events);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["storage_full", "outbox_evicted"]);
    assert_eq!(events[1]["data"]["first_seq"], 12);
    assert_eq!(events[1]["data"]["last_seq"], 20);
    assert_eq!(events[1]["data"]["reason"], "storage_full");
    assert_eq!(all_records(&mut ob, Stream::Results).len(), 1);
    assert_eq!(
        metrics
            .evicted_records_total
            .with_label_values(&["telemetry"])
            .get(),
        9
    );
    // The hole is remembered across a restart: its seqs are never reused.
    drop(ob);
    let (mut ob, _) = open(dir.path());
    assert_eq!(ob.append(&telemetry(21)).unwrap(), 22);
}

#[test]
fn a_full_filesystem_writes_nothing_and_keeps_acknowledgements_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, _) = open(dir.path());
    fill_blocks(&mut ob, 1000);
    ob.flush().unwrap();
    let reserve = ob.reserve();
    ob.set_free_bytes_for_test(Some(reserve / 8));
    ob.append(&result("held")).unwrap();
    assert_eq!(ob.ack(Stream::Telemetry, 1, 1000), 1000);
    assert!(!ob.flush().unwrap());
    assert_eq!(ob.pressure(), store::Pressure::Floor);
    // Nothing written, nothing forgotten: the result waits, the acknowledged records are not
    // read (sent) again.
    assert_eq!(ob.durable_seq(Stream::Results), 0);
    assert_eq!(ob.pending_records(), 1);
    assert!(all_records(&mut ob, Stream::Telemetry).is_empty());
    // No budget eviction either: it would cost writes.
    assert!(ob.enforce_budget().is_empty());
    // Room again: everything goes in one flush.
    ob.set_free_bytes_for_test(None);
    assert!(ob.flush().unwrap());
    assert_eq!(ob.durable_seq(Stream::Results), 1);
    drop(ob);
    let (ob, _) = open(dir.path());
    assert_eq!(
        ob.stats().streams[0].records,
        0,
        "the deletions were written"
    );
    assert_eq!(ob.stats().streams[2].records, 1);
}

#[test]
fn a_flush_refused_by_the_disk_forgets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, _) = open(dir.path());
    ob.append(&telemetry(0)).unwrap();
    ob.fail_flushes_for_test(2);
    assert!(ob.flush().unwrap_err().is_transient());
    assert!(ob.flush().is_err());
    assert_eq!(ob.durable_seq(Stream::Telemetry), 0);
    assert!(ob.flush().unwrap());
    assert_eq!(ob.durable_seq(Stream::Telemetry), 1);
    assert!(ob.is_dead().is_none());
}

#[test]
fn a_hole_not_yet_announced_is_announced_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = open(dir.path());
        let reserve = ob.reserve();
        fill_blocks(&mut ob, 3);
        ob.set_free_bytes_for_test(Some(reserve / 2));
        ob.flush().unwrap();
        for i in 3..8 {
            ob.append(&telemetry(i)).unwrap();
        }
        // The hwm covering seqs 4..=8 is written; the announcement waits for room.
        ob.flush().unwrap();
        assert!(ob.enforce_budget().is_empty());
    }
    let (mut ob, _) = open(dir.path());
    assert_eq!(
        ob.enforce_budget(),
        [Eviction {
            stream: Stream::Telemetry,
            first_seq: 4,
            last_seq: 8,
            records: 5
        }]
    );
    assert_eq!(ob.append(&telemetry(8)).unwrap(), 9);
    ob.flush().unwrap();
    drop(ob);
    let (mut ob, _) = open(dir.path());
    assert!(ob.enforce_budget().is_empty(), "announced once");
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_holds_records_and_opens_later() {
    let dir = tempfile::tempdir().unwrap();
    // The storage path is a file: nothing can be created there (as on a read-only or full
    // filesystem).
    let path = dir.path().join("state");
    std::fs::write(&path, b"not a directory").unwrap();
    let opts = OutboxOptions {
        flush_interval: Duration::from_millis(10),
        retry_open: Duration::from_millis(50),
        ..OutboxOptions::default()
    };
    let metrics = Metrics::new("t");
    let (ob, recovery) = Outbox::open(&path, opts.clone(), metrics.clone()).unwrap();
    assert!(recovery.is_none());
    let mut durable = ob.subscribe_durable();
    ob.push(vec![telemetry(0), result("c1"), telemetry(1)])
        .await
        .unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = ob.stats();
            if s.held_records == 3 {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("records held");
    assert!(!stats.available && !ob.ready());
    assert!(stats.error.unwrap().contains("no store"));
    assert!(matches!(
        ob.session_start().await,
        Err(OutboxError::Unavailable(_))
    ));
    assert!(
        ob.flusher_heartbeat().is_some(),
        "the thread shows it is alive"
    );
    // The way is free again: the store opens, the held records are numbered and stored.
    std::fs::remove_file(&path).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            durable.changed().await.unwrap();
            if let Ok((_, d)) = ob.session_start().await {
                if d[0] == 2 && d[1] >= 1 {
                    break;
                }
            }
        }
    })
    .await
    .expect("opened and flushed");
    assert!(ob.ready());
    let ev = ob
        .read_batch(Stream::Events, 1, u64::MAX, 1 << 20, 10)
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(ev.records().next().unwrap()).unwrap();
    assert_eq!(v["kind"], "outbox_unavailable");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["data"]["kept"], 3);
    let r = ob
        .read_batch(Stream::Results, 1, u64::MAX, 1 << 20, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&r), vec![1]);
    ob.close().await.unwrap();
}
