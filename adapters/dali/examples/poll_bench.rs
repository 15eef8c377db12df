//! Time to poll 64 luminaires through the ATX DALI HAT emulator (python-dali
//! fake gear on a pty), and bus transactions per poll cycle.
//!
//! Run: `cargo run -p cabinetd-dali --example poll_bench [cycles]`. Needs the
//! test venv (`tests/.venv`, or `CABINETD_TEST_PYTHON`). The emulator answers
//! instantly, so the time measures this crate + pty + Python, not the DALI
//! line (≈ 47 ms per query on a real bus, see the reference notes).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant as StdInstant;

use cabinetd_dali::sim::SimBus;
use cabinetd_dali::{Bus, Supervisor, SupervisorConfig};
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cycles: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let emu = support::Emulator::spawn(&["--gear", "64"]);
    let mut bus = Bus::new(emu.hat());
    let mut sup = Supervisor::new(SupervisorConfig::default());

    let t = StdInstant::now();
    let found = sup.discover(&mut bus).await.expect("discover");
    println!(
        "discover: {} gear, {} transactions, {:.1} ms",
        found.len(),
        bus.transactions(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let now = Instant::now();
    // Banks 202/205 are read for a few gear per cycle until every gear had
    // its turn; then cycles are status + level only.
    let t = StdInstant::now();
    let mut warmup = 0u32;
    let mut warmup_transactions = 0;
    for _ in 0..64 {
        let c = sup.poll_cycle(&mut bus, now).await.expect("poll");
        warmup += 1;
        warmup_transactions += c.transactions;
        if c.samples.iter().all(|s| s.energy_wh.is_none()) {
            break;
        }
    }
    println!(
        "warm-up: {warmup} cycles reading banks 202/205 of every gear, {warmup_transactions} transactions, {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = StdInstant::now();
    let mut transactions = 0;
    for _ in 0..cycles {
        let c = sup.poll_cycle(&mut bus, now).await.expect("poll");
        transactions += c.transactions;
    }
    let per_cycle_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(cycles);
    println!(
        "steady cycle over {cycles} cycles: {:.1} transactions/cycle ({:.2}/gear), {per_cycle_ms:.1} ms/cycle",
        transactions as f64 / f64::from(cycles),
        transactions as f64 / f64::from(cycles) / 64.0,
    );
    println!(
        "same cycle on a real line at ~47 ms/query: ~{:.1} s",
        transactions as f64 / f64::from(cycles) * 0.047
    );

    let (sim, _h) = SimBus::with_gear(64, 0);
    let mut bus = Bus::new(sim);
    let mut sup = Supervisor::new(SupervisorConfig::default());
    sup.discover(&mut bus).await.expect("discover");
    sup.poll_cycle(&mut bus, now).await.expect("poll");
    let t = StdInstant::now();
    for _ in 0..cycles {
        sup.poll_cycle(&mut bus, now).await.expect("poll");
    }
    println!(
        "in-process sim, 64 gear: {:.3} ms/cycle",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(cycles)
    );
}
