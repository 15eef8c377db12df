//! DALI (IEC 62386) bus master for cabinetd.
#![warn(missing_docs)]
