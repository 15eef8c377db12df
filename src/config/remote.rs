//! What a configuration received over MQTT (`P/C/config/desired`) may not contain at all: the
//! sections that decide what the central post itself may do. They come from the local files only;
//! a desired config naming one is rejected whole, naming the section, before it is merged.

use super::tree;
use super::{ConfigError, ConfigErrors, Source};

/// Top-level sections only the local files may set.
pub const LOCAL_ONLY_SECTIONS: [&str; 2] = ["security", "safety"];

/// Refuse a remote source that sets a local-only section (`[security]`, `[safety]`, or a key
/// under them in any TOML spelling). Syntax errors are left to the loader, which reports them.
pub fn check_remote_source(source: &Source) -> Result<(), ConfigErrors> {
    let Ok(root) = tree::parse(0, &source.text) else {
        return Ok(());
    };
    let errors: Vec<ConfigError> = root
        .entries
        .iter()
        .filter(|e| LOCAL_ONLY_SECTIONS.contains(&e.key.as_str()))
        .map(|e| ConfigError {
            file: source.name.clone(),
            line: e.key_loc.line,
            col: e.key_loc.col,
            message: format!(
                "[{}] may be set only in the cabinet's local files, never by a desired configuration",
                e.key
            ),
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
        // Left to the loader.
        assert!(check("[security\n").is_empty());
    }
}
