//! DALI buses in the daemon: one task per `[[dali]]` bus ([`run_bus`]) turning the
//! `cabinetd-dali` supervisor's polls into telemetry and events, applying `light.set` /
//! `light.release`, and the `commission` CLI helper ([`commission_cli`]).
//!
//! # What a bus task does
//! 1. Takes the bus lock `<storage.path>/dali-<bus>.lock` (see [`lock`]) and opens the interface
//!    (`atx-hat` on `port`, or the built-in `sim`). Failures (port missing, lock held by the
//!    commissioning CLI, transport errors later) mark the bus down: one `device_down` event
//!    (major), `cabinetd_device_up{device,protocol="dali"} 0`, every known point republished with
//!    quality `bad`; the task retries with a capped exponential backoff and emits `device_up`
//!    (info) when the line answers again. It never panics and stops only on shutdown.
//! 2. Discovers the gear (and watches the configured group members even if absent, so a missing
//!    one is reported `gear_missing`), then **programs each gear found** — at start and after
//!    every later `gear_found`: group membership (exactly the configured groups, verified by
//!    QUERY GROUPS — when the bus configures any group the configuration is authoritative, and a
//!    gear in no configured group is removed from all groups; a bus without groups is left
//!    alone) and the fallback of its group (`power_on_level`, `system_failure_level`,
//!    `min_level`, `max_level`, `fade_time`; field by field from the first configured group of
//!    the gear that sets it). Anything found different is corrected and reported as one
//!    `dali_config_drift` event (minor) per gear, with the raw DALI values in `data.drift`; a
//!    value the gear refuses (e.g. a minimum below its physical minimum) is a
//!    `dali_config_error` event (minor).
//! 3. Polls every `poll` (≤ 2 queries per gear), reads the D4i banks 202/205 every
//!    `energy_poll` (spread over cycles), and rescans the line every `energy_poll` for gear that
//!    appeared. Points `BUS/ADDR/{level,lamp_failure,gear_failure,present}` and, when read,
//!    `power_w`, `energy_wh`, `operating_hours` go through a `report::PointReporter` (first reading
//!    always, then on change or heartbeat `config::DEFAULT_HEARTBEAT`). Transitions become
//!    events once each, source `BUS/ADDR`: `lamp_failure` / `gear_failure` / `gear_missing`
//!    (major), `dali_collision` (minor), `gear_found` (info); a cleared fault is the same kind
//!    with `data.active = false`, severity info.
//!
//! # Light requests: a plain executor
//! [`LightRequest`]s arrive on a channel from the rules core's light lane (which decides every
//! level: programme, usage-adaptive lighting, rules, scenes, central overrides and their holds,
//! see `rules::control`). `All` and `Group` requests are sent to every bus; a bus that has **no
//! such group configured replies `Ok(())` without touching the line**. `Gear` requests go to the
//! named bus only; an address that is neither found nor configured is rejected naming
//! `args.target`. `Set` sends DAPC (the fade time is programmed first only when `fade_s` maps to
//! a code different from the one the gear holds) and, for a single gear, verifies it with QUERY
//! ACTUAL LEVEL (a running fade or a level clamped to the gear's MIN/MAX also counts as
//! applied).
//!
//! The bus remembers the last level each gear was told ([`commanded`]) and, when a gear comes
//! back (`gear_found`: a replaced gear, or every gear after a bus power return, when they sit at
//! their SYSTEM FAILURE LEVEL), programs it and sends that level again at once.
//!
//! Invariants: one task owns one line (every transaction on it is serialised through one
//! `cabinetd_dali::Bus`); every request gets exactly one reply (a request interrupted by the stop sees its
//! reply channel closed); records are only produced by this task, so events are never
//! duplicated by a reconnect (the supervisor's state survives it). Errors are typed by what the
//! session must do ([`SessionError`]): a lost line (or an interface timeout) ends the session and
//! the line is reopened with backoff; a gear that refuses is reported and the session goes on.
//!
//! Files: this one holds the task's loop and the pure helpers; `session.rs` the line's life
//! (open, discover, poll, program the gear, down/up); `control.rs` the light requests.

mod cli;
pub mod commanded;
mod control;
pub mod lock;
pub mod points;
mod session;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use cabinetd_dali::command::fade_code_for_seconds;
use cabinetd_dali::sim::SimBus;
use cabinetd_dali::{percent_to_arc, Address, ErrorClass, Fallback};
use tokio::sync::mpsc;

use super::{Equipment, EquipmentError, Starter, StatusTx};
use crate::config::{DaliBus, Resource};
use crate::event::EquipmentKind;
use crate::light::{LightError, LightRequest, LightTarget};
use crate::metrics::Metrics;
use crate::record::RecordBody;

pub use cli::commission_cli;
use commanded::{Groups, Scope};
pub use lock::{lock_path, try_lock, BusLock, LockError};
use session::Runner;

/// Runtime knobs of a bus task that are not in the configuration.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Directory of the bus lock file (`storage.path`); `None` = no lock (tests).
    pub lock_dir: Option<PathBuf>,
    /// Reply deadline of the ATX HAT.
    pub reply_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max` (jittered, see `cabinetd_backoff`).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Use this simulated line for `interface = "sim"` instead of building one (tests keep its
    /// `SimHandle` to inject faults).
    pub sim: Option<SimBus>,
    /// Every reading also goes here, before report by exception.
    pub readings: crate::readings::ReadingTap,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            lock_dir: None,
            reply_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            sim: None,
            readings: crate::readings::ReadingTap::default(),
        }
    }
}

impl BusOptions {
    /// Production options: the bus lock lives in `storage.path`.
    pub fn with_storage(storage: &std::path::Path) -> Self {
        BusOptions {
            lock_dir: Some(storage.to_path_buf()),
            ..BusOptions::default()
        }
    }
}

/// Runs one DALI bus until `shutdown` resolves or `records` closes. Stopping drops whatever
/// the task was doing (every wait in it is on the line, a timer or a channel); the bus lock and
/// the port are released when it returns.
pub async fn run_bus(
    cfg: DaliBus,
    opts: BusOptions,
    records: mpsc::Sender<RecordBody>,
    metrics: Metrics,
    requests: mpsc::Receiver<LightRequest>,
    status: StatusTx,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let runner = Runner::new(cfg, opts, records, metrics, status);
    tokio::select! {
        biased;
        () = shutdown => {}
        () = runner.run(requests) => {}
    }
}

impl Equipment for DaliBus {
    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<Resource> {
        DaliBus::resources(self)
    }

    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError> {
        let (req_tx, req_rx) = mpsc::channel(16);
        s.controls().lights.add(self, req_tx);
        let status = s.status(&self.name, EquipmentKind::Dali, 0);
        let ctx = s.context();
        let opts = BusOptions {
            readings: ctx.readings.clone(),
            ..BusOptions::with_storage(&ctx.storage)
        };
        let bus = run_bus(
            self.clone(),
            opts,
            ctx.records.clone(),
            ctx.metrics.clone(),
            req_rx,
            status,
            s.entry_token().cancelled_owned(),
        );
        s.spawn(format!("dali {}", self.name), bus);
        Ok(())
    }
}

/// Why a bus operation failed, typed by what the session must do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The interface did not reply within its deadline: the line cannot be trusted; reopen it.
    #[error("DALI interface did not reply within {0:?}")]
    Timeout(Duration),
    /// The line failed (port gone, I/O error, protocol violation, bus lock held): reopen it.
    #[error("{0}")]
    LineLost(String),
    /// A gear refused or answered wrongly (collision, failed verify): reported, the session
    /// goes on.
    #[error("{0}")]
    GearRefused(String),
}

impl SessionError {
    /// Any failure as a loss of the line (discovery and polling cannot go on without it).
    fn lost(e: cabinetd_dali::Error) -> SessionError {
        match e {
            cabinetd_dali::Error::Timeout(d) => SessionError::Timeout(d),
            e => SessionError::LineLost(e.to_string()),
        }
    }

    /// True when the session must end and the line be reopened.
    pub fn ends_session(&self) -> bool {
        !matches!(self, SessionError::GearRefused(_))
    }
}

impl From<cabinetd_dali::Error> for SessionError {
    fn from(e: cabinetd_dali::Error) -> Self {
        match e.class() {
            ErrorClass::Device => SessionError::GearRefused(e.to_string()),
            // Permanent errors mid-session (a protocol violation by the HAT) mean the line
            // cannot be trusted either: reopen it.
            ErrorClass::Transient | ErrorClass::Permanent => SessionError::lost(e),
        }
    }
}

/// The configured fallback of each member, field by field from its first group setting it.
pub(super) fn fallbacks(cfg: &DaliBus) -> BTreeMap<u8, Fallback> {
    let mut out: BTreeMap<u8, Fallback> = BTreeMap::new();
    for g in &cfg.groups {
        for &a in &g.members {
            let f = out.entry(a).or_default();
            let arc = |p: Option<f64>| p.map(percent_to_arc);
            f.power_on_level = f.power_on_level.or(arc(g.power_on_level));
            f.system_failure_level = f.system_failure_level.or(arc(g.system_failure_level));
            // MIN LEVEL 0 does not exist (0 is "off"): the lowest settable minimum is 1.
            f.min_level = f.min_level.or(arc(g.min_level).map(|l| l.max(1)));
            f.max_level = f.max_level.or(arc(g.max_level));
            f.fade_time = f.fade_time.or(g.fade_time);
        }
    }
    out.retain(|_, f| *f != Fallback::default());
    out
}

/// `fade_s` → FADE TIME code: below half the shortest fade (0.7 s) it is 0, "no fade".
pub fn fade_code(fade_s: f64) -> u8 {
    if fade_s < 0.35 {
        0
    } else {
        fade_code_for_seconds(fade_s)
    }
}

/// The fade code to program before a DAPC reaching `reached`: `None` when no fade is asked or
/// every gear reached is known to hold it already (the fade time is stored in the gear, often in
/// non-volatile memory, so it is not rewritten needlessly). A target reaching no known gear
/// (e.g. a broadcast before discovery) programs it.
pub fn fade_to_program(code: Option<u8>, reached: &[u8], known: &BTreeMap<u8, u8>) -> Option<u8> {
    code.filter(|c| reached.is_empty() || reached.iter().any(|a| known.get(a) != Some(c)))
}

/// Resolves a target for bus `bus`: `Ok(None)` = a group this bus does not have (nothing to do).
pub fn resolve_target(
    target: &LightTarget,
    bus: &str,
    known: &BTreeSet<u8>,
    groups: &Groups,
) -> Result<Option<Scope>, LightError> {
    match target {
        LightTarget::All => Ok(Some(Scope::All)),
        LightTarget::Group(g) => Ok(groups.contains_key(g).then_some(Scope::Group(*g))),
        LightTarget::Gear { bus: b, address } if b == bus => {
            if known.contains(address) {
                Ok(Some(Scope::Gear(*address)))
            } else {
                let list: Vec<String> = known.iter().map(u8::to_string).collect();
                Err(LightError::Rejected(format!(
                    "field `args.target`: no luminaire at {bus}/{address} (known short addresses: {})",
                    if list.is_empty() { "none".into() } else { list.join(", ") }
                )))
            }
        }
        LightTarget::Gear { bus: b, address } => Err(LightError::Rejected(format!(
            "field `args.target`: {b}/{address} is not on DALI bus {bus}"
        ))),
    }
}

pub(super) fn short(a: u8) -> Address {
    // Addresses here come from validated configuration (0..=63) or from the bus itself; the mask
    // makes the conversion total.
    Address::short(a & 0x3F).expect("a 6-bit value is a short address")
}
