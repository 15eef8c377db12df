//! Model-based property test of the outbox store (layout 2: blocks, the open block as chunks)
//! with a simulated uplink: random sequences of append (one record, or hundreds so blocks seal),
//! flush, publish (live or backlog lane, small batches so acks cut blocks), broker ack (in order
//! or the newest first), connection loss, crash (drop without flush) and clean restart, budget
//! checks that evict, a filesystem that fills (its free space set through a test hook: nearly
//! full, full, room again) and flushes the disk refuses (injected), against a real sled store in
//! a temp dir with a small budget.
//!
//! Invariants checked after every step:
//! - seq is contiguous per stream: an append returns the previous seq + 1 (after a crash, numbering
//!   resumes somewhere between the last flushed and the last appended seq, never lower);
//! - delivered ∪ pending ∪ evicted ⊇ everything durable: every seq ever flushed is acknowledged,
//!   still readable from the outbox, or named by an eviction (budget, or not stored because the
//!   filesystem was full — announced, or waiting for room to be announced);
//! - an eviction names only records that are gone;
//! - nothing is published above the durable watermark, batches are ascending, content matches;
//! - the durable watermark never goes back, and a failed flush forgets nothing;
//! - after a clean restart nothing acknowledged is readable (delivered) again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use cabinetd::metrics::Metrics;
use cabinetd::outbox::cursor::Lane;
use cabinetd::outbox::{OutboxOptions, SendCursors, Store, STREAMS};
use cabinetd::record::{
    CommandResult, CommandStatus, Event, Quality, RecordBody, Severity, Stream, Telemetry,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    AppendMany(usize, u64),
    AckNewest,
    Flush,
    Publish(usize, bool),
    Ack,
    Lose,
    Crash,
    Restart,
    /// Budget check (evicts when the budget in force is passed).
    Budget,
    /// The filesystem's free space: 0 as it is, 1 plenty, 2 short (the budget shrinks),
    /// 3 nearly full (under the reserve), 4 full (under a quarter of it).
    Space(u8),
    /// The next flush is refused by the disk.
    FailFlush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize).prop_map(Op::Append),
        1 => (0..3usize, 100..500u64).prop_map(|(s, n)| Op::AppendMany(s, n)),
        2 => Just(Op::AckNewest),
        3 => Just(Op::Flush),
        4 => (0..3usize, any::<bool>()).prop_map(|(s, b)| Op::Publish(s, b)),
        4 => Just(Op::Ack),
        1 => Just(Op::Lose),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
        2 => Just(Op::Budget),
        2 => (0..5u8).prop_map(Op::Space),
        1 => Just(Op::FailFlush),
    ]
}

fn body(stream: Stream, id: u64) -> RecordBody {
    let ts = UNIX_EPOCH + Duration::from_millis(1_795_680_000_000 + id);
    match stream {
        Stream::Telemetry => RecordBody::Telemetry(Telemetry {
            ts,
            point: "m/p".into(),
            value: serde_json::json!(id),
            quality: Quality::Good,
        }),
        Stream::Events => RecordBody::Event(Event {
            ts,
            kind: cabinetd::event::EventKind::parse("k").unwrap(),
            severity: Severity::Info,
            source: "cabinetd".into(),
            message: id.to_string(),
            data: serde_json::json!({}),
        }),
        Stream::Results => RecordBody::Result(CommandResult {
            ts,
            id: id.to_string(),
            status: CommandStatus::Succeeded,
            reason: String::new(),
        }),
    }
}

/// The unique id a record was created with; [`STORE_EVENT`] for the store's own events
/// (`outbox_evicted`, `storage_full`).
fn id_of(stream: Stream, r: &serde_json::Value) -> u64 {
    match stream {
        Stream::Telemetry => r["value"].as_u64().unwrap(),
        Stream::Events if r["kind"] != "k" => {
            assert!(
                r["kind"] == "outbox_evicted" || r["kind"] == "storage_full",
                "{r}"
            );
            STORE_EVENT
        }
        Stream::Events => r["message"].as_str().unwrap().parse().unwrap(),
        Stream::Results => r["id"].as_str().unwrap().parse().unwrap(),
    }
}

/// Content id of an event the store appended itself.
const STORE_EVENT: u64 = u64::MAX;

#[derive(Default)]
struct Model {
    /// Last seq appended, per stream.
    appended: [u64; 3],
    /// Last seq covered by a completed flush, per stream.
    flushed: [u64; 3],
    /// Content id per seq still possibly stored.
    content: [BTreeMap<u64, u64>; 3],
    /// Seqs whose message was acknowledged.
    acked: [BTreeSet<u64>; 3],
    /// Seqs named by an eviction.
    evicted: [BTreeSet<u64>; 3],
    next_id: u64,
}

impl Model {
    /// The store appended events of its own (evictions, storage full): take them in.
    fn sync_store_events(&mut self, ob: &Store) {
        let last = ob.stats().streams[1].last_seq;
        for seq in self.appended[1] + 1..=last {
            self.content[1].insert(seq, STORE_EVENT);
        }
        self.appended[1] = self.appended[1].max(last);
    }
}

struct Sim {
    outbox: Option<Store>,
    cursors: Option<SendCursors>,
    in_flight: VecDeque<(Stream, u64, u64)>,
}

impl Sim {
    fn ob(&mut self) -> &mut Store {
        self.outbox.as_mut().expect("outbox open")
    }

    /// Drop the outbox (sled allows one open database per path) and open it again.
    fn reopen(&mut self, dir: &Path) {
        self.in_flight.clear();
        self.cursors = None;
        drop(self.outbox.take());
        self.outbox = Some(open(dir));
    }
}

/// A small budget, so that budget checks evict.
fn open(dir: &Path) -> Store {
    let opts = OutboxOptions {
        max_bytes: 64 * 1024,
        ..OutboxOptions::default()
    };
    Store::open(dir, opts, Metrics::new("model")).unwrap().0
}

/// Every durable seq readable from the outbox, with its content id.
fn stored(outbox: &mut Store, stream: Stream, upto: u64) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let mut from = 1;
    while let Some(b) = outbox
        .read_batch(stream, from, upto, 200_000, usize::MAX)
        .unwrap()
    {
        for r in b.records() {
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            out.insert(v["seq"].as_u64().unwrap(), id_of(stream, &v));
        }
        from = b.last_seq + 1;
    }
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::default();
    let mut sim = Sim {
        outbox: Some(open(dir.path())),
        cursors: None,
        in_flight: VecDeque::new(),
    };
    for op in ops {
        match op {
            Op::Append(i) => {
                let stream = STREAMS[i];
                m.next_id += 1;
                let seq = sim.ob().append(&body(stream, m.next_id)).unwrap();
                prop_assert_eq!(seq, m.appended[i] + 1, "contiguous seq");
                m.appended[i] = seq;
                m.content[i].insert(seq, m.next_id);
            }
            Op::AppendMany(i, n) => {
                let stream = STREAMS[i];
                for _ in 0..n {
                    m.next_id += 1;
                    let seq = sim.ob().append(&body(stream, m.next_id)).unwrap();
                    prop_assert_eq!(seq, m.appended[i] + 1, "contiguous seq");
                    m.appended[i] = seq;
                    m.content[i].insert(seq, m.next_id);
                }
            }
            Op::Flush => {
                let before = STREAMS.map(|st| sim.ob().durable_seq(st));
                let r = sim.ob().flush();
                m.sync_store_events(sim.ob());
                for (i, st) in STREAMS.iter().enumerate() {
                    let d = sim.ob().durable_seq(*st);
                    prop_assert!(d >= before[i], "durable went back");
                    match &r {
                        // Written, or waiting for room (the filesystem is full).
                        Ok(_) => prop_assert!(d == m.appended[i] || d == before[i]),
                        Err(e) => {
                            prop_assert!(e.is_transient(), "{e}");
                            prop_assert_eq!(d, before[i], "a failed flush wrote nothing");
                        }
                    }
                    m.flushed[i] = d;
                }
            }
            Op::Budget => {
                let evictions = sim.ob().enforce_budget();
                m.sync_store_events(sim.ob());
                let ob = sim.outbox.as_mut().unwrap();
                for e in evictions {
                    let i = STREAMS.iter().position(|s| *s == e.stream).unwrap();
                    let present = stored(ob, e.stream, u64::MAX);
                    for seq in e.first_seq..=e.last_seq {
                        prop_assert!(
                            !present.contains_key(&seq),
                            "{} seq {seq} evicted but stored",
                            e.stream
                        );
                        m.evicted[i].insert(seq);
                    }
                    prop_assert!(e.records >= 1 && e.records <= e.last_seq - e.first_seq + 1);
                }
            }
            Op::Space(level) => {
                let ob = sim.ob();
                let reserve = ob.reserve();
                ob.set_free_bytes_for_test(match level {
                    0 => None,
                    1 => Some(1 << 40),
                    2 => Some(reserve * 3 / 2),
                    3 => Some(reserve / 2),
                    _ => Some(reserve / 8),
                });
            }
            Op::FailFlush => sim.ob().fail_flushes_for_test(1),
            Op::Publish(i, backlog) => {
                let stream = STREAMS[i];
                let outbox = sim.outbox.as_mut().unwrap();
                let cursors = sim.cursors.get_or_insert_with(|| {
                    SendCursors::new_session(
                        STREAMS.map(|s| outbox.first_stored(s)),
                        STREAMS.map(|s| outbox.durable_seq(s)),
                    )
                });
                let lane = if backlog { Lane::Backlog } else { Lane::Live };
                if let Some(range) = cursors.next_range(stream, lane) {
                    match outbox
                        .read_batch(stream, range.from, range.upto, 600, usize::MAX)
                        .unwrap()
                    {
                        Some(b) => {
                            let mut prev = 0;
                            for r in b.records() {
                                let v: serde_json::Value = serde_json::from_slice(r).unwrap();
                                let seq = v["seq"].as_u64().unwrap();
                                prop_assert!(seq > prev && seq >= range.from && seq <= range.upto);
                                prop_assert!(seq <= m.flushed[i], "published only when durable");
                                prop_assert_eq!(m.content[i].get(&seq), Some(&id_of(stream, &v)));
                                prev = seq;
                            }
                            cursors.advance(stream, lane, b.last_seq);
                            sim.in_flight.push_back((stream, b.first_seq, b.last_seq));
                        }
                        None => {
                            if lane == Lane::Backlog {
                                cursors.finish_backlog(stream);
                            }
                        }
                    }
                }
            }
            Op::Ack | Op::AckNewest => {
                let next = if matches!(op, Op::Ack) {
                    sim.in_flight.pop_front()
                } else {
                    sim.in_flight.pop_back()
                };
                if let Some((stream, first, last)) = next {
                    sim.ob().ack(stream, first, last);
                    let i = STREAMS.iter().position(|s| *s == stream).unwrap();
                    // What that message carried: every stored seq of the range at send time.
                    for seq in first..=last {
                        if m.content[i].contains_key(&seq) {
                            m.acked[i].insert(seq);
                        }
                    }
                }
            }
            Op::Lose => {
                sim.in_flight.clear();
                sim.cursors = None;
            }
            Op::Crash => {
                sim.reopen(dir.path());
                for (i, stream) in STREAMS.iter().enumerate() {
                    let last = sim.ob().stats().streams[i].last_seq;
                    prop_assert!(
                        last >= m.flushed[i] && last <= m.appended[i],
                        "{stream}: resumed at {last}, flushed {}, appended {}",
                        m.flushed[i],
                        m.appended[i]
                    );
                    // Unflushed records past what sled recovered are gone; their seqs will be
                    // reused, which is fine: they were never published.
                    m.content[i].retain(|seq, _| *seq <= last);
                    m.evicted[i].retain(|seq| *seq <= last);
                    m.appended[i] = last;
                    m.flushed[i] = last;
                    // Acks not flushed before the crash are forgotten: those records are stored
                    // (and will be sent) again — duplicates, never a loss.
                    let present = stored(sim.ob(), *stream, u64::MAX);
                    m.acked[i].retain(|seq| !present.contains_key(seq));
                }
            }
            Op::Restart => {
                // A clean stop: the daemon's last flush, with room (a full disk makes it a crash,
                // already covered).
                sim.ob().set_free_bytes_for_test(None);
                sim.ob().fail_flushes_for_test(0);
                sim.ob().flush().unwrap();
                m.flushed = m.appended;
                sim.reopen(dir.path());
                for (i, stream) in STREAMS.iter().enumerate() {
                    prop_assert_eq!(sim.ob().stats().streams[i].last_seq, m.appended[i]);
                    let again: Vec<u64> = stored(sim.ob(), *stream, u64::MAX)
                        .into_keys()
                        .filter(|s| m.acked[i].contains(s))
                        .collect();
                    prop_assert!(again.is_empty(), "{stream}: acked {again:?} stored again");
                }
            }
        }
        // delivered ∪ pending ∪ evicted ⊇ durable, with the right content.
        for (i, stream) in STREAMS.iter().enumerate() {
            let present = stored(sim.ob(), *stream, u64::MAX);
            let dropped = sim.ob().pending_dropped(*stream);
            for seq in 1..=m.flushed[i] {
                let known = m.content[i].get(&seq).copied();
                match present.get(&seq) {
                    Some(id) => prop_assert_eq!(Some(*id), known, "{} seq {} content", stream, seq),
                    None => prop_assert!(
                        m.acked[i].contains(&seq)
                            || m.evicted[i].contains(&seq)
                            || dropped.iter().any(|(a, b)| (*a..=*b).contains(&seq)),
                        "{stream} seq {seq} durable but neither acked, stored nor evicted"
                    ),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Committed: failures found once are replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/outbox_model.txt",
        ))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn outbox_never_loses_or_redelivers(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
