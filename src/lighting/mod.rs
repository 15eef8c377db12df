//! The lighting programme: astronomical clock, the night's plan, the programme evaluator the
//! equipment follows (`equipment::lights` carries its steps to the DALI buses), and the daily
//! energy accounting.
//!
//! Everything here is pure (no I/O, no wall clock: callers pass the date or the instant), except
//! [`accountant::run`], the task that feeds the accountant and appends its `energy_daily` event.
//!
//! - [`astro`]: NOAA/Meeus sunrise/sunset in UTC for a latitude/longitude and a solar day,
//!   iterated on the event's instant, with the polar day/night guard ([`astro::SunEvent`]).
//! - [`plan`]: the night that starts on a date ([`plan_night`], [`Night`]), its JSON-lines
//!   rendering for `cabinetd plan` ([`print_plan`], [`plan_cli`]).
//! - [`programme`]: [`Programme::level_at`] and [`Programme::next_change_after`] over any number
//!   of nights.
//! - [`energy`]: the `energy_daily` event data, metered or estimated.
//! - [`accountant`]: which night is due, from the readings of the night.
//!
//! Targets and step times are `crate::light`'s. Time zones: programme clock times (`"22:00"`)
//! are local times in `cabinet.timezone`, resolved with jiff by `config::time_zone` (the system
//! tzdb first, a copy bundled in the binary as fallback).

pub mod accountant;
pub mod astro;
pub mod energy;
pub mod plan;
pub mod programme;
#[cfg(test)]
mod tests;

pub use plan::{plan_cli, plan_night, print_plan, Night, Plan, Polar, Step};
pub use programme::{Luminaire, Programme};

/// Why a plan could not be made or written.
///
/// `Date` and `TimeZone` are permanent (fix the argument or the config); `Io` is the output's
/// own failure (a closed pipe), transient from the programme's point of view.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The `--date` argument is not a `YYYY-MM-DD` calendar date, or is outside the nights the
    /// programme plans (usage error, exit 2).
    #[error("--date {value:?}: {reason}")]
    Date {
        /// As given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `cabinet.timezone` is unknown to both the system and the bundled tzdb.
    #[error("cabinet.timezone {name:?}: {reason}")]
    TimeZone {
        /// As configured.
        name: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// Writing the plan failed.
    #[error("writing the plan: {0}")]
    Io(#[from] std::io::Error),
}
