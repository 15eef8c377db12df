//! The interfaces a daemon can pick from configuration, behind one type.
//!
//! `Bus<Interface>` lets the daemon hold any line without being generic;
//! adding an interface (DALI-USB over hidraw, DALI over Modbus) means one
//! more variant here and a [`Transport`] implementation, nothing else.

use tokio_serial::SerialStream;

use crate::atx::AtxHat;
use crate::error::{Error, Result};
use crate::sim::{SimBus, SimHandle};
use crate::transaction::{Reply, Request, Transport};

/// A configured DALI interface.
#[derive(Debug)]
pub enum Interface {
    /// ATX DALI HAT on a serial port (`interface = "atx-hat"`).
    AtxHat(AtxHat<SerialStream>),
    /// Built-in simulated line (`interface = "sim"`).
    Sim(SimBus),
}

impl Interface {
    /// Opens an interface by its configuration name. `port` is required for
    /// `"atx-hat"`; `"sim"` builds a line of `sim_gear` addressed gear and
    /// also returns its fault-injection handle.
    pub fn open(
        kind: &str,
        port: Option<&str>,
        sim_gear: u8,
    ) -> Result<(Interface, Option<SimHandle>)> {
        match kind {
            "atx-hat" => {
                let port = port.ok_or_else(|| {
                    Error::InvalidArgument("interface \"atx-hat\" needs a port".into())
                })?;
                Ok((Interface::AtxHat(AtxHat::open(port)?), None))
            }
            "sim" => {
                let (bus, handle) = SimBus::with_gear(sim_gear.min(64), 0);
                Ok((Interface::Sim(bus), Some(handle)))
            }
            other => Err(Error::InvalidArgument(format!(
                "unknown DALI interface {other:?} (expected \"atx-hat\" or \"sim\")"
            ))),
        }
    }
}

impl Transport for Interface {
    async fn transact(&mut self, request: Request) -> Result<Reply> {
        match self {
            Interface::AtxHat(hat) => hat.transact(request).await,
            Interface::Sim(sim) => sim.transact(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Query};
    use crate::frame::Address;

    #[tokio::test]
    async fn opens_by_name() {
        let (mut sim, handle) = Interface::open("sim", None, 3).unwrap();
        assert!(handle.is_some());
        let q = Request::from_command(&Command::Query(
            Address::short(2).unwrap(),
            Query::ControlGearPresent,
        ));
        assert_eq!(sim.transact(q).await.unwrap(), Reply::Answer(0xFF));
        assert!(matches!(
            Interface::open("atx-hat", None, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Interface::open("dali-usb", None, 0),
            Err(Error::InvalidArgument(_))
        ));
        let err = Interface::open("atx-hat", Some("/nonexistent/tty"), 0).unwrap_err();
        assert!(matches!(err, Error::Open { .. }), "{err}");
    }
}
