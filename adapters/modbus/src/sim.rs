//! A simulated three-phase energy meter for the demo cabinet (no hardware needed).
//!
//! [`serve_energy_meter`] serves Modbus TCP (any unit id is answered) on the given listener.
//! Values follow a smooth pattern that changes every second; energy integrates active power,
//! so it only ever increases. Switching the relay coil off drops the currents and the power to
//! zero (the counter then stands still).
//!
//! # Register map
//!
//! All addresses 0-based; multi-register values most significant word first (`word_order =
//! "big"`).
//!
//! | name             | table    | address | type | scale | unit | notes                          |
//! |------------------|----------|---------|------|-------|------|--------------------------------|
//! | `voltage_l1`     | input    | 0       | u16  | 0.1   | V    | ≈ 230 V                        |
//! | `voltage_l2`     | input    | 1       | u16  | 0.1   | V    |                                |
//! | `voltage_l3`     | input    | 2       | u16  | 0.1   | V    |                                |
//! | `current_l1`     | input    | 3       | u16  | 0.01  | A    | ≈ 2–3 A with the relay on      |
//! | `current_l2`     | input    | 4       | u16  | 0.01  | A    |                                |
//! | `current_l3`     | input    | 5       | u16  | 0.01  | A    |                                |
//! | `active_power`   | input    | 6–7     | f32  | 1     | W    | sum of the phases, ≈ 1.4–2 kW  |
//! | `energy`         | input    | 8–9     | u32  | 1     | Wh   | counter, starts at 1 250 000   |
//! | `frequency`      | input    | 10      | u16  | 0.01  | Hz   | ≈ 50 Hz                        |
//! | `power_factor`   | input    | 11      | i16  | 0.001 |      | ≈ 0.95                         |
//! | `power_limit`    | holding  | 0       | u16  | 1     | W    | writable setpoint, 0–10000, initially 5000 |
//! | `relay`          | coil     | 0       | bool |       |      | writable, on at start          |
//! | `door_open`      | discrete | 0       | bool |       |      | always false                   |
//!
//! Reads or writes outside these addresses answer exception 2 (illegal data address); writes
//! to `power_limit` above 10000 answer exception 3 (illegal data value).

use std::future;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};

/// Number of input registers of the map.
const INPUT_COUNT: usize = 12;
/// Highest value the meter accepts for `power_limit`.
const POWER_LIMIT_MAX: u16 = 10_000;

#[derive(Debug)]
struct Meter {
    started: Instant,
    last: Instant,
    energy_wh: f64,
    power_limit: u16,
    relay: bool,
}

impl Meter {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last: now,
            energy_wh: 1_250_000.0,
            power_limit: 5000,
            relay: true,
        }
    }

    /// Per-phase (voltage V, current A) for whole second `t`.
    fn phases(&self, t: f64) -> [(f64, f64); 3] {
        let mut out = [(0.0, 0.0); 3];
        for (k, slot) in out.iter_mut().enumerate() {
            let shift = k as f64 * 2.1;
            let v = 230.0 + 2.5 * (t / 7.0 + shift).sin();
            let i = if self.relay {
                2.5 + 0.4 * (t / 11.0 + shift).sin()
            } else {
                0.0
            };
            *slot = (v, i);
        }
        out
    }

    fn power_factor(t: f64) -> f64 {
        0.95 + 0.02 * (t / 13.0).sin()
    }

    fn power(&self, t: f64) -> f64 {
        let pf = Self::power_factor(t);
        self.phases(t).iter().map(|(v, i)| v * i * pf).sum()
    }

    /// Integrates energy up to `now` at the current power.
    fn advance(&mut self, now: Instant) -> f64 {
        let t = now.duration_since(self.started).as_secs().to_owned() as f64;
        let dt = now.duration_since(self.last).as_secs_f64();
        self.energy_wh += self.power(t) * dt / 3600.0;
        self.last = now;
        t
    }

    fn inputs(&mut self, now: Instant) -> [u16; INPUT_COUNT] {
        let t = self.advance(now);
        let ph = self.phases(t);
        let p = (self.power(t) as f32).to_bits();
        let e = self.energy_wh as u32;
        let f = 50.0 + 0.03 * (t / 5.0).sin();
        [
            (ph[0].0 * 10.0).round() as u16,
            (ph[1].0 * 10.0).round() as u16,
            (ph[2].0 * 10.0).round() as u16,
            (ph[0].1 * 100.0).round() as u16,
            (ph[1].1 * 100.0).round() as u16,
            (ph[2].1 * 100.0).round() as u16,
            (p >> 16) as u16,
            p as u16,
            (e >> 16) as u16,
            e as u16,
            (f * 100.0).round() as u16,
            (Self::power_factor(t) * 1000.0).round() as i16 as u16,
        ]
    }

    fn handle(&mut self, req: Request<'static>, now: Instant) -> Result<Response, ExceptionCode> {
        let range = |addr: u16, cnt: u16, len: usize| {
            let (a, c) = (usize::from(addr), usize::from(cnt));
            if c == 0 || a + c > len {
                Err(ExceptionCode::IllegalDataAddress)
            } else {
                Ok(a..a + c)
            }
        };
        match req {
            Request::ReadInputRegisters(addr, cnt) => {
                let r = range(addr, cnt, INPUT_COUNT)?;
                Ok(Response::ReadInputRegisters(self.inputs(now)[r].to_vec()))
            }
            Request::ReadHoldingRegisters(addr, cnt) => {
                range(addr, cnt, 1)?;
                Ok(Response::ReadHoldingRegisters(vec![self.power_limit]))
            }
            Request::WriteSingleRegister(addr, value) => {
                range(addr, 1, 1)?;
                self.set_limit(value)?;
                Ok(Response::WriteSingleRegister(addr, value))
            }
            Request::WriteMultipleRegisters(addr, values) => {
                range(addr, values.len() as u16, 1)?;
                self.set_limit(values[0])?;
                Ok(Response::WriteMultipleRegisters(addr, values.len() as u16))
            }
            Request::ReadCoils(addr, cnt) => {
                range(addr, cnt, 1)?;
                Ok(Response::ReadCoils(vec![self.relay]))
            }
            Request::WriteSingleCoil(addr, on) => {
                range(addr, 1, 1)?;
                // Settle the energy counter at the old power before switching.
                self.advance(now);
                self.relay = on;
                Ok(Response::WriteSingleCoil(addr, on))
            }
            Request::WriteMultipleCoils(addr, coils) => {
                range(addr, coils.len() as u16, 1)?;
                self.advance(now);
                self.relay = coils[0];
                Ok(Response::WriteMultipleCoils(addr, coils.len() as u16))
            }
            Request::ReadDiscreteInputs(addr, cnt) => {
                range(addr, cnt, 1)?;
                Ok(Response::ReadDiscreteInputs(vec![false]))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn set_limit(&mut self, value: u16) -> Result<(), ExceptionCode> {
        if value > POWER_LIMIT_MAX {
            return Err(ExceptionCode::IllegalDataValue);
        }
        self.power_limit = value;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct MeterService(Arc<Mutex<Meter>>);

impl tokio_modbus::server::Service for MeterService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut meter = self.0.lock().unwrap_or_else(|e| e.into_inner());
        future::ready(meter.handle(req, Instant::now()))
    }
}

/// Serves the simulated meter on `listener` until `shutdown` resolves. Every connection sees
/// the same meter.
pub async fn serve_energy_meter(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let service = MeterService(Arc::new(Mutex::new(Meter::new(Instant::now()))));
    let server = Server::new(listener);
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    let on_process_error = |err| tracing::debug!(%err, "simulated meter connection ended");
    tokio::select! {
        r = server.serve(&on_connected, on_process_error) => r,
        () = shutdown => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn energy_increases_and_stops_with_relay_off() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        let a = m.inputs(t0);
        assert!((2270..=2330).contains(&a[0]), "voltage {}", a[0]);
        assert!((4990..=5010).contains(&a[10]), "frequency {}", a[10]);
        let e0 = u32::from(a[8]) << 16 | u32::from(a[9]);
        let b = m.inputs(t0 + Duration::from_secs(3600));
        let e1 = u32::from(b[8]) << 16 | u32::from(b[9]);
        // ~1.6 kW for one hour.
        assert!((1000..2500).contains(&(e1 - e0)), "{}", e1 - e0);
        let p = f32::from_bits(u32::from(b[6]) << 16 | u32::from(b[7]));
        assert!((1000.0..2500.0).contains(&p), "{p}");

        m.handle(
            Request::WriteSingleCoil(0, false),
            t0 + Duration::from_secs(3600),
        )
        .unwrap();
        let c = m.inputs(t0 + Duration::from_secs(7200));
        assert_eq!(u32::from(c[8]) << 16 | u32::from(c[9]), e1);
        assert_eq!(c[3], 0);
    }

    #[test]
    fn setpoint_and_errors() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        m.handle(Request::WriteSingleRegister(0, 1234), t0).unwrap();
        assert_eq!(
            m.handle(Request::ReadHoldingRegisters(0, 1), t0),
            Ok(Response::ReadHoldingRegisters(vec![1234]))
        );
        assert_eq!(
            m.handle(Request::WriteSingleRegister(0, 10_001), t0),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            m.handle(Request::ReadInputRegisters(10, 3), t0),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }
}
