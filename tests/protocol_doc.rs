//! `docs/protocol.md` is the protocol a central post implements against (issue 14 item 1): it
//! must name every event kind, action, status, stream and auth reason the code knows, and every
//! JSON example in it must parse. A kind or action added to the code without its line in the
//! document fails here.

mod support;

use cabinetd::event::EventKind;
use cabinetd::record::{CommandStatus, Stream};

fn doc() -> String {
    std::fs::read_to_string(support::root().join("docs/protocol.md")).unwrap()
}

/// Whether `name` has its own row in a table of the document (`| `name` | …`).
fn has_row(doc: &str, name: &str) -> bool {
    let row = format!("| `{name}` |");
    doc.lines().any(|l| l.starts_with(&row))
}

#[test]
fn every_event_kind_has_its_row() {
    let doc = doc();
    let missing: Vec<&str> = EventKind::ALL
        .iter()
        .map(EventKind::as_str)
        .filter(|k| !has_row(&doc, k))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md has no row in the events table for {missing:?}: add severity, source, data and when"
    );
}

#[test]
fn every_action_status_stream_and_auth_reason_is_documented() {
    let doc = doc();
    for action in cabinetd::metrics::SPEC_ACTIONS {
        assert!(has_row(&doc, action), "action {action} has no row");
    }
    for status in [
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Rejected,
        CommandStatus::Expired,
    ] {
        assert!(
            has_row(&doc, status.as_str()),
            "status {} has no row",
            status.as_str()
        );
    }
    for stream in Stream::BY_PRIORITY {
        let topic = format!("`P/C/{}`", stream.topic_suffix());
        assert!(doc.contains(&topic), "{topic} missing");
        assert!(
            doc.contains(&format!("`{}`", stream.as_str())),
            "stream {stream} missing"
        );
    }
    for reason in cabinetd::auth::REASONS {
        assert!(
            doc.contains(&format!("`{reason}`")),
            "auth reason {reason} missing"
        );
    }
}

#[test]
fn every_json_example_parses() {
    let doc = doc();
    let mut blocks = 0;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```json" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let text = body.join("\n");
        let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("a JSON example does not parse ({e}):\n{text}"));
        assert!(!values.is_empty(), "empty JSON example");
        blocks += 1;
    }
    assert!(blocks >= 10, "only {blocks} JSON examples");
}

#[test]
fn the_readme_links_the_protocol() {
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/protocol.md"),
        "README does not link docs/protocol.md"
    );
}
