//! cabinetd: the edge gateway daemon of a smart-city street cabinet.
//!
//! Equipment adapters (Modbus, DALI, ONVIF) produce [`record`]s; the [`outbox`] makes them durable
//! in sled and numbers them per stream; the [`uplink`] publishes them to the central post over MQTT
//! and deletes them only after the broker acknowledged them.

pub mod config;
pub mod metrics;
pub mod outbox;
pub mod record;
pub mod uplink;
