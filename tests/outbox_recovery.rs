//! The outbox store across format changes and lost state:
//! - a store written in layout 1 (one sled key per record) by a small writer kept here opens in
//!   layout 2 and drains, numbering going on;
//! - issue 13 item 13: a lost store next to a lost or unreadable `seq-marks` is announced and
//!   never reuses a seq; a non-UTF-8 `seq-marks` next to an intact store is announced and
//!   rewritten instead of stopping the daemon.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cabinetd::metrics::Metrics;
use cabinetd::outbox::store::wall_clock_seq_base;
use cabinetd::outbox::{marks, OutboxOptions, Store};
use cabinetd::record::{CommandResult, CommandStatus, Quality, RecordBody, Stream, Telemetry};

fn telemetry(i: u64) -> RecordBody {
    RecordBody::Telemetry(Telemetry {
        ts: UNIX_EPOCH + Duration::from_millis(1_795_680_000_000 + i),
        point: format!("meter-{}/p{}", i % 7, i % 100).into(),
        value: serde_json::json!(i),
        quality: Quality::Good,
    })
}

fn open(dir: &Path) -> (Store, Option<cabinetd::outbox::Recovery>) {
    Store::open(dir, OutboxOptions::default(), Metrics::new("t")).unwrap()
}

/// The layout-1 writer, as the v1 daemon stored records: tree per stream named after it, key =
/// seq (BE u64), value = `[1][ts_ms BE u64][record JSON with seq]`, meta `hwm/<stream>` and
/// `created`, plus the seq-marks file beside the database.
fn write_v1_store(dir: &Path, telemetry_records: u64, acked_upto: u64) {
    let db = sled::Config::new()
        .path(dir.join("outbox"))
        .segment_size(512 * 1024)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("created", &1u64.to_be_bytes()).unwrap();
    let tree = db.open_tree("telemetry").unwrap();
    for seq in 1..=telemetry_records {
        let body = telemetry(seq);
        let mut v = vec![1u8];
        v.extend_from_slice(&(1_795_680_000_000 + seq).to_be_bytes());
        v.extend_from_slice(&body.to_json_with_seq(seq));
        tree.insert(seq.to_be_bytes(), v).unwrap();
    }
    // Acknowledged records were deleted one key at a time.
    for seq in 1..=acked_upto {
        tree.remove(seq.to_be_bytes()).unwrap();
    }
    let results = db.open_tree("results").unwrap();
    let r = RecordBody::Result(CommandResult {
        ts: UNIX_EPOCH + Duration::from_millis(1_795_680_000_000),
        id: "cmd-1".into(),
        status: CommandStatus::Succeeded,
        reason: String::new(),
    });
    let mut v = vec![1u8];
    v.extend_from_slice(&1_795_680_000_000u64.to_be_bytes());
    v.extend_from_slice(&r.to_json_with_seq(4));
    results.insert(4u64.to_be_bytes(), v).unwrap();
    meta.insert("hwm/telemetry", &telemetry_records.to_be_bytes())
        .unwrap();
    meta.insert("hwm/results", &4u64.to_be_bytes()).unwrap();
    db.flush().unwrap();
    std::fs::write(
        marks::path(dir),
        format!(
            "cabinetd-seq-marks 1\ntelemetry {}\nevents 0\nresults 10004\n",
            telemetry_records + 10_000
        ),
    )
    .unwrap();
}

fn drain(store: &mut Store, stream: Stream) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(b) = store
        .read_batch(stream, 1, u64::MAX, 64 * 1024, usize::MAX)
        .unwrap()
    {
        for r in b.records() {
            out.push(serde_json::from_slice(r).unwrap());
        }
        store.ack(stream, b.first_seq, b.last_seq);
    }
    out
}

#[test]
fn a_layout_1_store_opens_as_blocks_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    write_v1_store(dir.path(), 2500, 100);
    let (mut store, recovery) = open(dir.path());
    assert!(recovery.is_none(), "{recovery:?}");
    let stats = store.stats();
    assert_eq!(stats.streams[0].records, 2400);
    assert!(stats.streams[0].blocks >= 2, "several blocks: {stats:?}");
    assert_eq!(store.first_stored(Stream::Telemetry), Some(101));
    let got = drain(&mut store, Stream::Telemetry);
    let seqs: Vec<u64> = got.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (101..=2500).collect::<Vec<_>>());
    assert_eq!(got[0]["point"], "meter-3/p1");
    assert_eq!(got[0]["value"], 101);
    let results = drain(&mut store, Stream::Results);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["id"], "cmd-1");
    // Numbering goes on where layout 1 stopped.
    assert_eq!(store.append(&telemetry(0)).unwrap(), 2501);
    store.flush().unwrap();
    drop(store);
    let (store, recovery) = open(dir.path());
    assert!(recovery.is_none());
    assert_eq!(store.stats().total_records(), 1);
    assert_eq!(store.durable_seq(Stream::Telemetry), 2501);
}

fn fill(dir: &Path, n: u64) {
    let (mut store, _) = open(dir);
    for i in 0..n {
        store.append(&telemetry(i)).unwrap();
    }
    store.flush().unwrap();
}

fn zero_fill(p: &Path) {
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            zero_fill(&path);
        } else {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0u8; len]).unwrap();
        }
    }
}

/// Regression (issue 13 item 13): with the database zero-filled and `seq-marks` deleted or
/// emptied, numbering restarted at 1 without `store_recovered` (4,186 seqs reused).
#[test]
fn a_lost_store_and_lost_marks_jump_numbering_past_the_wall_clock_and_are_announced() {
    for marks_fate in ["deleted", "emptied", "not utf-8"] {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 4186);
        zero_fill(&dir.path().join("outbox"));
        match marks_fate {
            "deleted" => std::fs::remove_file(marks::path(dir.path())).unwrap(),
            "emptied" => std::fs::write(marks::path(dir.path()), b"").unwrap(),
            _ => std::fs::write(marks::path(dir.path()), b"\xff\xfe\x00\x01").unwrap(),
        }
        let before = wall_clock_seq_base(SystemTime::now());
        let (mut store, recovery) = open(dir.path());
        let recovery = recovery.unwrap_or_else(|| panic!("{marks_fate}: recovery announced"));
        let seq = store.append(&telemetry(0)).unwrap();
        assert!(
            seq > before,
            "{marks_fate}: seq {seq} above the wall-clock base {before}"
        );
        assert!(seq < 1 << 53, "{marks_fate}: exact in a JSON number");
        assert_eq!(recovery.next_seq[0], (Stream::Telemetry, seq));
        // The marks now cover the new numbering.
        match marks::read(dir.path()) {
            marks::MarksFile::Valid(m) => assert!(m.ceiling[0] >= seq, "{marks_fate}"),
            other => panic!("{marks_fate}: {other:?}"),
        }
    }
}

/// A store deleted by hand next to other state (here a state file) is a recovery too.
#[test]
fn a_missing_store_next_to_other_state_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("desired-config.json"), b"{}").unwrap();
    let (_, recovery) = open(dir.path());
    let recovery = recovery.expect("announced");
    assert!(
        recovery.next_seq[0].1
            > wall_clock_seq_base(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    // A first start in an empty directory is not a recovery.
    let fresh = tempfile::tempdir().unwrap();
    let (mut store, recovery) = open(fresh.path());
    assert!(recovery.is_none());
    assert_eq!(store.append(&telemetry(0)).unwrap(), 1);
}

/// Regression (issue 13 item 13): a non-UTF-8 `seq-marks` stopped the daemon (exit 1) with an
/// error naming the directory. Next to an intact store it is announced and rewritten.
#[test]
fn a_non_utf8_seq_marks_next_to_an_intact_store_is_rewritten_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10);
    std::fs::write(marks::path(dir.path()), b"\xc3\x28 garbage \xff").unwrap();
    let (mut store, recovery) = open(dir.path());
    let recovery = recovery.expect("announced");
    assert!(recovery.reason.contains("seq-marks"), "{}", recovery.reason);
    assert_eq!(recovery.moved_to, None);
    // Numbering continues: the store is intact.
    assert_eq!(store.append(&telemetry(0)).unwrap(), 11);
    assert!(matches!(marks::read(dir.path()), marks::MarksFile::Valid(m) if m.ceiling[0] >= 11));
}
