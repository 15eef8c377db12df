//! The `control-state.json` file: what control arbitration must remember across a restart.
//!
//! Contents: the central post's light overrides and release markers (with their hold's
//! wall-clock deadline), and the scenes run by the central post or with a hold (each runner with
//! its deadline). Rules' claims are *not* kept: a rule re-enters after `for` from the first good
//! readings (`engine.rs`). A central `point.write` is not kept either: the value stays in the
//! device, and the point's controller after a restart is `none`.
//!
//! Format (UTF-8 JSON, one object; version marker first):
//! ```text
//! {"format":"cabinetd-control-state","version":1,"saved_at":T,
//!  "overrides":[{"target":S,"level_percent":N|null,"fade_s":N|null,"until":T|null}…],
//!  "scenes":[{"scene":S,"runners":[{"by":"central"|"rule:NAME","until":T|null}…]}…]}
//! ```
//! `T` is RFC 3339 UTC. An override with `"level_percent":null` is a release marker (a part of
//! a broader override given back by `light.release`). Overrides are in the order they were made
//! (later ones win ties). A version other than 1 is refused whole (never half-read).
//!
//! Writer: the daemon, whenever the core says its central state changed, *before* acting on that
//! step's outputs: temp file, fsync, rename, fsync of the directory (as `outbox/marks.rs`), so a
//! crash leaves the old or the new file, never a torn one. Reader: once at start. Bounds: the
//! file is refused above [`MAX_BYTES`], lists above [`MAX_ENTRIES`].

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The `format` marker.
pub const FORMAT: &str = "cabinetd-control-state";
/// The only version this code reads and writes.
pub const VERSION: u32 = 1;
/// File name in `storage.path`.
pub const FILE: &str = "control-state.json";
/// Largest file read (a full cabinet's overrides are a few KiB).
pub const MAX_BYTES: u64 = 1 << 20;
/// Most overrides or scenes kept.
pub const MAX_ENTRIES: usize = 4096;

/// A central override as saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedOverride {
    /// `all`, `group:N` or `BUS/ADDR`.
    pub target: String,
    /// Percent; `None` for a release marker.
    pub level_percent: Option<f64>,
    /// Fade of the original command.
    pub fade_s: Option<f64>,
    /// End of its hold.
    pub until: Option<Timestamp>,
}

/// Who keeps a scene running, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedRunner {
    /// `central` or `rule:NAME`.
    pub by: String,
    /// End of its hold (`None`: until released).
    pub until: Option<Timestamp>,
}

/// An active scene as saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedScene {
    /// The scene's name.
    pub scene: String,
    /// Its runners.
    pub runners: Vec<SavedRunner>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// When it was written (also a floor for a plausible wall clock, `clock.rs`).
    pub saved_at: Timestamp,
    /// Central overrides, oldest first.
    pub overrides: Vec<SavedOverride>,
    /// Active scenes.
    pub scenes: Vec<SavedScene>,
}

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed (transient: the card; retry at the next start).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The content is not a state file this version understands (permanent: it is ignored and
    /// replaced at the next write).
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOverride {
    target: String,
    level_percent: Option<f64>,
    fade_s: Option<f64>,
    until: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRunner {
    by: String,
    until: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScene {
    scene: String,
    runners: Vec<FileRunner>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    format: String,
    version: u32,
    saved_at: String,
    overrides: Vec<FileOverride>,
    scenes: Vec<FileScene>,
}

fn ts(t: Timestamp) -> String {
    crate::record::format_ts(std::time::SystemTime::try_from(t).unwrap_or(std::time::UNIX_EPOCH))
}

fn parse_ts(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>()
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

impl State {
    /// The file's content.
    pub fn render(&self) -> String {
        let f = FileState {
            format: FORMAT.into(),
            version: VERSION,
            saved_at: ts(self.saved_at),
            overrides: self
                .overrides
                .iter()
                .map(|o| FileOverride {
                    target: o.target.clone(),
                    level_percent: o.level_percent,
                    fade_s: o.fade_s,
                    until: o.until.map(ts),
                })
                .collect(),
            scenes: self
                .scenes
                .iter()
                .map(|s| FileScene {
                    scene: s.scene.clone(),
                    runners: s
                        .runners
                        .iter()
                        .map(|r| FileRunner {
                            by: r.by.clone(),
                            until: r.until.map(ts),
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut s = serde_json::to_string(&f).expect("plain data serialises");
        s.push('\n');
        s
    }

    /// Parses the file's content.
    pub fn parse(text: &str) -> Result<State, String> {
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if head.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(format!("not a {FORMAT} file"));
        }
        match head.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            other => {
                return Err(format!(
                    "version {other:?} is not {VERSION}, the only one this cabinetd reads"
                ))
            }
        }
        let f: FileState = serde_json::from_value(head).map_err(|e| e.to_string())?;
        if f.overrides.len() > MAX_ENTRIES || f.scenes.len() > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let opt = |s: &Option<String>| s.as_deref().map(parse_ts).transpose();
        Ok(State {
            saved_at: parse_ts(&f.saved_at)?,
            overrides: f
                .overrides
                .iter()
                .map(|o| {
                    Ok(SavedOverride {
                        target: o.target.clone(),
                        level_percent: o.level_percent,
                        fade_s: o.fade_s,
                        until: opt(&o.until)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            scenes: f
                .scenes
                .iter()
                .map(|s| {
                    Ok(SavedScene {
                        scene: s.scene.clone(),
                        runners: s
                            .runners
                            .iter()
                            .map(|r| {
                                Ok(SavedRunner {
                                    by: r.by.clone(),
                                    until: opt(&r.until)?,
                                })
                            })
                            .collect::<Result<_, String>>()?,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }
}

/// The file's path in the storage directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the state; `Ok(None)` when there is none yet.
pub fn read(dir: &Path) -> Result<Option<State>, StateError> {
    let p = path(dir);
    let io = |source| StateError::Io {
        path: p.clone(),
        source,
    };
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    f.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(StateError::Corrupt {
            path: p,
            reason: format!("larger than {MAX_BYTES} bytes"),
        });
    }
    State::parse(&text)
        .map(Some)
        .map_err(|reason| StateError::Corrupt { path: p, reason })
}

/// Writes `bytes` to `dir/name` atomically and durably: temp file, fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    // The rename must survive a power cut too.
    fs::File::open(dir)?.sync_all()
}

/// Writes the state file.
pub fn write(dir: &Path, state: &State) -> io::Result<()> {
    write_atomic(dir, FILE, state.render().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sample() -> State {
        State {
            saved_at: t("2026-12-21T18:00:00.123Z"),
            overrides: vec![
                SavedOverride {
                    target: "all".into(),
                    level_percent: Some(100.0),
                    fade_s: Some(2.0),
                    until: Some(t("2026-12-21T19:00:00Z")),
                },
                SavedOverride {
                    target: "group:1".into(),
                    level_percent: None,
                    fade_s: None,
                    until: None,
                },
            ],
            scenes: vec![SavedScene {
                scene: "emergency-route-a".into(),
                runners: vec![SavedRunner {
                    by: "central".into(),
                    until: Some(t("2026-12-21T18:10:00Z")),
                }],
            }],
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        write(dir.path(), &sample()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join("control-state.json.tmp").exists());
    }

    #[test]
    fn version_1_fixture_reads() {
        // Frozen: a file written by this version must stay readable.
        let v1 = r#"{"format":"cabinetd-control-state","version":1,"saved_at":"2026-12-21T18:00:00.123Z","overrides":[{"target":"all","level_percent":100.0,"fade_s":2.0,"until":"2026-12-21T19:00:00.000Z"},{"target":"group:1","level_percent":null,"fade_s":null,"until":null}],"scenes":[{"scene":"emergency-route-a","runners":[{"by":"central","until":"2026-12-21T18:10:00.000Z"}]}]}"#;
        assert_eq!(State::parse(v1).unwrap(), sample());
        assert_eq!(sample().render().trim(), v1);
    }

    #[test]
    fn refuses_foreign_newer_or_torn_content() {
        let ok = sample().render();
        assert!(State::parse(&ok.replace("\"version\":1", "\"version\":2"))
            .unwrap_err()
            .contains("version"));
        assert!(State::parse(&ok.replace("cabinetd-control-state", "x"))
            .unwrap_err()
            .contains("not a"));
        assert!(State::parse(&ok[..ok.len() / 2]).is_err());
        assert!(State::parse(&ok.replace("\"fade_s\":2.0", "\"fade_s\":2.0,\"x\":1")).is_err());
        assert!(State::parse(&ok.replace("2026-12-21T19:00:00.000Z", "tomorrow")).is_err());
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "{").unwrap();
        assert!(matches!(read(dir.path()), Err(StateError::Corrupt { .. })));
        fs::write(path(dir.path()), vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert!(matches!(read(dir.path()), Err(StateError::Corrupt { .. })));
    }
}
