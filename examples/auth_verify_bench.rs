//! Cost of verifying one signed command (`auth::verify`), for the issue-12 benchmark:
//! `cargo run --release --example auth_verify_bench [N]` (on the ARM build: run the binary
//! under qemu or on the cabinet). Prints the mean and the p50/p99 of N verifications.

use std::time::{Duration, Instant, SystemTime};

use cabinetd::auth::key::SigningKey;
use cabinetd::auth::{verify, ActionPattern, SecurityPolicy, TopicKind, TrustedKey, TrustedKeys};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let key = SigningKey::generate().expect("key");
    let keys = TrustedKeys::new(vec![TrustedKey {
        kid: "ops".into(),
        public_key: key.public_key(),
        actions: vec![ActionPattern::Any],
        desired_config: false,
    }]);
    let now = SystemTime::now();
    let ts = cabinetd::record::format_ts;
    let payload = serde_json::json!({
        "id": "bench-1", "action": "point.write", "args": {"point": "plc/setpoint", "value": 7},
        "cabinet": "c", "issued_at": ts(now), "expires_at": ts(now + Duration::from_secs(60)),
    })
    .to_string();
    let token = key.sign_compact("ops", payload.as_bytes());
    let policy = SecurityPolicy::default();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let v = verify(
            token.as_bytes(),
            TopicKind::Cabinet,
            &keys,
            &policy,
            "c",
            now,
        );
        times.push(t0.elapsed());
        assert!(v.is_ok());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    println!(
        "auth::verify of a {}-byte signed point.write, {n} runs: mean {:?}, p50 {:?}, p99 {:?}",
        token.len(),
        mean,
        times[n / 2],
        times[n * 99 / 100]
    );
}
