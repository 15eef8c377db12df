//! cabinetd: the edge gateway daemon of a smart-city street cabinet.
//!
//! The [`equipment`] (Modbus devices, DALI buses; cameras later) produces [`record`]s; the
//! [`recorder`] appends them to the [`outbox`], which makes them durable in sled and numbers them
//! per stream; the [`uplink`] publishes them to the central post over MQTT and deletes them only
//! after the broker acknowledged them. [`daemon`] wires it all and owns the lifecycle;
//! `ARCHITECTURE.md` draws the whole, from a register to a PUBACK.

pub mod audit;
pub mod auth;
pub mod command;
pub mod config;
pub mod daemon;
pub mod equipment;
pub mod event;
pub mod http;
pub mod light;
pub mod lighting;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod readings;
pub mod record;
pub mod recorder;
pub mod report;
pub mod rules;
pub mod safety;
pub mod status;
pub mod tasks;
pub mod uplink;
pub mod wall;
pub mod watchdog;

/// `cabinetd --version`: version, git commit, target triple.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CABINETD_GIT_COMMIT"),
    ", target ",
    env!("CABINETD_TARGET"),
    ")"
);
