//! Interop with an independent JOSE implementation (PyPI joserfc, pinned in
//! tests/requirements.txt): a command it signs verifies with `auth::verify`; `cabinetd sign`
//! output verifies with it; and a token it signs with another key is refused by us.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use cabinetd::auth::key::SigningKey;
use cabinetd::auth::{verify, ActionPattern, SecurityPolicy, TopicKind, TrustedKey, TrustedKeys};
use cabinetd::record::format_ts;

/// Run a program with `input` on stdin: (exit success, stdout).
fn pipe(cmd: &mut Command, input: &[u8]) -> (bool, Vec<u8>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    // Captured by the test harness: shown only when the test fails.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), out.stdout)
}

fn peer(args: &[&str], input: &[u8]) -> (bool, Vec<u8>) {
    pipe(
        Command::new(support::python())
            .arg(support::root().join("tests/peers/jose_peer.py"))
            .args(args),
        input,
    )
}

fn keys(key: &SigningKey) -> TrustedKeys {
    TrustedKeys::new(vec![TrustedKey {
        kid: "ops-2026".into(),
        public_key: key.public_key(),
        actions: vec![
            ActionPattern::parse("point.write", &cabinetd::metrics::SPEC_ACTIONS).unwrap(),
        ],
        desired_config: false,
    }])
}

fn command(now: SystemTime) -> String {
    serde_json::json!({
        "id": "jose-1", "action": "point.write", "args": {"point": "plc/setpoint", "value": 7},
        "cabinet": "dijon-017", "issued_at": format_ts(now),
        "expires_at": format_ts(now + Duration::from_secs(120)),
    })
    .to_string()
}

#[test]
fn joserfc_signs_what_we_verify_and_verifies_what_we_sign() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ops-2026.pem");
    let key = SigningKey::generate().unwrap();
    key.write_new(&pem).unwrap();
    let now = SystemTime::now();

    // joserfc → auth::verify
    let (ok, token) = peer(
        &["sign", pem.to_str().unwrap(), "ops-2026"],
        command(now).as_bytes(),
    );
    assert!(ok);
    let v = verify(
        &token,
        TopicKind::Cabinet,
        &keys(&key),
        &SecurityPolicy::default(),
        "dijon-017",
        now,
    )
    .unwrap_or_else(|r| panic!("{r} ({})", String::from_utf8_lossy(&token)));
    assert_eq!(v.id.as_deref(), Some("jose-1"));
    assert_eq!(v.claims["args"]["value"], 7);

    // joserfc with another key under our kid → refused, with its reason.
    let other = dir.path().join("other.pem");
    SigningKey::generate().unwrap().write_new(&other).unwrap();
    let (_, forged) = peer(
        &["sign", other.to_str().unwrap(), "ops-2026"],
        command(now).as_bytes(),
    );
    let r = verify(
        &forged,
        TopicKind::Cabinet,
        &keys(&key),
        &SecurityPolicy::default(),
        "dijon-017",
        now,
    )
    .unwrap_err();
    assert_eq!(r.reason(), "bad_signature");

    // `cabinetd sign` → joserfc
    let input =
        br#"{"id":"cli-1","action":"light.set","args":{"target":"all","level_percent":100}}"#;
    let (ok, ours) = pipe(
        Command::new(support::cabinetd_bin()).args([
            "sign",
            "--key",
            pem.to_str().unwrap(),
            "--kid",
            "ops-2026",
            "--cabinet",
            "dijon-017",
            "--expires",
            "10min",
        ]),
        input,
    );
    assert!(ok);
    let (ok, payload) = peer(&["verify", &key.public_key_b64()], &ours);
    assert!(ok, "joserfc refused {}", String::from_utf8_lossy(&ours));
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["id"], "cli-1");
    assert_eq!(payload["cabinet"], "dijon-017");
    assert!(payload["issued_at"].is_string() && payload["expires_at"].is_string());
    // ...and joserfc refuses it under another public key (the check can fail).
    let stranger = SigningKey::generate().unwrap().public_key_b64();
    assert!(!peer(&["verify", &stranger], &ours).0);
}
