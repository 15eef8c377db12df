//! Bus driver: discovery, polling, level control, group and fallback
//! programming on one DALI line; `supervisor` turns its polls into change
//! events. Daemon-agnostic: no records, no config types.
//!
//! Invariants: one [`Bus`] owns its [`Transport`], so every transaction on a
//! line is serialised (DTR0/DTR1 are shared by every gear on the line and two
//! interleaved writers would corrupt each other); every configuration command
//! goes out send-twice and is verified by a query; a poll costs at most two
//! queries per gear (QUERY STATUS, then QUERY ACTUAL LEVEL only while the lamp
//! is on); the supervisor emits each event once per state transition.

use crate::command::{arc_to_percent, percent_to_arc, Command, Query, Status};
use crate::error::{Error, Result};
use crate::frame::{Address, GroupAddress, ShortAddress};
use crate::memory::{
    Energy, GearDiagnostics, Identity, LightSourceDiagnostics, BANK_ENERGY, BANK_GEAR_DIAGNOSTICS,
    BANK_IDENTITY, BANK_LIGHT_SOURCE_DIAGNOSTICS, ENERGY_LAST, GEAR_DIAGNOSTICS_LAST,
    IDENTITY_LAST, LIGHT_SOURCE_DIAGNOSTICS_LAST,
};
use crate::transaction::{Reply, Request, Transport};

/// A gear found by [`Bus::discover`].
#[derive(Debug, Clone, PartialEq)]
pub struct GearInfo {
    /// Short address.
    pub address: ShortAddress,
    /// Bank 0 identity (`None` if bank 0 is not readable).
    pub identity: Option<Identity>,
    /// QUERY DEVICE TYPE answer (6 = LED; 0xFF = several).
    pub device_type: Option<u8>,
}

/// One poll of one gear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GearStatus {
    /// Short address.
    pub address: ShortAddress,
    /// The gear answered QUERY STATUS.
    pub present: bool,
    /// Decoded status (`None` when absent).
    pub status: Option<Status>,
    /// Actual arc level (0 when off; `None` when absent, failed or MASK).
    pub arc: Option<u8>,
    /// Actual level in percent of full output (standard curve).
    pub level_percent: Option<f64>,
}

/// Fallback and limit parameters to program into a gear; `None` = leave alone.
/// Levels are arc levels (use [`percent_to_arc`]); 255 = MASK where the
/// standard allows it (power on: last level; system failure: stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fallback {
    /// POWER ON LEVEL.
    pub power_on_level: Option<u8>,
    /// SYSTEM FAILURE LEVEL.
    pub system_failure_level: Option<u8>,
    /// MIN LEVEL.
    pub min_level: Option<u8>,
    /// MAX LEVEL.
    pub max_level: Option<u8>,
    /// FADE TIME code (0..=15).
    pub fade_time: Option<u8>,
}

/// A programmable parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parameter {
    /// POWER ON LEVEL.
    PowerOnLevel,
    /// SYSTEM FAILURE LEVEL.
    SystemFailureLevel,
    /// MIN LEVEL.
    MinLevel,
    /// MAX LEVEL.
    MaxLevel,
    /// FADE TIME.
    FadeTime,
}

impl Parameter {
    /// Name used in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Parameter::PowerOnLevel => "power_on_level",
            Parameter::SystemFailureLevel => "system_failure_level",
            Parameter::MinLevel => "min_level",
            Parameter::MaxLevel => "max_level",
            Parameter::FadeTime => "fade_time",
        }
    }
}

/// A parameter found different from the wanted value (and then corrected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    /// Short address.
    pub address: ShortAddress,
    /// Parameter.
    pub parameter: Parameter,
    /// Value wanted.
    pub wanted: u8,
    /// Value found before correction (`None` = no answer).
    pub found: Option<u8>,
}

/// DALI bus master over one interface.
#[derive(Debug)]
pub struct Bus<T> {
    transport: T,
    transactions: u64,
}

impl<T: Transport> Bus<T> {
    /// A bus over `transport`.
    pub fn new(transport: T) -> Self {
        Bus {
            transport,
            transactions: 0,
        }
    }

    /// Transactions (requests to the interface) run so far.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// The interface.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Runs one raw request.
    pub async fn request(&mut self, request: Request) -> Result<Reply> {
        self.transactions += 1;
        self.transport.transact(request).await
    }

    /// Sends a command with its own send-twice/answer flags.
    pub async fn send(&mut self, cmd: Command) -> Result<Reply> {
        self.request(Request::from_command(&cmd)).await
    }

    /// A yes/no query: any answer, a collision included, is YES.
    pub async fn query_yes(&mut self, address: Address, query: Query) -> Result<bool> {
        Ok(self.send(Command::Query(address, query)).await?.is_yes())
    }

    /// A value query: `None` = no answer; a collision is [`Error::Collision`].
    pub async fn query_value(&mut self, address: Address, query: Query) -> Result<Option<u8>> {
        self.send(Command::Query(address, query))
            .await?
            .value(&|| format!("{query:?} to {address}"))
    }

    /// Short addresses answering QUERY CONTROL GEAR PRESENT (64 queries).
    pub async fn scan(&mut self) -> Result<Vec<ShortAddress>> {
        let mut found = Vec::new();
        for a in ShortAddress::all() {
            if self
                .query_yes(Address::Short(a), Query::ControlGearPresent)
                .await?
            {
                found.push(a);
            }
        }
        Ok(found)
    }

    /// [`Bus::scan`], then device type and bank 0 identity of each gear found.
    pub async fn discover(&mut self) -> Result<Vec<GearInfo>> {
        let mut out = Vec::new();
        for address in self.scan().await? {
            let device_type = self
                .query_value(Address::Short(address), Query::DeviceType)
                .await?;
            let identity = self.identity(address).await?;
            out.push(GearInfo {
                address,
                identity,
                device_type,
            });
        }
        Ok(out)
    }

    /// Reads offsets `first..=last` of a memory bank (clamped to the bank's
    /// own last accessible offset), plus offset 0 which says whether the bank
    /// is implemented at all. The image is indexed by offset (`None` = not
    /// read or no answer); it has no answers at all if the bank is not
    /// implemented. Banks 202..=206 are latched (0xAA to offset 2) for the
    /// read so multi-byte counters are one consistent snapshot, and unlatched
    /// after.
    pub async fn read_memory(
        &mut self,
        address: ShortAddress,
        bank: u8,
        first: u8,
        last: u8,
    ) -> Result<Vec<Option<u8>>> {
        let a = Address::Short(address);
        let mut image = vec![None; usize::from(last) + 1];
        self.send(Command::Dtr1(bank)).await?;
        self.send(Command::Dtr0(0)).await?;
        // READ MEMORY LOCATION increments DTR0 after each read.
        let Some(bank_last) = self.query_value(a, Query::ReadMemoryLocation).await? else {
            return Ok(image);
        };
        image[0] = Some(bank_last);
        let latch = (202..=206).contains(&bank) && bank_last >= 2;
        let mut dtr0 = 1;
        if latch {
            self.write_latch(a, 0xAA).await?;
            dtr0 = 3;
        }
        let (from, to) = (first.max(1), last.min(bank_last));
        if from <= to {
            if dtr0 != from {
                self.send(Command::Dtr0(from)).await?;
            }
            for offset in from..=to {
                image[usize::from(offset)] = self.query_value(a, Query::ReadMemoryLocation).await?;
            }
        }
        if latch {
            self.write_latch(a, 0xFF).await?;
        }
        Ok(image)
    }

    async fn write_latch(&mut self, a: Address, value: u8) -> Result<()> {
        // Any other command in between disables writing again, so the
        // enable is repeated for each write.
        self.send(Command::EnableWriteMemory(a)).await?;
        self.send(Command::Dtr0(2)).await?;
        self.send(Command::WriteMemoryLocationNoReply(value))
            .await?;
        Ok(())
    }

    /// Bank 0 identity (GTIN, serial…).
    pub async fn identity(&mut self, address: ShortAddress) -> Result<Option<Identity>> {
        let img = self
            .read_memory(address, BANK_IDENTITY, 1, IDENTITY_LAST)
            .await?;
        Ok(Identity::decode(&img))
    }

    /// Bank 202: active energy and power (`None` if not implemented).
    pub async fn energy(&mut self, address: ShortAddress) -> Result<Option<Energy>> {
        let img = self
            .read_memory(address, BANK_ENERGY, 0x04, ENERGY_LAST)
            .await?;
        Ok(Energy::decode(&img))
    }

    /// Bank 205: control gear diagnostics (`None` if not implemented).
    pub async fn gear_diagnostics(
        &mut self,
        address: ShortAddress,
    ) -> Result<Option<GearDiagnostics>> {
        let img = self
            .read_memory(address, BANK_GEAR_DIAGNOSTICS, 1, GEAR_DIAGNOSTICS_LAST)
            .await?;
        Ok(GearDiagnostics::decode(&img))
    }

    /// Operating time in hours from bank 205 (offsets 0x04–0x07 only);
    /// `None` if the bank or value is not implemented.
    pub async fn operating_hours(&mut self, address: ShortAddress) -> Result<Option<f64>> {
        let img = self
            .read_memory(address, BANK_GEAR_DIAGNOSTICS, 0x04, 0x07)
            .await?;
        Ok(GearDiagnostics::decode(&img).and_then(|d| d.operating_hours()))
    }

    /// Bank 206: light source diagnostics (`None` if not implemented).
    pub async fn light_source_diagnostics(
        &mut self,
        address: ShortAddress,
    ) -> Result<Option<LightSourceDiagnostics>> {
        let img = self
            .read_memory(
                address,
                BANK_LIGHT_SOURCE_DIAGNOSTICS,
                1,
                LIGHT_SOURCE_DIAGNOSTICS_LAST,
            )
            .await?;
        Ok(LightSourceDiagnostics::decode(&img))
    }

    /// Polls one gear: QUERY STATUS, then QUERY ACTUAL LEVEL only if the lamp
    /// is on (≤ 2 queries). A collision on STATUS (two gear on one short
    /// address) is returned as [`Error::Collision`].
    pub async fn poll_gear(&mut self, address: ShortAddress) -> Result<GearStatus> {
        let a = Address::Short(address);
        let Some(byte) = self.query_value(a, Query::Status).await? else {
            return Ok(GearStatus {
                address,
                present: false,
                status: None,
                arc: None,
                level_percent: None,
            });
        };
        let status = Status::from_byte(byte);
        let arc = if status.lamp_on {
            self.query_value(a, Query::ActualLevel)
                .await?
                .filter(|v| *v != 255)
        } else if status.lamp_failure {
            None
        } else {
            Some(0)
        };
        Ok(GearStatus {
            address,
            present: true,
            status: Some(status),
            arc,
            level_percent: arc.and_then(arc_to_percent),
        })
    }

    /// Sets `target` to `percent` of full output (standard curve) with DAPC.
    /// With `fade` (a FADE TIME code 0..=15, see
    /// [`crate::command::fade_code_for_seconds`]) the fade time is programmed
    /// first (DTR0 + SET FADE TIME, send-twice). The fade time is a stored
    /// gear variable (non-volatile on most gear): pass `Some` only when it
    /// changes. Returns the arc level sent.
    pub async fn set_level(
        &mut self,
        target: Address,
        percent: f64,
        fade: Option<u8>,
    ) -> Result<u8> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::InvalidArgument(format!(
                "level_percent {percent} is outside 0..=100"
            )));
        }
        if let Some(code) = fade {
            if code > 15 {
                return Err(Error::InvalidArgument(format!(
                    "fade time code {code} is outside 0..=15"
                )));
            }
            self.send(Command::Dtr0(code)).await?;
            self.send(Command::SetFadeTime(target)).await?;
        }
        let arc = percent_to_arc(percent);
        self.send(Command::Dapc(target, arc)).await?;
        Ok(arc)
    }

    /// Group membership bitmap (bit g = group g); `None` if the gear is silent.
    pub async fn groups(&mut self, address: ShortAddress) -> Result<Option<u16>> {
        let a = Address::Short(address);
        let Some(lo) = self.query_value(a, Query::Groups0To7).await? else {
            return Ok(None);
        };
        let Some(hi) = self.query_value(a, Query::Groups8To15).await? else {
            return Ok(None);
        };
        Ok(Some(u16::from_le_bytes([lo, hi])))
    }

    /// Makes the gear member of exactly the groups in `wanted` (bit g = group
    /// g): ADD TO / REMOVE FROM GROUP for the differences, then verifies with
    /// QUERY GROUPS.
    pub async fn program_groups(&mut self, address: ShortAddress, wanted: u16) -> Result<()> {
        let a = Address::Short(address);
        let current = self.groups(address).await?.ok_or(Error::NoAnswer {
            address: address.get(),
            what: "QUERY GROUPS",
        })?;
        for g in 0..16u8 {
            let bit = 1u16 << g;
            let group = GroupAddress::new(g)?;
            if wanted & bit != 0 && current & bit == 0 {
                self.send(Command::AddToGroup(a, group)).await?;
            } else if wanted & bit == 0 && current & bit != 0 {
                self.send(Command::RemoveFromGroup(a, group)).await?;
            }
        }
        let after = self.groups(address).await?;
        if after != Some(wanted) {
            return Err(Error::Verify {
                address: address.get(),
                what: "groups",
                wanted,
                found: after,
            });
        }
        Ok(())
    }

    async fn read_parameter(&mut self, a: Address, p: Parameter) -> Result<Option<u8>> {
        Ok(match p {
            Parameter::PowerOnLevel => self.query_value(a, Query::PowerOnLevel).await?,
            Parameter::SystemFailureLevel => self.query_value(a, Query::SystemFailureLevel).await?,
            Parameter::MinLevel => self.query_value(a, Query::MinLevel).await?,
            Parameter::MaxLevel => self.query_value(a, Query::MaxLevel).await?,
            Parameter::FadeTime => self
                .query_value(a, Query::FadeTimeRate)
                .await?
                .map(|v| v >> 4),
        })
    }

    /// Audits and programs fallback/limit parameters: each wanted value is
    /// read back first; if it differs it is written (DTR0 + SET …,
    /// send-twice) and read back again. Returns the drifts found (empty =
    /// everything was already right); a value that does not read back after
    /// writing is [`Error::Verify`].
    pub async fn program_fallback(
        &mut self,
        address: ShortAddress,
        fallback: &Fallback,
    ) -> Result<Vec<Drift>> {
        let a = Address::Short(address);
        // MAX before MIN so a raised minimum is not clamped by an old maximum.
        let plan = [
            (Parameter::MaxLevel, fallback.max_level),
            (Parameter::MinLevel, fallback.min_level),
            (Parameter::PowerOnLevel, fallback.power_on_level),
            (Parameter::SystemFailureLevel, fallback.system_failure_level),
            (Parameter::FadeTime, fallback.fade_time),
        ];
        let mut drifts = Vec::new();
        for (parameter, wanted) in plan {
            let Some(wanted) = wanted else { continue };
            let found = self.read_parameter(a, parameter).await?;
            if found == Some(wanted) {
                continue;
            }
            drifts.push(Drift {
                address,
                parameter,
                wanted,
                found,
            });
            self.send(Command::Dtr0(wanted)).await?;
            let set = match parameter {
                Parameter::PowerOnLevel => Command::SetPowerOnLevel(a),
                Parameter::SystemFailureLevel => Command::SetSystemFailureLevel(a),
                Parameter::MinLevel => Command::SetMinLevel(a),
                Parameter::MaxLevel => Command::SetMaxLevel(a),
                Parameter::FadeTime => Command::SetFadeTime(a),
            };
            self.send(set).await?;
            let after = self.read_parameter(a, parameter).await?;
            if after != Some(wanted) {
                return Err(Error::Verify {
                    address: address.get(),
                    what: parameter.name(),
                    wanted: u16::from(wanted),
                    found: after.map(u16::from),
                });
            }
        }
        Ok(drifts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimBus;

    fn sa(n: u8) -> ShortAddress {
        ShortAddress::new(n).unwrap()
    }

    #[tokio::test]
    async fn discover_reads_identity() {
        let (sim, _h) = SimBus::with_gear(3, 1);
        let mut bus = Bus::new(sim);
        let found = bus.discover().await.unwrap();
        assert_eq!(
            found.iter().map(|g| g.address.get()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(found[1].identity.as_ref().unwrap().serial, Some(2));
        assert_eq!(found[1].device_type, Some(6));
    }

    #[tokio::test]
    async fn poll_costs_at_most_two_queries() {
        let (sim, h) = SimBus::with_gear(2, 0);
        let mut bus = Bus::new(sim);
        bus.set_level(Address::short(0).unwrap(), 50.0, None)
            .await
            .unwrap();
        bus.set_level(Address::short(1).unwrap(), 0.0, None)
            .await
            .unwrap();
        let before = h.transactions();
        let p = bus.poll_gear(sa(0)).await.unwrap();
        assert_eq!(p.arc, Some(229));
        assert!((p.level_percent.unwrap() - 50.53).abs() < 0.01);
        let off = bus.poll_gear(sa(1)).await.unwrap();
        assert_eq!(off.arc, Some(0));
        assert_eq!(h.transactions() - before, 3);
        assert!(!bus.poll_gear(sa(7)).await.unwrap().present);
    }

    #[tokio::test]
    async fn groups_and_fallback_are_programmed_and_verified() {
        let (sim, h) = SimBus::with_gear(1, 0);
        let mut bus = Bus::new(sim);
        bus.program_groups(sa(0), 0b1000_0000_0000_0101)
            .await
            .unwrap();
        assert_eq!(h.gear(0).unwrap().groups, 0b1000_0000_0000_0101);
        bus.program_groups(sa(0), 0b100).await.unwrap();
        assert_eq!(bus.groups(sa(0)).await.unwrap(), Some(0b100));

        let fb = Fallback {
            power_on_level: Some(254),
            system_failure_level: Some(170),
            fade_time: Some(4),
            ..Fallback::default()
        };
        let drift = bus.program_fallback(sa(0), &fb).await.unwrap();
        let params: Vec<_> = drift.iter().map(|d| d.parameter).collect();
        assert_eq!(
            params,
            vec![Parameter::SystemFailureLevel, Parameter::FadeTime]
        );
        assert_eq!(drift[0].found, Some(254));
        let g = h.gear(0).unwrap();
        assert_eq!((g.system_failure_level, g.fade_time), (170, 4));
        assert!(bus.program_fallback(sa(0), &fb).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn verify_failure_is_reported() {
        let (sim, _h) = SimBus::with_gear(1, 0);
        let mut bus = Bus::new(sim);
        // The gear clamps MAX LEVEL to ≥ MIN LEVEL: asking for 0 cannot verify.
        let err = bus
            .program_fallback(
                sa(0),
                &Fallback {
                    max_level: Some(0),
                    ..Fallback::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Verify {
                    what: "max_level",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn set_level_rejects_bad_arguments() {
        let (sim, _h) = SimBus::with_gear(1, 0);
        let mut bus = Bus::new(sim);
        let a = Address::Broadcast;
        assert!(bus.set_level(a, 101.0, None).await.is_err());
        assert!(bus.set_level(a, 50.0, Some(16)).await.is_err());
        assert_eq!(bus.set_level(a, 50.0, Some(3)).await.unwrap(), 229);
    }
}
