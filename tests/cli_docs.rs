//! The CLI's own documentation (issue 14 item 6): the man pages and shell completions the
//! package installs are exactly what the CLI definition generates, every subcommand's `--help`
//! ends with examples and its exit codes, and no help text sends a person to a SPEC section that
//! is not in the repository.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::*;

const REGENERATE: &str = "regenerate with:\n  cargo build && B=target/debug/cabinetd && rm -rf debian/man && $B man --out debian/man && \
$B completions bash > debian/completions/cabinetd.bash && $B completions zsh > debian/completions/_cabinetd && \
$B completions fish > debian/completions/cabinetd.fish";

fn cabinetd(args: &[&str]) -> std::process::Output {
    Command::new(cabinetd_bin()).args(args).output().unwrap()
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// Every (visible) subcommand path, from the generated man pages' names:
/// `cabinetd-dali-commission.1` → `["dali", "commission"]`.
fn subcommands(man_dir: &Path) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = files(man_dir)
        .keys()
        .filter_map(|n| n.strip_suffix(".1"))
        .filter_map(|n| n.strip_prefix("cabinetd-"))
        .map(|n| {
            // Subcommand names may hold dashes (check-config): split on the known parents.
            match n.split_once('-') {
                Some((parent, rest)) if ["dali", "onvif", "key", "ctl"].contains(&parent) => {
                    vec![parent.to_string(), rest.to_string()]
                }
                _ => vec![n.to_string()],
            }
        })
        .collect();
    out.sort();
    out
}

/// `cabinetd man --out DIR` into a temporary directory (kept alive by the first value).
fn man_pages() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let man = tmp.path().join("man");
    let out = cabinetd(&["man", "--out", man.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (tmp, man)
}

#[test]
fn the_packaged_man_pages_and_completions_are_what_the_cli_generates() {
    let (_tmp, man) = man_pages();
    let generated = files(&man);
    let committed = files(&root().join("debian/man"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "debian/man does not hold one page per subcommand; {REGENERATE}"
    );
    for (name, text) in &generated {
        assert!(
            committed[name] == *text,
            "debian/man/{name} differs from what the CLI generates; {REGENERATE}"
        );
        assert!(
            text.contains(".SH EXTRA"),
            "{name} has no examples/exit codes section"
        );
    }
    assert!(generated.contains_key("cabinetd.1"));
    assert!(generated.contains_key("cabinetd-check-config.1"));

    for (shell, file) in [
        ("bash", "cabinetd.bash"),
        ("zsh", "_cabinetd"),
        ("fish", "cabinetd.fish"),
    ] {
        let out = cabinetd(&["completions", shell]);
        assert!(out.status.success());
        let committed = std::fs::read(root().join("debian/completions").join(file)).unwrap();
        assert!(
            out.stdout == committed,
            "debian/completions/{file} differs from `cabinetd completions {shell}`; {REGENERATE}"
        );
    }
    assert_eq!(cabinetd(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn every_subcommand_help_gives_examples_and_exit_codes() {
    let (_tmp, man) = man_pages();
    let mut paths = subcommands(&man);
    assert!(paths.len() >= 15, "{paths:?}");
    // The hidden generators are documented too.
    paths.push(vec!["man".into()]);
    paths.push(vec!["completions".into()]);
    for path in &paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = cabinetd(&args);
        assert!(out.status.success(), "cabinetd {args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Example"),
            "`cabinetd {}` gives no example:\n{help}",
            args.join(" ")
        );
        assert!(
            help.contains("Exit codes"),
            "`cabinetd {}` does not give its exit codes:\n{help}",
            args.join(" ")
        );
    }
    let top = cabinetd(&["--help"]);
    let help = String::from_utf8_lossy(&top.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("docs/protocol.md"),
        "{help}"
    );
}

/// Issue 14: `cabinetd plan --help` said "(SPEC §1)", a document the repository does not have.
#[test]
fn no_help_text_refers_to_the_spec() {
    let (_tmp, man) = man_pages();
    for (name, text) in files(&man) {
        assert!(!text.contains("SPEC"), "{name} refers to the SPEC");
    }
}

/// The bash completion loads and completes a subcommand and a flag, as bash itself runs it.
#[test]
fn bash_completes_subcommands_and_flags() {
    let script = root().join("debian/completions/cabinetd.bash");
    let complete = |words: &str, cword: usize| -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 COMP_POINT=${{#COMP_LINE}}; _cabinetd cabinetd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subs = complete("cabinetd che", 1);
    assert!(subs.lines().any(|l| l == "check-config"), "{subs}");
    let flags = complete("cabinetd check-config --as", 2);
    assert!(flags.lines().any(|l| l == "--as-user"), "{flags}");
}
