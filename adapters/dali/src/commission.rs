//! Commissioning: the random-address binary search that gives short
//! addresses to gear (IEC 62386-102, as py-dali `sequences.Commissioning`).
//!
//! Invariants: every gear that gets a short address was alone on its random
//! address (a framing error at the final COMPARE means two gear share it, and
//! the line is re-randomised instead of programming both); gear are found in
//! increasing random-address order, each is withdrawn once programmed, so the
//! search never finds the same gear twice; addresses are taken only from the
//! free pool (unanswered short addresses, or all 64 when re-addressing
//! everything); the line is always left with TERMINATE sent.

use std::time::Duration;

use crate::bus::Bus;
use crate::command::{Command, InitialiseScope, Query};
use crate::error::{Error, Result};
use crate::frame::{Address, ShortAddress};
use crate::transaction::{Reply, Transport};

const TOP: u32 = 0xFF_FFFF;
const MAX_LOST: u32 = 8;

/// Which gear take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only gear without a short address; existing addresses are kept.
    Unaddressed,
    /// Every gear: all short addresses are deleted first, then reassigned.
    All,
}

/// Commissioning options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Which gear take part.
    pub scope: Scope,
    /// How many times the line may be re-randomised after a shared random address.
    pub max_rerandomise: u32,
    /// Pause after RANDOMISE (the standard allows gear 100 ms).
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scope: Scope::Unaddressed,
            max_rerandomise: 5,
            settle: Duration::from_millis(100),
        }
    }
}

/// What the search is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bisecting: one COMPARE at `search_address`.
    Searching,
    /// A gear got a short address.
    Programmed {
        /// The short address given.
        address: ShortAddress,
        /// Its random address.
        random: u32,
    },
    /// Two gear shared a random address; the line was re-randomised.
    Rerandomised,
    /// Finished.
    Done,
}

/// Progress report passed to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Gear addressed so far.
    pub found: usize,
    /// COMPAREs of the current search (resets after each gear found).
    pub step: u32,
    /// Current search address.
    pub search_address: u32,
    /// Phase.
    pub phase: Phase,
}

/// One gear addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Short address given.
    pub address: ShortAddress,
    /// Random address it had.
    pub random: u32,
    /// VERIFY SHORT ADDRESS answered YES afterwards.
    pub verified: bool,
}

/// Outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Gear addressed, in the order found.
    pub assigned: Vec<Assignment>,
    /// Gear were left unaddressed because no short address was free.
    pub out_of_addresses: bool,
    /// Re-randomisations needed.
    pub rerandomised: u32,
    /// Bus transactions used.
    pub transactions: u64,
}

struct Search<'b, T> {
    bus: &'b mut Bus<T>,
    // What the gear hold in their search register, to skip unchanged bytes.
    current: Option<u32>,
}

impl<T: Transport> Search<'_, T> {
    async fn compare(&mut self, address: u32) -> Result<Reply> {
        let old = self.current;
        let byte = |v: u32, shift: u32| ((v >> shift) & 0xFF) as u8;
        for (shift, make) in [
            (16, Command::SearchAddrH as fn(u8) -> Command),
            (8, Command::SearchAddrM),
            (0, Command::SearchAddrL),
        ] {
            if old.map(|o| byte(o, shift)) != Some(byte(address, shift)) {
                self.bus.send(make(byte(address, shift))).await?;
            }
        }
        self.current = Some(address);
        self.bus.send(Command::Compare).await
    }
}

/// Runs commissioning on the line; `progress` is called after every COMPARE
/// of the search and at every gear found.
pub async fn commission<T: Transport>(
    bus: &mut Bus<T>,
    options: Options,
    mut progress: impl FnMut(Progress),
) -> Result<Report> {
    let start = bus.transactions();
    let mut report = Report::default();
    let result = run(bus, options, &mut progress, &mut report).await;
    // Close the addressing window whatever happened.
    let terminated = bus.send(Command::Terminate).await;
    result?;
    terminated?;
    report.transactions = bus.transactions() - start;
    progress(Progress {
        found: report.assigned.len(),
        step: 0,
        search_address: 0,
        phase: Phase::Done,
    });
    Ok(report)
}

async fn run<T: Transport>(
    bus: &mut Bus<T>,
    options: Options,
    progress: &mut impl FnMut(Progress),
    report: &mut Report,
) -> Result<()> {
    let mut free: Vec<ShortAddress> = match options.scope {
        Scope::Unaddressed => {
            let used = bus.scan().await?;
            ShortAddress::all().filter(|a| !used.contains(a)).collect()
        }
        Scope::All => {
            bus.send(Command::Dtr0(0xFF)).await?;
            bus.send(Command::SetShortAddress(Address::Broadcast))
                .await?;
            ShortAddress::all().collect()
        }
    };
    free.reverse(); // pop() hands out the lowest first
    bus.send(Command::Terminate).await?;
    let scope = match options.scope {
        Scope::Unaddressed => InitialiseScope::Unaddressed,
        Scope::All => InitialiseScope::All,
    };
    bus.send(Command::Initialise(scope)).await?;
    bus.send(Command::Randomise).await?;
    tokio::time::sleep(options.settle).await;

    let mut search = Search { bus, current: None };
    let mut low = 0u32;
    let mut lost = 0u32;
    loop {
        if !search.compare(TOP).await?.is_yes() {
            return Ok(());
        }
        let (mut lo, mut hi) = (low, TOP);
        let mut step = 0;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            step += 1;
            if search.compare(mid).await?.is_yes() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
            progress(Progress {
                found: report.assigned.len(),
                step,
                search_address: mid,
                phase: Phase::Searching,
            });
        }
        match search.compare(lo).await? {
            Reply::Collision => {
                if report.rerandomised >= options.max_rerandomise {
                    return Err(Error::Collision(format!(
                        "random address {lo:#08x} still shared after {} re-randomisations",
                        report.rerandomised
                    )));
                }
                report.rerandomised += 1;
                search.bus.send(Command::Randomise).await?;
                tokio::time::sleep(options.settle).await;
                progress(Progress {
                    found: report.assigned.len(),
                    step,
                    search_address: lo,
                    phase: Phase::Rerandomised,
                });
                low = 0;
                continue;
            }
            // The gear vanished mid-search: look again from the same bound,
            // a bounded number of times (an unstable line must not loop forever).
            Reply::NoAnswer => {
                lost += 1;
                if lost > MAX_LOST {
                    return Err(Error::Protocol(format!(
                        "COMPARE answers are inconsistent ({lost} gear lost mid-search)"
                    )));
                }
                continue;
            }
            Reply::Answer(_) => {}
        }
        let Some(address) = free.pop() else {
            report.out_of_addresses = true;
            return Ok(());
        };
        search
            .bus
            .send(Command::ProgramShortAddress(Some(address)))
            .await?;
        let verified = search
            .bus
            .send(Command::VerifyShortAddress(address))
            .await?
            .is_yes();
        if !verified {
            tracing::warn!(%address, random = lo, "VERIFY SHORT ADDRESS failed after programming");
        }
        search.bus.send(Command::Withdraw).await?;
        report.assigned.push(Assignment {
            address,
            random: lo,
            verified,
        });
        progress(Progress {
            found: report.assigned.len(),
            step,
            search_address: lo,
            phase: Phase::Programmed {
                address,
                random: lo,
            },
        });
        if lo == TOP {
            return Ok(());
        }
        low = lo + 1;
    }
}

/// Reads a gear's random address (H, M, L queries); for diagnostics.
pub async fn random_address<T: Transport>(
    bus: &mut Bus<T>,
    address: ShortAddress,
) -> Result<Option<u32>> {
    let a = Address::Short(address);
    let mut v = 0u32;
    for q in [
        Query::RandomAddressH,
        Query::RandomAddressM,
        Query::RandomAddressL,
    ] {
        let Some(b) = bus.query_value(a, q).await? else {
            return Ok(None);
        };
        v = (v << 8) | u32::from(b);
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimBus, SimGear};

    #[tokio::test(start_paused = true)]
    async fn addresses_unaddressed_gear_uniquely() {
        let (sim, h) = SimBus::with_gear(2, 5);
        let mut bus = Bus::new(sim);
        let mut seen = Vec::new();
        let report = commission(&mut bus, Options::default(), |p| seen.push(p))
            .await
            .unwrap();
        assert_eq!(report.assigned.len(), 5);
        assert!(report.assigned.iter().all(|a| a.verified));
        let mut shorts: Vec<_> = h.all_gear().iter().map(|g| g.short.unwrap()).collect();
        shorts.sort_unstable();
        assert_eq!(shorts, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(seen
            .iter()
            .any(|p| p.phase == Phase::Searching && p.step > 0));
        assert_eq!(seen.last().unwrap().phase, Phase::Done);
        assert_eq!(seen.last().unwrap().found, 5);
        // Randoms reported are the gear's own.
        for a in &report.assigned {
            let r = random_address(&mut bus, a.address).await.unwrap();
            assert_eq!(r, Some(a.random));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shared_random_address_is_rerandomised() {
        let mut g1 = SimGear::new(None, 1);
        let mut g2 = SimGear::new(None, 2);
        // The simulated RANDOMISE derives the new value from (random, serial),
        // so two gear with equal pairs always share their random address.
        g1.random = 0x123456;
        g2.random = 0x123456;
        g2.serial = 1;
        let (sim, h) = SimBus::new(vec![g1, g2]);
        let mut bus = Bus::new(sim);
        let report = commission(&mut bus, Options::default(), |_| {}).await;
        // Identical (random, serial) pairs never diverge: the run must give up
        // with a collision rather than program both to one address.
        assert!(matches!(report, Err(Error::Collision(_))), "{report:?}");
        assert!(h.all_gear().iter().all(|g| g.short.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn readdress_all_and_run_out_of_addresses() {
        let (sim, h) = SimBus::with_gear(3, 0);
        let mut bus = Bus::new(sim);
        let opts = Options {
            scope: Scope::All,
            ..Options::default()
        };
        let report = commission(&mut bus, opts, |_| {}).await.unwrap();
        assert_eq!(report.assigned.len(), 3);
        assert!(!report.out_of_addresses);
        let shorts: std::collections::BTreeSet<_> =
            h.all_gear().iter().map(|g| g.short.unwrap()).collect();
        assert_eq!(shorts.len(), 3);

        let (sim, h) = SimBus::with_gear(63, 2);
        let mut bus = Bus::new(sim);
        let report = commission(&mut bus, Options::default(), |_| {})
            .await
            .unwrap();
        assert_eq!(report.assigned.len(), 1);
        assert!(report.out_of_addresses);
        assert_eq!(h.all_gear().iter().filter(|g| g.short.is_none()).count(), 1);
    }
}
