//! Energy accounting of one night, for the `energy_daily` event (SPEC §3): pure and incremental
//! (a [`NightAcc`] is fed as readings arrive, so the state to keep — and persist — is a few
//! numbers per luminaire, not the night's samples).
//!
//! - The window: both figures, estimated and metered, count the same window, the night's dusk
//!   minus [`BRACKET`] to its dawn plus [`BRACKET`] (`data.window`). Programme steps may fall
//!   before dusk (`dusk-15min`) or after dawn; by day the luminaires are off, so the margin
//!   costs nothing and catches them.
//! - Baseline (SPEC): the same luminaires at full rated power from dusk to dawn.
//! - Estimated: each luminaire's level is a step function of its good readings, held from one
//!   reading to the next for at most the reading's freshness (`gap`, a few poll periods): what
//!   follows a reading by more than that is *not covered* (the bus was down, the daemon was
//!   stopped), never filled in. Power is linear in level: `P = rated × level / 100` (levels are
//!   percent of light output; real LED drivers draw slightly more at low levels, so the
//!   estimate is an optimistic bound the metered figure is preferred to).
//! - Metered: from cumulative Wh counters (a Modbus meter on the lighting circuit, or the D4i
//!   per-gear counters): the increase between two consecutive readings no further apart than
//!   the counter's freshness is spread evenly over the time between them, and the part inside
//!   the window counts; a decrease (a counter reset, a replaced gear) leaves that interval
//!   uncovered rather than guessed.
//! - Coverage: the share of the window covered by fresh readings (for the estimate, weighted by
//!   each luminaire's rated power; for counters, the least covered counter). A figure with less
//!   than [`MIN_COVERAGE`] is reported with its `coverage` and `kwh: null` (and no savings):
//!   never invented from the part that was seen.
//!
//! `savings_percent = 100 × (1 − kwh / baseline_kwh)`, `null` when the baseline is 0 or the kWh
//! unknown.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// Share of the window the readings must cover for a figure.
pub const MIN_COVERAGE: f64 = 0.9;
/// How far outside dusk and dawn the window reaches.
pub const BRACKET: SignedDuration = SignedDuration::from_hours(1);

/// Where the figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From energy counters.
    Metered,
    /// From levels and rated power.
    Estimated,
}

/// The `energy_daily` event's data.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyDaily {
    /// The (local) date the night started on.
    pub date: Date,
    /// Energy used over the window; `None` when the readings covered too little of it.
    pub kwh: Option<f64>,
    /// The same luminaires at full power from dusk to dawn.
    pub baseline_kwh: f64,
    /// `100 × (1 − kwh / baseline_kwh)`; `None` when the baseline is 0 or the kWh unknown.
    pub savings_percent: Option<f64>,
    /// Metered or estimated.
    pub source: Source,
    /// Share of the window covered by readings, 0..=1.
    pub coverage: f64,
    /// The window counted: dusk − [`BRACKET`] to dawn + [`BRACKET`].
    pub window: (Timestamp, Timestamp),
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn ts(t: Timestamp) -> String {
    crate::record::format_ts(std::time::SystemTime::try_from(t).unwrap_or(std::time::UNIX_EPOCH))
}

impl EnergyDaily {
    /// `{"date":D,"kwh":X|null,"baseline_kwh":Y,"savings_percent":Z|null,
    /// "source":"metered"|"estimated","coverage":C,"window":{"from":T,"to":T}}`; energies to the
    /// Wh (3 decimals), savings to 0.1 %, coverage to 0.001.
    pub fn data(&self) -> Value {
        json!({
            "date": self.date.to_string(),
            "kwh": self.kwh.map(|k| round(k, 3)),
            "baseline_kwh": round(self.baseline_kwh, 3),
            "savings_percent": self.savings_percent.map(|s| round(s, 1)),
            "source": match self.source {
                Source::Metered => "metered",
                Source::Estimated => "estimated",
            },
            "coverage": round(self.coverage, 3),
            "window": {"from": ts(self.window.0), "to": ts(self.window.1)},
        })
    }
}

/// A luminaire's share of a night.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GearNight {
    /// Rated power at 100 %, W.
    pub rated_w: f64,
    /// Estimated Wh so far, inside the window.
    pub wh: f64,
    /// Seconds of the window covered by fresh level readings.
    pub covered_s: f64,
}

/// A counter's share of a night.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterNight {
    /// Wh attributed to the window so far.
    pub wh: f64,
    /// Seconds of the window covered by consecutive fresh readings.
    pub covered_s: f64,
}

/// The accounting of one night (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct NightAcc {
    /// The local date the night starts on.
    pub date: Date,
    /// Its dusk.
    pub dusk: Timestamp,
    /// Its dawn.
    pub dawn: Timestamp,
    /// Luminaires (`BUS/ADDR`).
    pub gear: BTreeMap<String, GearNight>,
    /// Counters, by key (`BUS/ADDR` for a D4i counter, the meter's point name).
    pub counters: BTreeMap<String, CounterNight>,
}

/// The night running at `now`, so far (`cabinetd_energy_night_*`, `/status`).
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// Its date.
    pub date: Date,
    /// Estimated kWh so far.
    pub kwh: f64,
    /// Baseline of the part of dusk → dawn elapsed.
    pub baseline_kwh: f64,
    /// Savings so far (`None` before dusk).
    pub savings_percent: Option<f64>,
    /// Share of the window elapsed covered by readings.
    pub coverage: f64,
}

fn secs(a: Timestamp, b: Timestamp) -> f64 {
    (b - a).as_secs_f64().max(0.0)
}

impl NightAcc {
    /// The night of `date`, from `dusk` to `dawn`.
    pub fn new(date: Date, dusk: Timestamp, dawn: Timestamp) -> NightAcc {
        NightAcc {
            date,
            dusk,
            dawn,
            gear: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// The window counted.
    pub fn window(&self) -> (Timestamp, Timestamp) {
        (
            self.dusk.saturating_sub(BRACKET).unwrap_or(self.dusk),
            self.dawn.saturating_add(BRACKET).unwrap_or(self.dawn),
        )
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: Timestamp) -> bool {
        let (from, to) = self.window();
        from <= t && t < to
    }

    fn overlap(&self, a: Timestamp, b: Timestamp) -> f64 {
        let (from, to) = self.window();
        secs(a.max(from), b.min(to))
    }

    /// Luminaire `gear` (rated `rated_w`) was at `level` % from `a` to `b`.
    pub fn add_level(&mut self, gear: &str, rated_w: f64, level: f64, a: Timestamp, b: Timestamp) {
        let s = self.overlap(a, b);
        let g = self.gear.entry(gear.to_owned()).or_default();
        g.rated_w = rated_w;
        if s <= 0.0 {
            return;
        }
        let level = if level.is_finite() {
            level.clamp(0.0, 100.0)
        } else {
            0.0
        };
        g.wh += rated_w * level / 100.0 * s / 3600.0;
        g.covered_s += s;
    }

    /// Counter `key` rose by `delta_wh` between its readings at `a` and `b`.
    pub fn add_counter(&mut self, key: &str, delta_wh: f64, a: Timestamp, b: Timestamp) {
        let total = secs(a, b);
        let s = self.overlap(a, b);
        let c = self.counters.entry(key.to_owned()).or_default();
        if s <= 0.0 || total <= 0.0 || !delta_wh.is_finite() {
            return;
        }
        c.wh += delta_wh.max(0.0) * s / total;
        c.covered_s += s;
    }

    /// kWh of `rated` luminaires at full power from dusk to dawn.
    pub fn baseline_kwh(&self, rated: impl Iterator<Item = f64>) -> f64 {
        rated.sum::<f64>() * secs(self.dusk, self.dawn) / 3600.0 / 1000.0
    }

    fn window_s(&self) -> f64 {
        let (from, to) = self.window();
        secs(from, to)
    }

    /// The figure of the finished night, for the luminaires `luminaires` (`BUS/ADDR` → rated W;
    /// a luminaire never read this night counts as uncovered). Metered when the counters `meter`
    /// (the lighting circuit's meter) or, failing that, every luminaire's D4i counter cover the
    /// window; else estimated.
    pub fn report(&self, luminaires: &BTreeMap<String, f64>, meter: Option<&str>) -> EnergyDaily {
        let window_s = self.window_s().max(1.0);
        let baseline = self.baseline_kwh(luminaires.values().copied());
        let counter_cov = |k: &str| self.counters.get(k).map_or(0.0, |c| c.covered_s / window_s);
        let daily = |kwh: Option<f64>, source, coverage: f64| {
            let kwh = kwh.filter(|_| coverage >= MIN_COVERAGE);
            EnergyDaily {
                date: self.date,
                kwh,
                baseline_kwh: baseline,
                savings_percent: kwh
                    .filter(|_| baseline > 0.0)
                    .map(|k| 100.0 * (1.0 - k / baseline)),
                source,
                coverage: coverage.min(1.0),
                window: self.window(),
            }
        };
        if let Some(m) = meter {
            if counter_cov(m) >= MIN_COVERAGE {
                return daily(
                    Some(self.counters[m].wh / 1000.0),
                    Source::Metered,
                    counter_cov(m),
                );
            }
        }
        let d4i =
            !luminaires.is_empty() && luminaires.keys().all(|g| counter_cov(g) >= MIN_COVERAGE);
        if d4i {
            let wh: f64 = luminaires.keys().map(|g| self.counters[g].wh).sum();
            let cov = luminaires
                .keys()
                .map(|g| counter_cov(g))
                .fold(1.0, f64::min);
            return daily(Some(wh / 1000.0), Source::Metered, cov);
        }
        let mut wh = 0.0;
        let (mut covered, mut whole) = (0.0, 0.0);
        for (g, rated) in luminaires {
            let n = self.gear.get(g).copied().unwrap_or_default();
            wh += n.wh;
            covered += rated * n.covered_s;
            whole += rated * window_s;
        }
        let coverage = if whole > 0.0 { covered / whole } else { 0.0 };
        daily(Some(wh / 1000.0), Source::Estimated, coverage)
    }

    /// The night so far at `now` (estimated), for the luminaires `luminaires`.
    pub fn live(&self, luminaires: &BTreeMap<String, f64>, now: Timestamp) -> Live {
        let (from, _) = self.window();
        let elapsed = self.overlap(from, now);
        let lit = secs(self.dusk, now.min(self.dawn));
        let mut wh = 0.0;
        let (mut covered, mut whole) = (0.0, 0.0);
        for (g, rated) in luminaires {
            let n = self.gear.get(g).copied().unwrap_or_default();
            wh += n.wh;
            covered += rated * n.covered_s;
            whole += rated * elapsed;
        }
        let baseline = luminaires.values().sum::<f64>() * lit / 3600.0 / 1000.0;
        Live {
            date: self.date,
            kwh: wh / 1000.0,
            baseline_kwh: baseline,
            savings_percent: (baseline > 0.0).then(|| 100.0 * (1.0 - wh / 1000.0 / baseline)),
            coverage: if whole > 0.0 {
                (covered / whole).min(1.0)
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A 10-hour night: 16:00Z to 02:00Z; the window is 15:00Z to 03:00Z.
    fn night() -> NightAcc {
        NightAcc::new(
            date(2026, 12, 21),
            t("2026-12-21T16:00:00Z"),
            t("2026-12-22T02:00:00Z"),
        )
    }

    fn lum(n: usize, w: f64) -> BTreeMap<String, f64> {
        (0..n).map(|i| (format!("bus-a/{i}"), w)).collect()
    }

    #[test]
    fn estimate_is_linear_in_level_and_counts_the_window() {
        let mut n = night();
        // 15 min before dusk at 100 % (a dusk-15min step), 100 % to 21:00, 70 % to dawn, off
        // after: 40 W × (5.25 h + 0.7 × 5 h) = 350 Wh.
        let a = "bus-a/0";
        n.add_level(
            a,
            40.0,
            0.0,
            t("2026-12-21T14:00:00Z"),
            t("2026-12-21T15:45:00Z"),
        );
        n.add_level(
            a,
            40.0,
            100.0,
            t("2026-12-21T15:45:00Z"),
            t("2026-12-21T21:00:00Z"),
        );
        n.add_level(
            a,
            40.0,
            70.0,
            t("2026-12-21T21:00:00Z"),
            t("2026-12-22T02:00:00Z"),
        );
        n.add_level(
            a,
            40.0,
            0.0,
            t("2026-12-22T02:00:00Z"),
            t("2026-12-22T05:00:00Z"),
        );
        let e = n.report(&lum(1, 40.0), None);
        assert_eq!(e.source, Source::Estimated);
        assert!((e.kwh.unwrap() - 0.35).abs() < 1e-9, "{e:?}");
        assert!((e.baseline_kwh - 0.4).abs() < 1e-12);
        assert!((e.savings_percent.unwrap() - 12.5).abs() < 1e-9);
        assert_eq!(e.coverage, 1.0);
        assert_eq!(
            e.data(),
            json!({"date":"2026-12-21","kwh":0.35,"baseline_kwh":0.4,"savings_percent":12.5,
                "source":"estimated","coverage":1.0,
                "window":{"from":"2026-12-21T15:00:00.000Z","to":"2026-12-22T03:00:00.000Z"}})
        );
    }

    #[test]
    fn too_little_coverage_is_said_and_no_figure_is_invented() {
        let mut n = night();
        // Readings only from 21:00 (a restart in the middle of the night): 6 h of 12.
        n.add_level(
            "bus-a/0",
            40.0,
            70.0,
            t("2026-12-21T21:00:00Z"),
            t("2026-12-22T03:00:00Z"),
        );
        let e = n.report(&lum(1, 40.0), None);
        assert_eq!((e.kwh, e.savings_percent), (None, None));
        assert!((e.coverage - 0.5).abs() < 1e-9);
        assert_eq!(e.data()["kwh"], Value::Null);
        assert_eq!(e.data()["coverage"], 0.5);
        // A luminaire never read this night counts as uncovered.
        let mut n = night();
        n.add_level(
            "bus-a/0",
            40.0,
            70.0,
            t("2026-12-21T15:00:00Z"),
            t("2026-12-22T03:00:00Z"),
        );
        let e = n.report(&lum(2, 40.0), None);
        assert!((e.coverage - 0.5).abs() < 1e-9, "{e:?}");
        assert_eq!(e.kwh, None);
    }

    #[test]
    fn metered_counters_are_spread_over_their_interval_and_preferred() {
        let mut n = night();
        n.add_level(
            "bus-a/0",
            40.0,
            100.0,
            t("2026-12-21T15:00:00Z"),
            t("2026-12-22T03:00:00Z"),
        );
        // A meter read every 2 h from 14:00 to 04:00: the 14–16 h and 02–04 h intervals count
        // for half (the deltas are the accountant's: here given directly).
        let readings = [
            ("2026-12-21T14:00:00Z", 1000.0),
            ("2026-12-21T16:00:00Z", 1020.0),
            ("2026-12-21T18:00:00Z", 1100.0),
            ("2026-12-21T20:00:00Z", 1130.0),
            ("2026-12-21T22:00:00Z", 1210.0),
            ("2026-12-22T00:00:00Z", 1290.0),
            ("2026-12-22T02:00:00Z", 1370.0),
            ("2026-12-22T04:00:00Z", 1390.0),
        ];
        for w in readings.windows(2) {
            let (a, va) = (t(w[0].0), w[0].1);
            let (b, vb) = (t(w[1].0), w[1].1);
            n.add_counter("meter/energy", vb - va, a, b);
        }
        let e = n.report(&lum(1, 40.0), Some("meter/energy"));
        assert_eq!(e.source, Source::Metered);
        // 10 + 80 + 30 + 80 + 80 + 80 + 10 = 370 Wh.
        assert!((e.kwh.unwrap() - 0.37).abs() < 1e-9, "{e:?}");
        assert_eq!(e.coverage, 1.0);
        // Without the meter, the D4i counters are not there: estimated.
        assert_eq!(n.report(&lum(1, 40.0), None).source, Source::Estimated);
    }

    #[test]
    fn live_figures_of_the_night_running() {
        let mut n = night();
        n.add_level(
            "bus-a/0",
            100.0,
            50.0,
            t("2026-12-21T15:00:00Z"),
            t("2026-12-21T18:00:00Z"),
        );
        let l = n.live(&lum(1, 100.0), t("2026-12-21T18:00:00Z"));
        // 150 Wh so far; baseline of 16:00–18:00 at 100 W = 200 Wh.
        assert!((l.kwh - 0.15).abs() < 1e-9);
        assert!((l.baseline_kwh - 0.2).abs() < 1e-9);
        assert!((l.savings_percent.unwrap() - 25.0).abs() < 1e-9);
        assert_eq!(l.coverage, 1.0);
        let before_dusk = n.live(&lum(1, 100.0), t("2026-12-21T15:30:00Z"));
        assert_eq!(before_dusk.savings_percent, None);
    }
}
