//! What the daemon drives per camera: [`Supervisor`] (health, identity, commands) and
//! [`EventPump`] (pull-point events → motion/tamper transitions). Both return plain values.
//!
//! They are separate so a long PullMessages never delays a health poll or a command; they share
//! one [`AuthGate`]: after the camera refuses our credentials, *no* credentialed request is
//! sent until the gate's backoff (5 min doubling to 1 h by default) has passed — health keeps
//! running with anonymous GetSystemDateAndTime probes (no failed login), commands fail at once
//! with an authentication error, the event pump waits. One refusal costs at most two failed
//! logins (the request, then one retry after a clock re-measure when the clock moved).
//!
//! Driving (the daemon's camera task, sketched):
//! ```no_run
//! # async fn task(cfg: cabinetd_onvif::CameraConfig) -> cabinetd_onvif::Result<()> {
//! use cabinetd_onvif::Supervisor;
//! let mut sup = Supervisor::new(cfg)?;
//! let mut pump = sup.event_pump()?;
//! tokio::spawn(async move {
//!     loop {
//!         if let Some(at) = pump.next_at() { tokio::time::sleep_until(at).await; }
//!         let out = pump.step().await;
//!         for t in out.transitions { /* event record: t.kind.as_str(), t.active, t.source */ }
//!     }
//! });
//! loop {
//!     let h = sup.poll_health().await; // points online / clock_offset_s / response_ms
//!     tokio::time::sleep(std::time::Duration::from_secs(30)).await;
//! }
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Client, PresetRef};
use crate::error::{Error, ErrorClass, Result};
use crate::events::{EventMapper, Transition};
use crate::exchange::{Connector, TcpConnector};
use crate::model::DeviceInformation;
use crate::pullpoint::{Backoff, Failure, PullPoint, PullPointConfig, Step};
use crate::time::UtcDateTime;
use crate::wsse::Credentials;

/// One camera's settings.
#[derive(Debug, Clone)]
pub struct CameraConfig {
    /// Device service URL (`http://host[:port]/onvif/device_service`).
    pub address: String,
    /// Account (Operator is enough for supervision and presets; reboot and time setting need
    /// Administrator).
    pub credentials: Option<Credentials>,
    /// Timeout of every request (PullMessages: plus its wait).
    pub timeout: Duration,
    /// How often identity (GetDeviceInformation) is re-read.
    pub identity_refresh: Duration,
    /// Pull-point timing and backoffs (the auth backoff is shared with health and commands).
    pub pull: PullPointConfig,
}

impl CameraConfig {
    /// Defaults: 5 s timeout, identity hourly, default pull-point timing.
    pub fn new(address: impl Into<String>, credentials: Option<Credentials>) -> Self {
        CameraConfig {
            address: address.into(),
            credentials,
            timeout: Duration::from_secs(5),
            identity_refresh: Duration::from_secs(3600),
            pull: PullPointConfig::default(),
        }
    }
}

/// Credentials refused → no credentialed request before `until`.
#[derive(Debug)]
pub struct AuthGate {
    backoff: Backoff,
    until: Option<Instant>,
    refusals: u64,
    accepted: u64,
}

impl AuthGate {
    fn new(cfg: &PullPointConfig) -> Self {
        AuthGate {
            backoff: Backoff::new(cfg.auth_retry_min, cfg.auth_retry_max),
            until: None,
            refusals: 0,
            accepted: 0,
        }
    }

    fn closed(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| now < *u)
    }

    fn refused(&mut self, now: Instant) {
        // Several requests in flight may report the same refusal: extend once per window.
        if self.closed(now).is_none() {
            self.until = Some(now + self.backoff.next_delay());
            self.refusals += 1;
        }
    }

    fn accepted(&mut self) {
        self.backoff.reset();
        self.until = None;
        self.accepted += 1;
    }
}

type Gate = Arc<Mutex<AuthGate>>;

fn lock(g: &Gate) -> std::sync::MutexGuard<'_, AuthGate> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// The result of one health poll.
#[derive(Debug, Clone)]
pub struct Health {
    /// The camera answered HTTP at all.
    pub online: bool,
    /// Camera minus cabinet clock, seconds, as measured by this poll (None when the camera did
    /// not give its clock this time: offline, or it wants credentials that are refused).
    pub clock_offset_s: Option<f64>,
    /// Round trip of the clock request, milliseconds.
    pub response_ms: Option<u64>,
    /// Manufacturer, model, firmware, serial (read once, refreshed hourly).
    pub identity: Option<DeviceInformation>,
    /// Credentials are currently refused (one `camera_auth_failed` per change to true).
    pub auth_failed: bool,
    /// Total refusals so far (each one opened the auth gate's backoff).
    pub auth_refusals: u64,
    /// Credentialed requests accepted so far (health, commands and events together): a refusal
    /// episode is over once this grows after the refusal.
    pub auth_accepted: u64,
    /// What went wrong, if anything.
    pub error: Option<Error>,
}

/// Health, identity and commands of one camera.
#[derive(Debug)]
pub struct Supervisor<C: Connector + Clone = TcpConnector> {
    cfg: CameraConfig,
    connector: C,
    client: Client<C>,
    gate: Gate,
    identity: Option<DeviceInformation>,
    identity_at: Option<Instant>,
    profile: Option<String>,
}

impl Supervisor<TcpConnector> {
    /// A supervisor over TCP.
    pub fn new(cfg: CameraConfig) -> Result<Self> {
        Supervisor::with_connector(TcpConnector, cfg)
    }
}

impl<C: Connector + Clone> Supervisor<C> {
    /// A supervisor over `connector`.
    pub fn with_connector(connector: C, cfg: CameraConfig) -> Result<Self> {
        let client = Client::with_connector(
            connector.clone(),
            &cfg.address,
            cfg.credentials.clone(),
            cfg.timeout,
        )?;
        Ok(Supervisor {
            gate: Arc::new(Mutex::new(AuthGate::new(&cfg.pull))),
            cfg,
            connector,
            client,
            identity: None,
            identity_at: None,
            profile: None,
        })
    }

    /// The event side, sharing the auth gate.
    pub fn event_pump(&self) -> Result<EventPump<C>> {
        let client = Client::with_connector(
            self.connector.clone(),
            &self.cfg.address,
            self.cfg.credentials.clone(),
            self.cfg.timeout,
        )?;
        Ok(EventPump {
            client,
            pp: PullPoint::new(self.cfg.pull.clone()),
            mapper: EventMapper::new(),
            gate: self.gate.clone(),
        })
    }

    /// The client (for operations not wrapped here).
    pub fn client(&mut self) -> &mut Client<C> {
        &mut self.client
    }

    /// The last identity read.
    pub fn identity(&self) -> Option<&DeviceInformation> {
        self.identity.as_ref()
    }

    fn note(&self, r: &Result<impl Sized>) {
        match r {
            Err(e) if e.is_auth() => lock(&self.gate).refused(Instant::now()),
            Ok(_) => lock(&self.gate).accepted(),
            Err(_) => {}
        }
    }

    /// One health poll: clock (liveness, offset, response time), then identity when due.
    pub async fn poll_health(&mut self) -> Health {
        let now = Instant::now();
        let (closed, refusals, accepted) = {
            let g = lock(&self.gate);
            (g.closed(now), g.refusals, g.accepted)
        };
        let mut h = Health {
            online: false,
            clock_offset_s: None,
            response_ms: None,
            identity: self.identity.clone(),
            auth_failed: closed.is_some(),
            auth_refusals: refusals,
            auth_accepted: accepted,
            error: None,
        };
        if closed.is_some() {
            match self.client.exchange_mut().ping().await {
                Ok((rtt, offset)) => {
                    h.online = true;
                    h.response_ms = Some(rtt.as_millis() as u64);
                    h.clock_offset_s = offset;
                }
                Err(e) => h.error = Some(e),
            }
            return h;
        }
        match self.client.get_system_date_and_time().await {
            Ok(r) => {
                h.online = true;
                h.clock_offset_s = Some(r.offset_s);
                h.response_ms = Some(r.rtt.as_millis() as u64);
            }
            Err(e) => {
                h.online = e.class() != ErrorClass::Transient;
                if e.is_auth() {
                    lock(&self.gate).refused(Instant::now());
                }
                h.error = Some(e);
            }
        }
        let due = self
            .identity_at
            .is_none_or(|t| now.duration_since(t) >= self.cfg.identity_refresh);
        if h.online && h.error.is_none() && due {
            let r = self.client.get_device_information().await;
            self.note(&r);
            match r {
                Ok(i) => {
                    self.identity = Some(i);
                    self.identity_at = Some(now);
                }
                Err(e) => h.error = Some(e),
            }
        }
        let g = lock(&self.gate);
        h.auth_failed = g.closed(Instant::now()).is_some();
        h.auth_refusals = g.refusals;
        h.auth_accepted = g.accepted;
        h.identity = self.identity.clone();
        h
    }

    fn gate_open(&self, op: &'static str) -> Result<()> {
        match lock(&self.gate).closed(Instant::now()) {
            Some(until) => Err(Error::Auth {
                op,
                reason: format!(
                    "credentials were refused; next attempt in {} s",
                    until.saturating_duration_since(Instant::now()).as_secs()
                ),
            }),
            None => Ok(()),
        }
    }

    /// `camera.goto_preset`: preset by token or name. Returns the token used.
    pub async fn goto_preset(&mut self, preset: &str) -> Result<String> {
        self.gate_open("GotoPreset")?;
        if self.profile.is_none() {
            let r = self.client.ptz_profile().await;
            self.note(&r);
            self.profile = Some(r?);
        }
        let profile = self.profile.clone().unwrap_or_default();
        let r = self
            .client
            .goto_preset(&profile, &PresetRef(preset.to_string()))
            .await;
        self.note(&r);
        r
    }

    /// `camera.sync_time`: sets the camera's clock to `utc` (the caller checks its own time is
    /// trusted), then re-measures the offset.
    pub async fn sync_time(&mut self, utc: UtcDateTime) -> Result<f64> {
        self.gate_open("SetSystemDateAndTime")?;
        let r = self.client.set_system_date_and_time(utc).await;
        self.note(&r);
        r?;
        Ok(self.client.get_system_date_and_time().await?.offset_s)
    }

    /// `camera.reboot`: the camera's message.
    pub async fn reboot(&mut self) -> Result<String> {
        self.gate_open("SystemReboot")?;
        let r = self.client.system_reboot().await;
        self.note(&r);
        self.profile = None;
        r
    }
}

/// The outcome of one [`EventPump::step`].
#[derive(Debug, Default)]
pub struct Pumped {
    /// Motion/tamper changes, in order.
    pub transitions: Vec<Transition>,
    /// Notifications received (all topics).
    pub notifications: usize,
    /// A subscription was (re)created in this step.
    pub subscribed: bool,
    /// The failure, if the step failed.
    pub failure: Option<(Failure, Error)>,
}

/// The event side of one camera.
#[derive(Debug)]
pub struct EventPump<C: Connector = TcpConnector> {
    client: Client<C>,
    pp: PullPoint,
    mapper: EventMapper,
    gate: Gate,
}

impl<C: Connector> EventPump<C> {
    /// When the next step is due (None: now).
    pub fn next_at(&self) -> Option<Instant> {
        let now = Instant::now();
        let gate = lock(&self.gate).closed(now);
        let own = match self.pp.next(now) {
            Step::Wait(t) => Some(t),
            _ => None,
        };
        match (gate, own) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The pull-point state (subscription, counters).
    pub fn pull_point(&self) -> &PullPoint {
        &self.pp
    }

    /// The event states.
    pub fn mapper(&self) -> &EventMapper {
        &self.mapper
    }

    /// Performs the step due now (nothing if [`EventPump::next_at`] is in the future).
    pub async fn step(&mut self) -> Pumped {
        let mut out = Pumped::default();
        let now = Instant::now();
        if lock(&self.gate).closed(now).is_some() {
            return out;
        }
        let step = self.pp.next(now);
        let res: Result<()> = match &step {
            Step::Wait(_) => return out,
            Step::Create => self.create(&mut out).await,
            Step::Renew => match self.pp.subscription().cloned() {
                Some(sub) => {
                    let r = self.client.renew(&sub, self.pp.config().termination).await;
                    r.map(|_| self.pp.renewed(Instant::now()))
                }
                None => Ok(()),
            },
            Step::Pull => match self.pp.subscription().cloned() {
                Some(sub) => {
                    let cfg = self.pp.config().clone();
                    match self
                        .client
                        .pull_messages(&sub, cfg.pull_wait, cfg.message_limit)
                        .await
                    {
                        Ok(p) => {
                            out.notifications = p.notifications.len();
                            out.transitions = p
                                .notifications
                                .iter()
                                .filter_map(|n| self.mapper.map(n))
                                .collect();
                            self.pp.pulled();
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                None => Ok(()),
            },
        };
        match res {
            Ok(()) => lock(&self.gate).accepted(),
            Err(e) => {
                if e.is_auth() {
                    lock(&self.gate).refused(Instant::now());
                }
                let f = self.pp.failed(&step, &e, Instant::now());
                tracing::debug!(error = %e, ?f, "event step failed");
                out.failure = Some((f, e));
            }
        }
        out
    }

    async fn create(&mut self, out: &mut Pumped) -> Result<()> {
        if self.client.exchange().clock_offset().is_none() {
            // WS-Security needs the camera's clock. A refusal here is the step's failure (a
            // create with a guessed clock would only add a failed login); other failures show
            // in the create below.
            if let Err(e) = self.client.get_system_date_and_time().await {
                if e.is_auth() {
                    return Err(e);
                }
            }
        }
        let sub = self
            .client
            .create_pull_point_subscription(self.pp.config().termination)
            .await?;
        // Current property states (Initialized messages); many cameras do not implement it.
        if let Err(e) = self.client.set_synchronization_point(&sub).await {
            tracing::debug!(error = %e, "SetSynchronizationPoint refused (ignored)");
        }
        self.pp.created(sub, Instant::now());
        self.mapper.resubscribed();
        out.subscribed = true;
        Ok(())
    }

    /// Unsubscribes (on shutdown); errors are ignored, the camera expires it anyway.
    pub async fn shutdown(&mut self) {
        if let Some(sub) = self.pp.subscription().cloned() {
            let _ = self.client.unsubscribe(&sub).await;
        }
        self.pp.reset();
    }
}
