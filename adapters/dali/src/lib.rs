//! DALI (IEC 62386) bus master for cabinetd.
//!
//! Layers, bottom up:
//! - [`frame`]: forward/backward frames and address bytes (pure);
//! - [`command`]: typed Part 102 commands, dimming curve, fade table, status bits (pure);
//! - [`memory`]: bank 0 identity and D4i banks 202/205/206 decoding (pure);
//! - [`transaction`]: the [`Transport`] seam and the typed [`Reply`];
//! - interfaces: [`atx`] (ATX DALI HAT serial line protocol) and [`sim`] (simulated line),
//!   selectable by name through [`interface::Interface`];
//! - [`bus`]: discovery, polling, level control, group/fallback programming;
//! - [`supervisor`]: the [`Supervisor`] producing change events from polls;
//! - [`commission`]: random-address search assigning short addresses.
#![warn(missing_docs)]

pub mod atx;
pub mod bus;
pub mod command;
pub mod commission;
pub mod error;
pub mod frame;
pub mod interface;
pub mod memory;
pub mod sim;
pub mod supervisor;
pub mod transaction;

pub use bus::{Bus, Drift, Fallback, GearInfo, GearStatus, Parameter};
pub use command::{arc_to_percent, percent_to_arc, Command, Query, Status};
pub use error::{Error, ErrorClass, Result};
pub use frame::{Address, GroupAddress, ShortAddress};
pub use interface::Interface;
pub use supervisor::{Cycle, Event, GearSample, Supervisor, SupervisorConfig};
pub use transaction::{Reply, Request, Transport};
