//! Entry points: read sources, parse each, merge in order, validate, and turn positions into
//! `FILE:LINE:COL` errors sorted by file (in the order given) then position.
//!
//! A configuration file is read up to [`MAX_CONFIG_BYTES`] and no further: a larger file (a
//! wrong path, `/dev/zero`) is an error naming it, never a read until memory runs out.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::tree::{self, Loc};
use super::validate::validate;
use super::{Config, ConfigError, ConfigErrors, Source};

/// Largest configuration file read (4 MiB): far above any cabinet's (the example is 20 KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads one configuration file, at most [`MAX_CONFIG_BYTES`]; `Err` is the message (the
/// caller names the file).
pub fn read_source(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "the file is larger than {} MiB, the limit of a configuration file: is it the right file?",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads and loads config files, merged in order (later keys win; see the merge rule in
/// `config/cabinetd.example.toml`). Every problem of every file is reported at once.
pub fn load_files(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        match read_source(path) {
            Ok(text) => sources.push(Source { name, text }),
            Err(message) => errors.push(ConfigError {
                file: name,
                line: 1,
                col: 1,
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    load_sources(&sources)
}

/// Loads named TOML texts (e.g. one source named `<desired>` for a config received over MQTT);
/// `Config::version` is the [`digest`] of the texts.
pub fn load_sources(sources: &[Source]) -> Result<Config, ConfigErrors> {
    load_sources_with_version(sources, None)
}

/// Like [`load_sources`], but `Config::version` is `version` when given (the `version` of a
/// `config/desired` message) instead of the digest of the texts.
pub fn load_sources_with_version(
    sources: &[Source],
    version: Option<&str>,
) -> Result<Config, ConfigErrors> {
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    if sources.is_empty() {
        return Err(ConfigErrors(vec![ConfigError {
            file: "<none>".into(),
            line: 1,
            col: 1,
            message: "no configuration file given".into(),
        }]));
    }
    let mut merged = None;
    let mut errs: Vec<(Loc, String)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        match tree::parse(i, &s.text) {
            Ok(t) => {
                if s.name == super::remote::DESIRED_SOURCE {
                    errs.extend(super::remote::local_only(&t));
                }
                match &mut merged {
                    None => merged = Some(t),
                    Some(m) => tree::merge(m, t, true),
                }
            }
            Err(syntax) => errs.extend(syntax.into_iter().map(|e| (e.loc, e.message))),
        }
    }
    // With a syntax error the merged document is incomplete: validating it would only add
    // misleading "missing key" errors, so syntax errors are reported alone.
    if errs.is_empty() {
        if let Some(root) = merged {
            let version = version.map_or_else(|| digest(sources), str::to_string);
            let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
            match validate(&root, &names, &texts, version) {
                Ok(config) => return Ok(config),
                Err(cx) => errs = cx.errs,
            }
        }
    }
    // Stable: errors at the same position keep the order they were found in.
    errs.sort_by_key(|(loc, _)| *loc);
    Err(ConfigErrors(
        errs.into_iter()
            .map(|(loc, message)| ConfigError {
                file: names[loc.src].clone(),
                line: loc.line,
                col: loc.col,
                message,
            })
            .collect(),
    ))
}

/// A short stable digest of the texts, in order: the first 12 hex digits of their 64-bit FNV-1a
/// hash, each text preceded by its length so that moving text between files changes it. Names
/// are left out: the same content installed at another path is the same configuration.
pub fn digest(sources: &[Source]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for s in sources {
        eat(&(s.text.len() as u64).to_le_bytes());
        eat(s.text.as_bytes());
    }
    format!("{h:016x}")[..12].to_string()
}
