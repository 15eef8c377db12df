//! Cost of the signature checks per command (issue 12 benchmark, not a test): `auth::accept` of
//! a signed `point.write` (size bound, base64url, header, Ed25519 verification with ring, the
//! claims), then `command::parse` of its payload. Prints ns per command.
//!
//! Native: `cargo bench --bench verify`. On the ARM build, under qemu (see README "Measured"):
//! `CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc cargo bench --bench verify --no-run
//! --target aarch64-unknown-linux-gnu`, then run the printed binary with
//! `qemu-aarch64-static -L /usr/aarch64-linux-gnu BINARY --bench`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use cabinetd::auth::key::SigningKey;
use cabinetd::auth::{
    accept, ActionPattern, SecurityConfig, SecurityPolicy, TopicKind, TrustedKey, TrustedKeys,
};

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    // Warm up, then time `n` runs.
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn main() {
    let n: u32 = std::env::var("VERIFY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let key = SigningKey::generate().expect("key");
    let now = SystemTime::now();
    let doc = r#"{"id":"c-42","action":"point.write","args":{"point":"tc-12/plan","value":7}}"#;
    let token = cabinetd::ops::sign_document(
        doc.as_bytes(),
        &key,
        "ops-2026",
        Some("dijon-017"),
        Some(Duration::from_secs(600)),
        now,
    )
    .expect("sign");
    let security = SecurityConfig {
        require_signed: true,
        policy: SecurityPolicy::default(),
        keys: TrustedKeys::new(vec![TrustedKey {
            kid: "ops-2026".into(),
            public_key: key.public_key(),
            actions: vec![ActionPattern::Any],
            desired_config: false,
        }]),
    };
    let token = token.as_bytes();
    let verify = per_op(n, || {
        let a = accept(
            black_box(token),
            TopicKind::Cabinet,
            &security,
            "dijon-017",
            now,
        )
        .expect("verifies");
        black_box(a);
    });
    let both = per_op(n, || {
        let a = accept(
            black_box(token),
            TopicKind::Cabinet,
            &security,
            "dijon-017",
            now,
        )
        .expect("verifies");
        black_box(cabinetd::command::parse(a.payload()).expect("parses"));
    });
    let mut forged = token.to_vec();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let refuse = per_op(n, || {
        black_box(
            accept(
                black_box(&forged),
                TopicKind::Cabinet,
                &security,
                "dijon-017",
                now,
            )
            .unwrap_err(),
        );
    });
    println!(
        "target {} ({} bytes token, n={n}): auth::accept {:.1} µs/command; + command::parse {:.1} µs; forged (bad signature) {:.1} µs",
        std::env::consts::ARCH,
        token.len(),
        verify.as_secs_f64() * 1e6,
        both.as_secs_f64() * 1e6,
        refuse.as_secs_f64() * 1e6,
    );
}
