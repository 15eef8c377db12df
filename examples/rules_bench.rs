//! Benchmark of the rules core (not a test): 1,000 rules over a synthetic stream of 5,000 point
//! readings per second (50 devices × 100 points, each read once a second, values on a random
//! walk so thresholds are crossed), through the same `Core` the daemon and `cabinetd simulate`
//! drive: every reading is observed, then the core steps, as the daemon does after each input.
//!
//! Prints the CPU time per second of input (one thread: % of a core) and the latency of one
//! change (observe + step, including the rule's transition and its action) as p50/p99/max.
//!
//!     cargo run --release --example rules_bench [-- SECONDS_OF_INPUT]

use std::time::{Duration, Instant};

use cabinetd::config::{load_sources, Source};
use cabinetd::record::Quality;
use cabinetd::rules::{Core, Now, Output};

const DEVICES: usize = 50;
const POINTS: usize = 100;
const RULES: usize = 1000;

fn config() -> String {
    let mut t = String::from(
        "[cabinet]\nid = \"bench\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n",
    );
    for d in 0..DEVICES {
        t.push_str(&format!(
            "[[modbus]]\nname = \"d{d}\"\naddress = \"127.0.0.1:{}\"\n",
            1000 + d
        ));
        for p in 0..POINTS {
            t.push_str(&format!(
                "  [[modbus.point]]\n  name = \"p{p}\"\n  table = \"holding\"\n  address = {p}\n  type = \"i16\"\n  writable = true\n"
            ));
        }
    }
    // Rules read devices 0..40 and write points of devices 40..50, which no rule reads: no loop.
    let mut rng = fastrand::Rng::with_seed(7);
    for r in 0..RULES {
        let a = format!("d{}/p{}", rng.usize(0..40), rng.usize(0..POINTS));
        let b = format!("d{}/p{}", rng.usize(0..40), rng.usize(0..POINTS));
        let out = format!("d{}/p{}", 40 + r % 10, r % POINTS);
        let hold = if r % 4 == 0 { "for = \"3s\"\n" } else { "" };
        t.push_str(&format!(
            "[[rule]]\nname = \"r{r}\"\nwhen = \"{a} > {} and {b} < {}\"\n{hold}  [[rule.then]]\n  action = \"point.write\"\n  args = {{ point = \"{out}\", value = 1 }}\n  [[rule.on_clear]]\n  action = \"event\"\n  args = {{ kind = \"bench\", severity = \"info\", message = \"r{r} cleared\" }}\n",
            rng.i32(10..60),
            rng.i32(40..90),
        ));
    }
    t
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let t0 = Instant::now();
    let cfg = load_sources(&[Source {
        name: "bench.toml".into(),
        text: config(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let load = t0.elapsed();
    let start: jiff::Timestamp = "2026-12-21T12:00:00Z".parse().unwrap();
    let at = |ms: u64| Now {
        mono: Duration::from_millis(ms),
        wall: start + jiff::SignedDuration::from_millis(ms as i64),
    };
    let (mut core, _) = Core::new(&cfg, at(0), true, jiff::Timestamp::MIN, None).unwrap();
    core.step(at(0));
    let names: Vec<String> = (0..DEVICES)
        .flat_map(|d| (0..POINTS).map(move |p| format!("d{d}/p{p}")))
        .collect();
    let mut values: Vec<i64> = vec![50; names.len()];
    let mut rng = fastrand::Rng::with_seed(42);
    let mut lat: Vec<Duration> = Vec::with_capacity(names.len() * seconds as usize);
    let (mut actions, mut events) = (0usize, 0usize);
    let mut busy = Duration::ZERO;
    for s in 0..seconds {
        for (i, name) in names.iter().enumerate() {
            // A reading every 200 µs: 5,000 per second.
            let ms = s * 1000 + (i as u64 * 1000) / names.len() as u64;
            // Most readings repeat the last value (a stable plant); some move by a step.
            if rng.u8(0..10) == 0 {
                values[i] = (values[i] + rng.i64(-5..=5)).clamp(0, 100);
            }
            let v = serde_json::Value::from(values[i]);
            let t = Instant::now();
            core.observe(name, &v, Quality::Good, Duration::from_millis(ms));
            let out = core.step(at(ms));
            let dt = t.elapsed();
            busy += dt;
            lat.push(dt);
            for o in out.outputs {
                match o {
                    Output::Action(_) => actions += 1,
                    Output::Event(_) => events += 1,
                }
            }
        }
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let per_s = busy / seconds as u32;
    println!(
        "rules {RULES}, points {}, readings/s {}, input {seconds} s, config load {:.0} ms",
        names.len(),
        names.len(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "CPU per second of input: {:.2} ms ({:.2} % of a core)",
        per_s.as_secs_f64() * 1e3,
        per_s.as_secs_f64() * 100.0
    );
    println!(
        "latency per change (observe + step): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        q(0.5).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );
    println!("outputs: {actions} actions, {events} events");
}
