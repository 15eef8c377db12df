//! Entry points: read sources, parse each, merge in order, validate, and turn positions into
//! `FILE:LINE:COL` errors sorted by file (in the order given) then position.

use std::path::PathBuf;

use super::tree::{self, Loc};
use super::validate::validate;
use super::{Config, ConfigError, ConfigErrors, Source};

/// Reads and loads config files, merged in order (later keys win; see the merge rule in
/// `config/cabinetd.example.toml`). Every problem of every file is reported at once.
pub fn load_files(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push(Source { name, text }),
            Err(e) => errors.push(ConfigError {
                file: name,
                line: 1,
                col: 1,
                message: format!("cannot read the file: {e}"),
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
