//! DALI frames and address bytes (IEC 62386-101/102/103), pure.
//!
//! Invariants: a [`ShortAddress`] is always 0..=63 and a [`GroupAddress`]
//! 0..=15, so every [`Address`] encodes to a valid address byte; decoding an
//! address byte is the exact inverse of encoding it for the four addressing
//! modes (special-command bytes decode to `None`).

use crate::error::{Error, Result};

/// A control gear short address, 0..=63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShortAddress(u8);

impl ShortAddress {
    /// Validates `a` (0..=63).
    pub fn new(a: u8) -> Result<Self> {
        if a < 64 {
            Ok(ShortAddress(a))
        } else {
            Err(Error::InvalidArgument(format!(
                "short address {a} is outside 0..=63"
            )))
        }
    }

    /// The address as a number 0..=63.
    pub fn get(self) -> u8 {
        self.0
    }

    /// All 64 short addresses in order.
    pub fn all() -> impl Iterator<Item = ShortAddress> {
        (0..64).map(ShortAddress)
    }

    /// The `0AAAAAA1` byte that special commands (PROGRAM/VERIFY SHORT ADDRESS,
    /// INITIALISE one gear, SET SHORT ADDRESS via DTR0) carry.
    pub fn data_byte(self) -> u8 {
        (self.0 << 1) | 1
    }

    /// Inverse of [`ShortAddress::data_byte`].
    pub fn from_data_byte(b: u8) -> Option<Self> {
        if b & 0x81 == 0x01 {
            Some(ShortAddress(b >> 1))
        } else {
            None
        }
    }
}

impl std::fmt::Display for ShortAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "A{}", self.0)
    }
}

/// A control gear group, 0..=15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupAddress(u8);

impl GroupAddress {
    /// Validates `g` (0..=15).
    pub fn new(g: u8) -> Result<Self> {
        if g < 16 {
            Ok(GroupAddress(g))
        } else {
            Err(Error::InvalidArgument(format!(
                "group {g} is outside 0..=15"
            )))
        }
    }

    /// The group number 0..=15.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Addressee of a 16-bit forward frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// One gear.
    Short(ShortAddress),
    /// Every gear member of the group.
    Group(GroupAddress),
    /// Every gear.
    Broadcast,
    /// Every gear without a short address (DALI-2).
    BroadcastUnaddressed,
}

impl Address {
    /// Short address `a`, validated.
    pub fn short(a: u8) -> Result<Self> {
        ShortAddress::new(a).map(Address::Short)
    }

    /// Group `g`, validated.
    pub fn group(g: u8) -> Result<Self> {
        GroupAddress::new(g).map(Address::Group)
    }

    /// The address byte; `command` sets the selector bit (S = 1: the second
    /// byte is an opcode; S = 0: it is a direct arc power level).
    pub fn byte(self, command: bool) -> u8 {
        let s = u8::from(command);
        match self {
            Address::Short(a) => (a.0 << 1) | s,
            Address::Group(g) => 0x80 | (g.0 << 1) | s,
            Address::Broadcast => 0xFE | s,
            Address::BroadcastUnaddressed => 0xFC | s,
        }
    }

    /// Decodes an address byte into (address, selector bit). Special-command
    /// bytes (0xA0..=0xCB, 0xCC..=0xFB) give `None`.
    pub fn from_byte(b: u8) -> Option<(Address, bool)> {
        let s = b & 1 == 1;
        match b {
            0x00..=0x7F => Some((Address::Short(ShortAddress(b >> 1)), s)),
            0x80..=0x9F => Some((Address::Group(GroupAddress((b >> 1) & 0x0F)), s)),
            0xFC | 0xFD => Some((Address::BroadcastUnaddressed, s)),
            0xFE | 0xFF => Some((Address::Broadcast, s)),
            _ => None,
        }
    }
}

impl std::str::FromStr for Address {
    type Err = Error;

    /// Parses a light target as the central post writes it (SPEC `light.set`):
    /// `all` (broadcast), `group:N`, or a short address `N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("target {s:?} is not all, group:N or 0..=63"));
        if s == "all" {
            return Ok(Address::Broadcast);
        }
        if let Some(g) = s.strip_prefix("group:") {
            return Address::group(g.parse().map_err(|_| bad())?);
        }
        Address::short(s.parse().map_err(|_| bad())?)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Short(a) => write!(f, "{a}"),
            Address::Group(g) => write!(f, "G{}", g.0),
            Address::Broadcast => f.write_str("broadcast"),
            Address::BroadcastUnaddressed => f.write_str("broadcast-unaddressed"),
        }
    }
}

/// A 16-bit forward frame to control gear: `[address byte][opcode or level]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame16 {
    /// First byte: address byte, or the special-command byte.
    pub address: u8,
    /// Second byte: opcode, arc level, or special-command data.
    pub data: u8,
}

impl Frame16 {
    /// The frame as a 16-bit number, address byte first.
    pub fn to_u16(self) -> u16 {
        u16::from_be_bytes([self.address, self.data])
    }

    /// Inverse of [`Frame16::to_u16`].
    pub fn from_u16(v: u16) -> Self {
        let [address, data] = v.to_be_bytes();
        Frame16 { address, data }
    }
}

/// A 24-bit forward frame to a control device (Part 103):
/// `[address byte][instance byte][opcode]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame24 {
    /// Device address byte (`0AAAAAA1` short, `10GGGGG1` group, 0xFF broadcast,
    /// 0xFD broadcast unaddressed, 0xC1/0xC5/0xC7 special).
    pub address: u8,
    /// Instance byte (0xFE = the device itself, 0xFF = all instances).
    pub instance: u8,
    /// Opcode.
    pub opcode: u8,
}

impl Frame24 {
    /// Instance byte addressing the device itself.
    pub const INSTANCE_DEVICE: u8 = 0xFE;

    /// A command to the device with short address `a`.
    pub fn device_short(a: ShortAddress, instance: u8, opcode: u8) -> Self {
        Frame24 {
            address: (a.0 << 1) | 1,
            instance,
            opcode,
        }
    }

    /// A command to device group `g` (0..=31).
    pub fn device_group(g: u8, instance: u8, opcode: u8) -> Result<Self> {
        if g > 31 {
            return Err(Error::InvalidArgument(format!(
                "device group {g} is outside 0..=31"
            )));
        }
        Ok(Frame24 {
            address: 0x81 | (g << 1),
            instance,
            opcode,
        })
    }

    /// A command to every device.
    pub fn device_broadcast(instance: u8, opcode: u8) -> Self {
        Frame24 {
            address: 0xFF,
            instance,
            opcode,
        }
    }

    /// The frame as a 24-bit number.
    pub fn to_u32(self) -> u32 {
        u32::from_be_bytes([0, self.address, self.instance, self.opcode])
    }
}

/// Any forward frame the master can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardFrame {
    /// 16-bit frame to control gear.
    Gear(Frame16),
    /// 24-bit frame to a control device.
    Device(Frame24),
}

impl ForwardFrame {
    /// The frame bytes on the wire, most significant first.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            ForwardFrame::Gear(f) => vec![f.address, f.data],
            ForwardFrame::Device(f) => vec![f.address, f.instance, f.opcode],
        }
    }
}

impl From<Frame16> for ForwardFrame {
    fn from(f: Frame16) -> Self {
        ForwardFrame::Gear(f)
    }
}

impl From<Frame24> for ForwardFrame {
    fn from(f: Frame24) -> Self {
        ForwardFrame::Device(f)
    }
}

/// An 8-bit backward frame (the only kind of reply on DALI). YES is 0xFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackwardFrame(pub u8);

impl BackwardFrame {
    /// The YES answer of yes/no queries.
    pub const YES: BackwardFrame = BackwardFrame(0xFF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_bytes_match_reference_examples() {
        let a5 = Address::short(5).unwrap();
        assert_eq!(a5.byte(false), 0x0A); // DAPC A5
        assert_eq!(a5.byte(true), 0x0B); // QUERY STATUS A5
        assert_eq!(Address::group(3).unwrap().byte(true), 0x87);
        assert_eq!(Address::group(3).unwrap().byte(false), 0x86);
        assert_eq!(Address::Broadcast.byte(true), 0xFF);
        assert_eq!(Address::Broadcast.byte(false), 0xFE);
        assert_eq!(Address::BroadcastUnaddressed.byte(true), 0xFD);
        assert_eq!(Address::short(63).unwrap().byte(true), 0x7F);
        assert_eq!(Address::group(15).unwrap().byte(true), 0x9F);
    }

    #[test]
    fn out_of_range_addresses_are_rejected() {
        assert!(Address::short(64).is_err());
        assert!(Address::group(16).is_err());
        assert!(Frame24::device_group(32, 0xFE, 0).is_err());
    }

    #[test]
    fn address_byte_roundtrips() {
        for b in 0u8..=255 {
            if let Some((a, s)) = Address::from_byte(b) {
                assert_eq!(a.byte(s), b, "byte {b:#04x}");
            } else {
                assert!((0xA0..=0xFB).contains(&b), "byte {b:#04x}");
            }
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!("all".parse::<Address>().unwrap(), Address::Broadcast);
        assert_eq!(
            "group:3".parse::<Address>().unwrap(),
            Address::group(3).unwrap()
        );
        assert_eq!(
            "12".parse::<Address>().unwrap(),
            Address::short(12).unwrap()
        );
        for bad in ["64", "group:16", "group:x", "", "-1", "broadcast"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn short_address_data_byte() {
        let a = ShortAddress::new(5).unwrap();
        assert_eq!(a.data_byte(), 0x0B);
        assert_eq!(ShortAddress::from_data_byte(0x0B), Some(a));
        assert_eq!(ShortAddress::from_data_byte(0xFF), None);
        assert_eq!(ShortAddress::from_data_byte(0x0A), None);
    }

    #[test]
    fn frames_to_numbers() {
        let f = Frame16 {
            address: 0x0B,
            data: 0x90,
        };
        assert_eq!(f.to_u16(), 0x0B90);
        assert_eq!(Frame16::from_u16(0x0B90), f);
        let d = Frame24::device_short(
            ShortAddress::new(2).unwrap(),
            Frame24::INSTANCE_DEVICE,
            0x30,
        );
        assert_eq!(d.to_u32(), 0x05FE30);
        assert_eq!(ForwardFrame::from(d).bytes(), vec![0x05, 0xFE, 0x30]);
    }
}
