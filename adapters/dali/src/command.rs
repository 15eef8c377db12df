//! Typed IEC 62386-102 commands, the standard dimming curve, the fade-time
//! table and the QUERY STATUS bits, pure.
//!
//! Invariants: every [`Command`] maps to exactly one 16-bit frame
//! ([`Command::frame`]); [`Command::send_twice`] is true exactly for the
//! commands the standard only executes when the identical frame arrives twice
//! within 100 ms (configuration commands, INITIALISE, RANDOMISE); and
//! [`Command::answer`] says whether a backward frame can follow and how to read
//! it (yes/no, where a collision counts as YES, or a value, where it is an
//! error).

use crate::frame::{Address, Frame16, GroupAddress, ShortAddress};

/// A scene number, 0..=15.
pub type Scene = u8;

/// Scope of INITIALISE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialiseScope {
    /// Every gear (`A5 00`).
    All,
    /// Gear without a short address (`A5 FF`).
    Unaddressed,
    /// The gear with this short address (`A5 0AAAAAA1`).
    Gear(ShortAddress),
}

/// Queries addressed to gear (opcodes 0x90..=0xFF, Part 102 table 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    /// QUERY STATUS (`90`), see [`Status`].
    Status,
    /// QUERY CONTROL GEAR PRESENT (`91`).
    ControlGearPresent,
    /// QUERY LAMP FAILURE (`92`).
    LampFailure,
    /// QUERY LAMP POWER ON (`93`).
    LampPowerOn,
    /// QUERY LIMIT ERROR (`94`).
    LimitError,
    /// QUERY RESET STATE (`95`).
    ResetState,
    /// QUERY MISSING SHORT ADDRESS (`96`).
    MissingShortAddress,
    /// QUERY VERSION NUMBER (`97`).
    VersionNumber,
    /// QUERY CONTENT DTR0 (`98`).
    ContentDtr0,
    /// QUERY DEVICE TYPE (`99`).
    DeviceType,
    /// QUERY PHYSICAL MINIMUM (`9A`).
    PhysicalMinimum,
    /// QUERY POWER FAILURE (`9B`).
    PowerFailure,
    /// QUERY CONTENT DTR1 (`9C`).
    ContentDtr1,
    /// QUERY CONTENT DTR2 (`9D`).
    ContentDtr2,
    /// QUERY OPERATING MODE (`9E`).
    OperatingMode,
    /// QUERY LIGHT SOURCE TYPE (`9F`).
    LightSourceType,
    /// QUERY ACTUAL LEVEL (`A0`).
    ActualLevel,
    /// QUERY MAX LEVEL (`A1`).
    MaxLevel,
    /// QUERY MIN LEVEL (`A2`).
    MinLevel,
    /// QUERY POWER ON LEVEL (`A3`).
    PowerOnLevel,
    /// QUERY SYSTEM FAILURE LEVEL (`A4`).
    SystemFailureLevel,
    /// QUERY FADE TIME/FADE RATE (`A5`): high nibble time, low nibble rate.
    FadeTimeRate,
    /// QUERY NEXT DEVICE TYPE (`A7`).
    NextDeviceType,
    /// QUERY EXTENDED FADE TIME (`A8`).
    ExtendedFadeTime,
    /// QUERY CONTROL GEAR FAILURE (`AA`).
    ControlGearFailure,
    /// QUERY SCENE LEVEL s (`B0+s`).
    SceneLevel(Scene),
    /// QUERY GROUPS 0-7 (`C0`).
    Groups0To7,
    /// QUERY GROUPS 8-15 (`C1`).
    Groups8To15,
    /// QUERY RANDOM ADDRESS H (`C2`).
    RandomAddressH,
    /// QUERY RANDOM ADDRESS M (`C3`).
    RandomAddressM,
    /// QUERY RANDOM ADDRESS L (`C4`).
    RandomAddressL,
    /// READ MEMORY LOCATION (`C5`): DTR1 = bank, DTR0 = offset, DTR0 increments.
    ReadMemoryLocation,
    /// QUERY EXTENDED VERSION NUMBER (`FF`, after ENABLE DEVICE TYPE).
    ExtendedVersionNumber,
}

impl Query {
    /// The opcode byte.
    pub fn opcode(self) -> u8 {
        match self {
            Query::Status => 0x90,
            Query::ControlGearPresent => 0x91,
            Query::LampFailure => 0x92,
            Query::LampPowerOn => 0x93,
            Query::LimitError => 0x94,
            Query::ResetState => 0x95,
            Query::MissingShortAddress => 0x96,
            Query::VersionNumber => 0x97,
            Query::ContentDtr0 => 0x98,
            Query::DeviceType => 0x99,
            Query::PhysicalMinimum => 0x9A,
            Query::PowerFailure => 0x9B,
            Query::ContentDtr1 => 0x9C,
            Query::ContentDtr2 => 0x9D,
            Query::OperatingMode => 0x9E,
            Query::LightSourceType => 0x9F,
            Query::ActualLevel => 0xA0,
            Query::MaxLevel => 0xA1,
            Query::MinLevel => 0xA2,
            Query::PowerOnLevel => 0xA3,
            Query::SystemFailureLevel => 0xA4,
            Query::FadeTimeRate => 0xA5,
            Query::NextDeviceType => 0xA7,
            Query::ExtendedFadeTime => 0xA8,
            Query::ControlGearFailure => 0xAA,
            Query::SceneLevel(s) => 0xB0 | (s & 0x0F),
            Query::Groups0To7 => 0xC0,
            Query::Groups8To15 => 0xC1,
            Query::RandomAddressH => 0xC2,
            Query::RandomAddressM => 0xC3,
            Query::RandomAddressL => 0xC4,
            Query::ReadMemoryLocation => 0xC5,
            Query::ExtendedVersionNumber => 0xFF,
        }
    }

    /// How the answer is read.
    pub fn answer(self) -> Answer {
        match self {
            Query::ControlGearPresent
            | Query::LampFailure
            | Query::LampPowerOn
            | Query::LimitError
            | Query::ResetState
            | Query::MissingShortAddress
            | Query::PowerFailure
            | Query::ControlGearFailure => Answer::YesNo,
            _ => Answer::Value,
        }
    }
}

/// Whether and how a command is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No backward frame follows.
    None,
    /// YES (any backward frame, a framing error included) or NO (silence).
    YesNo,
    /// A value; a framing error means several gear answered (collision).
    Value,
}

/// A command to control gear (16-bit forward frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// DIRECT ARC POWER CONTROL: level 0 = off, 1..=254, 255 = stop fading.
    Dapc(Address, u8),
    /// OFF (`00`).
    Off(Address),
    /// UP (`01`).
    Up(Address),
    /// DOWN (`02`).
    Down(Address),
    /// STEP UP (`03`).
    StepUp(Address),
    /// STEP DOWN (`04`).
    StepDown(Address),
    /// RECALL MAX LEVEL (`05`).
    RecallMaxLevel(Address),
    /// RECALL MIN LEVEL (`06`).
    RecallMinLevel(Address),
    /// STEP DOWN AND OFF (`07`).
    StepDownAndOff(Address),
    /// ON AND STEP UP (`08`).
    OnAndStepUp(Address),
    /// GO TO LAST ACTIVE LEVEL (`0A`).
    GoToLastActiveLevel(Address),
    /// GO TO SCENE s (`10+s`).
    GoToScene(Address, Scene),
    /// RESET (`20`, 2×).
    Reset(Address),
    /// STORE ACTUAL LEVEL IN DTR0 (`21`, 2×).
    StoreActualLevelInDtr0(Address),
    /// SAVE PERSISTENT VARIABLES (`22`, 2×).
    SavePersistentVariables(Address),
    /// SET OPERATING MODE (`23`, 2×).
    SetOperatingMode(Address),
    /// RESET MEMORY BANK (`24`, 2×).
    ResetMemoryBank(Address),
    /// IDENTIFY DEVICE (`25`, 2×).
    IdentifyDevice(Address),
    /// SET MAX LEVEL = DTR0 (`2A`, 2×).
    SetMaxLevel(Address),
    /// SET MIN LEVEL = DTR0 (`2B`, 2×).
    SetMinLevel(Address),
    /// SET SYSTEM FAILURE LEVEL = DTR0 (`2C`, 2×).
    SetSystemFailureLevel(Address),
    /// SET POWER ON LEVEL = DTR0 (`2D`, 2×).
    SetPowerOnLevel(Address),
    /// SET FADE TIME = DTR0 (`2E`, 2×).
    SetFadeTime(Address),
    /// SET FADE RATE = DTR0 (`2F`, 2×).
    SetFadeRate(Address),
    /// SET EXTENDED FADE TIME = DTR0 (`30`, 2×).
    SetExtendedFadeTime(Address),
    /// SET SCENE s = DTR0 (`40+s`, 2×).
    SetScene(Address, Scene),
    /// REMOVE FROM SCENE s (`50+s`, 2×).
    RemoveFromScene(Address, Scene),
    /// ADD TO GROUP g (`60+g`, 2×).
    AddToGroup(Address, GroupAddress),
    /// REMOVE FROM GROUP g (`70+g`, 2×).
    RemoveFromGroup(Address, GroupAddress),
    /// SET SHORT ADDRESS = DTR0 (`80`, 2×).
    SetShortAddress(Address),
    /// ENABLE WRITE MEMORY (`81`, 2×).
    EnableWriteMemory(Address),
    /// A query, see [`Query`].
    Query(Address, Query),
    /// TERMINATE (`A1 00`).
    Terminate,
    /// DTR0 := v (`A3 v`).
    Dtr0(u8),
    /// INITIALISE (`A5 xx`, 2×).
    Initialise(InitialiseScope),
    /// RANDOMISE (`A7 00`, 2×).
    Randomise,
    /// COMPARE (`A9 00`): YES if random address ≤ search address.
    Compare,
    /// WITHDRAW (`AB 00`).
    Withdraw,
    /// PING (`AD 00`).
    Ping,
    /// SEARCHADDRH (`B1 xx`).
    SearchAddrH(u8),
    /// SEARCHADDRM (`B3 xx`).
    SearchAddrM(u8),
    /// SEARCHADDRL (`B5 xx`).
    SearchAddrL(u8),
    /// PROGRAM SHORT ADDRESS (`B7 xx`); `None` deletes it.
    ProgramShortAddress(Option<ShortAddress>),
    /// VERIFY SHORT ADDRESS (`B9 xx`).
    VerifyShortAddress(ShortAddress),
    /// QUERY SHORT ADDRESS (`BB 00`).
    QueryShortAddress,
    /// ENABLE DEVICE TYPE n (`C1 n`).
    EnableDeviceType(u8),
    /// DTR1 := v (`C3 v`).
    Dtr1(u8),
    /// DTR2 := v (`C5 v`).
    Dtr2(u8),
    /// WRITE MEMORY LOCATION (`C7 v`), answered with the value written.
    WriteMemoryLocation(u8),
    /// WRITE MEMORY LOCATION – NO REPLY (`C9 v`).
    WriteMemoryLocationNoReply(u8),
}

fn special(address: u8, data: u8) -> Frame16 {
    Frame16 { address, data }
}

fn cmd(a: Address, opcode: u8) -> Frame16 {
    Frame16 {
        address: a.byte(true),
        data: opcode,
    }
}

impl Command {
    /// The 16-bit forward frame.
    pub fn frame(&self) -> Frame16 {
        use Command::*;
        match *self {
            Dapc(a, level) => Frame16 {
                address: a.byte(false),
                data: level,
            },
            Off(a) => cmd(a, 0x00),
            Up(a) => cmd(a, 0x01),
            Down(a) => cmd(a, 0x02),
            StepUp(a) => cmd(a, 0x03),
            StepDown(a) => cmd(a, 0x04),
            RecallMaxLevel(a) => cmd(a, 0x05),
            RecallMinLevel(a) => cmd(a, 0x06),
            StepDownAndOff(a) => cmd(a, 0x07),
            OnAndStepUp(a) => cmd(a, 0x08),
            GoToLastActiveLevel(a) => cmd(a, 0x0A),
            GoToScene(a, s) => cmd(a, 0x10 | (s & 0x0F)),
            Reset(a) => cmd(a, 0x20),
            StoreActualLevelInDtr0(a) => cmd(a, 0x21),
            SavePersistentVariables(a) => cmd(a, 0x22),
            SetOperatingMode(a) => cmd(a, 0x23),
            ResetMemoryBank(a) => cmd(a, 0x24),
            IdentifyDevice(a) => cmd(a, 0x25),
            SetMaxLevel(a) => cmd(a, 0x2A),
            SetMinLevel(a) => cmd(a, 0x2B),
            SetSystemFailureLevel(a) => cmd(a, 0x2C),
            SetPowerOnLevel(a) => cmd(a, 0x2D),
            SetFadeTime(a) => cmd(a, 0x2E),
            SetFadeRate(a) => cmd(a, 0x2F),
            SetExtendedFadeTime(a) => cmd(a, 0x30),
            SetScene(a, s) => cmd(a, 0x40 | (s & 0x0F)),
            RemoveFromScene(a, s) => cmd(a, 0x50 | (s & 0x0F)),
            AddToGroup(a, g) => cmd(a, 0x60 | g.get()),
            RemoveFromGroup(a, g) => cmd(a, 0x70 | g.get()),
            SetShortAddress(a) => cmd(a, 0x80),
            EnableWriteMemory(a) => cmd(a, 0x81),
            Query(a, q) => cmd(a, q.opcode()),
            Terminate => special(0xA1, 0x00),
            Dtr0(v) => special(0xA3, v),
            Initialise(scope) => special(
                0xA5,
                match scope {
                    InitialiseScope::All => 0x00,
                    InitialiseScope::Unaddressed => 0xFF,
                    InitialiseScope::Gear(a) => a.data_byte(),
                },
            ),
            Randomise => special(0xA7, 0x00),
            Compare => special(0xA9, 0x00),
            Withdraw => special(0xAB, 0x00),
            Ping => special(0xAD, 0x00),
            SearchAddrH(v) => special(0xB1, v),
            SearchAddrM(v) => special(0xB3, v),
            SearchAddrL(v) => special(0xB5, v),
            ProgramShortAddress(a) => special(0xB7, a.map_or(0xFF, ShortAddress::data_byte)),
            VerifyShortAddress(a) => special(0xB9, a.data_byte()),
            QueryShortAddress => special(0xBB, 0x00),
            EnableDeviceType(n) => special(0xC1, n),
            Dtr1(v) => special(0xC3, v),
            Dtr2(v) => special(0xC5, v),
            WriteMemoryLocation(v) => special(0xC7, v),
            WriteMemoryLocationNoReply(v) => special(0xC9, v),
        }
    }

    /// True for commands gear only execute when the identical frame is
    /// received twice within 100 ms.
    pub fn send_twice(&self) -> bool {
        use Command::*;
        matches!(
            self,
            Reset(_)
                | StoreActualLevelInDtr0(_)
                | SavePersistentVariables(_)
                | SetOperatingMode(_)
                | ResetMemoryBank(_)
                | IdentifyDevice(_)
                | SetMaxLevel(_)
                | SetMinLevel(_)
                | SetSystemFailureLevel(_)
                | SetPowerOnLevel(_)
                | SetFadeTime(_)
                | SetFadeRate(_)
                | SetExtendedFadeTime(_)
                | SetScene(..)
                | RemoveFromScene(..)
                | AddToGroup(..)
                | RemoveFromGroup(..)
                | SetShortAddress(_)
                | EnableWriteMemory(_)
                | Initialise(_)
                | Randomise
        )
    }

    /// Whether a backward frame may follow, and how to read it.
    pub fn answer(&self) -> Answer {
        match self {
            Command::Query(_, q) => q.answer(),
            Command::Compare | Command::VerifyShortAddress(_) => Answer::YesNo,
            Command::QueryShortAddress | Command::WriteMemoryLocation(_) => Answer::Value,
            _ => Answer::None,
        }
    }

    /// Short human name for logs and errors.
    pub fn name(&self) -> String {
        format!("{self:?}")
    }
}

/// Arc power level → percent of full light output on the standard
/// logarithmic curve: X(n) = 10^((n − 1)/(253/3) − 1) %, n = 1..=254; 0 is off.
/// 255 (MASK) has no light output value and gives `None`.
pub fn arc_to_percent(arc: u8) -> Option<f64> {
    match arc {
        0 => Some(0.0),
        255 => None,
        n => Some(10f64.powf((f64::from(n) - 1.0) / (253.0 / 3.0) - 1.0)),
    }
}

/// Percent of full output → nearest arc power level on the logarithmic curve.
/// ≤ 0 % is off (0); anything above 0 is at least level 1 (0.1 %); ≥ 100 % is 254.
pub fn percent_to_arc(percent: f64) -> u8 {
    if percent.is_nan() || percent <= 0.0 {
        return 0;
    }
    if percent >= 100.0 {
        return 254;
    }
    let n = 1.0 + (253.0 / 3.0) * (percent.log10() + 1.0);
    // Truncation is safe: n is clamped to 1..=254 first.
    n.round().clamp(1.0, 254.0) as u8
}

/// FADE TIME code → seconds: T = 0.5·√(2ⁿ), n = 1..=15. Code 0 means "use the
/// extended fade time" and gives `None`, as do codes above 15.
pub fn fade_time_seconds(code: u8) -> Option<f64> {
    match code {
        1..=15 => Some(0.5 * 2f64.powf(f64::from(code) / 2.0)),
        _ => None,
    }
}

/// The FADE TIME code (1..=15) whose time is closest to `seconds`.
pub fn fade_code_for_seconds(seconds: f64) -> u8 {
    (1..=15u8)
        .min_by(|a, b| {
            let da = (fade_time_seconds(*a).unwrap_or(0.0) - seconds).abs();
            let db = (fade_time_seconds(*b).unwrap_or(0.0) - seconds).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(1)
}

/// FADE RATE code → steps per second: F = 506/√(2ⁿ), n = 1..=15.
pub fn fade_rate_steps_per_second(code: u8) -> Option<f64> {
    match code {
        1..=15 => Some(506.0 / 2f64.powf(f64::from(code) / 2.0)),
        _ => None,
    }
}

/// QUERY STATUS answer, decoded (bit 0 first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Bit 0: control gear failure.
    pub gear_failure: bool,
    /// Bit 1: lamp failure.
    pub lamp_failure: bool,
    /// Bit 2: lamp (arc power) on.
    pub lamp_on: bool,
    /// Bit 3: last requested level was clamped to MIN/MAX.
    pub limit_error: bool,
    /// Bit 4: a fade is running.
    pub fade_running: bool,
    /// Bit 5: all variables at reset values.
    pub reset_state: bool,
    /// Bit 6: the gear has no short address.
    pub missing_short_address: bool,
    /// Bit 7: power cycle seen since the last RESET or arc power command.
    pub power_cycle_seen: bool,
}

impl Status {
    /// Decodes the status byte.
    pub fn from_byte(b: u8) -> Self {
        let bit = |n: u8| b & (1 << n) != 0;
        Status {
            gear_failure: bit(0),
            lamp_failure: bit(1),
            lamp_on: bit(2),
            limit_error: bit(3),
            fade_running: bit(4),
            reset_state: bit(5),
            missing_short_address: bit(6),
            power_cycle_seen: bit(7),
        }
    }

    /// Encodes back into the status byte.
    pub fn to_byte(self) -> u8 {
        [
            self.gear_failure,
            self.lamp_failure,
            self.lamp_on,
            self.limit_error,
            self.fade_running,
            self.reset_state,
            self.missing_short_address,
            self.power_cycle_seen,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, on)| acc | (u8::from(*on) << i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> Address {
        Address::short(n).unwrap()
    }

    #[test]
    fn frames_match_reference_examples() {
        assert_eq!(Command::Dapc(a(5), 229).frame().to_u16(), 0x0AE5);
        assert_eq!(Command::Query(a(5), Query::Status).frame().to_u16(), 0x0B90);
        assert_eq!(
            Command::Query(Address::group(3).unwrap(), Query::Status)
                .frame()
                .to_u16(),
            0x8790
        );
        assert_eq!(Command::Off(Address::Broadcast).frame().to_u16(), 0xFF00);
        assert_eq!(Command::GoToScene(a(0), 3).frame().to_u16(), 0x0113);
        assert_eq!(
            Command::Initialise(InitialiseScope::All).frame().to_u16(),
            0xA500
        );
        assert_eq!(
            Command::Initialise(InitialiseScope::Unaddressed)
                .frame()
                .to_u16(),
            0xA5FF
        );
        assert_eq!(
            Command::Initialise(InitialiseScope::Gear(ShortAddress::new(5).unwrap()))
                .frame()
                .to_u16(),
            0xA50B
        );
        assert_eq!(
            Command::ProgramShortAddress(Some(ShortAddress::new(5).unwrap()))
                .frame()
                .to_u16(),
            0xB70B
        );
        assert_eq!(Command::ProgramShortAddress(None).frame().to_u16(), 0xB7FF);
        assert_eq!(Command::Dtr0(200).frame().to_u16(), 0xA3C8);
        assert_eq!(
            Command::SetSystemFailureLevel(Address::Broadcast)
                .frame()
                .to_u16(),
            0xFF2C
        );
        assert_eq!(
            Command::AddToGroup(a(0), GroupAddress::new(4).unwrap())
                .frame()
                .to_u16(),
            0x0164
        );
        assert_eq!(
            Command::RemoveFromGroup(a(0), GroupAddress::new(4).unwrap())
                .frame()
                .to_u16(),
            0x0174
        );
        assert_eq!(
            Command::Query(a(1), Query::SceneLevel(2)).frame().to_u16(),
            0x03B2
        );
        assert_eq!(Command::Dtr1(202).frame().to_u16(), 0xC3CA);
        assert_eq!(
            Command::Query(a(1), Query::ReadMemoryLocation)
                .frame()
                .to_u16(),
            0x03C5
        );
    }

    #[test]
    fn send_twice_flags() {
        assert!(Command::SetPowerOnLevel(a(0)).send_twice());
        assert!(Command::AddToGroup(a(0), GroupAddress::new(1).unwrap()).send_twice());
        assert!(Command::Initialise(InitialiseScope::All).send_twice());
        assert!(Command::Randomise.send_twice());
        assert!(!Command::Dapc(a(0), 10).send_twice());
        assert!(!Command::Query(a(0), Query::Status).send_twice());
        assert!(!Command::Dtr0(1).send_twice());
        assert!(!Command::Compare.send_twice());
    }

    #[test]
    fn answer_kinds() {
        assert_eq!(Command::Off(a(0)).answer(), Answer::None);
        assert_eq!(Command::Compare.answer(), Answer::YesNo);
        assert_eq!(
            Command::Query(a(0), Query::ControlGearPresent).answer(),
            Answer::YesNo
        );
        assert_eq!(
            Command::Query(a(0), Query::ActualLevel).answer(),
            Answer::Value
        );
        assert_eq!(Command::QueryShortAddress.answer(), Answer::Value);
    }

    #[test]
    fn curve_matches_standard_table() {
        let table = [
            (1u8, 0.10),
            (85, 0.99),
            (144, 4.96),
            (170, 10.09),
            (195, 19.97),
            (210, 30.08),
            (229, 50.53),
            (241, 70.12),
            (246, 80.38),
            (254, 100.0),
        ];
        for (n, p) in table {
            let got = arc_to_percent(n).unwrap();
            assert!((got - p).abs() < 0.006, "level {n}: {got} vs {p}");
            assert_eq!(percent_to_arc(p), n, "percent {p}");
        }
        assert_eq!(percent_to_arc(50.0), 229);
        assert_eq!(percent_to_arc(10.0), 170);
        assert_eq!(percent_to_arc(80.0), 246);
        assert_eq!(percent_to_arc(0.0), 0);
        assert_eq!(percent_to_arc(-3.0), 0);
        assert_eq!(percent_to_arc(0.001), 1);
        assert_eq!(percent_to_arc(150.0), 254);
        assert_eq!(arc_to_percent(0), Some(0.0));
        assert_eq!(arc_to_percent(255), None);
    }

    #[test]
    fn curve_roundtrips_every_level() {
        for n in 1..=254u8 {
            assert_eq!(percent_to_arc(arc_to_percent(n).unwrap()), n);
        }
    }

    #[test]
    fn fade_table() {
        let expected = [
            0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.7, 8.0, 11.3, 16.0, 22.6, 32.0, 45.3, 64.0, 90.5,
        ];
        for (i, want) in expected.iter().enumerate() {
            let code = u8::try_from(i + 1).unwrap();
            let got = fade_time_seconds(code).unwrap();
            assert!((got - want).abs() < 0.05, "code {code}: {got}");
            assert_eq!(fade_code_for_seconds(*want), code);
        }
        assert_eq!(fade_time_seconds(0), None);
        assert_eq!(fade_time_seconds(16), None);
        assert!((fade_rate_steps_per_second(1).unwrap() - 357.8).abs() < 0.05);
        assert!((fade_rate_steps_per_second(7).unwrap() - 44.7).abs() < 0.05);
    }

    #[test]
    fn status_bits() {
        let s = Status::from_byte(0b0000_0110);
        assert!(s.lamp_failure && s.lamp_on && !s.gear_failure);
        let s = Status::from_byte(0b1100_0001);
        assert!(s.gear_failure && s.missing_short_address && s.power_cycle_seen);
        assert!(!s.lamp_on);
        for b in 0..=255u8 {
            assert_eq!(Status::from_byte(b).to_byte(), b);
        }
    }
}
