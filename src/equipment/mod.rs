//! Equipment: the devices and buses the cabinet supervises, and the one place that starts,
//! reloads and stops them ([`Rack`]).
//!
//! Every kind — a Modbus line with its devices ([`modbus::ModbusLine`]: one owner per serial
//! line or TCP endpoint), a DALI bus ([`dali`]), an ONVIF camera ([`camera`]), a built-in
//! simulator — implements [`Equipment`]: its name, the exclusive [`Resource`]s it owns while it
//! runs, and how it starts its tasks into a [`Starter`]. Each supervised entry (each Modbus
//! device) publishes one [`Status`] on a `watch` channel through a [`StatusTx`], which is also the
//! one place that decides `device_down` / `device_up` transitions and sets
//! `cabinetd_device_up{device,protocol}` (cameras name those transitions `camera_offline` /
//! `camera_online`, SPEC §2). `/status` reads the receivers ([`Board`]); commands reach the
//! equipment through [`Controls`].
//!
//! # Generations and the cancellation tree
//! The equipment of one configuration is a [`Generation`]: a `CancellationToken` (child of the
//! rack's token, itself a child of the daemon's root) and a [`NamedTasks`] set holding every task
//! of every entry (device tasks, bridges, buses, the lighting programme). A reload swaps the
//! generation as a whole:
//! 1. cancel the old generation's token, join its tasks within [`RELOAD_STOP`], abort and await
//!    the rest — nothing is ever detached, so when the new generation starts no old task still
//!    holds a serial port or a DALI bus lock;
//! 2. start the new generation; if it fails, stop what it started and start the previous
//!    configuration again ([`ReloadError::RolledBack`]); if that fails too, say so loudly
//!    ([`ReloadError::RestoreFailed`]): the cabinet then runs without equipment.

pub mod camera;
pub mod dali;
pub mod lights;
pub mod modbus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::IntGauge;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors, Resource};
use crate::event::EquipmentKind;
use crate::metrics::Metrics;
use crate::record::{Event, RecordBody};
use crate::tasks::NamedTasks;

use lights::LightRouter;

/// How long a reload waits for the old generation's tasks before aborting them.
pub const RELOAD_STOP: Duration = Duration::from_secs(3);

/// What an entry is doing, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Not yet reached (the first connect or poll has not settled).
    Starting,
    /// Answers.
    Up,
    /// Does not answer.
    Down {
        /// Why.
        error: String,
    },
    /// Configured, but this build does not supervise it.
    NotSupervised {
        /// Why.
        reason: String,
    },
}

/// What a device says it is (cameras: GetDeviceInformation), shown in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// Serial number.
    pub serial: String,
}

/// The live status of one entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// What it is.
    pub kind: EquipmentKind,
    /// Whether it answers.
    pub health: Health,
    /// End of the last successful poll.
    pub last_poll: Option<SystemTime>,
    /// Last error seen (also while up: a failed poll, a refused configuration); cleared when it
    /// comes back up.
    pub last_error: Option<String>,
    /// Points it reports (for a DALI bus: the luminaires found).
    pub points: usize,
    /// What the device says it is, once read (cameras).
    pub identity: Option<Identity>,
}

impl Status {
    /// A starting entry of `kind` with `points` points.
    pub fn new(kind: EquipmentKind, points: usize) -> Status {
        Status {
            kind,
            health: Health::Starting,
            last_poll: None,
            last_error: None,
            points,
            identity: None,
        }
    }

    /// `Some(true)` up, `Some(false)` down, `None` starting or not supervised.
    pub fn up(&self) -> Option<bool> {
        match self.health {
            Health::Up => Some(true),
            Health::Down { .. } => Some(false),
            Health::Starting | Health::NotSupervised { .. } => None,
        }
    }
}

/// The publishing half of one entry's [`Status`]. Every update is a sign of life of the polling
/// loops for the watchdog (`beats`).
#[derive(Clone)]
pub struct StatusTx {
    name: String,
    tx: watch::Sender<Status>,
    beats: Arc<AtomicU64>,
    up_gauge: IntGauge,
}

impl StatusTx {
    /// A status channel for entry `name`: its series exist from the start
    /// ([`Metrics::init_device`]: `cabinetd_device_up{device,protocol}` at 0, poll errors and
    /// durations).
    pub fn channel(
        name: &str,
        kind: EquipmentKind,
        points: usize,
        metrics: &Metrics,
        beats: Arc<AtomicU64>,
    ) -> (StatusTx, watch::Receiver<Status>) {
        let (tx, rx) = watch::channel(Status::new(kind, points));
        metrics.init_device(name, kind.as_str());
        let up_gauge = metrics.device_up.with_label_values(&[name, kind.as_str()]);
        let tx = StatusTx {
            name: name.to_owned(),
            tx,
            beats,
            up_gauge,
        };
        (tx, rx)
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the current status.
    pub fn get(&self) -> Status {
        self.tx.borrow().clone()
    }

    /// Changes the status (and beats).
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.tx.send_modify(f);
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// The entry stopped answering: health down, `device_up` 0. Returns the `device_down`
    /// event when this is a transition (not already down).
    pub fn down(&self, error: &str) -> Option<Event> {
        self.up_gauge.set(0);
        let mut event = None;
        self.update(|s| {
            if !matches!(s.health, Health::Down { .. }) {
                event = Some(Event::device_down(&self.name, s.kind, error));
            }
            s.health = Health::Down {
                error: error.to_owned(),
            };
            s.last_error = Some(error.to_owned());
        });
        event
    }

    /// The entry answers: health up, `device_up` 1, last error cleared. Returns the
    /// `device_up` event when it was down before (not after a start).
    pub fn up(&self) -> Option<Event> {
        self.up_gauge.set(1);
        let mut event = None;
        self.update(|s| {
            if matches!(s.health, Health::Down { .. }) {
                event = Some(Event::device_up(&self.name, s.kind));
            }
            s.health = Health::Up;
            s.last_error = None;
        });
        event
    }
}

/// Why equipment could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EquipmentError {
    /// A listening socket (a simulator) could not be bound.
    #[error("{entry}: cannot listen on {addr}: {reason}")]
    Listen {
        /// The entry.
        entry: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS's reason.
        reason: String,
    },
    /// A secret file (a camera's `password_file`) could not be read. `check-config` and `run`
    /// check it before anything starts; this is the file changing in between.
    #[error("{entry}: password_file {path}: {reason}", path = path.display())]
    Secret {
        /// The entry.
        entry: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why (never the content).
        reason: String,
    },
    /// A camera's settings were refused by the ONVIF client.
    #[error("camera {entry}: {reason}")]
    Camera {
        /// The camera.
        entry: String,
        /// Why.
        reason: String,
    },
}

/// Why a configuration change was not applied as asked.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A section that is only read at start changed.
    #[error("[{section}] changed: it takes effect only after a restart")]
    RestartNeeded {
        /// `cabinet`, `storage`, `uplink` or `http`.
        section: &'static str,
    },
    /// The configuration is invalid (every error, as `check-config` prints them).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The equipment did not start and there was nothing to go back to.
    #[error("the equipment did not start: {0}")]
    StartFailed(EquipmentError),
    /// The new equipment did not start; the previous configuration runs again.
    #[error("the new equipment did not start ({cause}); the previous configuration runs again")]
    RolledBack {
        /// Why the new one did not start.
        cause: EquipmentError,
    },
    /// Neither the new nor the previous equipment started: no equipment runs.
    #[error("the new equipment did not start ({cause}) and the previous one could not be restored ({restore}): no equipment runs")]
    RestoreFailed {
        /// Why the new one did not start.
        cause: EquipmentError,
        /// Why the previous one did not start again.
        restore: EquipmentError,
    },
}

impl ReloadError {
    /// One line per problem, for `config/reported.errors` and `/status.last_reload.errors`.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(errors) => errors.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }

    /// True when the previous configuration had to be started again (or could not be).
    pub fn rolled_back(&self) -> bool {
        matches!(
            self,
            ReloadError::RolledBack { .. } | ReloadError::RestoreFailed { .. }
        )
    }
}

/// What commands can reach in the running generation.
#[derive(Clone, Default)]
pub struct Controls {
    /// Write channel of each Modbus device, by name.
    pub writers: BTreeMap<String, mpsc::Sender<cabinetd_modbus::WriteRequest>>,
    /// The DALI buses.
    pub lights: LightRouter,
    /// The cameras, by name (`camera.*` commands; rules and scenes too).
    pub cameras: BTreeMap<String, camera::CameraHandle>,
}

/// What every entry gets from the rack, for as long as the daemon runs.
#[derive(Clone)]
pub struct Context {
    /// Where records go (the recorder appends them to the outbox).
    pub records: mpsc::Sender<RecordBody>,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// `storage.path` (DALI bus locks).
    pub storage: std::path::PathBuf,
    /// Bumped by every status update: proves the polling loops live (watchdog).
    pub beats: Arc<AtomicU64>,
    /// What cameras share across reloads (clock trust, discovery memory).
    pub onvif: camera::Shared,
    /// Every reading, before report by exception (the rules core, the energy accountant).
    pub readings: crate::readings::ReadingTap,
}

/// One kind of equipment, as the rack starts it.
pub trait Equipment {
    /// Its unique name (device name, or simulator name).
    fn name(&self) -> &str;
    /// The exclusive things it owns while it runs (also checked by config validation).
    fn resources(&self) -> Vec<Resource>;
    /// Starts its tasks (each with a child token of the generation's) and registers its status
    /// and controls.
    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError>;
}

/// What an entry starts into: the generation being built.
pub struct Starter<'a> {
    ctx: &'a Context,
    gen: &'a mut Generation,
}

impl Starter<'_> {
    /// The daemon-long context.
    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// A token for one entry, cancelled with the generation.
    pub fn entry_token(&self) -> CancellationToken {
        self.gen.token.child_token()
    }

    /// Spawns one task of the generation.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.gen.tasks.spawn(name, fut);
    }

    /// Registers a supervised entry shown in `/status`.
    pub fn status(&mut self, name: &str, kind: EquipmentKind, points: usize) -> StatusTx {
        let (tx, rx) = StatusTx::channel(
            name,
            kind,
            points,
            &self.ctx.metrics,
            self.ctx.beats.clone(),
        );
        self.gen.statuses.insert(name.to_owned(), rx);
        tx
    }

    /// What commands can reach.
    pub fn controls(&mut self) -> &mut Controls {
        &mut self.gen.controls
    }
}

/// The equipment of one configuration, running.
pub struct Generation {
    token: CancellationToken,
    tasks: NamedTasks,
    statuses: BTreeMap<String, watch::Receiver<Status>>,
    controls: Controls,
}

impl Generation {
    /// Starts every entry of `cfg` under a child of `parent`; on failure, stops what started.
    async fn start(
        cfg: &Config,
        ctx: &Context,
        parent: &CancellationToken,
    ) -> Result<Generation, EquipmentError> {
        let mut gen = Generation {
            token: parent.child_token(),
            tasks: NamedTasks::new(),
            statuses: BTreeMap::new(),
            controls: Controls::default(),
        };
        // Modbus devices start by line: one owner per serial line or TCP endpoint.
        let modbus_lines = modbus::lines(&cfg.modbus);
        let started = (|| {
            let mut s = Starter { ctx, gen: &mut gen };
            // Simulators first: the devices polling them connect at once.
            let entries = (cfg.simulators.iter().map(|e| e as &dyn Equipment))
                .chain(cfg.cameras.iter().map(|e| e as &dyn Equipment))
                .chain(cfg.dali.iter().map(|e| e as &dyn Equipment))
                .chain(modbus_lines.iter().map(|e| e as &dyn Equipment));
            for e in entries {
                e.start(&mut s)?;
            }
            camera::start_discovery(cfg, &mut s);
            Ok(())
        })();
        if let Err(e) = started {
            gen.stop(Instant::now() + RELOAD_STOP).await;
            return Err(e);
        }
        Ok(gen)
    }

    /// Cancels the generation and joins its tasks until `deadline`; aborts the rest.
    async fn stop(mut self, deadline: Instant) {
        self.token.cancel();
        self.tasks.join_until(deadline, "equipment").await;
    }
}

/// The statuses of the running generation, for `/status`.
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<String, watch::Receiver<Status>>>>);

impl Board {
    /// Every entry's status, by name.
    pub fn snapshot(&self) -> Vec<(String, Status)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(name, rx)| (name.clone(), rx.borrow().clone()))
            .collect()
    }
}

/// The running equipment: the one place that starts, reloads and stops it.
pub struct Rack {
    ctx: Context,
    token: CancellationToken,
    current: Option<Generation>,
    board: Board,
    nothing: Controls,
    /// The running generation's controls, for the rules core (empty while none runs).
    published: watch::Sender<Controls>,
}

impl Rack {
    /// A rack whose generations are children of `token`.
    pub fn new(ctx: Context, token: CancellationToken) -> Rack {
        Rack {
            ctx,
            token,
            current: None,
            board: Board::default(),
            nothing: Controls::default(),
            published: watch::Sender::new(Controls::default()),
        }
    }

    /// The controls of the running generation, as each reload changes them (the rules core's
    /// lanes carry out their actions through them).
    pub fn subscribe_controls(&self) -> watch::Receiver<Controls> {
        self.published.subscribe()
    }

    /// What `/status` reads.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// What commands can reach now (nothing while no generation runs).
    pub fn controls(&self) -> &Controls {
        self.current.as_ref().map_or(&self.nothing, |g| &g.controls)
    }

    /// Starts the equipment of `cfg` (nothing may run yet).
    pub async fn start(&mut self, cfg: &Config) -> Result<(), EquipmentError> {
        debug_assert!(self.current.is_none(), "a generation already runs");
        let gen = Generation::start(cfg, &self.ctx, &self.token).await?;
        *self.board.0.lock().unwrap_or_else(|p| p.into_inner()) = gen.statuses.clone();
        self.published.send_replace(gen.controls.clone());
        self.current = Some(gen);
        Ok(())
    }

    /// Stops the running generation: joined until `deadline`, the rest aborted and awaited.
    pub async fn stop(&mut self, deadline: Instant) {
        if let Some(gen) = self.current.take() {
            self.published.send_replace(Controls::default());
            gen.stop(deadline).await;
        }
    }

    /// Replaces the equipment of `running` by that of `new`, as a whole (see the module docs).
    pub async fn reload(&mut self, running: &Config, new: &Config) -> Result<(), ReloadError> {
        if let Some(section) = running.restart_section(new) {
            return Err(ReloadError::RestartNeeded { section });
        }
        self.stop(Instant::now() + RELOAD_STOP).await;
        let cause = match self.start(new).await {
            Ok(()) => return Ok(()),
            Err(cause) => cause,
        };
        tracing::error!(error = %cause, "new equipment did not start; restoring the previous configuration");
        match self.start(running).await {
            Ok(()) => Err(ReloadError::RolledBack { cause }),
            Err(restore) => {
                tracing::error!(error = %cause, restore_error = %restore, "THE PREVIOUS EQUIPMENT COULD NOT BE RESTORED: no equipment runs until the next reload or restart");
                Err(ReloadError::RestoreFailed { cause, restore })
            }
        }
    }
}

#[cfg(test)]
mod tests;
