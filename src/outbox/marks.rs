//! The `seq-marks` file: per-stream seq ceilings kept OUTSIDE the sled directory.
//!
//! Invariant: every seq that was ever flushed (and so may have reached the central post) is ≤ the
//! ceiling of its stream in this file. The flusher reserves seqs in blocks of [`BLOCK`]: before a
//! flush makes a seq above the current ceiling durable, it writes `ceiling = seq + BLOCK`
//! atomically (temp file, fsync, rename, fsync dir). So the file is rewritten about once per
//! `BLOCK` records, not per flush. It is only consulted when the sled store itself was lost
//! (moved aside as corrupt, or deleted): numbering then resumes at `ceiling + 1`, so no seq the
//! central post may have seen is ever reused. The resulting gap is honest: records were lost.
//!
//! Format (text): first line `cabinetd-seq-marks 1`, then one `STREAM CEILING` line per stream.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::record::Stream;

/// Seqs reserved per rewrite of the file.
pub const BLOCK: u64 = 10_000;
const HEADER: &str = "cabinetd-seq-marks 1";

/// Ceilings per stream, indexed like [`super::stream_index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqMarks {
    /// Ceiling per stream (telemetry, events, results).
    pub ceiling: [u64; 3],
}

impl SeqMarks {
    /// Parse the file content.
    pub fn parse(text: &str) -> Option<SeqMarks> {
        let mut lines = text.lines();
        if lines.next()?.trim() != HEADER {
            return None;
        }
        let mut marks = SeqMarks::default();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once(' ')?;
            let value: u64 = value.trim().parse().ok()?;
            let stream = [Stream::Telemetry, Stream::Events, Stream::Results]
                .into_iter()
                .find(|s| s.as_str() == name)?;
            marks.ceiling[super::stream_index(stream)] = value;
        }
        Some(marks)
    }

    /// The file content.
    pub fn render(&self) -> String {
        let mut s = format!("{HEADER}\n");
        for stream in [Stream::Telemetry, Stream::Events, Stream::Results] {
            s.push_str(&format!(
                "{} {}\n",
                stream.as_str(),
                self.ceiling[super::stream_index(stream)]
            ));
        }
        s
    }
}

/// Path of the marks file in the storage directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("seq-marks")
}

/// What the storage directory holds as `seq-marks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarksFile {
    /// No file: a first start, or the file was deleted.
    Missing,
    /// A file that parses.
    Valid(SeqMarks),
    /// A file that cannot be read or parsed (empty, not UTF-8, edited, unreadable): the store
    /// treats it as lost, reports it and rewrites it (a torn file cannot happen with the rename
    /// protocol).
    Unreadable(String),
}

/// Read the marks. Never fails: what cannot be used is [`MarksFile::Unreadable`] with the reason.
pub fn read(dir: &Path) -> MarksFile {
    let p = path(dir);
    match fs::read(&p) {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => match SeqMarks::parse(text) {
                Some(m) => MarksFile::Valid(m),
                None if text.trim().is_empty() => MarksFile::Unreadable("empty".into()),
                None => MarksFile::Unreadable("not in the cabinetd-seq-marks 1 format".into()),
            },
            Err(_) => MarksFile::Unreadable("not UTF-8".into()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => MarksFile::Missing,
        Err(e) => MarksFile::Unreadable(format!("{}: {e}", p.display())),
    }
}

/// Write the marks atomically and durably.
pub fn write(dir: &Path, marks: &SeqMarks) -> io::Result<()> {
    let tmp = dir.join("seq-marks.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(marks.render().as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path(dir))?;
    // The rename itself must survive a power cut, so the directory entry is synced too.
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), MarksFile::Missing);
        let marks = SeqMarks {
            ceiling: [20_000, 10_007, 3],
        };
        write(dir.path(), &marks).unwrap();
        assert_eq!(read(dir.path()), MarksFile::Valid(marks));
        assert!(!dir.path().join("seq-marks.tmp").exists());
    }

    /// Regression (issue 13 item 13): a non-UTF-8 file made the daemon exit 1.
    #[test]
    fn unusable_files_are_reported_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (content, why) in [
            (&b"\xff\xfe\x00garbage"[..], "not UTF-8"),
            (b"", "empty"),
            (b"cabinetd-seq-marks 1\ntelemetry x\n", "format"),
        ] {
            fs::write(path(dir.path()), content).unwrap();
            match read(dir.path()) {
                MarksFile::Unreadable(r) => assert!(r.contains(why), "{r}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rejects_foreign_content() {
        assert_eq!(SeqMarks::parse("hello\ntelemetry 3\n"), None);
        assert_eq!(SeqMarks::parse("cabinetd-seq-marks 1\nbogus 3\n"), None);
        assert_eq!(SeqMarks::parse("cabinetd-seq-marks 1\ntelemetry x\n"), None);
    }
}
