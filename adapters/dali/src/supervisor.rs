//! The supervisor: turns the polls of a [`Bus`] into change events, once per state transition
//! (gear found or missing, lamp and gear failure, collision), and spreads the slow memory-bank
//! reads (energy, diagnostics) over poll cycles. Daemon-agnostic: no records, no config types.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::frame::ShortAddress;
use crate::transaction::Transport;

/// A change seen by the [`Supervisor`], emitted once per transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A gear answers (first time, or again after being missing).
    GearFound {
        /// Short address.
        address: ShortAddress,
    },
    /// A watched gear stopped answering.
    GearMissing {
        /// Short address.
        address: ShortAddress,
    },
    /// Lamp failure appeared (`active`) or cleared.
    LampFailure {
        /// Short address.
        address: ShortAddress,
        /// True when the failure appeared.
        active: bool,
    },
    /// Control gear failure appeared (`active`) or cleared.
    GearFailure {
        /// Short address.
        address: ShortAddress,
        /// True when the failure appeared.
        active: bool,
    },
    /// Several gear answered a query to one short address (duplicate address);
    /// `active` false when single answers return.
    Collision {
        /// Short address.
        address: ShortAddress,
        /// True when the collision appeared.
        active: bool,
    },
}

/// Values of one gear after a poll cycle. `power_w`, `energy_wh` and
/// `operating_hours` are `Some` only in cycles where the banks were read
/// (every [`SupervisorConfig::energy_interval`]) and the gear implements them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GearSample {
    /// Short address.
    pub address: ShortAddress,
    /// Answered this cycle.
    pub present: bool,
    /// Level, % of full output (`None` if absent, failed, or collided).
    pub level_percent: Option<f64>,
    /// Lamp failure bit (`None` if absent).
    pub lamp_failure: Option<bool>,
    /// Control gear failure bit (`None` if absent).
    pub gear_failure: Option<bool>,
    /// Active power, W (bank 202).
    pub power_w: Option<f64>,
    /// Active energy, Wh (bank 202).
    pub energy_wh: Option<f64>,
    /// Operating time, h (bank 205).
    pub operating_hours: Option<f64>,
}

/// Result of one poll cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle {
    /// One sample per watched gear, by short address.
    pub samples: Vec<GearSample>,
    /// Transitions seen in this cycle.
    pub events: Vec<Event>,
    /// Bus transactions the cycle cost.
    pub transactions: u64,
}

/// Supervisor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// How often banks 202/205 are read per gear (default 15 min).
    pub energy_interval: Duration,
    /// At most this many gear get their banks read in one cycle (default 4),
    /// so a cycle stays short on a slow line; the others wait for later cycles.
    pub max_bank_reads_per_cycle: usize,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            energy_interval: Duration::from_secs(15 * 60),
            max_bank_reads_per_cycle: 4,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tracked {
    present: Option<bool>,
    lamp_failure: bool,
    gear_failure: bool,
    collision: bool,
    last_banks: Option<Instant>,
}

/// Keeps the last known state of each watched gear and reports transitions.
#[derive(Debug, Default)]
pub struct Supervisor {
    config: SupervisorConfig,
    gear: BTreeMap<ShortAddress, Tracked>,
}

impl Supervisor {
    /// A supervisor watching nothing yet.
    pub fn new(config: SupervisorConfig) -> Self {
        Supervisor {
            config,
            gear: BTreeMap::new(),
        }
    }

    /// Adds short addresses to watch (e.g. from configuration or discovery).
    pub fn watch(&mut self, addresses: impl IntoIterator<Item = ShortAddress>) {
        for a in addresses {
            self.gear.entry(a).or_default();
        }
    }

    /// Watched addresses.
    pub fn watched(&self) -> Vec<ShortAddress> {
        self.gear.keys().copied().collect()
    }

    /// Scans the line, watches every gear found and reports found/missing
    /// transitions.
    pub async fn discover<T: Transport>(&mut self, bus: &mut Bus<T>) -> Result<Vec<Event>> {
        let found = bus.scan().await?;
        self.watch(found.iter().copied());
        let mut events = Vec::new();
        for (a, t) in self.gear.iter_mut() {
            presence(*a, t, found.contains(a), &mut events);
        }
        Ok(events)
    }

    /// Polls every watched gear once (≤ 2 queries each), reads the energy and
    /// diagnostics banks of those due, and reports transitions.
    pub async fn poll_cycle<T: Transport>(
        &mut self,
        bus: &mut Bus<T>,
        now: Instant,
    ) -> Result<Cycle> {
        let start = bus.transactions();
        let mut events = Vec::new();
        let mut samples = Vec::new();
        let mut bank_reads = 0;
        for (&address, t) in self.gear.iter_mut() {
            let mut sample = GearSample {
                address,
                present: false,
                level_percent: None,
                lamp_failure: None,
                gear_failure: None,
                power_w: None,
                energy_wh: None,
                operating_hours: None,
            };
            let polled = match bus.poll_gear(address).await {
                Ok(p) => Some(p),
                Err(Error::Collision(_)) => None,
                Err(e) => return Err(e),
            };
            let Some(p) = polled else {
                // Someone answered, so the address is populated — twice over.
                sample.present = true;
                if !t.collision {
                    t.collision = true;
                    events.push(Event::Collision {
                        address,
                        active: true,
                    });
                }
                samples.push(sample);
                continue;
            };
            if t.collision {
                t.collision = false;
                events.push(Event::Collision {
                    address,
                    active: false,
                });
            }
            presence(address, t, p.present, &mut events);
            sample.present = p.present;
            if let Some(s) = p.status {
                sample.level_percent = p.level_percent;
                sample.lamp_failure = Some(s.lamp_failure);
                sample.gear_failure = Some(s.gear_failure);
                if s.lamp_failure != t.lamp_failure {
                    t.lamp_failure = s.lamp_failure;
                    events.push(Event::LampFailure {
                        address,
                        active: s.lamp_failure,
                    });
                }
                if s.gear_failure != t.gear_failure {
                    t.gear_failure = s.gear_failure;
                    events.push(Event::GearFailure {
                        address,
                        active: s.gear_failure,
                    });
                }
                let due = t
                    .last_banks
                    .is_none_or(|at| now.duration_since(at) >= self.config.energy_interval);
                if due && bank_reads < self.config.max_bank_reads_per_cycle {
                    bank_reads += 1;
                    t.last_banks = Some(now);
                    match bus.energy(address).await {
                        Ok(Some(e)) => {
                            sample.power_w = e.power_w;
                            sample.energy_wh = e.energy_wh;
                        }
                        Ok(None) | Err(Error::Collision(_)) => {}
                        Err(e) => return Err(e),
                    }
                    match bus.operating_hours(address).await {
                        Ok(h) => sample.operating_hours = h,
                        Err(Error::Collision(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            samples.push(sample);
        }
        Ok(Cycle {
            samples,
            events,
            transactions: bus.transactions() - start,
        })
    }
}

fn presence(address: ShortAddress, t: &mut Tracked, present: bool, events: &mut Vec<Event>) {
    if t.present == Some(present) {
        return;
    }
    // A gear never seen and absent is reported missing too: it was watched.
    t.present = Some(present);
    events.push(if present {
        Event::GearFound { address }
    } else {
        Event::GearMissing { address }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimBus, SimGear};

    fn sa(n: u8) -> ShortAddress {
        ShortAddress::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn supervisor_events_once_per_transition() {
        let (sim, h) = SimBus::with_gear(3, 0);
        let mut bus = Bus::new(sim);
        let mut sup = Supervisor::new(SupervisorConfig::default());
        let ev = sup.discover(&mut bus).await.unwrap();
        assert_eq!(ev.len(), 3);
        let t0 = Instant::now();
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert!(c.events.is_empty());
        assert!(c
            .samples
            .iter()
            .all(|s| s.energy_wh.is_some() && s.operating_hours.is_some()));
        // Second cycle: banks not due, 2 queries per lit gear.
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(c.transactions, 6);
        assert!(c.samples.iter().all(|s| s.energy_wh.is_none()));

        h.set_lamp_failure(1, true);
        h.set_connected(2, false);
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(
            c.events,
            vec![
                Event::LampFailure {
                    address: sa(1),
                    active: true
                },
                Event::GearMissing { address: sa(2) },
            ]
        );
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert!(c.events.is_empty(), "{:?}", c.events);

        h.add_gear(SimGear::new(Some(0), 99));
        h.set_connected(2, true);
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(
            c.events,
            vec![
                Event::Collision {
                    address: sa(0),
                    active: true
                },
                Event::GearFound { address: sa(2) },
            ]
        );
        h.set_gear_failure(1, true);
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(
            c.events,
            vec![Event::GearFailure {
                address: sa(1),
                active: true
            }]
        );
        assert_eq!(c.samples[1].gear_failure, Some(true));
        let later = t0 + Duration::from_secs(15 * 60);
        let c = sup.poll_cycle(&mut bus, later).await.unwrap();
        assert!(c.events.is_empty());
        assert!(c.samples[2].power_w.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn bank_reads_are_spread_over_cycles() {
        let (sim, _h) = SimBus::with_gear(6, 0);
        let mut bus = Bus::new(sim);
        let mut sup = Supervisor::new(SupervisorConfig {
            energy_interval: Duration::from_secs(60),
            max_bank_reads_per_cycle: 4,
        });
        sup.discover(&mut bus).await.unwrap();
        let t0 = Instant::now();
        let read = |c: &Cycle| -> Vec<u8> {
            c.samples
                .iter()
                .filter(|s| s.energy_wh.is_some())
                .map(|s| s.address.get())
                .collect()
        };
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(read(&c), vec![0, 1, 2, 3]);
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert_eq!(read(&c), vec![4, 5]);
        let c = sup.poll_cycle(&mut bus, t0).await.unwrap();
        assert!(read(&c).is_empty());
        let c = sup
            .poll_cycle(&mut bus, t0 + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(read(&c), vec![0, 1, 2, 3]);
    }
}
