//! Request planning: coalesce a device's points into as few read requests as Modbus allows.
//!
//! Invariants of [`plan`]'s output:
//! - every point appears in exactly one request, in the request of its own table;
//! - a point's whole extent (`address .. address + width`) lies inside its request;
//! - no register read exceeds [`MAX_REGISTERS_PER_READ`] registers, no coil/discrete read
//!   exceeds [`MAX_BITS_PER_READ`] bits;
//! - requests of a table are ordered by start address (two may share a few registers only when
//!   a multi-register point straddles the size limit); tables come in the order coil, discrete,
//!   input, holding.
//!
//! Points may overlap (a `u32` and a `u16` view of its high word): they then share registers.
//! Addresses between points are read too when the gap is at most [`MAX_REGISTER_GAP`]
//! registers (or [`MAX_BIT_GAP`] bits): one larger read costs less than one more round trip, but
//! a device may refuse to read unmapped addresses (exception 2), so gaps stay small.

use crate::{DataType, PointSpec, Table};

/// Most registers one read (FC3/FC4) may carry (Modbus application protocol, §6.3/§6.4).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Most bits one read (FC1/FC2) may carry (Modbus application protocol, §6.1/§6.2).
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Largest run of unused registers a read may span to merge two points.
pub const MAX_REGISTER_GAP: u16 = 8;
/// Largest run of unused bits a read may span to merge two points.
pub const MAX_BIT_GAP: u16 = 64;

/// Where one point sits in a request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the point in the device's point list.
    pub point: usize,
    /// Offset of the point's first register/bit from the request's start.
    pub offset: u16,
}

/// One read request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Table read (selects the function code).
    pub table: Table,
    /// First address read.
    pub start: u16,
    /// Number of registers or bits read.
    pub count: u16,
    /// The points decoded from the response.
    pub slots: Vec<Slot>,
}

/// Number of registers (register tables) or bits (bit tables) a point occupies.
pub fn point_width(point: &PointSpec) -> u16 {
    match point.table {
        Table::Coil | Table::Discrete => 1,
        Table::Input | Table::Holding => point.data_type.width(),
    }
}

fn limits(table: Table) -> (u32, u32) {
    match table {
        Table::Coil | Table::Discrete => (MAX_BITS_PER_READ.into(), MAX_BIT_GAP.into()),
        Table::Input | Table::Holding => (MAX_REGISTERS_PER_READ.into(), MAX_REGISTER_GAP.into()),
    }
}

/// Plans the reads of one poll of `points`.
///
/// A point whose extent runs past address 65535 cannot be read by any request; configuration
/// validation ([`crate::validate_device`]) rejects it, and `plan` clamps its request so the
/// device answers with an exception instead of the planner panicking.
pub fn plan(points: &[PointSpec]) -> Vec<ReadRequest> {
    let mut requests = Vec::new();
    for table in [Table::Coil, Table::Discrete, Table::Input, Table::Holding] {
        let (max_count, max_gap) = limits(table);
        let mut idx: Vec<usize> = (0..points.len())
            .filter(|&i| points[i].table == table)
            .collect();
        idx.sort_by_key(|&i| (points[i].address, point_width(&points[i]), i));

        // Current request: [start, end) in u32 so end may be 65536 without overflow.
        let mut current: Option<(u32, u32, Vec<Slot>)> = None;
        for i in idx {
            let p_start = u32::from(points[i].address);
            let p_end = p_start + u32::from(point_width(&points[i]));
            if let Some((start, end, slots)) = current.as_mut() {
                let new_end = (*end).max(p_end);
                if p_start <= *end + max_gap && new_end - *start <= max_count {
                    *end = new_end;
                    slots.push(Slot {
                        point: i,
                        offset: (p_start - *start) as u16,
                    });
                    continue;
                }
                requests.push(finish(table, *start, *end, std::mem::take(slots)));
            }
            current = Some((
                p_start,
                p_end,
                vec![Slot {
                    point: i,
                    offset: 0,
                }],
            ));
        }
        if let Some((start, end, slots)) = current {
            requests.push(finish(table, start, end, slots));
        }
    }
    requests
}

fn finish(table: Table, start: u32, end: u32, slots: Vec<Slot>) -> ReadRequest {
    let end = end.min(u32::from(u16::MAX) + 1);
    ReadRequest {
        table,
        start: start as u16,
        count: (end - start) as u16,
        slots,
    }
}

/// True when `data_type` is meaningful in `table` (bit tables hold only booleans).
pub fn type_fits_table(table: Table, data_type: DataType) -> bool {
    match table {
        Table::Coil | Table::Discrete => data_type == DataType::Bool,
        Table::Input | Table::Holding => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pt(name: &str, table: Table, address: u16, data_type: DataType) -> PointSpec {
        PointSpec::new(name, table, address, data_type)
    }

    #[test]
    fn contiguous_points_share_one_request() {
        let points = vec![
            pt("a", Table::Holding, 0, DataType::U16),
            pt("b", Table::Holding, 1, DataType::F32),
            pt("c", Table::Holding, 3, DataType::F64),
        ];
        let reqs = plan(&points);
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].start, reqs[0].count), (0, 7));
        assert_eq!(
            reqs[0].slots,
            vec![
                Slot {
                    point: 0,
                    offset: 0
                },
                Slot {
                    point: 1,
                    offset: 1
                },
                Slot {
                    point: 2,
                    offset: 3
                }
            ]
        );
    }

    #[test]
    fn small_gap_merged_large_gap_split() {
        let points = vec![
            pt("a", Table::Input, 10, DataType::U16),
            pt("b", Table::Input, 11 + MAX_REGISTER_GAP, DataType::U16),
            pt(
                "c",
                Table::Input,
                12 + 2 * MAX_REGISTER_GAP + 1,
                DataType::U16,
            ),
        ];
        let reqs = plan(&points);
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].start, reqs[0].count), (10, MAX_REGISTER_GAP + 2));
        assert_eq!(reqs[1].slots[0].point, 2);
    }

    #[test]
    fn tables_never_mix_and_limits_hold() {
        let mut points = vec![
            pt("c", Table::Coil, 0, DataType::Bool),
            pt("d", Table::Discrete, 0, DataType::Bool),
            pt("h", Table::Holding, 0, DataType::U16),
        ];
        // 130 consecutive registers need two reads of the input table.
        for a in 0..130 {
            points.push(pt(&format!("i{a}"), Table::Input, a, DataType::U16));
        }
        let reqs = plan(&points);
        let tables: Vec<Table> = reqs.iter().map(|r| r.table).collect();
        assert_eq!(
            tables,
            vec![
                Table::Coil,
                Table::Discrete,
                Table::Input,
                Table::Input,
                Table::Holding
            ]
        );
        assert_eq!(reqs[2].count, MAX_REGISTERS_PER_READ);
        assert_eq!((reqs[3].start, reqs[3].count), (125, 5));
    }

    #[test]
    fn overlapping_points_and_top_of_address_space() {
        let points = vec![
            pt("whole", Table::Holding, 65532, DataType::U64),
            pt("high", Table::Holding, 65532, DataType::U16),
            pt("low", Table::Holding, 65535, DataType::U16),
        ];
        let reqs = plan(&points);
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].start, reqs[0].count), (65532, 4));
        assert_eq!(reqs[0].slots.len(), 3);
    }

    fn arb_point() -> impl Strategy<Value = (u8, u16, u8)> {
        (0u8..4, 0u16..3000, 0u8..9)
    }

    proptest! {
        #[test]
        fn every_point_once_and_within_limits(raw in prop::collection::vec(arb_point(), 0..300)) {
            let types = [DataType::Bool, DataType::U16, DataType::I16, DataType::U32,
                DataType::I32, DataType::U64, DataType::I64, DataType::F32, DataType::F64];
            let points: Vec<PointSpec> = raw.iter().enumerate().map(|(i, &(t, a, d))| {
                let table = [Table::Coil, Table::Discrete, Table::Input, Table::Holding][t as usize];
                let dt = if t < 2 { DataType::Bool } else { types[d as usize] };
                pt(&format!("p{i}"), table, a, dt)
            }).collect();
            let reqs = plan(&points);
            let mut seen = vec![0u32; points.len()];
            for r in &reqs {
                let (max, _) = limits(r.table);
                prop_assert!(r.count >= 1 && u32::from(r.count) <= max);
                for s in &r.slots {
                    seen[s.point] += 1;
                    let p = &points[s.point];
                    prop_assert_eq!(p.table, r.table);
                    prop_assert_eq!(u32::from(r.start) + u32::from(s.offset), u32::from(p.address));
                    prop_assert!(s.offset + point_width(p) <= r.count);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            for w in reqs.windows(2) {
                if w[0].table == w[1].table {
                    prop_assert!(w[0].start < w[1].start);
                }
            }
        }
    }
}
