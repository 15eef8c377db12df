//! The rejection matrix of issue 12 at the pure level: each case asserts its `reason()`.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use super::key::SigningKey;
use super::*;

const CAB: &str = "dijon-017";
const KNOWN: &[&str] = &["point.write", "light.set", "light.release", "scene.run"];

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_680_000)
}

fn ts(t: SystemTime) -> String {
    crate::record::format_ts(t)
}

struct Fixture {
    ops: SigningKey,
    config: SigningKey,
    keys: TrustedKeys,
    policy: SecurityPolicy,
}

fn fixture() -> Fixture {
    let ops = SigningKey::generate().unwrap();
    let config = SigningKey::generate().unwrap();
    let keys = TrustedKeys::new(vec![
        TrustedKey {
            kid: "ops-2026".into(),
            public_key: ops.public_key(),
            actions: vec![
                ActionPattern::parse("light.*", KNOWN).unwrap(),
                ActionPattern::parse("point.write", KNOWN).unwrap(),
            ],
            desired_config: false,
        },
        TrustedKey {
            kid: "central-cfg".into(),
            public_key: config.public_key(),
            actions: vec![],
            desired_config: true,
        },
    ]);
    Fixture {
        ops,
        config,
        keys,
        policy: SecurityPolicy::default(),
    }
}

fn command(cabinet: &str) -> serde_json::Value {
    json!({
        "id": "c-1",
        "action": "light.set",
        "args": {"target": "all", "level_percent": 40},
        "cabinet": cabinet,
        "issued_at": ts(now() - Duration::from_secs(10)),
        "expires_at": ts(now() + Duration::from_secs(300)),
    })
}

impl Fixture {
    fn sign(&self, payload: &serde_json::Value) -> Vec<u8> {
        self.ops
            .sign_compact("ops-2026", payload.to_string().as_bytes())
            .into_bytes()
    }

    fn check(&self, token: &[u8], kind: TopicKind) -> Result<Verified, Rejected> {
        verify(token, kind, &self.keys, &self.policy, CAB, now())
    }

    fn reason(&self, token: &[u8], kind: TopicKind) -> &'static str {
        self.check(token, kind).unwrap_err().reason()
    }
}

/// A token with the given header and the payload, signed by `key` over `header.payload`.
fn raw_token(header: &str, payload: &str, key: &SigningKey) -> Vec<u8> {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign_bytes(signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig)).into_bytes()
}

#[test]
fn a_good_command_verifies_with_its_claims() {
    let f = fixture();
    let v = f.check(&f.sign(&command(CAB)), TopicKind::Cabinet).unwrap();
    assert_eq!(v.kid, "ops-2026");
    assert_eq!(v.id.as_deref(), Some("c-1"));
    assert_eq!(v.action.as_deref(), Some("light.set"));
    assert_eq!(v.expires_at, now() + Duration::from_secs(300));
    let parsed: serde_json::Value = serde_json::from_slice(&v.payload).unwrap();
    assert_eq!(parsed["args"]["level_percent"], 40);
    // A trailing newline (a file, a pipe) is tolerated.
    let mut t = f.sign(&command(CAB));
    t.push(b'\n');
    assert!(f.check(&t, TopicKind::Cabinet).is_ok());
}

#[test]
fn all_is_accepted_only_on_the_all_topic() {
    let f = fixture();
    assert!(f.check(&f.sign(&command("all")), TopicKind::All).is_ok());
    assert!(f.check(&f.sign(&command(CAB)), TopicKind::All).is_ok());
    let r = f
        .check(&f.sign(&command("all")), TopicKind::Cabinet)
        .unwrap_err();
    assert_eq!(r.reason(), "wrong_cabinet");
    assert!(r.authentic);
    assert_eq!(r.result_id(), Some("c-1"));
    assert_eq!(
        f.reason(&f.sign(&command("lyon-001")), TopicKind::All),
        "wrong_cabinet"
    );
}

#[test]
fn the_rejection_matrix() {
    let f = fixture();
    let good = command(CAB);
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    // unsigned
    assert_eq!(
        f.reason(good.to_string().as_bytes(), TopicKind::Cabinet),
        "unsigned"
    );
    // alg none (no signature at all, and with one)
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"ops-2026"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let r = f.check(none.as_bytes(), TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.reason(), "bad_alg");
    assert_eq!(r.kid.as_deref(), Some("ops-2026"));
    // HS256 with the public key as the HMAC secret (the classic key-confusion forgery)
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"ops-2026"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    for secret in [
        f.ops.public_key().to_vec(),
        f.ops.public_key_b64().into_bytes(),
    ] {
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            signing.as_bytes(),
        );
        let hs = format!("{signing}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(f.reason(hs.as_bytes(), TopicKind::Cabinet), "bad_alg");
    }
    for alg in ["RS256", "ES256", "eddsa", "Ed25519", ""] {
        let h = format!(r#"{{"alg":"{alg}","kid":"ops-2026"}}"#);
        assert_eq!(
            f.reason(
                &raw_token(&h, &good.to_string(), &f.ops),
                TopicKind::Cabinet
            ),
            "bad_alg",
            "{alg}"
        );
    }
    // unknown kid, missing kid
    let t = f.ops.sign_compact("ops-2019", good.to_string().as_bytes());
    let r = f.check(t.as_bytes(), TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.reason(), "unknown_kid");
    assert_eq!(r.kid.as_deref(), Some("ops-2019"));
    assert_eq!(r.result_id(), None, "not authentic: no result");
    assert_eq!(
        f.reason(
            &raw_token(r#"{"alg":"EdDSA"}"#, &good.to_string(), &f.ops),
            TopicKind::Cabinet
        ),
        "unknown_kid"
    );
    // wrong key (a trusted kid, signed by another key)
    let intruder = SigningKey::generate().unwrap();
    let t = intruder.sign_compact("ops-2026", good.to_string().as_bytes());
    let r = f.check(t.as_bytes(), TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.reason(), "bad_signature");
    assert_eq!(
        r.id.as_deref(),
        Some("c-1"),
        "the id is reported in the event"
    );
    assert!(!r.authentic);
    assert_eq!(r.result_id(), None);
    // a flipped payload byte
    let t = String::from_utf8(f.sign(&good)).unwrap();
    let (h, rest) = t.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let mut payload = URL_SAFE_NO_PAD.decode(p).unwrap();
    let at = payload.iter().position(|b| *b == b'4').unwrap();
    payload[at] = b'9'; // level 40 → 90
    let flipped = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(&payload));
    assert_eq!(
        f.reason(flipped.as_bytes(), TopicKind::Cabinet),
        "bad_signature"
    );
    // a flipped signature bit
    let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    sig[0] ^= 1;
    let bad = format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        f.reason(bad.as_bytes(), TopicKind::Cabinet),
        "bad_signature"
    );
    // wrong cabinet; all on the cabinet topic
    assert_eq!(
        f.reason(&f.sign(&command("lyon-001")), TopicKind::Cabinet),
        "wrong_cabinet"
    );
    assert_eq!(
        f.reason(&f.sign(&command("all")), TopicKind::Cabinet),
        "wrong_cabinet"
    );
    // expired (and exactly at expiry)
    let r = f
        .check(
            &f.sign(&with(
                "expires_at",
                json!(ts(now() - Duration::from_secs(1))),
            )),
            TopicKind::Cabinet,
        )
        .unwrap_err();
    assert_eq!(r.reason(), "expired");
    assert_eq!(r.result_id(), Some("c-1"));
    assert_eq!(
        f.reason(
            &f.sign(&with("expires_at", json!(ts(now())))),
            TopicKind::Cabinet
        ),
        "expired"
    );
    // missing expires_at / issued_at
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("expires_at");
    assert_eq!(f.reason(&f.sign(&no_exp), TopicKind::Cabinet), "bad_claim");
    let mut no_iat = good.clone();
    no_iat.as_object_mut().unwrap().remove("issued_at");
    assert_eq!(f.reason(&f.sign(&no_iat), TopicKind::Cabinet), "bad_claim");
    // issued in the future beyond the skew (within it: fine)
    let future = |s: u64| {
        let mut c = with("issued_at", json!(ts(now() + Duration::from_secs(s))));
        c["expires_at"] = json!(ts(now() + Duration::from_secs(s + 60)));
        c
    };
    assert!(f.check(&f.sign(&future(299)), TopicKind::Cabinet).is_ok());
    assert_eq!(
        f.reason(&f.sign(&future(301)), TopicKind::Cabinet),
        "issued_in_future"
    );
    // validity too long (24 h + 1 s)
    let long = with(
        "expires_at",
        json!(ts(
            now() - Duration::from_secs(10) + Duration::from_secs(86_401)
        )),
    );
    assert_eq!(
        f.reason(&f.sign(&long), TopicKind::Cabinet),
        "validity_too_long"
    );
    // an action outside the key's scope; a desired config by a key without desired_config
    let r = f
        .check(
            &f.sign(&with("action", json!("scene.run"))),
            TopicKind::Cabinet,
        )
        .unwrap_err();
    assert_eq!(r.reason(), "action_not_allowed");
    assert_eq!(r.result_id(), Some("c-1"));
    let desired = json!({"version": "v2", "config": "", "cabinet": CAB,
        "issued_at": ts(now()), "expires_at": ts(now() + Duration::from_secs(60))});
    assert_eq!(
        f.reason(&f.sign(&desired), TopicKind::Desired),
        "desired_not_allowed"
    );
    let by_config_key = f
        .config
        .sign_compact("central-cfg", desired.to_string().as_bytes());
    let v = f
        .check(by_config_key.as_bytes(), TopicKind::Desired)
        .unwrap();
    assert_eq!(v.claims["version"], "v2");
    // ...but the config key signs no command
    let t = f
        .config
        .sign_compact("central-cfg", good.to_string().as_bytes());
    assert_eq!(
        f.reason(t.as_bytes(), TopicKind::Cabinet),
        "action_not_allowed"
    );
    // a 10 MB payload, refused on size before anything is decoded
    let big = vec![b'A'; 10 * 1024 * 1024];
    assert_eq!(f.reason(&big, TopicKind::Cabinet), "too_large");
    assert_eq!(f.reason(&big, TopicKind::Desired), "too_large");
    // malformed JWS
    for bad in [
        &b""[..],
        b"abc",
        b"a.b",
        b"a.b.c.d",
        b"!!.e30.AA",
        b"eyJhbGciOiJFZERTQSJ9=.e30.AA",
        b"WzFd.e30.AA",
    ] {
        let r = f.check(bad, TopicKind::Cabinet).unwrap_err();
        assert_eq!(r.reason(), "malformed", "{}", String::from_utf8_lossy(bad));
    }
    // A header without alg.
    assert_eq!(f.reason(b"e30.e30.AA", TopicKind::Cabinet), "bad_alg");
    let long_header = format!("{}.e30.AA", "A".repeat(MAX_HEADER_B64 + 1));
    assert_eq!(
        f.reason(long_header.as_bytes(), TopicKind::Cabinet),
        "malformed"
    );
    // payload that verifies but is not an object
    let t = f.ops.sign_compact("ops-2026", b"[1,2]");
    let r = f.check(t.as_bytes(), TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.reason(), "malformed");
    assert!(r.authentic);
}

#[test]
fn headers_with_crit_unknown_or_duplicate_parameters_are_refused() {
    let f = fixture();
    let p = command(CAB).to_string();
    for h in [
        r#"{"alg":"EdDSA","kid":"ops-2026","crit":["exp"],"exp":1}"#,
        r#"{"alg":"EdDSA","kid":"ops-2026","crit":[]}"#,
        r#"{"alg":"EdDSA","kid":"ops-2026","jwk":{"kty":"OKP"}}"#,
        r#"{"alg":"EdDSA","kid":"ops-2026","b64":false}"#,
        r#"{"alg":"EdDSA","kid":"ops-2026","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","kid":"ops-2026","kid":"central-cfg"}"#,
    ] {
        let r = f
            .check(&raw_token(h, &p, &f.ops), TopicKind::Cabinet)
            .unwrap_err();
        assert_eq!(r.reason(), "bad_header", "{h}");
    }
    // typ is fine (JOSE libraries add it)
    assert!(f
        .check(
            &raw_token(
                r#"{"alg":"EdDSA","kid":"ops-2026","typ":"JOSE"}"#,
                &p,
                &f.ops
            ),
            TopicKind::Cabinet
        )
        .is_ok());
}

#[test]
fn long_ids_and_odd_kids_are_never_echoed() {
    let f = fixture();
    let mut c = command(CAB);
    c["id"] = json!("x".repeat(129));
    c["action"] = json!("camera.reboot");
    let r = f.check(&f.sign(&c), TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.id, None);
    assert_eq!(r.result_id(), None);
    let t = raw_token(
        &format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, "k".repeat(65)),
        &command(CAB).to_string(),
        &f.ops,
    );
    let r = f.check(&t, TopicKind::Cabinet).unwrap_err();
    assert_eq!(r.reason(), "unknown_kid");
    assert_eq!(r.kid, None);
    let data = r.event_data();
    assert_eq!(data["reason"], "unknown_kid");
    assert!(data.get("payload").is_none());
}

#[test]
fn accept_lets_plain_json_through_only_when_signing_is_off() {
    let f = fixture();
    let mut sec = SecurityConfig {
        require_signed: true,
        policy: f.policy,
        keys: f.keys.clone(),
    };
    let plain = command(CAB).to_string();
    let r = accept(plain.as_bytes(), TopicKind::Cabinet, &sec, CAB, now()).unwrap_err();
    assert_eq!(r.reason(), "unsigned");
    sec.require_signed = false;
    let a = accept(plain.as_bytes(), TopicKind::Cabinet, &sec, CAB, now()).unwrap();
    assert_eq!(a.kid(), None);
    assert_eq!(a.payload(), plain.as_bytes());
    // A JWS is still verified with signing off.
    let t = f.sign(&command("lyon-001"));
    let r = accept(&t, TopicKind::Cabinet, &sec, CAB, now()).unwrap_err();
    assert_eq!(r.reason(), "wrong_cabinet");
    let a = accept(&f.sign(&command(CAB)), TopicKind::Cabinet, &sec, CAB, now()).unwrap();
    assert_eq!(a.kid(), Some("ops-2026"));
    // The size bound holds in plain mode too.
    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(MAX_COMMAND_TOKEN_BYTES));
    let r = accept(big.as_bytes(), TopicKind::All, &sec, CAB, now()).unwrap_err();
    assert_eq!(r.reason(), "too_large");
}

#[test]
fn every_reason_is_listed() {
    let f = fixture();
    let samples = [
        AuthError::TooLarge { size: 1, limit: 0 },
        AuthError::Unsigned,
        AuthError::Malformed(String::new()),
        AuthError::Algorithm(String::new()),
        AuthError::Header(String::new()),
        AuthError::UnknownKid(String::new()),
        AuthError::Signature(String::new()),
        AuthError::Claim {
            claim: "cabinet",
            problem: String::new(),
        },
        AuthError::Cabinet {
            found: String::new(),
            expected: String::new(),
        },
        AuthError::IssuedInFuture {
            ahead_s: 0,
            skew_s: 0,
        },
        AuthError::Expired { ago_s: 0 },
        AuthError::ValidityTooLong {
            validity_s: 0,
            max_s: 0,
        },
        AuthError::ActionNotAllowed {
            kid: String::new(),
            action: String::new(),
        },
        AuthError::DesiredNotAllowed(String::new()),
    ];
    for e in samples {
        assert!(REASONS.contains(&e.reason()), "{}", e.reason());
    }
    drop(f);
}

#[test]
fn action_patterns() {
    assert_eq!(
        ActionPattern::parse("*", KNOWN).unwrap(),
        ActionPattern::Any
    );
    let light = ActionPattern::parse("light.*", KNOWN).unwrap();
    assert!(light.matches("light.set"));
    assert!(light.matches("light.release"));
    assert!(!light.matches("lightx.set"));
    assert!(!light.matches("point.write"));
    assert_eq!(light.to_string(), "light.*");
    assert!(ActionPattern::parse("point.write", KNOWN)
        .unwrap()
        .matches("point.write"));
    assert!(ActionPattern::parse("point.writ", KNOWN).is_err());
    assert!(ActionPattern::parse("camera.*", KNOWN).is_err());
    assert!(ActionPattern::parse(".*", KNOWN).is_err());
    assert!(ActionPattern::parse("light*", KNOWN).is_err());
}

#[test]
fn topic_kinds() {
    let k = |t| TopicKind::of_topic(t, "cabinets/v1", CAB);
    assert_eq!(k("cabinets/v1/dijon-017/cmd"), Some(TopicKind::Cabinet));
    assert_eq!(k("cabinets/v1/all/cmd"), Some(TopicKind::All));
    assert_eq!(
        k("cabinets/v1/dijon-017/config/desired"),
        Some(TopicKind::Desired)
    );
    assert_eq!(k("cabinets/v1/dijon-0170/cmd"), None);
    assert_eq!(k("cabinets/v1/dijon-017/cmd/result"), None);
    assert_eq!(k("cabinets/v2/dijon-017/cmd"), None);
}

#[test]
fn the_throttle_bounds_events_and_counts_what_it_suppressed() {
    let t0 = std::time::Instant::now();
    let mut t = RejectionThrottle::new(3, 60);
    assert_eq!(t.admit(t0), Some(0));
    assert_eq!(t.admit(t0), Some(0));
    assert_eq!(t.admit(t0), Some(0));
    for _ in 0..100 {
        assert_eq!(t.admit(t0), None);
    }
    // One token per second comes back.
    assert_eq!(t.admit(t0 + Duration::from_millis(1000)), Some(100));
    assert_eq!(t.admit(t0 + Duration::from_millis(1100)), None);
    assert_eq!(t.admit(t0 + Duration::from_secs(60)), Some(1));
}
