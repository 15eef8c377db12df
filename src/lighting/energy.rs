//! Energy accounting of one night, for the `energy_daily` event (SPEC §3).
//!
//! - Baseline: the same luminaires at full rated power from dusk to dawn.
//! - Estimated: each luminaire's level is a step function of its samples (a sample's level holds
//!   until the next sample; before the first sample, the first sample's level — the daemon
//!   records a level when it starts, so this only fills the gap of a restart). Power is taken as
//!   linear in level: `P = rated × level / 100`. Levels are already percent of light output (the
//!   DALI logarithmic arc curve is converted before); real LED drivers draw slightly more than
//!   this at low levels (driver losses, standby), so the estimate is an optimistic bound the
//!   metered figure should be preferred to. Integrated over `[dusk, dawn]`, like the baseline.
//! - Metered: from cumulative Wh counters (a Modbus meter on the lighting circuit, or the D4i
//!   per-gear counters). Readings from an hour before dusk to an hour after dawn are used (the
//!   luminaires are off by day, so the bracketing readings measure the night better than the
//!   first and last inside it); a decrease is a counter reset to zero, after which the new
//!   reading is the energy since the reset. A counter whose readings do not span at least
//!   [`MIN_COVERAGE`] of the night gives no metered figure (the caller falls back to the
//!   estimate), so a restart in the middle of the night is not reported as savings.
//!
//! `savings_percent = 100 × (1 − kwh / baseline_kwh)`, `null` when the baseline is 0.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// Share of the night the readings of a counter must span to be trusted.
pub const MIN_COVERAGE: f64 = 0.9;
/// How far outside the night readings are still used to bracket it.
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
    /// The date the night started on.
    pub date: Date,
    /// Energy used over the night.
    pub kwh: f64,
    /// The same luminaires at full power from dusk to dawn.
    pub baseline_kwh: f64,
    /// `100 × (1 − kwh / baseline_kwh)`; `None` when the baseline is 0.
    pub savings_percent: Option<f64>,
    /// Metered or estimated.
    pub source: Source,
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

impl EnergyDaily {
    fn new(date: Date, kwh: f64, baseline_kwh: f64, source: Source) -> EnergyDaily {
        let savings_percent = (baseline_kwh > 0.0).then(|| 100.0 * (1.0 - kwh / baseline_kwh));
        EnergyDaily {
            date,
            kwh,
            baseline_kwh,
            savings_percent,
            source,
        }
    }

    /// `{"date":D,"kwh":X,"baseline_kwh":Y,"savings_percent":Z,"source":"metered"|"estimated"}`;
    /// energies to the Wh (3 decimals), savings to 0.1 %.
    pub fn data(&self) -> Value {
        json!({
            "date": self.date.to_string(),
            "kwh": round(self.kwh, 3),
            "baseline_kwh": round(self.baseline_kwh, 3),
            "savings_percent": self.savings_percent.map(|s| round(s, 1)),
            "source": match self.source {
                Source::Metered => "metered",
                Source::Estimated => "estimated",
            },
        })
    }
}

/// The level samples of one luminaire.
#[derive(Debug, Clone, Copy)]
pub struct LevelSeries<'a> {
    /// Rated power at 100 %, in watts.
    pub rated_power_w: f64,
    /// `(instant, level_percent)`, in any order.
    pub samples: &'a [(Timestamp, f64)],
}

fn hours(from: Timestamp, to: Timestamp) -> f64 {
    (to - from).as_secs_f64() / 3600.0
}

/// Estimated Wh of one luminaire over `[from, to]` (see the module docs).
pub fn estimated_wh(series: LevelSeries<'_>, from: Timestamp, to: Timestamp) -> f64 {
    if to <= from || series.samples.is_empty() {
        return 0.0;
    }
    let mut s: Vec<(Timestamp, f64)> = series
        .samples
        .iter()
        .map(|&(t, l)| {
            (
                t,
                if l.is_finite() {
                    l.clamp(0.0, 100.0)
                } else {
                    0.0
                },
            )
        })
        .collect();
    s.sort_by_key(|&(t, _)| t);
    // The level in force at `from`: the last sample at or before it, else the first sample.
    let first = s.partition_point(|&(t, _)| t <= from);
    let mut level = if first == 0 { s[0].1 } else { s[first - 1].1 };
    let mut at = from;
    let mut wh = 0.0;
    for &(t, l) in &s[first..] {
        if t >= to {
            break;
        }
        wh += series.rated_power_w * level / 100.0 * hours(at, t);
        at = t;
        level = l;
    }
    wh + series.rated_power_w * level / 100.0 * hours(at, to)
}

/// kWh of `rated_powers_w` at full power from dusk to dawn.
pub fn baseline_kwh(rated_powers_w: &[f64], dusk: Timestamp, dawn: Timestamp) -> f64 {
    let h = hours(dusk, dawn).max(0.0);
    rated_powers_w.iter().sum::<f64>() * h / 1000.0
}

/// The estimated figure of the night `[dusk, dawn]` that started on `date`.
pub fn estimate(
    date: Date,
    dusk: Timestamp,
    dawn: Timestamp,
    luminaires: &[LevelSeries<'_>],
) -> EnergyDaily {
    let wh: f64 = luminaires
        .iter()
        .map(|l| estimated_wh(*l, dusk, dawn))
        .sum();
    let rated: Vec<f64> = luminaires.iter().map(|l| l.rated_power_w).collect();
    EnergyDaily::new(
        date,
        wh / 1000.0,
        baseline_kwh(&rated, dusk, dawn),
        Source::Estimated,
    )
}

/// Wh a cumulative counter recorded over the night, or `None` if its readings do not cover it.
pub fn metered_wh(readings: &[(Timestamp, f64)], dusk: Timestamp, dawn: Timestamp) -> Option<f64> {
    let mut r: Vec<(Timestamp, f64)> = readings
        .iter()
        .copied()
        .filter(|&(t, v)| t >= dusk - BRACKET && t <= dawn + BRACKET && v.is_finite() && v >= 0.0)
        .collect();
    r.sort_by_key(|&(t, _)| t);
    let (first, last) = (r.first()?.0, r.last()?.0);
    let night = hours(dusk, dawn);
    if r.len() < 2 || night <= 0.0 {
        return None;
    }
    // The readings' span, counted inside the night only.
    let covered = hours(first.max(dusk), last.min(dawn));
    if covered < MIN_COVERAGE * night {
        return None;
    }
    Some(
        r.windows(2)
            .map(|w| {
                let (prev, next) = (w[0].1, w[1].1);
                // A decrease is a reset to zero: the new reading is what accrued since.
                if next >= prev {
                    next - prev
                } else {
                    next
                }
            })
            .sum(),
    )
}

/// The metered figure: the sum of `counters` (each a Wh counter's readings), against the
/// baseline of the luminaires they meter. `None` if any counter does not cover the night.
pub fn metered(
    date: Date,
    dusk: Timestamp,
    dawn: Timestamp,
    counters: &[&[(Timestamp, f64)]],
    baseline_kwh: f64,
) -> Option<EnergyDaily> {
    if counters.is_empty() {
        return None;
    }
    let mut wh = 0.0;
    for c in counters {
        wh += metered_wh(c, dusk, dawn)?;
    }
    Some(EnergyDaily::new(
        date,
        wh / 1000.0,
        baseline_kwh,
        Source::Metered,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A 10-hour night: 16:00Z to 02:00Z.
    fn night() -> (Timestamp, Timestamp) {
        (t("2026-12-21T16:00:00Z"), t("2026-12-22T02:00:00Z"))
    }

    #[test]
    fn estimate_is_linear_in_level() {
        let (dusk, dawn) = night();
        // 100 % for 5 h then 70 % for 5 h at 40 W: 200 + 140 Wh.
        let a = [(dusk, 100.0), (t("2026-12-21T21:00:00Z"), 70.0)];
        // 50 % all night at 40 W, its only sample before dusk: 200 Wh.
        let b = [(t("2026-12-21T15:00:00Z"), 50.0)];
        assert_eq!(
            estimated_wh(
                LevelSeries {
                    rated_power_w: 40.0,
                    samples: &a
                },
                dusk,
                dawn
            ),
            340.0
        );
        let e = estimate(
            date(2026, 12, 21),
            dusk,
            dawn,
            &[
                LevelSeries {
                    rated_power_w: 40.0,
                    samples: &a,
                },
                LevelSeries {
                    rated_power_w: 40.0,
                    samples: &b,
                },
            ],
        );
        assert!((e.kwh - 0.54).abs() < 1e-12, "{e:?}");
        assert!((e.baseline_kwh - 0.8).abs() < 1e-12);
        assert!((e.savings_percent.unwrap() - 32.5).abs() < 1e-9);
        assert_eq!(
            e.data(),
            json!({"date":"2026-12-21","kwh":0.54,"baseline_kwh":0.8,"savings_percent":32.5,"source":"estimated"})
        );
    }

    #[test]
    fn samples_outside_the_night_and_unsorted() {
        let (dusk, dawn) = night();
        // Unsorted; the first sample comes 1 h after dusk and fills back; one after dawn is
        // ignored; levels out of range are clamped.
        let s = [
            (t("2026-12-22T03:00:00Z"), 100.0),
            (t("2026-12-22T01:00:00Z"), 0.0),
            (t("2026-12-21T17:00:00Z"), 150.0),
        ];
        // 100 % from 16:00 to 01:00 (9 h) at 100 W = 900 Wh.
        let wh = estimated_wh(
            LevelSeries {
                rated_power_w: 100.0,
                samples: &s,
            },
            dusk,
            dawn,
        );
        assert_eq!(wh, 900.0);
        assert_eq!(
            estimated_wh(
                LevelSeries {
                    rated_power_w: 100.0,
                    samples: &[]
                },
                dusk,
                dawn
            ),
            0.0
        );
    }

    #[test]
    fn metered_counter_with_a_reset() {
        let (dusk, dawn) = night();
        let r = [
            (t("2026-12-21T15:50:00Z"), 1000.0),
            (t("2026-12-21T20:00:00Z"), 1300.0),
            // Reset (power cut of the meter): 50 Wh since.
            (t("2026-12-21T21:00:00Z"), 50.0),
            (t("2026-12-22T02:00:00Z"), 300.0),
            // Outside the bracket: ignored.
            (t("2026-12-22T05:00:00Z"), 9000.0),
        ];
        assert_eq!(metered_wh(&r, dusk, dawn), Some(600.0));
        let e = metered(date(2026, 12, 21), dusk, dawn, &[&r], 0.8).unwrap();
        assert_eq!(e.source, Source::Metered);
        assert_eq!(
            e.data(),
            json!({"date":"2026-12-21","kwh":0.6,"baseline_kwh":0.8,"savings_percent":25.0,"source":"metered"})
        );
    }

    #[test]
    fn metered_needs_coverage() {
        let (dusk, dawn) = night();
        // Readings from 17:00 only: 9 h of 10 (90 %) is enough, 8.5 h is not.
        let ok = [(t("2026-12-21T17:00:00Z"), 0.0), (dawn, 100.0)];
        assert_eq!(metered_wh(&ok, dusk, dawn), Some(100.0));
        let short = [(t("2026-12-21T17:30:00Z"), 0.0), (dawn, 100.0)];
        assert_eq!(metered_wh(&short, dusk, dawn), None);
        assert_eq!(metered_wh(&[(dusk, 5.0)], dusk, dawn), None);
        // One uncovered counter of two: no metered figure at all.
        assert_eq!(
            metered(date(2026, 12, 21), dusk, dawn, &[&ok, &short], 1.0),
            None
        );
        assert_eq!(metered(date(2026, 12, 21), dusk, dawn, &[], 1.0), None);
        let two = metered(date(2026, 12, 21), dusk, dawn, &[&ok, &ok], 1.0).unwrap();
        assert!((two.kwh - 0.2).abs() < 1e-12);
    }

    #[test]
    fn zero_baseline_has_no_savings() {
        let (dusk, _) = night();
        let e = estimate(date(2026, 12, 21), dusk, dusk, &[]);
        assert_eq!((e.kwh, e.baseline_kwh, e.savings_percent), (0.0, 0.0, None));
        assert_eq!(e.data()["savings_percent"], Value::Null);
    }
}
