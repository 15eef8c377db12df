//! In-process simulated DALI line: N control gear behind a [`Transport`].
//!
//! For the demo cabinet (`interface = "sim"`) and fast unit tests. Fades are
//! instant. Configuration commands (and INITIALISE/RANDOMISE) act only when the
//! identical frame arrives twice in a row within 100 ms, as on a real line, so
//! a driver that forgets send-twice fails here too. Energy (bank 202) accrues
//! from each gear's power over `tokio::time::Instant` time, so a paused test
//! clock drives it deterministically. Faults (lamp failure, gear failure,
//! removal, a duplicate short address) are injected through [`SimHandle`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::command::arc_to_percent;
use crate::error::Result;
use crate::frame::{Address, ForwardFrame, Frame16};
use crate::memory::{BANK_ENERGY, BANK_GEAR_DIAGNOSTICS, BANK_IDENTITY};
use crate::transaction::{Reply, Request, Transport};

const YES: u8 = 0xFF;
const SEND_TWICE_WINDOW: Duration = Duration::from_millis(100);

/// One simulated control gear (DT6 LED driver with D4i banks 0, 202, 205).
#[derive(Debug, Clone, PartialEq)]
pub struct SimGear {
    /// Short address (`None` = unaddressed).
    pub short: Option<u8>,
    /// Group membership bitmap (bit g = group g).
    pub groups: u16,
    /// Actual arc level.
    pub level: u8,
    /// MIN LEVEL.
    pub min_level: u8,
    /// MAX LEVEL.
    pub max_level: u8,
    /// PHYSICAL MINIMUM.
    pub physical_min: u8,
    /// POWER ON LEVEL.
    pub power_on_level: u8,
    /// SYSTEM FAILURE LEVEL.
    pub system_failure_level: u8,
    /// FADE TIME code.
    pub fade_time: u8,
    /// FADE RATE code.
    pub fade_rate: u8,
    /// Scene levels (255 = not in scene).
    pub scenes: [u8; 16],
    /// 24-bit random address.
    pub random: u32,
    /// Lamp failure (injected).
    pub lamp_failure: bool,
    /// Control gear failure (injected).
    pub gear_failure: bool,
    /// Connected to the line (false = removed, answers nothing).
    pub connected: bool,
    /// Rated power at 100 %, W.
    pub rated_w: f64,
    /// Active energy counter, Wh.
    pub energy_wh: f64,
    /// Operating time, s.
    pub operating_s: f64,
    /// GTIN (bank 0).
    pub gtin: u64,
    /// Serial number (bank 0).
    pub serial: u64,
    dtr: [u8; 3],
    search: u32,
    initialising: bool,
    withdrawn: bool,
    write_enabled: bool,
    limit_error: bool,
    reset_state: bool,
    power_cycle_seen: bool,
}

impl SimGear {
    /// A healthy, powered-up gear at full level.
    pub fn new(short: Option<u8>, serial: u64) -> Self {
        SimGear {
            short,
            groups: 0,
            level: 254,
            min_level: 1,
            max_level: 254,
            physical_min: 1,
            power_on_level: 254,
            system_failure_level: 254,
            fade_time: 0,
            fade_rate: 7,
            scenes: [255; 16],
            // Deterministic, distinct per serial, spread over 24 bits.
            random: u32::try_from(serial.wrapping_mul(0x9E_3779).wrapping_add(0x1234) & 0xFF_FFFF)
                .unwrap_or(0),
            lamp_failure: false,
            gear_failure: false,
            connected: true,
            rated_w: 100.0,
            energy_wh: 1000.0,
            operating_s: 3600.0 * 1000.0,
            gtin: 1_234_567_654_321,
            serial,
            dtr: [0; 3],
            search: 0xFF_FFFF,
            initialising: false,
            withdrawn: false,
            write_enabled: false,
            limit_error: false,
            reset_state: false,
            power_cycle_seen: true,
        }
    }

    /// Active power now, W.
    pub fn power_w(&self) -> f64 {
        if self.lamp_failure || self.level == 0 {
            0.5
        } else {
            self.rated_w * arc_to_percent(self.level).unwrap_or(0.0) / 100.0
        }
    }

    fn status(&self) -> u8 {
        let bits = [
            self.gear_failure,
            self.lamp_failure,
            self.level > 0 && !self.lamp_failure,
            self.limit_error,
            false,
            self.reset_state,
            self.short.is_none(),
            self.power_cycle_seen,
        ];
        bits.iter()
            .enumerate()
            .fold(0, |acc, (i, on)| acc | (u8::from(*on) << i))
    }

    fn addressed(&self, a: Address) -> bool {
        match a {
            Address::Short(s) => self.short == Some(s.get()),
            Address::Group(g) => self.groups & (1 << g.get()) != 0,
            Address::Broadcast => true,
            Address::BroadcastUnaddressed => self.short.is_none(),
        }
    }

    fn set_level(&mut self, wanted: u8) {
        self.power_cycle_seen = false;
        self.reset_state = false;
        match wanted {
            255 => {}
            0 => {
                self.level = 0;
                self.limit_error = false;
            }
            n => {
                let clamped = n.clamp(self.min_level, self.max_level);
                self.limit_error = clamped != n;
                self.level = clamped;
            }
        }
    }

    fn bank_byte(&self, bank: u8, offset: u8) -> Option<u8> {
        let be = |v: u64, len: usize, at: usize| -> u8 {
            let shift = 8 * (len - 1 - at);
            ((v >> shift) & 0xFF) as u8
        };
        let o = usize::from(offset);
        match bank {
            BANK_IDENTITY => match o {
                0 => Some(0x1A),
                1 => Some(0xFF),
                2 => Some(BANK_GEAR_DIAGNOSTICS),
                3..=8 => Some(be(self.gtin, 6, o - 3)),
                9 => Some(1),
                10 => Some(0),
                11..=18 => Some(be(self.serial, 8, o - 11)),
                19 => Some(2),
                20 => Some(1),
                21 | 22 => Some(8),
                23 => Some(0xFF),
                24 => Some(0),
                25 => Some(1),
                26 => Some(0),
                _ => None,
            },
            BANK_ENERGY => match o {
                0 => Some(0x0F),
                1 => Some(0xFF),
                2 => Some(0),
                3 => Some(1),
                4 => Some(0), // energy scale 10^0 Wh
                5..=10 => Some(be(self.energy_wh as u64, 6, o - 5)),
                11 => Some(0xFF), // power scale 10^-1 W
                12..=15 => Some(be((self.power_w() * 10.0).round() as u64, 4, o - 12)),
                _ => None,
            },
            BANK_GEAR_DIAGNOSTICS => match o {
                0 => Some(0x1C),
                1 => Some(0xFF),
                2 => Some(0),
                3 => Some(1),
                4..=7 => Some(be(self.operating_s as u64, 4, o - 4)),
                8..=10 => Some(be(42, 3, o - 8)),
                11..=12 => Some(be(2300, 2, o - 11)),
                13 => Some(50),
                14 => Some(95),
                15 => Some(u8::from(self.gear_failure)),
                0x1B => Some(60 + 35),
                16..=0x1C => Some(0),
                _ => None,
            },
            _ => None,
        }
    }

    /// Handles one delivered frame; returns the backward frame, if any.
    /// `twice` is true when this is the second copy of a send-twice frame.
    fn receive(&mut self, f: Frame16, twice: bool) -> Option<u8> {
        if !self.connected {
            return None;
        }
        if self.write_enabled && !matches!(f.address, 0xA3 | 0xC3 | 0xC5 | 0xC7 | 0xC9) {
            self.write_enabled = false;
        }
        match Address::from_byte(f.address) {
            Some((a, selector)) => {
                if !self.addressed(a) {
                    return None;
                }
                if !selector {
                    self.set_level(f.data);
                    return None;
                }
                self.command(f.data, twice)
            }
            None => self.special(f.address, f.data, twice),
        }
    }

    fn command(&mut self, op: u8, twice: bool) -> Option<u8> {
        let dtr0 = self.dtr[0];
        let yes = |b: bool| if b { Some(YES) } else { None };
        match op {
            0x00 => self.set_level(0),
            0x01 | 0x02 => {}
            0x03 if self.level > 0 => self.set_level(self.level.saturating_add(1).min(254)),
            0x04 if self.level > 0 => self.set_level(self.level - 1),
            0x05 => self.set_level(self.max_level),
            0x06 => self.set_level(self.min_level),
            0x07 if self.level > 0 => {
                let n = if self.level <= self.min_level {
                    0
                } else {
                    self.level - 1
                };
                self.set_level(n)
            }
            0x08 if self.level == 0 => self.set_level(self.min_level),
            0x10..=0x1F => {
                let s = self.scenes[usize::from(op & 0x0F)];
                if s != 255 {
                    self.set_level(s)
                }
            }
            0x20..=0x81 if !twice => {}
            0x20 => {
                self.level = 254;
                self.min_level = self.physical_min;
                self.max_level = 254;
                self.power_on_level = 254;
                self.system_failure_level = 254;
                self.fade_time = 0;
                self.fade_rate = 7;
                self.scenes = [255; 16];
                self.groups = 0;
                self.reset_state = true;
                self.power_cycle_seen = false;
            }
            0x21 => self.dtr[0] = self.level,
            0x2A => self.max_level = dtr0.clamp(self.min_level, 254),
            0x2B => self.min_level = dtr0.clamp(self.physical_min, self.max_level),
            0x2C => self.system_failure_level = dtr0,
            0x2D => self.power_on_level = dtr0,
            0x2E => self.fade_time = dtr0.min(15),
            0x2F => self.fade_rate = dtr0.clamp(1, 15),
            0x40..=0x4F => self.scenes[usize::from(op & 0x0F)] = dtr0,
            0x50..=0x5F => self.scenes[usize::from(op & 0x0F)] = 255,
            0x60..=0x6F => self.groups |= 1 << (op & 0x0F),
            0x70..=0x7F => self.groups &= !(1 << (op & 0x0F)),
            0x80 => {
                if dtr0 == 0xFF {
                    self.short = None
                } else if dtr0 & 0x81 == 1 {
                    self.short = Some(dtr0 >> 1)
                }
            }
            0x81 => self.write_enabled = true,
            0x90 => return Some(self.status()),
            0x91 => return Some(YES),
            0x92 => return yes(self.lamp_failure),
            0x93 => return yes(self.level > 0 && !self.lamp_failure),
            0x94 => return yes(self.limit_error),
            0x95 => return yes(self.reset_state),
            0x96 => return yes(self.short.is_none()),
            0x97 => return Some(8),
            0x98 => return Some(self.dtr[0]),
            0x99 => return Some(6),
            0x9A => return Some(self.physical_min),
            0x9B => return yes(self.power_cycle_seen),
            0x9C => return Some(self.dtr[1]),
            0x9D => return Some(self.dtr[2]),
            0xA0 => return Some(if self.lamp_failure { 255 } else { self.level }),
            0xA1 => return Some(self.max_level),
            0xA2 => return Some(self.min_level),
            0xA3 => return Some(self.power_on_level),
            0xA4 => return Some(self.system_failure_level),
            0xA5 => return Some((self.fade_time << 4) | self.fade_rate),
            0xAA => return yes(self.gear_failure),
            0xB0..=0xBF => return Some(self.scenes[usize::from(op & 0x0F)]),
            0xC0 => return Some((self.groups & 0xFF) as u8),
            0xC1 => return Some((self.groups >> 8) as u8),
            0xC2 => return Some((self.random >> 16) as u8),
            0xC3 => return Some((self.random >> 8) as u8),
            0xC4 => return Some(self.random as u8),
            0xC5 => {
                let r = self.bank_byte(self.dtr[1], self.dtr[0]);
                if self.bank_byte(self.dtr[1], 0).is_some() {
                    self.dtr[0] = self.dtr[0].saturating_add(1);
                }
                return r;
            }
            _ => {}
        }
        None
    }

    fn special(&mut self, cmd: u8, data: u8, twice: bool) -> Option<u8> {
        let selected = self.initialising && !self.withdrawn;
        match cmd {
            0xA1 => {
                self.initialising = false;
                self.withdrawn = false;
            }
            0xA3 => self.dtr[0] = data,
            0xA5 if twice => {
                let reacts = match data {
                    0x00 => true,
                    0xFF => self.short.is_none(),
                    d => self.short.is_some() && Some(d >> 1) == self.short && d & 1 == 1,
                };
                if reacts {
                    self.initialising = true;
                    self.withdrawn = false;
                }
            }
            0xA7 if twice && self.initialising => {
                self.random = next_random(self.random, self.serial);
            }
            0xA9 if selected && self.random <= self.search => return Some(YES),
            0xAB if self.initialising && self.random == self.search => self.withdrawn = true,
            0xB1 => self.search = (self.search & 0x00FFFF) | (u32::from(data) << 16),
            0xB3 => self.search = (self.search & 0xFF00FF) | (u32::from(data) << 8),
            0xB5 => self.search = (self.search & 0xFFFF00) | u32::from(data),
            0xB7 if self.initialising && self.random == self.search => {
                if data == 0xFF {
                    self.short = None
                } else if data & 0x81 == 1 {
                    self.short = Some(data >> 1)
                }
            }
            0xB9 if self.initialising && self.short.map(|s| (s << 1) | 1) == Some(data) => {
                return Some(YES)
            }
            0xBB if selected && self.random == self.search => {
                return Some(self.short.map_or(0xFF, |s| (s << 1) | 1))
            }
            0xC3 => self.dtr[1] = data,
            0xC5 => self.dtr[2] = data,
            _ => {}
        }
        None
    }

    fn accrue(&mut self, dt: Duration) {
        let h = dt.as_secs_f64() / 3600.0;
        self.energy_wh += self.power_w() * h;
        self.operating_s += dt.as_secs_f64();
    }
}

fn next_random(prev: u32, serial: u64) -> u32 {
    // xorshift on (previous, serial): deterministic yet different per gear.
    let mut x = u64::from(prev) ^ serial.rotate_left(17) ^ 0x2545_F491_4F6C_DD1D;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x & 0xFF_FFFF) as u32
}

fn is_send_twice(f: Frame16) -> bool {
    match Address::from_byte(f.address) {
        Some((_, true)) => (0x20..=0x81).contains(&f.data),
        Some((_, false)) => false,
        None => matches!(f.address, 0xA5 | 0xA7),
    }
}

#[derive(Debug)]
struct State {
    gear: Vec<SimGear>,
    armed: Option<(Frame16, Instant)>,
    last_accrual: Instant,
    transactions: u64,
}

impl State {
    fn deliver(&mut self, f: Frame16) -> Reply {
        let now = Instant::now();
        let twice_type = is_send_twice(f);
        let second = twice_type
            && matches!(self.armed, Some((prev, at)) if prev == f && now - at <= SEND_TWICE_WINDOW);
        self.armed = if twice_type && !second {
            Some((f, now))
        } else {
            None
        };
        let answers: Vec<u8> = self
            .gear
            .iter_mut()
            .filter_map(|g| g.receive(f, second))
            .collect();
        match answers.as_slice() {
            [] => Reply::NoAnswer,
            [one] => Reply::Answer(*one),
            _ => Reply::Collision,
        }
    }

    fn accrue(&mut self) {
        let now = Instant::now();
        let dt = now - self.last_accrual;
        self.last_accrual = now;
        for g in &mut self.gear {
            if g.connected {
                g.accrue(dt);
            }
        }
    }
}

/// The simulated line, usable as a [`Transport`].
#[derive(Debug, Clone)]
pub struct SimBus {
    state: Arc<Mutex<State>>,
}

/// Fault injection and inspection of a [`SimBus`].
#[derive(Debug, Clone)]
pub struct SimHandle {
    state: Arc<Mutex<State>>,
}

impl SimBus {
    /// A line with the given gear.
    pub fn new(gear: Vec<SimGear>) -> (SimBus, SimHandle) {
        let state = Arc::new(Mutex::new(State {
            gear,
            armed: None,
            last_accrual: Instant::now(),
            transactions: 0,
        }));
        (
            SimBus {
                state: state.clone(),
            },
            SimHandle { state },
        )
    }

    /// A line of `addressed` gear on short addresses 0.. and `unaddressed`
    /// more gear without short address (serials 1..).
    pub fn with_gear(addressed: u8, unaddressed: u8) -> (SimBus, SimHandle) {
        let mut gear = Vec::new();
        for i in 0..addressed {
            gear.push(SimGear::new(Some(i), u64::from(i) + 1));
        }
        for j in 0..unaddressed {
            gear.push(SimGear::new(None, u64::from(addressed) + u64::from(j) + 1));
        }
        SimBus::new(gear)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock only happens in a failing test; the
    // state is still usable for reporting.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport for SimBus {
    async fn transact(&mut self, request: Request) -> Result<Reply> {
        let mut st = lock(&self.state);
        st.transactions += 1;
        st.accrue();
        Ok(match request.frame {
            ForwardFrame::Gear(f) => {
                let first = st.deliver(f);
                if request.send_twice {
                    st.deliver(f)
                } else {
                    first
                }
            }
            // No control devices on the simulated line.
            ForwardFrame::Device(_) => Reply::NoAnswer,
        })
    }
}

impl SimHandle {
    fn with_gear<R>(&self, short: u8, f: impl FnOnce(&mut SimGear) -> R) -> Option<R> {
        let mut st = lock(&self.state);
        st.gear.iter_mut().find(|g| g.short == Some(short)).map(f)
    }

    /// Sets or clears a lamp failure; false if no gear has that address.
    pub fn set_lamp_failure(&self, short: u8, on: bool) -> bool {
        self.with_gear(short, |g| g.lamp_failure = on).is_some()
    }

    /// Sets or clears a control gear failure.
    pub fn set_gear_failure(&self, short: u8, on: bool) -> bool {
        self.with_gear(short, |g| g.gear_failure = on).is_some()
    }

    /// Disconnects (false) or reconnects (true) a gear.
    pub fn set_connected(&self, short: u8, on: bool) -> bool {
        self.with_gear(short, |g| g.connected = on).is_some()
    }

    /// Cuts (false) or restores (true) the bus power: while cut no gear answers, and every gear
    /// goes to its SYSTEM FAILURE LEVEL (IEC 62386-102) and stays there when the power returns,
    /// until it is told a level again.
    pub fn set_bus_power(&self, on: bool) {
        let mut st = lock(&self.state);
        for g in st.gear.iter_mut() {
            g.connected = on;
            if !on && g.system_failure_level != 255 {
                g.level = g.system_failure_level;
            }
        }
    }

    /// Adds a gear to the line (e.g. a second one on a used short address).
    pub fn add_gear(&self, gear: SimGear) {
        lock(&self.state).gear.push(gear);
    }

    /// A copy of the gear with that short address (first one found).
    pub fn gear(&self, short: u8) -> Option<SimGear> {
        self.with_gear(short, |g| g.clone())
    }

    /// Copies of every gear, in line order.
    pub fn all_gear(&self) -> Vec<SimGear> {
        lock(&self.state).gear.clone()
    }

    /// Transactions run so far.
    pub fn transactions(&self) -> u64 {
        lock(&self.state).transactions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Query};
    use crate::transaction::Request;

    fn a(n: u8) -> Address {
        Address::short(n).unwrap()
    }

    async fn run(bus: &mut SimBus, c: Command) -> Reply {
        bus.transact(Request::from_command(&c)).await.unwrap()
    }

    #[tokio::test]
    async fn levels_groups_and_queries() {
        let (mut bus, h) = SimBus::with_gear(3, 0);
        run(&mut bus, Command::Dapc(a(1), 229)).await;
        assert_eq!(
            run(&mut bus, Command::Query(a(1), Query::ActualLevel)).await,
            Reply::Answer(229)
        );
        run(
            &mut bus,
            Command::AddToGroup(a(2), crate::frame::GroupAddress::new(4).unwrap()),
        )
        .await;
        assert_eq!(h.gear(2).unwrap().groups, 1 << 4);
        run(&mut bus, Command::Off(Address::group(4).unwrap())).await;
        assert_eq!(h.gear(2).unwrap().level, 0);
        assert_eq!(h.gear(0).unwrap().level, 254);
        assert_eq!(
            run(
                &mut bus,
                Command::Query(Address::Broadcast, Query::ActualLevel)
            )
            .await,
            Reply::Collision
        );
        assert_eq!(
            run(&mut bus, Command::Query(a(9), Query::Status)).await,
            Reply::NoAnswer
        );
    }

    #[tokio::test]
    async fn config_needs_two_copies() {
        let (mut bus, h) = SimBus::with_gear(1, 0);
        run(&mut bus, Command::Dtr0(100)).await;
        bus.transact(Request::once(&Command::SetPowerOnLevel(a(0))))
            .await
            .unwrap();
        assert_eq!(h.gear(0).unwrap().power_on_level, 254);
        run(&mut bus, Command::SetPowerOnLevel(a(0))).await;
        assert_eq!(h.gear(0).unwrap().power_on_level, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn energy_follows_power_over_time() {
        let (mut bus, h) = SimBus::with_gear(1, 0);
        run(&mut bus, Command::Dapc(a(0), 229)).await; // 50.53 %
        let before = h.gear(0).unwrap().energy_wh;
        tokio::time::advance(Duration::from_secs(3600)).await;
        run(&mut bus, Command::Query(a(0), Query::Status)).await;
        let after = h.gear(0).unwrap().energy_wh;
        assert!((after - before - 50.53).abs() < 0.1, "{}", after - before);
    }
}
