//! The desired configuration from the central post (`P/C/config/desired`), kept on disk so a
//! restart runs what central set.
//!
//! # File `<storage.path>/desired-config.json`
//! One JSON object, written only after the configuration was applied:
//! ```text
//! {"format": 1, "version": "<desired version>", "config": "<TOML text>"}
//! ```
//! - `format` is the version marker of this file (bumped on any change of its layout). A file
//!   without it is the v1.0 layout `{"version", "config"}` and is read the same way (a fixture
//!   test keeps it readable).
//! - Writer: the daemon's main loop alone ([`store`]): temp file `desired-config.json.tmp`,
//!   fsync, rename over the file, fsync of the directory — as `outbox::marks` does. A crash
//!   leaves either the previous file or the new one, never a torn one (a stray `.tmp` is
//!   overwritten by the next write).
//! - Reader: [`load`] at start and on SIGHUP; the text is merged after the `--config` files
//!   ([`merge`]) and named `<desired>` in errors. At start a stored document that is no longer
//!   valid on top of the files, or changes a section that needs a restart, is not applied and
//!   the reason is logged ([`restore`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{load_sources, Config, ConfigError, ConfigErrors, Source};

/// The layout version written in `format`.
pub const FORMAT: u32 = 1;
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

/// Where the document is kept.
pub fn path(storage: &Path) -> PathBuf {
    storage.join("desired-config.json")
}

/// The stored document, `Ok(None)` when there is none.
pub fn load(storage: &Path) -> io::Result<Option<Desired>> {
    let bytes = match fs::read(path(storage)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let doc: Desired = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if doc.format > FORMAT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("format {} is newer than this daemon's {FORMAT}", doc.format),
        ));
    }
    Ok(Some(doc))
}

/// Stores `doc` atomically and durably (see the module docs).
pub fn store(storage: &Path, doc: &Desired) -> io::Result<()> {
    let doc = Desired {
        format: FORMAT,
        ..doc.clone()
    };
    let tmp = storage.join("desired-config.json.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&doc).map_err(io::Error::other)?)?;
        f.sync_all()?;
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

/// At start: the files plus the stored desired document when it is still valid on top of them
/// and changes nothing that needs a restart; otherwise the files alone, the reason logged.
pub fn restore(files: &[PathBuf], cfg: Config) -> Config {
    let doc = match load(&cfg.storage.path) {
        Ok(Some(doc)) => doc,
        Ok(None) => return cfg,
        Err(e) => {
            tracing::error!(error = %e, file = %path(&cfg.storage.path).display(), "stored desired configuration unreadable; not applied");
            return cfg;
        }
    };
    let version = doc.version.clone();
    match merge(files, &doc) {
        Ok(merged) => match cfg.restart_section(&merged) {
            None => {
                tracing::info!(%version, "desired configuration restored");
                merged
            }
            Some(section) => {
                tracing::error!(%version, section, "stored desired configuration changes a section it may not; not applied");
                cfg
            }
        },
        Err(errors) => {
            tracing::error!(%version, %errors, "stored desired configuration invalid on top of the files; not applied");
            cfg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_with_the_format_marker_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let doc = Desired::from_message(br#"{"version":"v2","config":"[log]\n"}"#).unwrap();
        store(dir.path(), &doc).unwrap();
        let text = fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(
            text, r#"{"format":1,"version":"v2","config":"[log]\n"}"#,
            "the documented layout"
        );
        assert_eq!(load(dir.path()).unwrap(), Some(doc));
        assert!(!dir.path().join("desired-config.json.tmp").exists());
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
        fs::write(
            path(dir.path()),
            r#"{"format":2,"version":"v","config":""}"#,
        )
        .unwrap();
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
