//! Collects what the night's `energy_daily` event needs from the records the cabinet produces,
//! and says when the event is due (pure: the caller passes every telemetry record and the time).
//!
//! Inputs, by point name: `BUS/ADDR/level` (percent) of every DALI luminaire, the D4i counters
//! `BUS/ADDR/energy_wh`, and the Modbus point named by `lighting.energy_meter`. The figure is
//! metered when the lighting circuit's meter covers the night, else metered by the D4i counters
//! when every luminaire seen has one covering the night, else estimated from levels and each
//! bus's `rated_power_w`. The baseline is every luminaire seen at its rated power from dusk to
//! dawn; without a rated power there is no baseline and no event (logged by the caller).
//!
//! The event for the night that started on date D is due once its dawn plus [`BRACKET`] has
//! passed (the metered figure uses readings up to an hour after dawn). Samples older than the
//! night being accounted are dropped, so memory stays bounded to about one night.
//!
//! [`EnergyAccountant`] is pure. [`run`] is its task: it subscribes to the good telemetry the
//! recorder shares (a broadcast channel; the accountant keeps only the points it accounts),
//! asks [`EnergyAccountant::due`] every minute and appends the `energy_daily` event. A
//! configuration change of `[[dali]]`, `[lighting]` or `[[modbus]]` starts a fresh accountant
//! (the luminaires or the meter changed).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{broadcast, mpsc, watch};

use super::energy::{self, EnergyDaily, LevelSeries, BRACKET};
use super::Programme;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::{Event, RecordBody, Telemetry};

/// How often [`run`] asks whether a night's report is due.
pub const TICK: Duration = Duration::from_secs(60);

/// Per-night energy bookkeeping of one cabinet.
#[derive(Debug)]
pub struct EnergyAccountant {
    programme: Programme,
    buses: BTreeSet<String>,
    rated_w: BTreeMap<String, f64>,
    meter_point: Option<String>,
    levels: BTreeMap<String, Vec<(Timestamp, f64)>>,
    gear_wh: BTreeMap<String, Vec<(Timestamp, f64)>>,
    meter: Vec<(Timestamp, f64)>,
    reported: BTreeSet<Date>,
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

impl EnergyAccountant {
    /// `None` when the cabinet has no DALI bus (nothing to account).
    pub fn new(cfg: &Config) -> Option<Self> {
        if cfg.dali.is_empty() {
            return None;
        }
        let programme = Programme::from_config(cfg).ok()?;
        Some(EnergyAccountant {
            programme,
            buses: cfg.dali.iter().map(|b| b.name.clone()).collect(),
            rated_w: cfg
                .dali
                .iter()
                .filter_map(|b| b.rated_power_w.map(|w| (b.name.clone(), w)))
                .collect(),
            meter_point: cfg.lighting.energy_meter.clone(),
            levels: BTreeMap::new(),
            gear_wh: BTreeMap::new(),
            meter: Vec::new(),
            reported: BTreeSet::new(),
        })
    }

    /// Take note of a telemetry reading (only good numeric readings count).
    pub fn observe(&mut self, point: &str, value: &serde_json::Value, at: Timestamp) {
        let Some(v) = value.as_f64() else { return };
        if self.meter_point.as_deref() == Some(point) {
            self.meter.push((at, v));
        } else if let Some(gear) = point.strip_suffix("/level") {
            if self.is_luminaire(gear) {
                self.levels
                    .entry(gear.to_owned())
                    .or_default()
                    .push((at, v));
            }
        } else if let Some(gear) = point.strip_suffix("/energy_wh") {
            if self.is_luminaire(gear) {
                self.gear_wh
                    .entry(gear.to_owned())
                    .or_default()
                    .push((at, v));
            }
        }
    }

    /// `BUS/ADDR` on a configured bus.
    fn is_luminaire(&self, gear: &str) -> bool {
        gear.split_once('/')
            .is_some_and(|(bus, addr)| addr.parse::<u8>().is_ok() && self.buses.contains(bus))
    }

    /// Whether the event of a finished night is due at `now`, and what it says.
    pub fn due(&mut self, now: Timestamp) -> Due {
        let today = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        let Some(date) = today.yesterday().ok() else {
            return Due::Nothing;
        };
        if self.reported.contains(&date) {
            return Due::Nothing;
        }
        let night = self.programme.night(date);
        let Some((dusk, dawn)) = night.span else {
            self.reported.insert(date);
            return Due::Nothing; // polar day: no night to account
        };
        if now < dawn + BRACKET + SignedDuration::from_mins(1) {
            return Due::Nothing;
        }
        self.reported.insert(date);
        let outcome = self.account(date, dusk, dawn);
        self.prune(dawn - BRACKET);
        outcome
    }

    fn account(&self, date: Date, dusk: Timestamp, dawn: Timestamp) -> Due {
        let luminaires: Vec<&String> = self
            .levels
            .keys()
            .chain(self.gear_wh.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if luminaires.is_empty() {
            return Due::Unaccountable(
                date,
                "no luminaire level was recorded during the night".into(),
            );
        }
        let rated = |gear: &str| {
            gear.split_once('/')
                .and_then(|(bus, _)| self.rated_w.get(bus))
                .copied()
        };
        let rated_all: Option<Vec<f64>> = luminaires.iter().map(|g| rated(g)).collect();
        let Some(rated_all) = rated_all else {
            return Due::Unaccountable(date, "a DALI bus has no rated_power_w: no baseline".into());
        };
        let baseline = energy::baseline_kwh(&rated_all, dusk, dawn);
        if !self.meter.is_empty() {
            if let Some(e) = energy::metered(date, dusk, dawn, &[&self.meter], baseline) {
                return Due::Report(e);
            }
        }
        if luminaires.iter().all(|g| self.gear_wh.contains_key(*g)) {
            let counters: Vec<&[(Timestamp, f64)]> = luminaires
                .iter()
                .map(|g| self.gear_wh[*g].as_slice())
                .collect();
            if let Some(e) = energy::metered(date, dusk, dawn, &counters, baseline) {
                return Due::Report(e);
            }
        }
        let series: Vec<LevelSeries<'_>> = luminaires
            .iter()
            .filter_map(|g| {
                let samples = self.levels.get(*g)?;
                Some(LevelSeries {
                    rated_power_w: rated(g)?,
                    samples,
                })
            })
            .collect();
        // Luminaires known only by their counters count in the baseline too.
        Due::Report(energy::estimate(date, dusk, dawn, &series).with_baseline(baseline))
    }

    /// Drop samples before `keep_from`, keeping the last one before it (the level in force).
    fn prune(&mut self, keep_from: Timestamp) {
        for series in self
            .levels
            .values_mut()
            .chain(self.gear_wh.values_mut())
            .chain(std::iter::once(&mut self.meter))
        {
            series.sort_by_key(|&(t, _)| t);
            let cut = series.partition_point(|&(t, _)| t < keep_from);
            if cut > 1 {
                series.drain(..cut - 1);
            }
        }
        let oldest = keep_from
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()
            .yesterday()
            .unwrap_or(Date::MIN);
        self.reported.retain(|d| *d >= oldest);
    }
}

/// Whether a configuration change concerns the accountant.
fn accounted_sections_changed(old: &Config, new: &Config) -> bool {
    old.dali != new.dali || old.lighting != new.lighting || old.modbus != new.modbus
}

/// Feeds the accountant with the good readings of `readings` and appends the night's
/// `energy_daily` event to `records`, until `stop` resolves.
pub async fn run(
    mut running: watch::Receiver<Arc<Config>>,
    mut readings: broadcast::Receiver<Telemetry>,
    records: mpsc::Sender<RecordBody>,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send,
) {
    let mut cfg = running.borrow_and_update().clone();
    let mut accountant = EnergyAccountant::new(&cfg);
    let mut tick = tokio::time::interval(TICK);
    let work = async {
        loop {
            tokio::select! {
                r = readings.recv() => match r {
                    Ok(t) => {
                        if let (Some(acc), Ok(at)) = (accountant.as_mut(), Timestamp::try_from(t.ts)) {
                            acc.observe(&t.point, &t.value, at);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "energy accountant fell behind the telemetry; tonight's figure may be estimated");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = running.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let new = running.borrow_and_update().clone();
                    if accounted_sections_changed(&cfg, &new) {
                        // The luminaires or the meter changed: account from now on with the new set.
                        accountant = EnergyAccountant::new(&new);
                    }
                    cfg = new;
                }
                _ = tick.tick() => {
                    let due = accountant.as_mut().map(|acc| acc.due(Timestamp::now()));
                    match due {
                        Some(Due::Report(e)) => {
                            metrics.energy_kwh_total.inc_by(e.kwh.max(0.0));
                            metrics.energy_baseline_kwh_total.inc_by(e.baseline_kwh.max(0.0));
                            let data = e.data();
                            tracing::info!(%data, "energy of the night");
                            if records.send(RecordBody::Event(Event::energy_daily(data))).await.is_err() {
                                return;
                            }
                        }
                        Some(Due::Unaccountable(date, why)) => {
                            tracing::warn!(%date, %why, "no energy_daily for this night");
                        }
                        Some(Due::Nothing) | None => {}
                    }
                }
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(rated: Option<f64>, meter: Option<&str>) -> Config {
        let mut text = String::from(
            "[cabinet]\nid = \"c\"\nlatitude = 47.322\nlongitude = 5.0415\ntimezone = \"UTC\"\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 2\n",
        );
        if let Some(w) = rated {
            text.push_str(&format!("rated_power_w = {w}\n"));
        }
        if let Some(m) = meter {
            text.push_str(&format!(
                "[[modbus]]\nname = \"meter\"\naddress = \"127.0.0.1:502\"\n  [[modbus.point]]\n  name = \"energy\"\n  table = \"input\"\n  address = 0\n  type = \"u32\"\n[lighting]\nenergy_meter = \"{m}\"\n"
            ));
        }
        crate::config::load_sources(&[crate::config::Source {
            name: "t".into(),
            text,
        }])
        .unwrap()
    }

    fn night(acc: &EnergyAccountant) -> (Timestamp, Timestamp) {
        acc.programme
            .night(jiff::civil::date(2026, 12, 21))
            .span
            .unwrap()
    }

    #[test]
    fn estimated_from_levels_after_dawn_once() {
        let mut acc = EnergyAccountant::new(&cfg(Some(40.0), None)).unwrap();
        let (dusk, dawn) = night(&acc);
        for gear in ["bus-a/0", "bus-a/1"] {
            acc.observe(&format!("{gear}/level"), &json!(100.0), dusk);
            acc.observe(
                &format!("{gear}/level"),
                &json!(50.0),
                dusk + (dawn - dusk) / 2,
            );
        }
        acc.observe("bus-a/0/lamp_failure", &json!(1), dusk);
        assert_eq!(acc.due(dawn), Due::Nothing, "not before dawn + 1 h");
        let Due::Report(e) = acc.due(dawn + SignedDuration::from_hours(2)) else {
            panic!("due")
        };
        let hours = (dawn - dusk).as_secs_f64() / 3600.0;
        assert!((e.baseline_kwh - 2.0 * 40.0 * hours / 1000.0).abs() < 1e-9);
        assert!((e.kwh - 0.75 * e.baseline_kwh).abs() < 1e-9, "{e:?}");
        assert_eq!(e.savings_percent.map(|s| s.round()), Some(25.0));
        assert_eq!(e.data()["source"], "estimated");
        assert_eq!(
            acc.due(dawn + SignedDuration::from_hours(3)),
            Due::Nothing,
            "once per night"
        );
    }

    #[test]
    fn a_lighting_meter_covering_the_night_is_preferred() {
        let mut acc = EnergyAccountant::new(&cfg(Some(40.0), Some("meter/energy"))).unwrap();
        let (dusk, dawn) = night(&acc);
        acc.observe("bus-a/0/level", &json!(100.0), dusk);
        acc.observe(
            "meter/energy",
            &json!(1000.0),
            dusk - SignedDuration::from_mins(30),
        );
        acc.observe(
            "meter/energy",
            &json!(1400.0),
            dawn + SignedDuration::from_mins(30),
        );
        let Due::Report(e) = acc.due(dawn + SignedDuration::from_hours(2)) else {
            panic!("due")
        };
        assert_eq!(e.data()["source"], "metered");
        assert!((e.kwh - 0.4).abs() < 1e-9);
    }

    #[test]
    fn no_rated_power_no_baseline_no_event() {
        let mut acc = EnergyAccountant::new(&cfg(None, None)).unwrap();
        let (dusk, dawn) = night(&acc);
        acc.observe("bus-a/0/level", &json!(100.0), dusk);
        assert!(matches!(
            acc.due(dawn + SignedDuration::from_hours(2)),
            Due::Unaccountable(_, _)
        ));
    }
}
