//! The energy accountant: which night is accounted, from which readings, and when its
//! `energy_daily` event is due ([`EnergyAccountant`], pure: the caller passes readings and the
//! time); its task ([`run`]), which reads the readings tap, persists its state and publishes the
//! night running (`/status` `energy`, `cabinetd_energy_night_*`).
//!
//! Inputs, by point name: `BUS/ADDR/level` (percent) of every DALI luminaire, the D4i counters
//! `BUS/ADDR/energy_wh`, and the Modbus point named by `lighting.energy_meter`. Each reading
//! goes into the night whose window holds it (see `energy`: dusk − 1 h to dawn + 1 h, the same
//! window for the estimate and the metered figure); a reading is fresh for three poll periods of
//! its device plus a minute (a D4i counter: three `energy_poll`), beyond which the time is not
//! covered.
//!
//! Which night: the night of the *local* date D (in `cabinet.timezone`) starts on the evening
//! of D, as the programme's (`Programme::night`). The accountant follows the night whose window
//! holds the current instant; it starts following one only while its window runs, so a night it
//! never saw is never reported, and one it saw only in part is reported with its `coverage`
//! and no kWh below 90 % (`energy`'s rules). The event for a night is due once its window has
//! ended; each night is reported once (`reported`).
//!
//! State file `energy-state.json` in `storage.path` (what a reload or a restart must not lose):
//! ```text
//! {"format":"cabinetd-energy-state","version":1,"saved_at":T,"reported":D|null,
//!  "last":{…data of the last energy_daily…}|null,
//!  "levels":{"BUS/ADDR":{"at":T,"level":N,"done":T}…},
//!  "counters":{"KEY":{"at":T,"wh":N}…},
//!  "night":null|{"date":D,"dusk":T,"dawn":T,
//!     "gear":{"BUS/ADDR":{"rated_w":N,"wh":N,"covered_s":N}…},
//!     "counters":{"KEY":{"wh":N,"covered_s":N}…}}}
//! ```
//! `T` RFC 3339 UTC, `D` `YYYY-MM-DD`; counters are keyed `BUS/ADDR` (D4i) or by the meter's point
//! name. Written by [`run`] (temp, fsync, rename, fsync dir: `rules::state::write_atomic`) at
//! most every [`PERSIST_EVERY`] while readings arrive, after each report, at each configuration
//! change and at the stop; read once at start. A version other than 1, a file above
//! [`MAX_BYTES`] or maps above [`MAX_ENTRIES`] are refused whole (the night then starts from
//! what is seen, its coverage says so). A crash loses at most [`PERSIST_EVERY`] of coverage.
//! The event is sent before `reported` is written: a crash between the two reports the night
//! twice (same date), never not at all.
//!
//! A configuration change (`[lighting]`, `[[dali]]`, `[[modbus]]`) updates the accountant in
//! place: readings of buses or a meter that are gone are dropped, the night in progress goes on
//! (issue 13 item 2: a fresh accountant reported a night it had not seen).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::energy::{EnergyDaily, NightAcc};
use super::Programme;
use crate::config::{time_zone, Config};
use crate::metrics::Metrics;
use crate::readings::Subscription;
use crate::record::{Event, Quality, RecordBody};
use crate::wall::WallClock;

/// How often [`run`] rolls the night and publishes the figures of the night running.
pub const TICK: Duration = Duration::from_secs(60);
/// Longest time between two writes of the state file while readings arrive.
pub const PERSIST_EVERY: Duration = Duration::from_secs(300);
/// The state file's name in `storage.path`.
pub const FILE: &str = "energy-state.json";
/// Its `format` marker.
pub const FORMAT: &str = "cabinetd-energy-state";
/// The only version read and written.
pub const VERSION: u32 = 1;
/// Largest state file read.
pub const MAX_BYTES: u64 = 4 << 20;
/// Most luminaires or counters kept (64 gear per bus, a few buses).
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
struct LevelLast {
    at: Timestamp,
    level: f64,
    /// Integrated up to here.
    done: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CounterLast {
    at: Timestamp,
    wh: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct Bus {
    rated_w: Option<f64>,
    level_gap: SignedDuration,
    counter_gap: SignedDuration,
}

/// Per-night energy bookkeeping of one cabinet (see the module docs).
#[derive(Debug, Clone)]
pub struct EnergyAccountant {
    programme: Programme,
    tz: TimeZone,
    buses: BTreeMap<String, Bus>,
    meter: Option<(String, SignedDuration)>,
    levels: BTreeMap<String, LevelLast>,
    counters: BTreeMap<String, CounterLast>,
    night: Option<NightAcc>,
    reported: Option<Date>,
    last: Option<Value>,
}

/// The result of [`EnergyAccountant::due`].
#[derive(Debug, PartialEq)]
pub enum Due {
    /// Nothing to report now.
    Nothing,
    /// The night's figure.
    Report(EnergyDaily),
    /// The night ended but cannot be accounted (why, for the log).
    Unaccountable(Date, String),
}

fn gap(period: Duration, times: u32) -> SignedDuration {
    SignedDuration::try_from(period * times + Duration::from_secs(60))
        .unwrap_or(SignedDuration::from_hours(1))
}

impl EnergyAccountant {
    /// `None` when the cabinet has no DALI bus (nothing to account).
    pub fn new(cfg: &Config) -> Option<Self> {
        if cfg.dali.is_empty() {
            return None;
        }
        let programme = Programme::from_config(cfg).ok()?;
        let tz = time_zone(&cfg.cabinet.timezone).ok()?;
        let mut acc = EnergyAccountant {
            programme,
            tz,
            buses: BTreeMap::new(),
            meter: None,
            levels: BTreeMap::new(),
            counters: BTreeMap::new(),
            night: None,
            reported: None,
            last: None,
        };
        acc.configure(cfg);
        Some(acc)
    }

    fn configure(&mut self, cfg: &Config) {
        self.buses = cfg
            .dali
            .iter()
            .map(|b| {
                let bus = Bus {
                    rated_w: b.rated_power_w,
                    level_gap: gap(b.poll, 3),
                    counter_gap: gap(b.energy_poll, 3),
                };
                (b.name.clone(), bus)
            })
            .collect();
        self.meter = cfg.lighting.energy_meter.as_ref().map(|m| {
            let poll = m
                .split_once('/')
                .and_then(|(dev, _)| cfg.modbus.iter().find(|d| d.spec.name == dev))
                .map_or(Duration::from_secs(60), |d| d.spec.poll);
            (m.clone(), gap(poll, 3))
        });
        let buses = self.buses.clone();
        let on_bus = |k: &String| {
            k.split_once('/')
                .is_some_and(|(b, _)| buses.contains_key(b))
        };
        let meter = self.meter.as_ref().map(|m| m.0.clone());
        self.levels.retain(|k, _| on_bus(k));
        self.counters
            .retain(|k, _| on_bus(k) || Some(k) == meter.as_ref());
        if let Some(n) = &mut self.night {
            n.gear.retain(|k, _| on_bus(k));
            n.counters
                .retain(|k, _| on_bus(k) || Some(k) == meter.as_ref());
        }
        if let Ok(p) = Programme::from_config(cfg) {
            self.programme = p;
        }
    }

    /// A configuration change: the same accountant goes on with the new buses, meter and
    /// programme (what is gone is dropped; the night in progress and what was seen of it stay).
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.configure(cfg);
    }

    /// Every point whose readings the accountant takes.
    pub fn wanted_points(&self) -> Vec<String> {
        let mut v = Vec::new();
        for bus in self.buses.keys() {
            for a in 0..=63u8 {
                v.push(format!("{bus}/{a}/level"));
                v.push(format!("{bus}/{a}/energy_wh"));
            }
        }
        v.extend(self.meter.as_ref().map(|m| m.0.clone()));
        v
    }

    fn luminaire<'a>(&self, point: &'a str, suffix: &str) -> Option<(&'a str, &Bus)> {
        let gear = point.strip_suffix(suffix)?;
        let (bus, addr) = gear.split_once('/')?;
        addr.parse::<u8>().ok().filter(|a| *a <= 63)?;
        Some((gear, self.buses.get(bus)?))
    }

    /// A good reading (numbers only count).
    pub fn observe(&mut self, point: &str, value: &Value, at: Timestamp) {
        self.observe_reading(point, value, Quality::Good, at);
    }

    /// A reading of any quality: a non-good one ends the freshness of the point's last value.
    pub fn observe_reading(&mut self, point: &str, value: &Value, quality: Quality, at: Timestamp) {
        self.roll_in(at);
        let v = value
            .as_f64()
            .filter(|v| v.is_finite() && quality == Quality::Good);
        if self.meter.as_ref().is_some_and(|m| m.0 == point) {
            let g = self.meter.as_ref().map_or(SignedDuration::ZERO, |m| m.1);
            self.counter(point, v, at, g);
        } else if let Some((gear, bus)) = self.luminaire(point, "/level") {
            let (gear, gap, rated) = (gear.to_owned(), bus.level_gap, bus.rated_w);
            self.level(&gear, v, at, gap, rated);
        } else if let Some((gear, bus)) = self.luminaire(point, "/energy_wh") {
            let (gear, gap) = (gear.to_owned(), bus.counter_gap);
            self.counter(&gear, v, at, gap);
        }
    }

    fn rated(&self, gear: &str) -> f64 {
        gear.split_once('/')
            .and_then(|(b, _)| self.buses.get(b))
            .and_then(|b| b.rated_w)
            .unwrap_or(0.0)
    }

    fn integrate(&mut self, gear: &str, until: Timestamp) {
        let Some(l) = self.levels.get(gear).copied() else {
            return;
        };
        let gap = gear
            .split_once('/')
            .and_then(|(b, _)| self.buses.get(b))
            .map_or(SignedDuration::ZERO, |b| b.level_gap);
        let end = until.min(l.at.saturating_add(gap).unwrap_or(l.at));
        if end <= l.done {
            return;
        }
        let rated = self.rated(gear);
        if let Some(n) = &mut self.night {
            n.add_level(gear, rated, l.level, l.done, end);
        }
        if let Some(l) = self.levels.get_mut(gear) {
            l.done = end;
        }
    }

    fn level(
        &mut self,
        gear: &str,
        v: Option<f64>,
        at: Timestamp,
        _gap: SignedDuration,
        _rated: Option<f64>,
    ) {
        self.integrate(gear, at);
        match v {
            Some(level) => {
                self.levels.insert(
                    gear.to_owned(),
                    LevelLast {
                        at,
                        level,
                        done: at,
                    },
                );
                let rated = self.rated(gear);
                if let Some(n) = &mut self.night {
                    n.add_level(gear, rated, level, at, at);
                }
            }
            None => {
                self.levels.remove(gear);
            }
        }
    }

    fn counter(&mut self, key: &str, v: Option<f64>, at: Timestamp, gap: SignedDuration) {
        let Some(wh) = v.filter(|w| *w >= 0.0) else {
            self.counters.remove(key);
            return;
        };
        if let Some(prev) = self.counters.get(key).copied() {
            // A decrease is a discontinuity (a reset, a replaced gear): that interval is not
            // covered rather than guessed.
            let fresh = at > prev.at && at.duration_since(prev.at) <= gap && wh >= prev.wh;
            if fresh {
                if let Some(n) = &mut self.night {
                    n.add_counter(key, wh - prev.wh, prev.at, at);
                }
            }
        }
        if self.counters.len() < MAX_ENTRIES || self.counters.contains_key(key) {
            self.counters.insert(key.to_owned(), CounterLast { at, wh });
        }
    }

    /// The local date of `at`.
    fn local_date(&self, at: Timestamp) -> Date {
        at.to_zoned_datetime(self.tz.clone()).date()
    }

    /// The night whose window holds `now`, if any.
    fn night_at(&self, now: Timestamp) -> Option<NightAcc> {
        let d = self.local_date(now);
        for cand in [d.yesterday().ok(), Some(d)].into_iter().flatten() {
            if let Some((dusk, dawn)) = self.programme.night(cand).span {
                let n = NightAcc::new(cand, dusk, dawn);
                if n.contains(now) {
                    return Some(n);
                }
            }
        }
        None
    }

    /// Starts following the night whose window holds `now` (never one already reported).
    fn roll_in(&mut self, now: Timestamp) {
        if self.night.is_some() {
            return;
        }
        let Some(mut n) = self.night_at(now) else {
            return;
        };
        if self.reported.is_some_and(|r| r >= n.date) {
            return;
        }
        // The luminaires alive when it starts are part of it (a luminaire that then stays
        // silent all night shows as uncovered).
        for gear in self.levels.keys() {
            n.add_level(gear, self.rated(gear), 0.0, now, now);
        }
        tracing::info!(date = %n.date, dusk = %n.dusk, dawn = %n.dawn, "energy: accounting the night");
        self.night = Some(n);
    }

    /// Whether the event of a finished night is due at `now`, and what it says.
    pub fn due(&mut self, now: Timestamp) -> Due {
        let end = match &self.night {
            Some(n) if now >= n.window().1 => n.window().1,
            Some(_) => return self.tick(now),
            None => {
                self.roll_in(now);
                return Due::Nothing;
            }
        };
        let gears: Vec<String> = self.levels.keys().cloned().collect();
        for g in gears {
            self.integrate(&g, end);
        }
        let n = self.night.take().expect("checked above");
        self.reported = Some(n.date);
        let outcome = self.account(&n);
        if let Due::Report(e) = &outcome {
            self.last = Some(e.data());
        }
        self.roll_in(now);
        outcome
    }

    fn tick(&mut self, now: Timestamp) -> Due {
        let gears: Vec<String> = self.levels.keys().cloned().collect();
        for g in gears {
            self.integrate(&g, now);
        }
        Due::Nothing
    }

    fn account(&self, n: &NightAcc) -> Due {
        if n.gear.is_empty() {
            return Due::Unaccountable(
                n.date,
                "no luminaire level was recorded during the night".into(),
            );
        }
        let mut luminaires = BTreeMap::new();
        for g in n.gear.keys() {
            let bus = g.split_once('/').map_or("", |(b, _)| b);
            match self.buses.get(bus).and_then(|b| b.rated_w) {
                Some(w) => {
                    luminaires.insert(g.clone(), w);
                }
                None => {
                    return Due::Unaccountable(
                        n.date,
                        format!("DALI bus {bus} has no rated_power_w: no baseline"),
                    )
                }
            }
        }
        let meter = self.meter.as_ref().map(|m| m.0.as_str());
        Due::Report(n.report(&luminaires, meter))
    }

    /// The night running at `now`, so far, as `/status` shows it (`null` by day).
    pub fn live(&self, now: Timestamp) -> Option<super::energy::Live> {
        let n = self.night.as_ref()?;
        let luminaires: BTreeMap<String, f64> =
            n.gear.keys().map(|g| (g.clone(), self.rated(g))).collect();
        Some(n.live(&luminaires, now))
    }

    /// The data of the last `energy_daily` reported.
    pub fn last(&self) -> Option<&Value> {
        self.last.as_ref()
    }

    /// The state file's content at `now`.
    pub fn render_state(&self, now: Timestamp) -> String {
        let t = |t: Timestamp| ts(t);
        let night = self.night.as_ref().map(|n| {
            json!({
                "date": n.date.to_string(),
                "dusk": t(n.dusk),
                "dawn": t(n.dawn),
                "gear": n.gear.iter().map(|(k, g)| (k.clone(), json!({
                    "rated_w": g.rated_w, "wh": g.wh, "covered_s": g.covered_s,
                }))).collect::<serde_json::Map<String, Value>>(),
                "counters": n.counters.iter().map(|(k, c)| (k.clone(), json!({
                    "wh": c.wh, "covered_s": c.covered_s,
                }))).collect::<serde_json::Map<String, Value>>(),
            })
        });
        let doc = json!({
            "format": FORMAT,
            "version": VERSION,
            "saved_at": t(now),
            "reported": self.reported.map(|d| d.to_string()),
            "last": self.last,
            "levels": self.levels.iter().map(|(k, l)| (k.clone(), json!({
                "at": t(l.at), "level": l.level, "done": t(l.done),
            }))).collect::<serde_json::Map<String, Value>>(),
            "counters": self.counters.iter().map(|(k, c)| (k.clone(), json!({
                "at": t(c.at), "wh": c.wh,
            }))).collect::<serde_json::Map<String, Value>>(),
            "night": night,
        });
        let mut s = doc.to_string();
        s.push('\n');
        s
    }

    /// Takes over a state file's content (see the module docs); `Err` says why it was refused
    /// (nothing of it is then used).
    pub fn restore(&mut self, text: &str) -> Result<(), String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if doc["format"] != FORMAT {
            return Err(format!("not a {FORMAT} file"));
        }
        if doc["version"].as_u64() != Some(u64::from(VERSION)) {
            return Err(format!(
                "version {} is not {VERSION}, the only one this cabinetd reads",
                doc["version"]
            ));
        }
        let time = |v: &Value, what: &str| -> Result<Timestamp, String> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{what}: not an RFC 3339 time"))
        };
        let num = |v: &Value, what: &str| -> Result<f64, String> {
            v.as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{what}: not a number"))
        };
        let date = |v: &Value, what: &str| -> Result<Date, String> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{what}: not a date"))
        };
        let map = |v: &Value, what: &str| -> Result<serde_json::Map<String, Value>, String> {
            let m = v.as_object().cloned().unwrap_or_default();
            if m.len() > MAX_ENTRIES {
                return Err(format!("{what}: more than {MAX_ENTRIES} entries"));
            }
            Ok(m)
        };
        let mut levels = BTreeMap::new();
        for (k, l) in map(&doc["levels"], "levels")? {
            levels.insert(
                k.clone(),
                LevelLast {
                    at: time(&l["at"], &k)?,
                    level: num(&l["level"], &k)?,
                    done: time(&l["done"], &k)?,
                },
            );
        }
        let mut counters = BTreeMap::new();
        for (k, c) in map(&doc["counters"], "counters")? {
            counters.insert(
                k.clone(),
                CounterLast {
                    at: time(&c["at"], &k)?,
                    wh: num(&c["wh"], &k)?,
                },
            );
        }
        let night = match &doc["night"] {
            Value::Null => None,
            n => {
                let mut acc = NightAcc::new(
                    date(&n["date"], "night.date")?,
                    time(&n["dusk"], "night.dusk")?,
                    time(&n["dawn"], "night.dawn")?,
                );
                for (k, g) in map(&n["gear"], "night.gear")? {
                    acc.gear.insert(
                        k.clone(),
                        super::energy::GearNight {
                            rated_w: num(&g["rated_w"], &k)?,
                            wh: num(&g["wh"], &k)?,
                            covered_s: num(&g["covered_s"], &k)?,
                        },
                    );
                }
                for (k, c) in map(&n["counters"], "night.counters")? {
                    acc.counters.insert(
                        k.clone(),
                        super::energy::CounterNight {
                            wh: num(&c["wh"], &k)?,
                            covered_s: num(&c["covered_s"], &k)?,
                        },
                    );
                }
                Some(acc)
            }
        };
        let reported = match &doc["reported"] {
            Value::Null => None,
            d => Some(date(d, "reported")?),
        };
        self.levels = levels;
        self.counters = counters;
        self.night = night;
        self.reported = reported;
        self.last = Some(doc["last"].clone()).filter(|v| !v.is_null());
        // What the configuration no longer has is dropped.
        let cfg_buses = self.buses.clone();
        let on_bus = |k: &String| {
            k.split_once('/')
                .is_some_and(|(b, _)| cfg_buses.contains_key(b))
        };
        let meter = self.meter.as_ref().map(|m| m.0.clone());
        self.levels.retain(|k, _| on_bus(k));
        self.counters
            .retain(|k, _| on_bus(k) || Some(k) == meter.as_ref());
        Ok(())
    }
}

fn ts(t: Timestamp) -> String {
    crate::record::format_ts(std::time::SystemTime::try_from(t).unwrap_or(std::time::UNIX_EPOCH))
}

/// The state file's path in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn read_state(dir: &Path) -> Result<Option<String>, String> {
    use std::io::Read;
    let p = state_path(dir);
    let f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let mut text = String::new();
    f.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("{}: larger than {MAX_BYTES} bytes", p.display()));
    }
    Ok(Some(text))
}

/// What [`run`] reads and writes.
pub struct Inputs {
    /// The running configuration.
    pub running: watch::Receiver<Arc<Config>>,
    /// The readings tap subscription.
    pub readings: Arc<Subscription>,
    /// Where the `energy_daily` events go.
    pub records: mpsc::Sender<RecordBody>,
    /// `cabinetd_energy_*`.
    pub metrics: Metrics,
    /// The wall clock (nights, sample times).
    pub clock: WallClock,
    /// `/status` `energy`: `{"night": {date, kwh, baseline_kwh, savings_percent, coverage} |
    /// null, "last": data of the last energy_daily | null}`.
    pub view: watch::Sender<Value>,
}

struct Runner {
    inputs: Inputs,
    cfg: Arc<Config>,
    acc: Option<EnergyAccountant>,
    dirty: bool,
    saved: tokio::time::Instant,
}

impl Runner {
    fn dir(&self) -> PathBuf {
        self.cfg.storage.path.clone()
    }

    fn persist(&mut self) {
        let Some(acc) = &self.acc else { return };
        let text = acc.render_state(self.inputs.clock.now());
        match crate::rules::state::write_atomic(&self.dir(), FILE, text.as_bytes()) {
            Ok(()) => {
                self.dirty = false;
                self.saved = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "energy state NOT persisted: a restart now loses what was seen of the night")
            }
        }
    }

    fn want(&self) {
        let points = self
            .acc
            .as_ref()
            .map(|a| a.wanted_points())
            .unwrap_or_default();
        self.inputs.readings.want(points);
    }

    fn publish(&self) {
        let now = self.inputs.clock.now();
        let m = &self.inputs.metrics;
        let live = self.acc.as_ref().and_then(|a| a.live(now));
        let night = live.as_ref().map(|l| {
            json!({
                "date": l.date.to_string(),
                "kwh": (l.kwh * 1000.0).round() / 1000.0,
                "baseline_kwh": (l.baseline_kwh * 1000.0).round() / 1000.0,
                "savings_percent": l.savings_percent.map(|s| (s * 10.0).round() / 10.0),
                "coverage": (l.coverage * 1000.0).round() / 1000.0,
            })
        });
        m.energy_night_kwh.set(live.as_ref().map_or(0.0, |l| l.kwh));
        m.energy_night_baseline_kwh
            .set(live.as_ref().map_or(0.0, |l| l.baseline_kwh));
        m.energy_night_savings_percent
            .set(live.as_ref().and_then(|l| l.savings_percent).unwrap_or(0.0));
        m.energy_night_coverage_ratio
            .set(live.as_ref().map_or(0.0, |l| l.coverage));
        let last = self.acc.as_ref().and_then(|a| a.last().cloned());
        self.inputs
            .view
            .send_replace(json!({ "night": night, "last": last }));
    }

    async fn tick(&mut self) -> bool {
        let now = self.inputs.clock.now();
        let Some(acc) = self.acc.as_mut() else {
            return true;
        };
        match acc.due(now) {
            Due::Report(e) => {
                let m = &self.inputs.metrics;
                if let Some(k) = e.kwh {
                    m.energy_kwh_total.inc_by(k.max(0.0));
                    m.energy_baseline_kwh_total.inc_by(e.baseline_kwh.max(0.0));
                }
                let data = e.data();
                tracing::info!(%data, "energy of the night");
                let ev = RecordBody::Event(Event::energy_daily(data));
                if self.inputs.records.send(ev).await.is_err() {
                    return false;
                }
                self.persist();
            }
            Due::Unaccountable(date, why) => {
                tracing::warn!(%date, %why, "no energy_daily for this night");
                self.persist();
            }
            Due::Nothing => {}
        }
        if self.dirty && self.saved.elapsed() >= PERSIST_EVERY {
            self.persist();
        }
        self.publish();
        true
    }
}

/// Feeds the accountant with the readings it wants, appends each night's `energy_daily` event
/// to `records`, persists its state and publishes the night running, until `stop` is
/// cancelled (the state is written once more then).
pub async fn run(mut inputs: Inputs, stop: CancellationToken) {
    let cfg = inputs.running.borrow_and_update().clone();
    let mut acc = EnergyAccountant::new(&cfg);
    if let Some(a) = acc.as_mut() {
        match read_state(&cfg.storage.path).and_then(|t| t.map(|t| a.restore(&t)).transpose()) {
            Ok(Some(())) => tracing::info!("energy state restored"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "energy state file refused; the night starts from what is seen now")
            }
        }
    }
    let mut r = Runner {
        inputs,
        cfg,
        acc,
        dirty: false,
        saved: tokio::time::Instant::now(),
    };
    r.want();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r2 = r.inputs.running.changed() => {
                if r2.is_err() {
                    break;
                }
                let new = r.inputs.running.borrow_and_update().clone();
                if r.cfg.dali != new.dali || r.cfg.lighting != new.lighting || r.cfg.modbus != new.modbus {
                    match r.acc.as_mut() {
                        Some(a) if !new.dali.is_empty() => a.reconfigure(&new),
                        _ => r.acc = EnergyAccountant::new(&new),
                    }
                    r.cfg = new;
                    r.want();
                    r.persist();
                } else {
                    r.cfg = new;
                }
            }
            _ = tick.tick() => {
                if !r.tick().await {
                    break;
                }
            }
            () = r.inputs.readings.changed() => {
                let now = r.inputs.clock.now();
                let readings = r.inputs.readings.drain();
                if let Some(a) = r.acc.as_mut() {
                    for x in readings {
                        a.observe_reading(&x.point, &x.value, x.quality, now);
                    }
                    r.dirty = true;
                }
            }
        }
    }
    r.persist();
}

#[cfg(test)]
mod tests;
