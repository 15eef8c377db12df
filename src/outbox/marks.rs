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

/// Read the marks; `Ok(None)` when the file does not exist or cannot be parsed (a torn file
/// cannot happen with the rename protocol, so an unparsable one was edited by hand).
pub fn read(dir: &Path) -> io::Result<Option<SeqMarks>> {
    match fs::read_to_string(path(dir)) {
        Ok(text) => Ok(SeqMarks::parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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
        assert_eq!(read(dir.path()).unwrap(), None);
        let marks = SeqMarks {
            ceiling: [20_000, 10_007, 3],
        };
        write(dir.path(), &marks).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(marks));
        assert!(!dir.path().join("seq-marks.tmp").exists());
    }

    #[test]
    fn rejects_foreign_content() {
        assert_eq!(SeqMarks::parse("hello\ntelemetry 3\n"), None);
        assert_eq!(SeqMarks::parse("cabinetd-seq-marks 1\nbogus 3\n"), None);
        assert_eq!(SeqMarks::parse("cabinetd-seq-marks 1\ntelemetry x\n"), None);
    }
}
