//! Equipment: the devices and buses the cabinet supervises.

pub mod dali;
