//! The local files a configuration names ([`FileRef`]s, collected by validation with their
//! positions): checked by `check-config` and before `run` starts anything, and on every reload
//! and desired configuration, so a missing or unreadable file is a configuration error
//! (`FILE:LINE:COL`, exit 78) — never a start that dies with exit 1 and a restart loop.
//!
//! A secret is checked exactly as the daemon reads it ([`read_secret`]): what passes here reads
//! the same way at start. Secrets other users may read are warned about, not refused (the
//! operator decides; the package installs them 0600).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::{Config, ConfigError};

/// Largest secret file read (a password is a line; anything bigger is the wrong file).
pub const MAX_SECRET_BYTES: u64 = 4096;

/// What [`check_files`] found.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Files that cannot be used: the configuration is invalid.
    pub errors: Vec<ConfigError>,
    /// Files that work but should be fixed (a world-readable secret).
    pub warnings: Vec<ConfigError>,
}

/// Reads a secret file: at most [`MAX_SECRET_BYTES`], UTF-8, one trailing line break removed,
/// not empty. The error says why, never what the file holds.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "is larger than {MAX_SECRET_BYTES} bytes (a password file holds one line)"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text)
}

fn check_plain(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read it: {e}"))
}

/// Checks every file `cfg` names.
pub fn check_files(cfg: &Config) -> FileReport {
    let mut report = FileReport::default();
    for f in &cfg.files {
        let at = |message: String| ConfigError {
            file: f.at.0.clone(),
            line: f.at.1,
            col: f.at.2,
            message,
        };
        let checked = if f.secret {
            read_secret(&f.path).map(drop)
        } else {
            check_plain(&f.path)
        };
        match checked {
            Err(why) => report
                .errors
                .push(at(format!("{} {}: {why}", f.key, f.path.display()))),
            Ok(()) if f.secret => {
                let mode = std::fs::metadata(&f.path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o004 != 0 {
                    report.warnings.push(at(format!(
                        "warning: {} {} is readable by every user (mode {:o}); make it readable by cabinetd only (chmod 600)",
                        f.key,
                        f.path.display(),
                        mode & 0o777
                    )));
                }
            }
            Ok(()) => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_read_as_one_line_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        std::fs::write(&p, "two\nlines\n").unwrap();
        assert_eq!(
            read_secret(&p).unwrap(),
            "two\nlines",
            "only one break removed"
        );
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_secret(&p).unwrap_err(), "is empty");
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("larger than 4096"));
        assert!(read_secret(dir.path())
            .unwrap_err()
            .contains("not a regular file"));
        let e = read_secret(&dir.path().join("none")).unwrap_err();
        assert!(e.starts_with("cannot read it"), "{e}");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert_eq!(read_secret(&p).unwrap_err(), "is not UTF-8 text");
    }
}
