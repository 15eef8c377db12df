//! Memory bank layouts (Part 102 bank 0, D4i Parts 252/253), pure decoding.
//!
//! A bank image is a slice indexed by offset, one `Option<u8>` per location
//! (`None` = the gear did not answer READ MEMORY LOCATION there). Multi-byte
//! values are big-endian. A value whose bytes are all 0xFF is MASK (not
//! implemented) and one ending 0xFE after 0xFFs is TMASK (temporarily
//! unavailable); both decode to `None`, as does any value with a missing byte.

/// Bank 0: identification.
pub const BANK_IDENTITY: u8 = 0;
/// Bank 202: active energy and power (Part 252).
pub const BANK_ENERGY: u8 = 202;
/// Bank 205: control gear diagnostics (Part 253).
pub const BANK_GEAR_DIAGNOSTICS: u8 = 205;
/// Bank 206: light source diagnostics (Part 253).
pub const BANK_LIGHT_SOURCE_DIAGNOSTICS: u8 = 206;

/// Last offset of bank 202 this crate reads.
pub const ENERGY_LAST: u8 = 0x0F;
/// Last offset of bank 205 this crate reads.
pub const GEAR_DIAGNOSTICS_LAST: u8 = 0x1C;
/// Last offset of bank 206 this crate reads.
pub const LIGHT_SOURCE_DIAGNOSTICS_LAST: u8 = 0x20;
/// Last offset of bank 0 this crate reads (unit index).
pub const IDENTITY_LAST: u8 = 0x1A;

/// Reads `len` bytes at `offset` as a big-endian unsigned number; `None` if a
/// byte is missing or the value is MASK/TMASK.
pub fn be_uint(image: &[Option<u8>], offset: usize, len: usize) -> Option<u64> {
    let bytes: Option<Vec<u8>> = image.get(offset..offset + len)?.iter().copied().collect();
    let bytes = bytes?;
    let all_ff = bytes.iter().all(|b| *b == 0xFF);
    let tmask = len > 1 && bytes[..len - 1].iter().all(|b| *b == 0xFF) && bytes[len - 1] == 0xFE;
    if all_ff || tmask {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn byte(image: &[Option<u8>], offset: usize) -> Option<u8> {
    image.get(offset).copied().flatten()
}

/// A scaled value (Part 252): a signed power-of-ten scale byte followed by an
/// unsigned big-endian value. Scales outside −6..=6 are invalid.
fn scaled(image: &[Option<u8>], scale_at: usize, len: usize) -> Option<f64> {
    // The scale byte is a two's complement number.
    let scale = i8::from_le_bytes([byte(image, scale_at)?]);
    if !(-6..=6).contains(&scale) {
        return None;
    }
    let raw = be_uint(image, scale_at + 1, len)?;
    // Precision: u48 energy counters fit f64's 53-bit mantissa.
    Some(raw as f64 * 10f64.powi(i32::from(scale)))
}

/// Identity from bank 0: stable across re-addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// GTIN (offsets 0x03–0x08).
    pub gtin: Option<u64>,
    /// Firmware version major.minor (0x09–0x0A).
    pub firmware: Option<(u8, u8)>,
    /// Identification (serial) number (0x0B–0x12).
    pub serial: Option<u64>,
    /// Hardware version major.minor (0x13–0x14).
    pub hardware: Option<(u8, u8)>,
    /// Index of this logical unit in the bus unit (0x1A).
    pub unit_index: Option<u8>,
}

impl Identity {
    /// Decodes a bank 0 image (offset 0 first); `None` if the bank did not answer at all.
    pub fn decode(image: &[Option<u8>]) -> Option<Identity> {
        // Offset 0 (last accessible location) answers on every implemented bank.
        byte(image, 0)?;
        let pair = |o| Some((byte(image, o)?, byte(image, o + 1)?));
        Some(Identity {
            gtin: be_uint(image, 0x03, 6),
            firmware: pair(0x09),
            serial: be_uint(image, 0x0B, 8),
            hardware: pair(0x13),
            unit_index: byte(image, 0x1A),
        })
    }
}

/// Bank 202 (Part 252): active energy and power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Energy {
    /// Active energy since manufacture, Wh.
    pub energy_wh: Option<f64>,
    /// Active power, W.
    pub power_w: Option<f64>,
}

impl Energy {
    /// Decodes a bank 202 image; `None` if the bank is not implemented.
    pub fn decode(image: &[Option<u8>]) -> Option<Energy> {
        byte(image, 0)?;
        Some(Energy {
            energy_wh: scaled(image, 0x04, 6),
            power_w: scaled(image, 0x0B, 4),
        })
    }
}

/// Bank 205 (Part 253): control gear diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GearDiagnostics {
    /// Operating time, s (0x04–0x07).
    pub operating_time_s: Option<u64>,
    /// Start counter (0x08–0x0A).
    pub start_counter: Option<u64>,
    /// Supply voltage, V (0x0B–0x0C, 0.1 V).
    pub supply_voltage_v: Option<f64>,
    /// Supply frequency, Hz (0x0D).
    pub supply_frequency_hz: Option<u64>,
    /// Power factor (0x0E, ×0.01).
    pub power_factor: Option<f64>,
    /// Overall failure condition now (0x0F).
    pub overall_failure: Option<bool>,
    /// Overall failure counter (0x10).
    pub overall_failure_counter: Option<u64>,
    /// Thermal shutdown counter (0x1A).
    pub thermal_shutdown_counter: Option<u64>,
    /// Gear temperature, °C (0x1B, stored +60).
    pub temperature_c: Option<i16>,
}

impl GearDiagnostics {
    /// Decodes a bank 205 image; `None` if the bank is not implemented.
    pub fn decode(image: &[Option<u8>]) -> Option<GearDiagnostics> {
        byte(image, 0)?;
        Some(GearDiagnostics {
            operating_time_s: be_uint(image, 0x04, 4),
            start_counter: be_uint(image, 0x08, 3),
            supply_voltage_v: be_uint(image, 0x0B, 2).map(|v| v as f64 / 10.0),
            supply_frequency_hz: be_uint(image, 0x0D, 1),
            power_factor: be_uint(image, 0x0E, 1).map(|v| v as f64 / 100.0),
            overall_failure: be_uint(image, 0x0F, 1).map(|v| v != 0),
            overall_failure_counter: be_uint(image, 0x10, 1),
            thermal_shutdown_counter: be_uint(image, 0x1A, 1),
            temperature_c: temperature(image, 0x1B),
        })
    }

    /// Operating time in hours.
    pub fn operating_hours(&self) -> Option<f64> {
        self.operating_time_s.map(|s| s as f64 / 3600.0)
    }
}

fn temperature(image: &[Option<u8>], offset: usize) -> Option<i16> {
    be_uint(image, offset, 1).map(|v| i16::try_from(v).unwrap_or(i16::MAX) - 60)
}

/// Bank 206 (Part 253): light source diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LightSourceDiagnostics {
    /// Start counter (0x07–0x09).
    pub start_counter: Option<u64>,
    /// On time, s (0x0E–0x11).
    pub on_time_s: Option<u64>,
    /// Voltage, V (0x12–0x13, 0.1 V).
    pub voltage_v: Option<f64>,
    /// Current, mA (0x14–0x15).
    pub current_ma: Option<u64>,
    /// Overall failure now (0x16).
    pub overall_failure: Option<bool>,
    /// Overall failure counter (0x17).
    pub overall_failure_counter: Option<u64>,
    /// Light source temperature, °C (0x20, stored +60).
    pub temperature_c: Option<i16>,
}

impl LightSourceDiagnostics {
    /// Decodes a bank 206 image; `None` if the bank is not implemented.
    pub fn decode(image: &[Option<u8>]) -> Option<LightSourceDiagnostics> {
        byte(image, 0)?;
        Some(LightSourceDiagnostics {
            start_counter: be_uint(image, 0x07, 3),
            on_time_s: be_uint(image, 0x0E, 4),
            voltage_v: be_uint(image, 0x12, 2).map(|v| v as f64 / 10.0),
            current_ma: be_uint(image, 0x14, 2),
            overall_failure: be_uint(image, 0x16, 1).map(|v| v != 0),
            overall_failure_counter: be_uint(image, 0x17, 1),
            temperature_c: temperature(image, 0x20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: &[u8]) -> Vec<Option<u8>> {
        bytes.iter().map(|b| Some(*b)).collect()
    }

    #[test]
    fn identity_from_python_dali_fake_bank0() {
        // Contents of python-dali's FakeBank0 (GTIN 1234567654321, serial 1).
        let img = image(&[
            0x7f, 0x00, 0x01, 0x01, 0x1f, 0x71, 0xf7, 0x6b, 0xb1, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x01, 0x08, 0x08, 0xff, 0x00, 0x01, 0x00,
        ]);
        let id = Identity::decode(&img).unwrap();
        assert_eq!(id.gtin, Some(1_234_567_654_321));
        assert_eq!(id.serial, Some(1));
        assert_eq!(id.firmware, Some((1, 0)));
        assert_eq!(id.hardware, Some((2, 1)));
        assert_eq!(id.unit_index, Some(0));
        assert_eq!(Identity::decode(&[None; 27]), None);
    }

    #[test]
    fn energy_scaled_values() {
        let mut img = vec![Some(0u8); 16];
        img[0] = Some(0x0F);
        img[4] = Some(0xFF); // scale −1 → 0.1 Wh
        for (i, b) in [0, 0, 0, 0, 0x30, 0x39].iter().enumerate() {
            img[5 + i] = Some(*b); // 12345
        }
        img[0x0B] = Some(0); // scale 0
        for (i, b) in [0, 0, 0, 42].iter().enumerate() {
            img[0x0C + i] = Some(*b);
        }
        let e = Energy::decode(&img).unwrap();
        assert!((e.energy_wh.unwrap() - 1234.5).abs() < 1e-9);
        assert_eq!(e.power_w, Some(42.0));
        // MASK power, TMASK energy
        img[0x0C..=0x0F].fill(Some(0xFF));
        img[5..=9].fill(Some(0xFF));
        img[10] = Some(0xFE);
        let e = Energy::decode(&img).unwrap();
        assert_eq!(e.power_w, None);
        assert_eq!(e.energy_wh, None);
        // invalid scale
        img[0x0B] = Some(7);
        assert_eq!(Energy::decode(&img).unwrap().power_w, None);
        assert_eq!(Energy::decode(&[None; 16]), None);
    }

    #[test]
    fn diagnostics_decode() {
        let mut img = vec![Some(0u8); 0x1D];
        img[0] = Some(0x1C);
        img[4..8].copy_from_slice(&image(&[0, 0, 0x0E, 0x10])); // 3600 s
        img[0x0B..0x0D].copy_from_slice(&image(&[0x08, 0xFC])); // 230.0 V
        img[0x1B] = Some(60 + 45);
        img[0x0F] = Some(1);
        let d = GearDiagnostics::decode(&img).unwrap();
        assert_eq!(d.operating_time_s, Some(3600));
        assert_eq!(d.operating_hours(), Some(1.0));
        assert_eq!(d.supply_voltage_v, Some(230.0));
        assert_eq!(d.temperature_c, Some(45));
        assert_eq!(d.overall_failure, Some(true));

        let mut img = vec![Some(0u8); 0x21];
        img[0] = Some(0x20);
        img[0x0E..0x12].copy_from_slice(&image(&[0, 0, 0, 10]));
        img[0x20] = Some(0xFF);
        let l = LightSourceDiagnostics::decode(&img).unwrap();
        assert_eq!(l.on_time_s, Some(10));
        assert_eq!(l.temperature_c, None);
    }
}
