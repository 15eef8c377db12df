//! Pure conversions between raw Modbus registers/bits and engineering values.
//!
//! Reading: registers are combined most significant word first ([`WordOrder::Big`]) or least
//! significant word first ([`WordOrder::Little`]); bytes inside a word are always big-endian.
//! Then `value = raw * scale + offset`. An integer point with `scale == 1` and `offset == 0`
//! stays an integer ([`Value::Int`]/[`Value::UInt`]) so counters never lose precision; any
//! other scaling yields [`Value::Float`], rounded to the decimals the point can carry
//! ([`decimals`]): `2321 × 0.1` is `232.1`, not the binary product `232.10000000000002`.
//!
//! Writing ([`encode_write`]) is the exact reverse, and refuses — before anything reaches the
//! bus — writes to non-writable points or read-only tables, values outside the point's
//! `min`/`max`, values the data type cannot hold, values between two steps of an integer
//! point's resolution (12.7 to an unscaled integer is refused, never rounded to 13), booleans
//! to anything but a coil, and non-finite numbers. Every refusal is an [`Error::Rejected`]
//! naming the field at fault.

use crate::error::{Error, PointError};
use crate::{DataType, PointSpec, Table, WordOrder};

/// A decoded point value (and the value of a write request).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Coils, discrete inputs and `bool` registers.
    Bool(bool),
    /// Signed integer types with identity scaling.
    Int(i64),
    /// Unsigned integer types with identity scaling.
    UInt(u64),
    /// Floats, and integers with a scale or offset applied.
    Float(f64),
}

impl Value {
    /// The value as a float (booleans are 0/1).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::UInt(u) => u as f64,
            Value::Float(f) => f,
        }
    }
}

/// What to send for a write, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Write single coil (FC5).
    Coil {
        /// Coil address.
        address: u16,
        /// New state.
        value: bool,
    },
    /// Write single register (FC6).
    Register {
        /// Register address.
        address: u16,
        /// New content.
        value: u16,
    },
    /// Write multiple registers (FC16).
    Registers {
        /// First register address.
        address: u16,
        /// New contents, in wire order.
        values: Vec<u16>,
    },
}

fn identity_scaling(point: &PointSpec) -> bool {
    point.scale == 1.0 && point.offset == 0.0
}

/// Combines `words` (wire order) into one big-endian integer of `words.len() * 16` bits.
fn combine(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(*w);
    match order {
        WordOrder::Big => words.iter().fold(0, fold),
        WordOrder::Little => words.iter().rev().fold(0, fold),
    }
}

/// Splits the low `width * 16` bits of `raw` into `width` words in wire order.
fn split(raw: u64, width: u16, order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = (0..width)
        .rev()
        .map(|i| (raw >> (16 * u32::from(i))) as u16)
        .collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    words
}

/// Decodes a register-table point from its registers (`words` starts at the point's address
/// and holds at least its width).
///
/// # Panics
/// If `words` is shorter than the point's width (the session checks response lengths first).
pub fn decode_registers(point: &PointSpec, words: &[u16]) -> Result<Value, PointError> {
    let width = usize::from(point.data_type.width());
    let raw = combine(&words[..width], point.word_order);
    let scaled = |x: f64| -> Result<Value, PointError> {
        let v = x * point.scale + point.offset;
        if !v.is_finite() {
            return Err(PointError::NotFinite);
        }
        Ok(Value::Float(match decimals(point, x) {
            Some(n) => round_to(v, n),
            None => v,
        }))
    };
    let int = |i: i64| {
        if identity_scaling(point) {
            Ok(Value::Int(i))
        } else {
            scaled(i as f64)
        }
    };
    let uint = |u: u64| {
        if identity_scaling(point) {
            Ok(Value::UInt(u))
        } else {
            scaled(u as f64)
        }
    };
    match point.data_type {
        DataType::Bool => Ok(Value::Bool(raw != 0)),
        DataType::U16 | DataType::U32 | DataType::U64 => uint(raw),
        DataType::I16 => int(i64::from(raw as u16 as i16)),
        DataType::I32 => int(i64::from(raw as u32 as i32)),
        DataType::I64 => int(raw as i64),
        DataType::F32 => scaled(widen_f32(f32::from_bits(raw as u32))),
        DataType::F64 => scaled(f64::from_bits(raw)),
    }
}

/// Widens an `f32` to the `f64` with the same shortest decimal form (0.1f32 becomes 0.1, not
/// 0.10000000149011612), so telemetry shows what the device meant.
fn widen_f32(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Most decimals a value is rounded to: beyond, an `f64` holds no more exact decimal digits.
pub const MAX_DECIMALS: u8 = 15;

/// Digits after the decimal point in the shortest representation of `x` (`0.25` → 2), `None`
/// beyond [`MAX_DECIMALS`].
fn decimal_digits(x: f64) -> Option<u32> {
    // `Display` for f64 is the shortest representation that reads back exactly, never in
    // exponent form.
    let s = x.abs().to_string();
    let n = s.split_once('.').map_or(0, |(_, frac)| frac.len() as u32);
    (n <= u32::from(MAX_DECIMALS)).then_some(n)
}

/// The decimals a reading of `point` is rounded to, given its raw value `raw` (before scaling):
/// the point's `decimals` when configured; else, with a scale or offset, as many as
/// `raw × scale + offset` has in exact decimal arithmetic (`raw`'s, plus the scale's, or the
/// offset's if more): scale 0.1 gives 1 decimal, 0.01 gives 2, a raw `f32` of 1234.5 × 0.1
/// gives 2. `None`: not rounded (identity scaling, or more than [`MAX_DECIMALS`]).
pub fn decimals(point: &PointSpec, raw: f64) -> Option<u32> {
    if let Some(n) = point.decimals {
        return Some(u32::from(n.min(MAX_DECIMALS)));
    }
    if identity_scaling(point) {
        return None;
    }
    let product = decimal_digits(raw)? + decimal_digits(point.scale)?;
    let n = product.max(decimal_digits(point.offset)?);
    (n <= u32::from(MAX_DECIMALS)).then_some(n)
}

/// `v` rounded to `n` decimals (correct decimal rounding, through the shortest representation).
fn round_to(v: f64, n: u32) -> f64 {
    format!("{v:.prec$}", prec = n as usize)
        .parse()
        .unwrap_or(v)
}

/// Whether `read` is the value `requested` of a write to `point`: equal within half the
/// point's resolution for integer points, or a relative 1e-6 for floats (an `f32` register
/// rounds what was written).
pub fn same_value(point: &PointSpec, requested: Value, read: Value) -> bool {
    let (a, b) = (requested.as_f64(), read.as_f64());
    let tol = match point.data_type {
        DataType::F32 | DataType::F64 => 1e-6 * a.abs().max(b.abs()).max(1e-3),
        _ => point.scale.abs() / 2.0,
    };
    (a - b).abs() <= tol
}

/// Decodes a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Inclusive raw bounds of an integer type.
fn int_bounds(data_type: DataType) -> (i128, i128) {
    match data_type {
        DataType::Bool => (0, 1),
        DataType::U16 => (0, u16::MAX.into()),
        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::U32 => (0, u32::MAX.into()),
        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::U64 => (0, u64::MAX.into()),
        DataType::I64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::F32 | DataType::F64 => (0, 0),
    }
}

fn type_name(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Bool => "bool",
        DataType::U16 => "u16",
        DataType::I16 => "i16",
        DataType::U32 => "u32",
        DataType::I32 => "i32",
        DataType::U64 => "u64",
        DataType::I64 => "i64",
        DataType::F32 => "f32",
        DataType::F64 => "f64",
    }
}

fn resolution_reason(point: &PointSpec, eng: f64, dt: DataType) -> String {
    let step = point.scale.abs();
    let below = ((eng - point.offset) / point.scale).floor() * point.scale + point.offset;
    let (lo, hi) = if point.scale > 0.0 {
        (below, below + step)
    } else {
        (below - step, below)
    };
    let n = decimals(point, 0.0).unwrap_or(0) as usize;
    format!(
        "{eng} cannot be written exactly: point `{}` ({}, scale {}, offset {}) holds steps of {step}; the nearest are {lo:.n$} and {hi:.n$}",
        point.name,
        type_name(dt),
        point.scale,
        point.offset,
    )
}

/// Validates a write of `value` to `point` and encodes it.
pub fn encode_write(point: &PointSpec, value: Value) -> Result<WriteOp, Error> {
    match point.table {
        Table::Input | Table::Discrete => {
            return Err(Error::rejected(
                "point",
                format!("`{}` is in a read-only table", point.name),
            ))
        }
        Table::Coil | Table::Holding if !point.writable => {
            return Err(Error::rejected(
                "point",
                format!("`{}` is not writable", point.name),
            ))
        }
        _ => {}
    }
    if let Value::Float(f) = value {
        if !f.is_finite() {
            return Err(Error::rejected("value", "not a finite number"));
        }
    }
    if let Value::Bool(_) = value {
        if point.table != Table::Coil && point.data_type != DataType::Bool {
            return Err(Error::rejected(
                "value",
                format!(
                    "a boolean cannot be written to `{}` (type {}): booleans are for coils",
                    point.name,
                    type_name(point.data_type)
                ),
            ));
        }
    }
    if point.table == Table::Coil {
        let on = match value {
            Value::Bool(b) => b,
            v if v.as_f64() == 0.0 => false,
            v if v.as_f64() == 1.0 => true,
            _ => return Err(Error::rejected("value", "a coil takes true/false or 0/1")),
        };
        return Ok(WriteOp::Coil {
            address: point.address,
            value: on,
        });
    }

    let eng = value.as_f64();
    if let Some(min) = point.min {
        if eng < min {
            return Err(Error::rejected(
                "value",
                format!("{eng} is below min {min}"),
            ));
        }
    }
    if let Some(max) = point.max {
        if eng > max {
            return Err(Error::rejected(
                "value",
                format!("{eng} is above max {max}"),
            ));
        }
    }

    let raw: u64 = match point.data_type {
        DataType::F32 => {
            let r = ((eng - point.offset) / point.scale) as f32;
            if !r.is_finite() {
                return Err(Error::rejected("value", "out of range for f32"));
            }
            u64::from(r.to_bits())
        }
        DataType::F64 => {
            let r = (eng - point.offset) / point.scale;
            if !r.is_finite() {
                return Err(Error::rejected(
                    "value",
                    "not a finite number after scaling",
                ));
            }
            r.to_bits()
        }
        dt => {
            let (lo, hi) = int_bounds(dt);
            // Integers written with identity scaling take the exact path (no f64 rounding of
            // large u64/i64 values).
            let r: i128 = match value {
                Value::Int(i) if identity_scaling(point) => i.into(),
                Value::UInt(u) if identity_scaling(point) => u.into(),
                Value::Bool(b) if dt == DataType::Bool => i128::from(b),
                _ => {
                    let exact = (eng - point.offset) / point.scale;
                    let f = exact.round();
                    if !f.is_finite() || f < lo as f64 || f > hi as f64 {
                        return Err(Error::rejected(
                            "value",
                            format!("{eng} does not fit the point's type {}", type_name(dt)),
                        ));
                    }
                    // Within float noise of a step (23.0 / 0.1 = 229.99999999999997), never
                    // half a step away: the device would hold something else than asked.
                    if (exact - f).abs() > 1e-6_f64.max(f.abs() * 1e-12) {
                        return Err(Error::rejected("value", resolution_reason(point, eng, dt)));
                    }
                    f as i128
                }
            };
            if r < lo || r > hi {
                return Err(Error::rejected(
                    "value",
                    format!("{eng} does not fit the point's type {}", type_name(dt)),
                ));
            }
            // Two's complement truncated to the type's width by `split`.
            r as i64 as u64
        }
    };
    let width = point.data_type.width();
    let words = split(raw, width, point.word_order);
    Ok(if width == 1 {
        WriteOp::Register {
            address: point.address,
            value: words[0],
        }
    } else {
        WriteOp::Registers {
            address: point.address,
            values: words,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(table: Table, data_type: DataType, order: WordOrder) -> PointSpec {
        PointSpec {
            name: "p".into(),
            table,
            address: 7,
            data_type,
            word_order: order,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            writable: true,
            min: None,
            max: None,
            decimals: None,
        }
    }
    fn hp(dt: DataType) -> PointSpec {
        pt(Table::Holding, dt, WordOrder::Big)
    }
    fn hl(dt: DataType) -> PointSpec {
        pt(Table::Holding, dt, WordOrder::Little)
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            decode_registers(&hp(DataType::F32), &[0x3FC0, 0x0000]),
            Ok(Value::Float(1.5))
        );
        assert_eq!(
            decode_registers(&hl(DataType::F32), &[0x0000, 0x3FC0]),
            Ok(Value::Float(1.5))
        );
        // 0.1f32 = 0x3DCC_CCCD reads as the f64 0.1.
        assert_eq!(
            decode_registers(&hp(DataType::F32), &[0x3DCC, 0xCCCD]),
            Ok(Value::Float(0.1))
        );
        assert_eq!(
            decode_registers(&hp(DataType::I32), &[0xFFFF, 0xFFFE]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            decode_registers(&hl(DataType::I32), &[0xFFFE, 0xFFFF]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            decode_registers(&hp(DataType::I16), &[0x8000]),
            Ok(Value::Int(-32768))
        );
        assert_eq!(
            decode_registers(&hp(DataType::U32), &[0x0001, 0x0002]),
            Ok(Value::UInt(0x0001_0002))
        );
        assert_eq!(
            decode_registers(&hl(DataType::U32), &[0x0001, 0x0002]),
            Ok(Value::UInt(0x0002_0001))
        );
        assert_eq!(
            decode_registers(&hp(DataType::U64), &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            decode_registers(&hl(DataType::U64), &[0x0004, 0x0003, 0x0002, 0x0001]),
            Ok(Value::UInt(0x0001_0002_0003_0004))
        );
        assert_eq!(
            decode_registers(&hp(DataType::I64), &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Ok(Value::Int(-1))
        );
        // 1.0 as f64 = 0x3FF0_0000_0000_0000
        assert_eq!(
            decode_registers(&hp(DataType::F64), &[0x3FF0, 0, 0, 0]),
            Ok(Value::Float(1.0))
        );
        assert_eq!(
            decode_registers(&hp(DataType::Bool), &[2]),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            decode_registers(&hp(DataType::F32), &[0x7FC0, 0]),
            Err(PointError::NotFinite)
        );
        assert_eq!(decode_bit(true), Value::Bool(true));
    }

    #[test]
    fn scale_and_offset() {
        let mut p = hp(DataType::U16);
        p.scale = 0.1;
        p.offset = -10.0;
        match decode_registers(&p, &[2300]) {
            Ok(Value::Float(v)) => assert!((v - 220.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        let mut p = hp(DataType::I16);
        p.scale = 0.5;
        assert_eq!(decode_registers(&p, &[0xFFFE]), Ok(Value::Float(-1.0)));
    }

    #[test]
    fn encode_reverses_decode() {
        assert_eq!(
            encode_write(&hp(DataType::F32), Value::Float(1.5)).unwrap(),
            WriteOp::Registers {
                address: 7,
                values: vec![0x3FC0, 0]
            }
        );
        assert_eq!(
            encode_write(&hl(DataType::F32), Value::Float(1.5)).unwrap(),
            WriteOp::Registers {
                address: 7,
                values: vec![0, 0x3FC0]
            }
        );
        assert_eq!(
            encode_write(&hp(DataType::I32), Value::Int(-2)).unwrap(),
            WriteOp::Registers {
                address: 7,
                values: vec![0xFFFF, 0xFFFE]
            }
        );
        assert_eq!(
            encode_write(&hp(DataType::U64), Value::UInt(u64::MAX)).unwrap(),
            WriteOp::Registers {
                address: 7,
                values: vec![0xFFFF; 4]
            }
        );
        assert_eq!(
            encode_write(&hp(DataType::I16), Value::Int(-1)).unwrap(),
            WriteOp::Register {
                address: 7,
                value: 0xFFFF
            }
        );
        let mut p = hp(DataType::U16);
        p.scale = 0.1;
        assert_eq!(
            encode_write(&p, Value::Float(23.0)).unwrap(),
            WriteOp::Register {
                address: 7,
                value: 230
            }
        );
        for (dt, order) in [
            (DataType::F64, WordOrder::Little),
            (DataType::I64, WordOrder::Big),
            (DataType::U32, WordOrder::Little),
        ] {
            let p = pt(Table::Holding, dt, order);
            let v = if dt == DataType::F64 {
                Value::Float(-12.25)
            } else if dt == DataType::I64 {
                Value::Int(-123_456_789_012)
            } else {
                Value::UInt(4_000_000_000)
            };
            let words = match encode_write(&p, v).unwrap() {
                WriteOp::Registers { values, .. } => values,
                other => panic!("{other:?}"),
            };
            assert_eq!(decode_registers(&p, &words), Ok(v));
        }
    }

    #[test]
    fn coils() {
        let p = pt(Table::Coil, DataType::Bool, WordOrder::Big);
        assert_eq!(
            encode_write(&p, Value::Bool(true)).unwrap(),
            WriteOp::Coil {
                address: 7,
                value: true
            }
        );
        assert_eq!(
            encode_write(&p, Value::Int(0)).unwrap(),
            WriteOp::Coil {
                address: 7,
                value: false
            }
        );
        let e = encode_write(&p, Value::Float(0.5)).unwrap_err();
        assert!(matches!(e, Error::Rejected { field: "value", .. }), "{e}");
    }

    #[test]
    fn rejections_name_the_field() {
        let field = |r: Result<WriteOp, Error>| match r {
            Err(Error::Rejected { field, .. }) => field,
            other => panic!("expected rejection, got {other:?}"),
        };
        let mut p = hp(DataType::U16);
        p.writable = false;
        assert_eq!(field(encode_write(&p, Value::Int(1))), "point");
        let p = pt(Table::Input, DataType::U16, WordOrder::Big);
        assert_eq!(field(encode_write(&p, Value::Int(1))), "point");
        let mut p = hp(DataType::U16);
        p.min = Some(0.0);
        p.max = Some(100.0);
        assert_eq!(field(encode_write(&p, Value::Int(101))), "value");
        assert_eq!(field(encode_write(&p, Value::Float(-0.5))), "value");
        assert!(encode_write(&p, Value::Int(100)).is_ok());
        let p = hp(DataType::U16);
        assert_eq!(field(encode_write(&p, Value::Int(65536))), "value");
        assert_eq!(field(encode_write(&p, Value::Int(-1))), "value");
        assert_eq!(field(encode_write(&p, Value::Float(f64::NAN))), "value");
        let p = hp(DataType::I16);
        assert_eq!(field(encode_write(&p, Value::Float(40000.0))), "value");
        let p = hp(DataType::F32);
        assert_eq!(field(encode_write(&p, Value::Float(1e300))), "value");
    }

    /// Issue 13 item 9: 12.7 written to an unscaled integer point wrote 13.
    #[test]
    fn writes_between_two_steps_of_resolution_are_refused_not_rounded() {
        let reason = |r: Result<WriteOp, Error>| match r {
            Err(Error::Rejected {
                field: "value",
                reason,
            }) => reason,
            other => panic!("expected a rejection of the value, got {other:?}"),
        };
        let p = hp(DataType::U16);
        let r = reason(encode_write(&p, Value::Float(12.7)));
        assert!(r.contains("12.7 cannot be written exactly"), "{r}");
        assert!(r.contains("nearest are 12 and 13"), "{r}");
        assert_eq!(
            encode_write(&p, Value::Float(13.0)).unwrap(),
            WriteOp::Register {
                address: 7,
                value: 13
            }
        );
        let mut tenths = hp(DataType::I16);
        tenths.scale = 0.1;
        // Float noise of the scale is not a step: 23.0 / 0.1 = 229.99999999999997.
        for (v, raw) in [(23.0, 230u16), (-0.3, 0xFFFD), (12.3, 123)] {
            assert_eq!(
                encode_write(&tenths, Value::Float(v)).unwrap(),
                WriteOp::Register {
                    address: 7,
                    value: raw
                },
                "{v}"
            );
        }
        let r = reason(encode_write(&tenths, Value::Float(12.34)));
        assert!(
            r.contains("steps of 0.1; the nearest are 12.3 and 12.4"),
            "{r}"
        );
        let mut offset = hp(DataType::U16);
        offset.scale = 0.5;
        offset.offset = -40.0;
        assert!(encode_write(&offset, Value::Float(-39.5)).is_ok());
        reason(encode_write(&offset, Value::Float(-39.25)));
        // Out of range for the type, either side.
        let r = reason(encode_write(&hp(DataType::U16), Value::Float(65_535.5)));
        assert!(r.contains("does not fit the point's type u16"), "{r}");
        reason(encode_write(&hp(DataType::U32), Value::Int(-1)));
        reason(encode_write(&tenths, Value::Float(3276.8)));
        // Float points hold what they can: no step to respect.
        assert!(encode_write(&hp(DataType::F32), Value::Float(12.7)).is_ok());
    }

    /// Issue 13 item 14: `true` written into a u16 point became 1.
    #[test]
    fn booleans_are_only_for_coils() {
        for dt in [DataType::U16, DataType::I32, DataType::F32] {
            match encode_write(&hp(dt), Value::Bool(true)) {
                Err(Error::Rejected {
                    field: "value",
                    reason,
                }) => assert!(reason.contains("booleans are for coils"), "{reason}"),
                other => panic!("{dt:?}: {other:?}"),
            }
        }
        let coil = pt(Table::Coil, DataType::Bool, WordOrder::Big);
        assert!(encode_write(&coil, Value::Bool(true)).is_ok());
    }

    fn float(r: Result<Value, PointError>) -> f64 {
        match r {
            Ok(Value::Float(f)) => f,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 14 item 4: `"value":2.7600000000000002`, `232.10000000000002` in telemetry.
    #[test]
    fn scaled_readings_carry_the_decimals_their_scale_implies() {
        let scaled = |dt, scale: f64, offset: f64| {
            let mut p = hp(dt);
            p.scale = scale;
            p.offset = offset;
            p
        };
        // The binary products are noisy; the readings are not.
        assert_ne!(2321.0 * 0.1, 232.1);
        assert_ne!(276.0 * 0.01, 2.76);
        let p = scaled(DataType::U16, 0.1, 0.0);
        assert_eq!(float(decode_registers(&p, &[2321])).to_string(), "232.1");
        let p = scaled(DataType::U16, 0.01, 0.0);
        assert_eq!(float(decode_registers(&p, &[276])).to_string(), "2.76");
        let p = scaled(DataType::U32, 0.001, 10.0);
        assert_eq!(
            float(decode_registers(&p, &[0x1234, 0x5678])).to_string(),
            "305429.896"
        );
        let p = scaled(DataType::I16, 0.1, -0.05);
        assert_eq!(float(decode_registers(&p, &[0xFFFD])).to_string(), "-0.35");
        // A scaled f32: its own decimals plus the scale's (1234.5 × 0.1 = 123.45).
        let p = scaled(DataType::F32, 0.1, 0.0);
        assert_eq!(
            float(decode_registers(&p, &[0x449A, 0x5000])).to_string(),
            "123.45"
        );
        // `decimals` overrides.
        let mut p = scaled(DataType::U16, 0.1, 0.0);
        p.decimals = Some(0);
        assert_eq!(float(decode_registers(&p, &[2326])), 233.0);
        let mut p = hp(DataType::F32);
        p.decimals = Some(1);
        assert_eq!(float(decode_registers(&p, &[0x449A, 0x5000])), 1234.5);
        // Unscaled values are left alone.
        assert_eq!(
            decode_registers(&hp(DataType::U16), &[7]),
            Ok(Value::UInt(7))
        );
        assert_eq!(
            float(decode_registers(
                &hp(DataType::F64),
                &[0x3FB9, 0x9999, 0x9999, 0x999A]
            )),
            0.1
        );
        // A scale with more decimals than an f64 holds is not rounded.
        let p = scaled(DataType::U16, 1.0 / 3.0, 0.0);
        assert_eq!(decimals(&p, 3.0), None);
    }

    #[test]
    fn read_back_values_compare_within_the_points_resolution() {
        let mut p = hp(DataType::U16);
        p.scale = 0.1;
        assert!(same_value(&p, Value::Float(23.0), Value::Float(23.0)));
        assert!(!same_value(&p, Value::Float(23.0), Value::Float(23.1)));
        let f = hp(DataType::F32);
        assert!(same_value(
            &f,
            Value::Float(0.1),
            Value::Float(0.100_000_001)
        ));
        assert!(!same_value(&f, Value::Float(0.1), Value::Float(0.2)));
    }
}
