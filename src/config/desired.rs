//! The desired configuration from the central post (`P/C/config/desired`), kept on disk so a
//! restart runs what central set — and, until it is confirmed, the last good one to return to.
//!
//! # File `<storage.path>/desired-config.json` (format 2)
//! One JSON object, written only after a configuration was applied (or confirmed, or rolled
//! back):
//! ```text
//! {"format": 2,
//!  "current": {"version": "<desired version>", "config": "<TOML text>"} | null,
//!  "confirmed": true | false,
//!  "last_good": {"version": …, "config": …} | null,
//!  "rolled_back": {"version": …, "reason": "…", "ts": "<RFC 3339>"} | null}
//! ```
//! - `current` runs on top of the `--config` files (null: the files alone). While `confirmed` is
//!   false it is in its confirmation window (`config.confirm_after`, `daemon::confirm`) and
//!   `last_good` is what a rollback returns to (null: the files alone). `rolled_back` names the
//!   last version rolled back: that version is not applied again when the broker delivers the
//!   retained message again (central sends a new version to retry).
//! - `format` is the version marker of this file (bumped on any change of its layout). Older
//!   layouts are read too (fixture tests): format 1 `{"format":1,"version","config"}` and v1.0
//!   `{"version","config"}` (no marker) are a confirmed `current`.
//! - Writer: the daemon's main loop alone ([`store_state`]): temp file `desired-config.json.tmp`,
//!   fsync, rename over the file, fsync of the directory — as `outbox::marks` does. A crash
//!   leaves either the previous file or the new one, never a torn one (a stray `.tmp` is
//!   overwritten by the next write).
//! - Reader: [`load_state`] at start and on SIGHUP; the text is merged after the `--config` files
//!   ([`merge`]) and named `<desired>` in errors. At start a stored document that is no longer
//!   valid on top of the files, crosses the local safety envelope, or changes a section that
//!   needs a restart, is not applied and the reason is logged ([`restore`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{load_sources, Config, ConfigError, ConfigErrors, Source};

/// The layout version written in `format`.
pub const FORMAT: u32 = 2;
/// The name of the desired text in errors (`<desired>:LINE:COL: …`).
pub const SOURCE_NAME: &str = "<desired>";

/// A desired configuration: its version (central's name for it) and its TOML text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Layout marker of the stored file (absent in the v1.0 layout).
    #[serde(default)]
    pub format: u32,
    /// The `version` of the `config/desired` message; becomes `config_version`.
    pub version: String,
    /// The TOML text.
    pub config: String,
}

impl Desired {
    /// Reads a `config/desired` payload `{"version": S, "config": TOML}`; the error names the
    /// field, with the version when it could be read (for `config/reported`).
    pub fn from_message(payload: &[u8]) -> Result<Desired, (String, String)> {
        let doc: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| (String::new(), format!("payload is not JSON: {e}")))?;
        let version = doc["version"].as_str().filter(|v| !v.is_empty()).ok_or((
            String::new(),
            "field `version`: missing or not a string".into(),
        ))?;
        let config = doc["config"].as_str().ok_or((
            version.to_owned(),
            "field `config`: missing or not a TOML string".into(),
        ))?;
        Ok(Desired {
            format: FORMAT,
            version: version.to_owned(),
            config: config.to_owned(),
        })
    }

    fn source(&self) -> Source {
        Source {
            name: SOURCE_NAME.into(),
            text: self.config.clone(),
        }
    }
}

/// A version rolled back after its confirmation window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// The version rolled back.
    pub version: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub ts: String,
}

/// A document as stored in `current` / `last_good`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Doc {
    version: String,
    config: String,
}

impl From<&Desired> for Doc {
    fn from(d: &Desired) -> Doc {
        Doc {
            version: d.version.clone(),
            config: d.config.clone(),
        }
    }
}

impl From<Doc> for Desired {
    fn from(d: Doc) -> Desired {
        Desired {
            format: FORMAT,
            version: d.version,
            config: d.config,
        }
    }
}

/// The whole stored state (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Runs on top of the files (`None`: the files alone).
    pub current: Option<Desired>,
    /// `current` passed its confirmation window.
    pub confirmed: bool,
    /// What a rollback of `current` returns to (`None`: the files alone).
    pub last_good: Option<Desired>,
    /// The last version rolled back.
    pub rolled_back: Option<RolledBack>,
}

impl Default for Stored {
    fn default() -> Self {
        Stored {
            current: None,
            confirmed: true,
            last_good: None,
            rolled_back: None,
        }
    }
}

impl Stored {
    /// `doc` was applied: it runs on probation; the rollback target is the last confirmed one
    /// (kept when the running one was itself still on probation).
    pub fn applied(&self, doc: &Desired) -> Stored {
        Stored {
            current: Some(doc.clone()),
            confirmed: false,
            last_good: if self.confirmed {
                self.current.clone()
            } else {
                self.last_good.clone()
            },
            rolled_back: self.rolled_back.clone(),
        }
    }

    /// `current` passed its window.
    pub fn confirmed(&self) -> Stored {
        Stored {
            current: self.current.clone(),
            confirmed: true,
            last_good: None,
            rolled_back: self.rolled_back.clone(),
        }
    }

    /// `current` failed its window: `last_good` runs again.
    pub fn rolled_back(&self, reason: &str, ts: std::time::SystemTime) -> Stored {
        Stored {
            current: self.last_good.clone(),
            confirmed: true,
            last_good: None,
            rolled_back: self.current.as_ref().map(|c| RolledBack {
                version: c.version.clone(),
                reason: reason.to_owned(),
                ts: crate::record::format_ts(ts),
            }),
        }
    }

    /// Whether `version` was rolled back and must not be applied again as is.
    pub fn was_rolled_back(&self, version: &str) -> Option<&RolledBack> {
        self.rolled_back.as_ref().filter(|r| r.version == version)
    }
}

/// The file as read (any format).
#[derive(Deserialize)]
struct AnyFormat {
    #[serde(default)]
    format: u32,
    // Format 2.
    #[serde(default)]
    current: Option<Doc>,
    #[serde(default = "yes")]
    confirmed: bool,
    #[serde(default)]
    last_good: Option<Doc>,
    #[serde(default)]
    rolled_back: Option<RolledBack>,
    // Formats 0 and 1.
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    config: Option<String>,
}

fn yes() -> bool {
    true
}

/// Where the document is kept.
pub fn path(storage: &Path) -> PathBuf {
    storage.join("desired-config.json")
}

/// The running stored document, `Ok(None)` when there is none.
pub fn load(storage: &Path) -> io::Result<Option<Desired>> {
    load_state(storage).map(|s| s.current)
}

/// The stored state; the default (nothing, confirmed) when there is no file.
pub fn load_state(storage: &Path) -> io::Result<Stored> {
    let bytes = match fs::read(path(storage)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(e) => return Err(e),
    };
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let f: AnyFormat = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if f.format > FORMAT {
        return Err(bad(format!(
            "format {} is newer than this daemon's {FORMAT}",
            f.format
        )));
    }
    if f.format < 2 {
        let (Some(version), Some(config)) = (f.version, f.config) else {
            return Err(bad("missing `version` or `config`".into()));
        };
        return Ok(Stored {
            current: Some(Desired {
                format: f.format,
                version,
                config,
            }),
            ..Stored::default()
        });
    }
    Ok(Stored {
        current: f.current.map(Into::into),
        confirmed: f.confirmed,
        last_good: f.last_good.map(Into::into),
        rolled_back: f.rolled_back,
    })
}

/// Stores `state` atomically and durably (see the module docs).
pub fn store_state(storage: &Path, state: &Stored) -> io::Result<()> {
    let text = serde_json::json!({
        "format": FORMAT,
        "current": state.current.as_ref().map(Doc::from),
        "confirmed": state.confirmed,
        "last_good": state.last_good.as_ref().map(Doc::from),
        "rolled_back": state.rolled_back,
    });
    let tmp = storage.join("desired-config.json.tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(&text).map_err(io::Error::other)?)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path(storage))?;
    // The rename must survive a power cut too.
    fs::File::open(storage)?.sync_all()
}

/// The `--config` files with `doc` merged last; `Config::version` is the desired version.
pub fn merge(files: &[PathBuf], doc: &Desired) -> Result<Config, ConfigErrors> {
    let mut sources = Vec::with_capacity(files.len() + 1);
    for f in files {
        let text = super::load::read_source(f).map_err(|message| {
            ConfigErrors(vec![ConfigError {
                file: f.display().to_string(),
                line: 1,
                col: 1,
                message,
            }])
        })?;
        sources.push(Source {
            name: f.display().to_string(),
            text,
        });
    }
    sources.push(doc.source());
    let mut cfg = load_sources(&sources)?;
    cfg.version = doc.version.clone();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_with_the_format_marker_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        assert_eq!(load_state(dir.path()).unwrap(), Stored::default());
        let v2 = Desired::from_message(br#"{"version":"v2","config":"[log]\n"}"#).unwrap();
        let state = Stored::default().applied(&v2);
        store_state(dir.path(), &state).unwrap();
        let text = fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(
            text,
            r#"{"confirmed":false,"current":{"config":"[log]\n","version":"v2"},"format":2,"last_good":null,"rolled_back":null}"#,
            "the documented layout"
        );
        assert_eq!(load_state(dir.path()).unwrap(), state);
        assert_eq!(load(dir.path()).unwrap(), Some(v2));
        assert!(!dir.path().join("desired-config.json.tmp").exists());
    }

    #[test]
    fn the_last_good_document_is_kept_until_the_new_one_is_confirmed() {
        let doc = |v: &str| {
            Desired::from_message(format!(r#"{{"version":"{v}","config":""}}"#).as_bytes()).unwrap()
        };
        let s = Stored::default().applied(&doc("v1")).confirmed();
        assert_eq!((s.current.clone(), s.confirmed), (Some(doc("v1")), true));
        // v2 on probation, then v3 before v2 was confirmed: the rollback target stays v1.
        let s = s.applied(&doc("v2"));
        assert_eq!(s.last_good, Some(doc("v1")));
        let s = s.applied(&doc("v3"));
        assert_eq!(s.last_good, Some(doc("v1")));
        let t = std::time::SystemTime::UNIX_EPOCH;
        let back = s.rolled_back("uplink not back", t);
        assert_eq!(back.current, Some(doc("v1")));
        assert!(back.confirmed && back.last_good.is_none());
        assert_eq!(
            back.was_rolled_back("v3").unwrap().reason,
            "uplink not back"
        );
        assert!(back.was_rolled_back("v1").is_none());
        // The first desired config rolls back to the files alone.
        let first = Stored::default().applied(&doc("v1")).rolled_back("x", t);
        assert_eq!(first.current, None);
        let dir = tempfile::tempdir().unwrap();
        store_state(dir.path(), &first).unwrap();
        assert_eq!(load_state(dir.path()).unwrap(), first);
    }

    #[test]
    fn reads_the_format_1_layout() {
        // Fixture: the file as daemons before the rollback (format 1) wrote it.
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            path(dir.path()),
            r#"{"format":1,"version":"v2","config":"[log]\n"}"#,
        )
        .unwrap();
        let s = load_state(dir.path()).unwrap();
        assert!(s.confirmed && s.last_good.is_none());
        assert_eq!(s.current.unwrap().version, "v2");
    }

    #[test]
    fn reads_the_v1_0_layout_without_marker() {
        // Fixture: the file as daemons before the format marker wrote it.
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            path(dir.path()),
            r#"{"version":"v2","config":"[[modbus]]\nname = \"remote\"\n"}"#,
        )
        .unwrap();
        let doc = load(dir.path()).unwrap().unwrap();
        assert_eq!((doc.format, doc.version.as_str()), (0, "v2"));
        assert!(doc.config.contains("remote"));
    }

    #[test]
    fn refuses_a_newer_format_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), r#"{"format":3,"current":null}"#).unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("newer"));
        fs::write(path(dir.path()), "not json").unwrap();
        assert_eq!(
            load(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn messages_name_the_missing_field() {
        let e = Desired::from_message(br#"{"config":""}"#).unwrap_err();
        assert!(e.1.contains("field `version`"), "{e:?}");
        let e = Desired::from_message(br#"{"version":"v"}"#).unwrap_err();
        assert_eq!(e.0, "v");
        assert!(e.1.contains("field `config`"), "{e:?}");
        assert!(Desired::from_message(b"nope")
            .unwrap_err()
            .1
            .contains("JSON"));
    }
}
