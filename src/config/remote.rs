//! What a configuration received over MQTT (`P/C/config/desired`) may not contain at all: the
//! sections that decide what the central post itself may do. They come from the local files only;
//! a desired config naming one is rejected whole, naming the section. The loader applies this to
//! every source named [`DESIRED_SOURCE`] by itself, so no caller can forget it.

use super::tree::{self, Loc, Table};
use super::{ConfigError, ConfigErrors, Source};

/// Top-level sections only the local files may set: who may command the cabinet, what no
/// remote change may widen, and when a remote change is rolled back.
pub const LOCAL_ONLY_SECTIONS: [&str; 3] = ["security", "safety", "config"];

/// The name of a source received over MQTT (`P/C/config/desired`), as the daemon names it.
pub const DESIRED_SOURCE: &str = "<desired>";

/// Errors for the local-only sections of one parsed remote source.
pub(super) fn local_only(root: &Table) -> Vec<(Loc, String)> {
    root.entries
        .iter()
        .filter(|e| LOCAL_ONLY_SECTIONS.contains(&e.key.as_str()))
        .map(|e| {
            (
                e.key_loc,
                format!(
                    "[{}] may be set only in the cabinet's local files, never by a desired configuration",
                    e.key
                ),
            )
        })
        .collect()
}

/// Refuse a remote source that sets a local-only section (`[security]`, `[safety]`, or a key
/// under them in any TOML spelling). Syntax errors are left to the loader, which reports them.
pub fn check_remote_source(source: &Source) -> Result<(), ConfigErrors> {
    let Ok(root) = tree::parse(0, &source.text) else {
        return Ok(());
    };
    let errors: Vec<ConfigError> = local_only(&root)
        .into_iter()
        .map(|(loc, message)| ConfigError {
            file: source.name.clone(),
            line: loc.line,
            col: loc.col,
            message,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        check_remote_source(&Source {
            name: "<desired>".into(),
            text: text.into(),
        })
        .err()
        .map(|e| e.0.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
    }

    #[test]
    fn local_only_sections_are_refused_in_every_spelling() {
        assert!(check("[cabinet]\nid = \"x\"\n[[modbus]]\nname = \"m\"\n").is_empty());
        assert_eq!(
            check("[cabinet]\nid = \"x\"\n\n[security]\nrequire_signed = false\n"),
            ["<desired>:4:2: [security] may be set only in the cabinet's local files, never by a desired configuration"]
        );
        assert_eq!(check("safety.desired_may_write = [\"m/p\"]\n").len(), 1);
        assert_eq!(
            check("[[security.trusted_key]]\nkid = \"evil\"\n[safety]\n").len(),
            2
        );
        assert_eq!(check("security = { require_signed = false }\n").len(), 1);
        // The rollback window cannot be switched off remotely either.
        assert_eq!(check("[config]\nconfirm_after = \"0s\"\n").len(), 1);
        // Left to the loader.
        assert!(check("[security\n").is_empty());
    }

    #[test]
    fn the_loader_refuses_them_in_a_desired_source_by_itself() {
        let local = "[cabinet]\nid = \"c\"\nlatitude = 1.0\nlongitude = 2.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://h\"\n[security]\nrequire_signed = false\n";
        let load = |name: &str| {
            crate::config::load_sources(&[
                Source {
                    name: "local.toml".into(),
                    text: local.into(),
                },
                Source {
                    name: name.into(),
                    text: "[security]\nrequire_signed = false\n".into(),
                },
            ])
        };
        let e = load(DESIRED_SOURCE).unwrap_err().to_string();
        assert_eq!(e, "<desired>:1:2: [security] may be set only in the cabinet's local files, never by a desired configuration");
        assert!(load("conf.d/extra.toml").is_ok(), "a local drop-in may");
    }
}
