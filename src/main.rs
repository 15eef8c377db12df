//! The `cabinetd` binary: command-line edge of the daemon.

fn main() {
    println!("cabinetd {}", env!("CARGO_PKG_VERSION"));
}
