//! The command-id window: which command ids were seen and how they ended, persisted so that a
//! seen id is never executed again — not after a restart, not after a flood of other ids, not
//! when the broker delivers a retained command again at every boot (issue 13 item 1; SPEC §3: "a
//! command id seen before is not executed again (its earlier result is published again)").
//!
//! # Invariants
//! - An id to be executed is written to the file and `fdatasync`ed by [`Ledger::begin`] with
//!   `durable = true` BEFORE the caller executes it. If that write fails, `begin` returns the
//!   error and the command must not run.
//! - An entry is kept at least until its `expires_at`: before then, a replay would still be
//!   valid, so forgetting it could run it twice. After `expires_at` a replay cannot run anyway
//!   (it is `expired`, or refused by the signature check), so the entry may go — but the window
//!   keeps the last [`KEEP_IDS`] ids, and any id younger than [`KEEP_FOR`], to publish their
//!   earlier result again.
//! - Bounded: at most [`MAX_ENTRIES`] entries. When that many are all still before their
//!   `expires_at` (only possible with absurd validities: signed commands are limited by
//!   `security.max_validity`), a new id is refused ([`LedgerError::Full`]) rather than an
//!   unexpired one forgotten.
//! - Results are appended without their own fsync: the next `begin` (same file) or the stop
//!   makes them durable. A result lost to a power cut leaves its id "begun"; at the next start
//!   such ids are reported by [`Ledger::open`] (`interrupted`) and get a `failed` result saying
//!   the outcome is unknown — never a second execution.
//! - A window that was lost (file missing while the state directory holds other state, or a
//!   damaged line) cannot say which ids ran. Recovery keeps every line it can read and sets a
//!   watermark, `not_before` = the recovery time: a command issued before it and not in the
//!   window is refused (it may have run). The watermark is kept in the file's header.
//!
//! # File `<storage.path>/command-ids.log` (format 1)
//! JSON lines, UTF-8. The first line is the header, the others are appended in order:
//! ```text
//! {"format":1,"not_before":"2026-11-26T08:00:00.000Z"}      header (not_before may be null)
//! {"op":"seen","id":"c-42","seen":T,"expires":T}             an id seen at `seen`, kept ≥ `expires`
//! {"op":"result","result":{"ts":T,"id":"c-42","status":"succeeded","reason":""}}
//! ```
//! `format` is the version marker (a newer one is refused). Times are RFC 3339 UTC with
//! milliseconds. A last line without its newline (torn by a power cut) is ignored: its `begin`
//! had not returned, so its command did not run. At every open the file is rewritten whole
//! (temp file, fsync, rename, fsync of the directory, as `outbox::marks` does) with only the
//! entries still kept, and again whenever appended lines outnumber the entries by far.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Seen;
use crate::record::{ts_millis, CommandResult, CommandStatus};

/// The file's name in `storage.path`.
pub const FILE: &str = "command-ids.log";
/// The on-disk format written in the header.
pub const FORMAT: u32 = 1;
/// Ids kept (for their earlier result) once past their `expires_at`.
pub const KEEP_IDS: usize = 10_000;
/// Any id younger than this is kept too.
pub const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Hard bound on entries (memory: < 30 MB even with the longest ids and reasons).
pub const MAX_ENTRIES: usize = 50_000;
/// Pruning runs once the window has grown this much past its last size.
const PRUNE_SLACK: usize = 1_000;
/// The file is rewritten when its lines exceed twice the entries plus this.
const COMPACT_SLACK: usize = 4_096;

/// Why the window cannot record an id.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read or written (permanent until the disk is fixed).
    #[error("command-id window {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is of a newer format than this daemon (permanent).
    #[error("command-id window {path}: format {found} is newer than this daemon's {FORMAT}")]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
    /// Every remembered id is still before its `expires_at` (transient: ids expire).
    #[error("{MAX_ENTRIES} command ids are remembered and none has expired yet")]
    Full,
}

/// What [`Ledger::open`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Opened {
    /// Ids begun and never finished (the daemon died while they ran): each needs a final
    /// result, `failed` with an unknown outcome.
    pub interrupted: Vec<String>,
    /// The window was lost or damaged, and why (announce it: ids before `not_before` are
    /// refused).
    pub recovered: Option<String>,
    /// Entries loaded.
    pub entries: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    seen: SystemTime,
    expires: SystemTime,
    result: Option<CommandResult>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    #[serde(default, with = "opt_ts")]
    not_before: Option<SystemTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Seen {
        id: String,
        #[serde(with = "ts_millis")]
        seen: SystemTime,
        #[serde(with = "ts_millis")]
        expires: SystemTime,
    },
    Result {
        result: CommandResult,
    },
}

mod opt_ts {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::record::format_ts(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => humantime::parse_rfc3339_weak(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

struct Log {
    dir: PathBuf,
    file: File,
    lines: usize,
}

/// The window (see the module docs). `Ledger::memory()` keeps it in memory only (unit tests).
pub struct Ledger {
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
    prune_at: usize,
    not_before: Option<SystemTime>,
    log: Option<Log>,
    /// The directory the window belongs in while its file cannot be written (a full
    /// filesystem at start): every command is refused until a retry at the next one succeeds.
    unwritten: Option<PathBuf>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::memory()
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("entries", &self.entries.len())
            .field("not_before", &self.not_before)
            .field("persisted", &self.log.is_some())
            .field("unwritten", &self.unwritten)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `dir` holds anything besides the window file (a daemon ran here before).
fn has_other_state(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with(FILE) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Ledger {
    /// A window kept in memory only.
    pub fn memory() -> Ledger {
        Ledger {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            prune_at: KEEP_IDS + PRUNE_SLACK,
            not_before: None,
            log: None,
            unwritten: None,
        }
    }

    /// Opens (or creates) the window in `dir`, recovering what it can (module docs), and
    /// rewrites the file compactly.
    pub fn open(dir: &Path, now: SystemTime) -> Result<(Ledger, Opened), LedgerError> {
        let path = dir.join(FILE);
        let mut ledger = Ledger::memory();
        let mut opened = Opened::default();
        match fs::read(&path) {
            Ok(bytes) => ledger.load(&path, &bytes, now, &mut opened)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if has_other_state(dir).map_err(io_err(dir))? {
                    ledger.not_before = Some(now);
                    opened.recovered = Some(format!(
                        "{} is missing while {} holds the state of an earlier run",
                        path.display(),
                        dir.display()
                    ));
                }
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        ledger.prune(now);
        opened.interrupted = ledger
            .order
            .values()
            .filter(|id| ledger.entries[id.as_str()].result.is_none())
            .cloned()
            .collect();
        opened.entries = ledger.entries.len();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        match ledger.rewrite(dir) {
            Ok(log) => ledger.log = Some(log),
            // A full filesystem must not keep the daemon from starting (its lighting and rules
            // run without commands): no command runs until its id can be recorded.
            Err(e) => {
                tracing::error!(error = %e, "the command-id window cannot be written: commands are refused until it can (retried at each command)");
                ledger.unwritten = Some(dir.to_owned());
            }
        }
        Ok((ledger, opened))
    }

    fn load(
        &mut self,
        path: &Path,
        bytes: &[u8],
        now: SystemTime,
        opened: &mut Opened,
    ) -> Result<(), LedgerError> {
        let mut damaged = Vec::new();
        let complete = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(i) => &bytes[..=i],
            None => &[][..],
        };
        let mut lines = complete.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        match lines.next().map(serde_json::from_slice::<Header>) {
            Some(Ok(h)) if h.format > FORMAT => {
                return Err(LedgerError::Newer {
                    path: path.to_owned(),
                    found: h.format,
                })
            }
            Some(Ok(h)) => self.not_before = h.not_before,
            Some(Err(e)) => damaged.push(format!("line 1: {e}")),
            None => damaged.push("no header".into()),
        }
        for (i, line) in lines.enumerate() {
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Seen { id, seen, expires }) => {
                    if !self.entries.contains_key(&id) {
                        self.insert(id, seen, expires);
                    }
                }
                Ok(Line::Result { result }) => self.set_result(result),
                Err(e) => damaged.push(format!("line {}: {e}", i + 2)),
            }
        }
        if !damaged.is_empty() {
            self.not_before = Some(now);
            damaged.truncate(3);
            opened.recovered = Some(format!(
                "{} is damaged ({}); what could be read is kept",
                path.display(),
                damaged.join("; ")
            ));
        }
        Ok(())
    }

    /// Commands issued before this instant and not in the window are refused (module docs).
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No id remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Looks `id` up and, when new, remembers it until at least `expires` (made durable before
    /// returning when `durable`: do that for every id about to be executed).
    pub fn begin(
        &mut self,
        id: &str,
        expires: SystemTime,
        now: SystemTime,
        durable: bool,
    ) -> Result<Seen, LedgerError> {
        if let Some(e) = self.entries.get(id) {
            return Ok(match &e.result {
                None => Seen::Running,
                Some(r) => Seen::Done(r.clone()),
            });
        }
        self.prune(now);
        if self.entries.len() >= MAX_ENTRIES {
            return Err(LedgerError::Full);
        }
        let line = Line::Seen {
            id: id.to_owned(),
            seen: now,
            expires,
        };
        self.append(&line, durable)?;
        self.insert(id.to_owned(), now, expires);
        self.maybe_compact()?;
        Ok(Seen::New)
    }

    /// Records the final result of an id (durable with the next `begin` or [`Ledger::sync`]).
    pub fn finish(&mut self, result: &CommandResult) -> Result<(), LedgerError> {
        if !self.entries.contains_key(&result.id) {
            // Decided without `begin` (e.g. the window refused it): remembered briefly.
            self.insert(result.id.clone(), result.ts, result.ts);
            self.append(
                &Line::Seen {
                    id: result.id.clone(),
                    seen: result.ts,
                    expires: result.ts,
                },
                false,
            )?;
        }
        self.set_result(result.clone());
        self.append(
            &Line::Result {
                result: result.clone(),
            },
            false,
        )
    }

    /// Makes every appended line durable (at the stop).
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        match &self.log {
            Some(log) => log.file.sync_data().map_err(io_err(&log.dir.join(FILE))),
            None => Ok(()),
        }
    }

    fn insert(&mut self, id: String, seen: SystemTime, expires: SystemTime) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.entries.insert(
            id,
            Entry {
                seen,
                expires,
                result: None,
            },
        );
    }

    fn set_result(&mut self, result: CommandResult) {
        if let Some(e) = self.entries.get_mut(&result.id) {
            if e.result.is_none() {
                e.result = Some(result);
            }
        }
    }

    /// Drops entries past their `expires_at` beyond the last [`KEEP_IDS`] or older than
    /// [`KEEP_FOR`], oldest first. Runs when the window has grown by [`PRUNE_SLACK`] or its
    /// oldest entry is stale, so its cost is amortised.
    fn prune(&mut self, now: SystemTime) {
        let stale = |e: &Entry| {
            e.expires <= now && now.duration_since(e.seen).is_ok_and(|age| age > KEEP_FOR)
        };
        let oldest_stale = self
            .order
            .values()
            .next()
            .is_some_and(|id| stale(&self.entries[id.as_str()]));
        if self.entries.len() < self.prune_at && !oldest_stale {
            return;
        }
        let mut len = self.entries.len();
        let mut drop = Vec::new();
        for (seq, id) in &self.order {
            let e = &self.entries[id.as_str()];
            let old = now.duration_since(e.seen).is_ok_and(|age| age > KEEP_FOR);
            if len <= KEEP_IDS && !old {
                break; // the rest is newer
            }
            if e.expires <= now {
                drop.push(*seq);
                len -= 1;
            }
        }
        for seq in drop {
            if let Some(id) = self.order.remove(&seq) {
                self.entries.remove(&id);
            }
        }
        self.prune_at = self.entries.len().max(KEEP_IDS) + PRUNE_SLACK;
    }

    fn append(&mut self, line: &Line, durable: bool) -> Result<(), LedgerError> {
        if self.log.is_none() {
            if let Some(dir) = self.unwritten.clone() {
                // The whole window, this line's entry included (a line seen twice loads once).
                self.log = Some(self.rewrite(&dir)?);
                self.unwritten = None;
                tracing::info!("the command-id window is written again: commands run again");
            }
        }
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        let path = log.dir.join(FILE);
        let mut bytes = serde_json::to_vec(line).map_err(|e| io_err(&path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        log.file.write_all(&bytes).map_err(io_err(&path))?;
        log.lines += 1;
        if durable {
            log.file.sync_data().map_err(io_err(&path))?;
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), LedgerError> {
        let too_long = self
            .log
            .as_ref()
            .is_some_and(|l| l.lines > 2 * self.entries.len() + COMPACT_SLACK);
        if too_long {
            let dir = self.log.as_ref().map(|l| l.dir.clone()).unwrap_or_default();
            self.log = Some(self.rewrite(&dir)?);
        }
        Ok(())
    }

    /// Writes the kept entries to a new file and puts it in place atomically and durably.
    fn rewrite(&self, dir: &Path) -> Result<Log, LedgerError> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut text = Vec::with_capacity(self.entries.len() * 160);
        let header = Header {
            format: FORMAT,
            not_before: self.not_before,
        };
        text.extend(to_json(&header));
        text.push(b'\n');
        let mut lines = 1;
        for id in self.order.values() {
            let e = &self.entries[id.as_str()];
            text.extend(to_json(&Line::Seen {
                id: id.clone(),
                seen: e.seen,
                expires: e.expires,
            }));
            text.push(b'\n');
            lines += 1;
            if let Some(r) = &e.result {
                text.extend(to_json(&Line::Result { result: r.clone() }));
                text.push(b'\n');
                lines += 1;
            }
        }
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A half-written copy would only take the room a retry needs.
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Log {
            dir: dir.to_owned(),
            file,
            lines,
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

/// The `failed` result of a command interrupted by a crash or power cut (module docs).
pub fn interrupted_result(id: &str) -> CommandResult {
    super::result(
        id,
        CommandStatus::Failed,
        "outcome unknown: the daemon stopped (crash or power loss) while the command ran; it is not run again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::result;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn done(id: &str) -> CommandResult {
        CommandResult {
            ts: t(1),
            ..result(id, CommandStatus::Succeeded, "")
        }
    }

    #[test]
    fn executes_once_and_replays_the_result() {
        let mut l = Ledger::memory();
        assert_eq!(l.begin("c1", t(100), t(0), true).unwrap(), Seen::New);
        assert_eq!(l.begin("c1", t(100), t(0), true).unwrap(), Seen::Running);
        l.finish(&done("c1")).unwrap();
        assert_eq!(
            l.begin("c1", t(100), t(1), true).unwrap(),
            Seen::Done(done("c1"))
        );
    }

    /// Issue 13 item 1: 4,100 other ids flushed the in-memory window of 4,096 and the old id
    /// ran again. An id is never forgotten before its expires_at, whatever comes after it.
    #[test]
    fn a_flood_never_pushes_out_an_unexpired_id() {
        let mut l = Ledger::memory();
        l.begin("a1", t(3600), t(0), true).unwrap();
        l.finish(&done("a1")).unwrap();
        for i in 0..(MAX_ENTRIES - 1) {
            // Junk decided at once: expires immediately.
            l.begin(&format!("junk-{i}"), t(1), t(1), false).unwrap();
        }
        assert!(matches!(
            l.begin("a1", t(3600), t(2), true).unwrap(),
            Seen::Done(_)
        ));
        assert!(l.len() <= KEEP_IDS + PRUNE_SLACK, "{}", l.len());
        // Past its expiry and beyond the last KEEP_IDS, it may go.
        for i in 0..(KEEP_IDS + PRUNE_SLACK) {
            l.begin(&format!("more-{i}"), t(3601), t(3601), false)
                .unwrap();
        }
        assert!(!l.contains("a1"));
    }

    #[test]
    fn unexpired_ids_fill_the_window_and_then_new_ids_are_refused() {
        let mut l = Ledger::memory();
        for i in 0..MAX_ENTRIES {
            l.begin(&format!("c{i}"), t(1_000_000), t(0), false)
                .unwrap();
        }
        assert!(matches!(
            l.begin("one-more", t(1_000_000), t(1), false),
            Err(LedgerError::Full)
        ));
        assert!(matches!(
            l.begin("c0", t(1_000_000), t(1), false).unwrap(),
            Seen::Running
        ));
    }

    #[test]
    fn old_expired_ids_go_after_a_week_even_when_few() {
        let mut l = Ledger::memory();
        l.begin("old", t(10), t(0), true).unwrap();
        l.begin("long", t(30 * 86_400), t(0), true).unwrap();
        let later = t(8 * 86_400);
        l.begin("new", later, later, true).unwrap();
        assert!(!l.contains("old"));
        assert!(l.contains("long"), "kept until its expires_at");
    }

    /// Issue 13 item 1: a restart forgot every id (the same id wrote again).
    #[test]
    fn survives_a_reopen_with_results_and_reports_interrupted_ids() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut l, opened) = Ledger::open(dir.path(), t(0)).unwrap();
            assert_eq!(opened, Opened::default());
            assert_eq!(l.begin("a1", t(600), t(0), true).unwrap(), Seen::New);
            l.finish(&done("a1")).unwrap();
            assert_eq!(l.begin("a2", t(600), t(0), true).unwrap(), Seen::New);
            // a2 never finishes: the daemon dies here.
        }
        let (mut l, opened) = Ledger::open(dir.path(), t(5)).unwrap();
        assert_eq!(opened.interrupted, ["a2"]);
        assert_eq!(opened.recovered, None);
        assert_eq!(opened.entries, 2);
        assert_eq!(
            l.begin("a1", t(600), t(5), true).unwrap(),
            Seen::Done(done("a1"))
        );
        assert_eq!(l.begin("a2", t(600), t(5), true).unwrap(), Seen::Running);
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first, r#"{"format":1,"not_before":null}"#,
            "documented header"
        );
        assert!(text.contains(r#"{"op":"seen","id":"a1","seen":"2027-01-15T08:00:00.000Z","expires":"2027-01-15T08:10:00.000Z"}"#), "{text}");
        assert!(text.contains(r#"{"op":"result","result":{"ts":"2027-01-15T08:00:01.000Z","id":"a1","status":"succeeded","reason":""}}"#), "{text}");
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_file_rewritten_clean() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut l, _) = Ledger::open(dir.path(), t(0)).unwrap();
            l.begin("a1", t(600), t(0), true).unwrap();
        }
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"seen","id":"a2","se"#).unwrap();
        drop(f);
        let (l, opened) = Ledger::open(dir.path(), t(1)).unwrap();
        assert_eq!(opened.recovered, None, "a torn tail is not damage");
        assert!(l.contains("a1") && !l.contains("a2"));
        assert!(fs::read(&path).unwrap().ends_with(b"\n"));
    }

    #[test]
    fn a_lost_or_damaged_window_sets_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("desired-config.json"), "{}").unwrap();
        let (l, opened) = Ledger::open(dir.path(), t(7)).unwrap();
        assert!(opened.recovered.unwrap().contains("missing"));
        assert_eq!(l.not_before(), Some(t(7)));
        drop(l);
        // Kept across a restart (in the header).
        let (l, opened) = Ledger::open(dir.path(), t(9)).unwrap();
        assert_eq!((opened.recovered, l.not_before()), (None, Some(t(7))));
        drop(l);
        let path = dir.path().join(FILE);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("garbage\n{\"op\":\"seen\",\"id\":\"b\",\"seen\":\"2027-01-15T08:00:00Z\",\"expires\":\"2027-01-15T09:00:00Z\"}\n");
        fs::write(&path, text).unwrap();
        let (l, opened) = Ledger::open(dir.path(), t(20)).unwrap();
        assert!(opened.recovered.unwrap().contains("damaged"));
        assert!(l.contains("b"), "what could be read is kept");
        assert_eq!(l.not_before(), Some(t(20)));
        // A fresh directory is not a loss.
        let fresh = tempfile::tempdir().unwrap();
        let (l, opened) = Ledger::open(fresh.path(), t(0)).unwrap();
        assert_eq!((opened.recovered, l.not_before()), (None, None));
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "{\"format\":2}\n").unwrap();
        assert!(matches!(
            Ledger::open(dir.path(), t(0)),
            Err(LedgerError::Newer { found: 2, .. })
        ));
    }

    #[test]
    fn the_file_stays_bounded_under_a_flood() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = Ledger::open(dir.path(), t(0)).unwrap();
        for i in 0..40_000u64 {
            l.begin(&format!("j{i}"), t(i), t(i), false).unwrap();
            l.finish(&CommandResult {
                ts: t(i),
                ..result(&format!("j{i}"), CommandStatus::Rejected, "field `action`")
            })
            .unwrap();
        }
        let lines = fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(
            lines <= 2 * (KEEP_IDS + PRUNE_SLACK) + COMPACT_SLACK + 1,
            "{lines}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the sequence of ids and clock steps, an id is never `New` twice while it is
        /// before its expires_at, in memory or across a reopen.
        #[test]
        fn never_new_twice_before_expiry(ops in proptest::collection::vec((0u16..64, 0u64..120, proptest::bool::weighted(0.1)), 1..150)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut l, _) = Ledger::open(dir.path(), t(0)).unwrap();
            let mut now = 0u64;
            let mut begun: HashMap<String, u64> = HashMap::new();
            for (id, step, reopen) in ops {
                now += step;
                if reopen {
                    drop(l);
                    l = Ledger::open(dir.path(), t(now)).unwrap().0;
                }
                let id = format!("c{id}");
                // Not fsynced: a reopen reads what was written (durability is the OS's part).
                let seen = l.begin(&id, t(now + 300), t(now), false).unwrap();
                if let Some(exp) = begun.get(&id) {
                    if now < *exp {
                        proptest::prop_assert!(seen != Seen::New, "{id} new again at {now}");
                    }
                }
                if seen == Seen::New {
                    begun.insert(id.clone(), now + 300);
                    l.finish(&done(&id)).unwrap();
                }
            }
        }
    }
}
