//! `cabinetd dali commission`: gives short addresses to the gear of one bus, from the command
//! line, while the daemon does not hold the bus (the bus lock says so).

use std::io::Write;

use anyhow::{bail, Context};
use cabinetd_dali::atx::AtxHat;
use cabinetd_dali::commission::{commission, Options, Phase, Scope};
use cabinetd_dali::{Bus, Interface};

use crate::config::{Config, DaliInterface};

/// Runs commissioning on bus `bus` of `cfg`: only gear without a short address, or every gear
/// (`scope_all`: all short addresses are deleted and given again). Refuses while another process
/// (the daemon) holds the bus lock. Progress goes to `out` as a `\r`-rewritten line per search
/// step and one line per gear addressed; then a table of what was assigned (short address,
/// random address, GTIN and serial when bank 0 is readable).
pub async fn commission_cli(
    cfg: &Config,
    bus: &str,
    scope_all: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let Some(bus_cfg) = cfg.dali.iter().find(|b| b.name == bus) else {
        let names: Vec<&str> = cfg.dali.iter().map(|b| b.name.as_str()).collect();
        bail!(
            "no DALI bus named {bus:?} in the configuration (configured: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    let _lock = super::try_lock(&cfg.storage.path, bus).map_err(|e| match e {
        super::LockError::Busy { .. } => anyhow::anyhow!(
            "{e} — the running daemon owns this bus; stop cabinetd first (systemctl stop cabinetd)"
        ),
        e => e.into(),
    })?;
    let iface = match &bus_cfg.interface {
        DaliInterface::AtxHat { port } => {
            let port = port
                .to_str()
                .with_context(|| format!("port {} is not UTF-8", port.display()))?;
            Interface::AtxHat(AtxHat::open(port).with_context(|| format!("DALI bus {bus}"))?)
        }
        DaliInterface::Sim { luminaires } => Interface::open("sim", None, *luminaires)?.0,
    };
    let mut line = Bus::new(iface);
    let scope = if scope_all {
        Scope::All
    } else {
        Scope::Unaddressed
    };
    writeln!(
        out,
        "commissioning DALI bus {bus} ({}) …",
        if scope_all {
            "all gear: short addresses are given again"
        } else {
            "gear without a short address"
        }
    )?;
    let mut io_error = None;
    let report = commission(
        &mut line,
        Options {
            scope,
            ..Options::default()
        },
        |p| {
            let r = match p.phase {
                Phase::Searching => write!(
                    out,
                    "\rsearching: {} found, step {:2}, search address {:06X}",
                    p.found, p.step, p.search_address
                ),
                Phase::Programmed { address, random } => writeln!(
                    out,
                    "\rfound gear {}: random address {random:06X} → short address {address}   ",
                    p.found
                ),
                Phase::Rerandomised => writeln!(
                    out,
                    "\rtwo gear share random address {:06X}: randomising again",
                    p.search_address
                ),
                Phase::Done => writeln!(out, "\rsearch done: {} gear addressed          ", p.found),
            };
            if let Err(e) = r {
                io_error.get_or_insert(e);
            }
        },
    )
    .await
    .with_context(|| format!("commissioning DALI bus {bus} failed"))?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if report.assigned.is_empty() {
        writeln!(out, "no gear to address on {bus}")?;
    } else {
        writeln!(out, "short  random  gtin           serial  verified")?;
    }
    for a in &report.assigned {
        let id = line.identity(a.address).await.ok().flatten();
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "{:>5}  {:06X}  {:<13}  {:>6}  {}",
            a.address.get(),
            a.random,
            opt(id.as_ref().and_then(|i| i.gtin)),
            opt(id.as_ref().and_then(|i| i.serial)),
            if a.verified { "yes" } else { "NO" }
        )?;
    }
    if report.out_of_addresses {
        writeln!(
            out,
            "warning: all 64 short addresses are used; some gear are still unaddressed"
        )?;
    }
    writeln!(
        out,
        "{} gear addressed on {bus} ({} re-randomisations, {} bus transactions)",
        report.assigned.len(),
        report.rerandomised,
        report.transactions
    )?;
    Ok(())
}
