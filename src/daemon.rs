//! The daemon: builds the parts, runs the main loop, stops them in order under one deadline.
//! Wiring only; each part's rules are in its own module (ARCHITECTURE.md draws the whole).
//!
//! Data path: equipment task → [`RecordBody`] on a bounded channel → `recorder` appends it to the
//! outbox (which numbers it) → the uplink publishes durable records and deletes them after PUBACK.
//!
//! Task tree: `root` token → the equipment rack (→ generation → entry), the HTTP endpoint, the
//! watchdog, the rules task (`rules::run`, which outlives reloads and carries out the actions of
//! the cabinet's automation and the central commands) and the energy accountant; commands wait
//! for their outcome in the executor's `JoinSet`. The recorder,
//! the outbox flusher and the uplink stop by their inputs, in the order below.
//!
//! Stop ([`Signal::Stop`]): the deadline is computed once, [`STOP_BUDGET`] after the first
//! signal. Equipment, commands and the background tasks stop first (until +3 s, then aborted,
//! commands with a `failed` result); the recorder drains what they produced (until +4 s); the
//! outbox flushes; the uplink delivers what it can, publishes the offline status and disconnects
//! (until +8.5 s, then aborted: the broker publishes the will); the flusher's last flush. A
//! second stop signal skips to the final flush. [`Signal::Reload`] re-reads the files
//! (`reconfigure`).

pub mod confirm;
mod reconfigure;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::auth::TopicKind;
use crate::command::exec::Commands;
use crate::command::Ledger;
use crate::config::Config;
use crate::equipment::{self, Rack};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::outbox::{Outbox, OutboxOptions};
use crate::readings::ReadingTap;
use crate::record::RecordBody;
use crate::recorder::Recorder;
use crate::status::Live;
use crate::tasks::NamedTasks;
use crate::uplink::{Incoming, Uplink, UplinkParams};
use crate::wall::WallClock;
use crate::{http, lighting, rules, watchdog};

/// From the first stop signal to the exit (SPEC: within 10 s; the runtime's own shutdown and the
/// process exit take the rest).
pub const STOP_BUDGET: Duration = Duration::from_millis(9000);

/// What the process asks the daemon (main.rs maps SIGTERM/SIGINT and SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop cleanly (a second one skips to the final flush).
    Stop,
    /// Re-read the configuration files.
    Reload,
}

/// A built daemon: READY can be sent (config loaded, store open, HTTP bound, equipment started).
pub struct Daemon {
    files: Vec<PathBuf>,
    cfg: Config,
    running: watch::Sender<Arc<Config>>,
    root: CancellationToken,
    rack: Rack,
    commands: Commands,
    live: Arc<Live>,
    uplink: Uplink,
    records: mpsc::Sender<RecordBody>,
    recorder: Recorder,
    background: NamedTasks,
    notifier: Arc<Notifier>,
    main_beats: Arc<AtomicU64>,
    audit: AuditLog,
    /// The confirmation window of the last desired configuration applied, while open.
    probation: Option<confirm::Probation>,
    /// Uplink sessions established before the broker list last changed (the window then needs
    /// a newer session).
    sessions_before: Option<u64>,
}

/// The labelled series the configuration names outside the equipment (whose entries create
/// theirs when they start: `Metrics::init_device`), at 0 before READY: every broker of the
/// failover list, every rule.
fn init_series(metrics: &Metrics, cfg: &Config) {
    for broker in &cfg.uplink.brokers {
        metrics.init_broker(&broker.url());
    }
    for rule in &cfg.automation.rules {
        metrics.init_rule(&rule.name);
    }
}

impl Daemon {
    /// Opens the store, binds HTTP, starts the uplink and the equipment of `cfg` (plus the stored
    /// desired configuration, when still valid) and sends READY.
    pub async fn build(
        files: Vec<PathBuf>,
        cfg: Config,
        notifier: Notifier,
    ) -> anyhow::Result<Daemon> {
        Self::build_with(files, cfg, notifier, WallClock::system()).await
    }

    /// [`Daemon::build`] with the wall clock the rules core and the energy accountant read
    /// (tests: a clock following tokio's paused time, or the offset-file hook of `wall`).
    pub async fn build_with(
        files: Vec<PathBuf>,
        cfg: Config,
        notifier: Notifier,
        clock: WallClock,
    ) -> anyhow::Result<Daemon> {
        let (cfg, on_probation) = reconfigure::restore(&files, cfg);
        let boot_id = uuid::Uuid::new_v4().to_string();
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
        metrics
            .outbox_budget_bytes
            .set(i64::try_from(cfg.storage.max_bytes).unwrap_or(i64::MAX));
        init_series(&metrics, &cfg);
        let root = CancellationToken::new();
        // Before any state file of this run exists: did an earlier run leave state? (The outbox
        // resumes its numbering above the wall clock when its store is gone but state remains.)
        let earlier_run = crate::outbox::store::had_previous_state(&cfg.storage.path);
        // First of the state files (a missing window among other state means it was lost), and
        // before the uplink delivers the first command: the ids seen by earlier runs.
        let (ledger, opened) = Ledger::open(&cfg.storage.path, std::time::SystemTime::now())
            .context("cannot open the command-id window")?;
        let opts = OutboxOptions {
            earlier_run: Some(earlier_run),
            ..OutboxOptions::from_config(&cfg.storage, &cfg.uplink)
        };
        // sled runs on the outbox's own thread; opening may wait for its lock: off the workers.
        let (outbox, recovery) = {
            let (path, m) = (cfg.storage.path.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || Outbox::open(&path, opts, m))
                .await
                .context("outbox open task")?
                .with_context(|| {
                    format!("cannot open the outbox in {}", cfg.storage.path.display())
                })?
        };
        let listener = http::bind(cfg.http.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;

        // Nobody subscribes to the recorder's tap: the rules core and the energy accountant read
        // every reading before report by exception, on the readings tap.
        let (tap, _) = broadcast::channel(1);
        let (recorder, records) = Recorder::start(outbox.clone(), recovery, tap);
        let readings = ReadingTap::default();
        // Not under `root`: the uplink stops last, after the records are flushed.
        let params = UplinkParams::from_config(&cfg, &boot_id)?;
        let uplink = Uplink::start(params, outbox.clone(), metrics.clone());

        let ctx = equipment::Context {
            records: records.clone(),
            metrics: metrics.clone(),
            storage: cfg.storage.path.clone(),
            beats: Arc::new(AtomicU64::new(0)),
            readings: readings.clone(),
            // The rules task hands its clock guard's verdict to the cameras (`Deps::camera_clock`).
            onvif: equipment::camera::Shared::new(equipment::camera::ClockTrust::with_floor(
                std::time::SystemTime::UNIX_EPOCH
                    + Duration::from_secs(
                        u64::try_from(crate::rules::clock::build_floor().as_second()).unwrap_or(0),
                    ),
            )),
        };
        let polling = ctx.beats.clone();
        let camera_clock = ctx.onvif.clock.clone();
        let mut rack = Rack::new(ctx, root.child_token());
        rack.start(&cfg).await.context("equipment did not start")?;
        let (running, running_rx) = watch::channel(Arc::new(cfg.clone()));
        let mut background = NamedTasks::new();
        let (up, on_mode) = (uplink.handle.clone(), uplink.handle.clone());
        let deps = rules::run::Deps {
            running: running_rx.clone(),
            controls: rack.subscribe_controls(),
            readings: readings.subscribe("rules"),
            uplink_up: Arc::new(move || up.status().connected),
            on_mode: Arc::new(move |m| on_mode.set_mode(m.as_str())),
            records: records.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            camera_clock,
        };
        let (rules, rules_task) = rules::run::start(deps, root.child_token());
        background.spawn("rules", rules_task);
        let (energy_tx, energy_rx) = watch::channel(serde_json::Value::Null);
        let accountant = lighting::accountant::run(
            lighting::accountant::Inputs {
                running: running_rx.clone(),
                readings: readings.subscribe("energy"),
                records: records.clone(),
                metrics: metrics.clone(),
                clock,
                view: energy_tx,
            },
            root.child_token(),
        );
        background.spawn("energy accountant", accountant);
        let audit = AuditLog::default();
        let live = Arc::new(
            Live::new(
                &boot_id,
                metrics.clone(),
                outbox.clone(),
                uplink.handle.clone(),
                rack.board(),
                running_rx.clone(),
                crate::status::Automation {
                    view: rules.view.clone(),
                    energy: energy_rx,
                },
            )
            .with_audit(audit.clone()),
        );

        let notifier = Arc::new(notifier);
        let main_beats = Arc::new(AtomicU64::new(0));
        let stop = root.child_token().cancelled_owned();
        let http = background.spawn("http", http::serve(listener, live.clone(), stop));
        let probes = watchdog::Probes {
            main_loop: main_beats.clone(),
            recorder: recorder.beats.clone(),
            polling,
            http,
            outbox: outbox.clone(),
            uplink: uplink.handle.clone(),
        };
        let stop = root.child_token().cancelled_owned();
        let watchdog = watchdog::run(notifier.clone(), probes, running_rx, stop);
        background.spawn("watchdog", watchdog);

        live.set_ready(true);
        let _ = notifier.notify(&format!("READY=1\nSTATUS={}", crate::status::summary(&cfg)));
        tracing::info!(cabinet = %cfg.cabinet.id, boot_id = %boot_id, config_version = %cfg.version, "cabinetd running");
        let mut commands = Commands::new(
            records.clone(),
            metrics,
            ledger,
            audit.clone(),
            rules.commands.clone(),
        );
        commands.recover(&opened).await;
        let mut daemon = Daemon {
            files,
            cfg,
            running,
            root,
            rack,
            commands,
            live,
            uplink,
            records,
            recorder,
            background,
            notifier,
            main_beats,
            audit,
            probation: None,
            sessions_before: None,
        };
        if on_probation {
            // Restarted within the window: nothing is known of the state before the change;
            // the uplink must come back (`confirm`).
            let version = daemon.cfg.version.clone();
            let state =
                crate::config::desired::load_state(&daemon.cfg.storage.path).unwrap_or_default();
            let baseline = confirm::Baseline {
                uplink_up: true,
                ..Default::default()
            };
            daemon.open_window(&version, baseline, state);
        }
        Ok(daemon)
    }

    /// What `/status`, `/metrics` and `/readyz` read (in-process tests read it directly).
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Runs until [`Signal::Stop`] (or the uplink ends), then stops (see the module docs).
    pub async fn run(mut self, mut signals: mpsc::Receiver<Signal>) -> anyhow::Result<()> {
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        let mut outbox_fatal = self.recorder.outbox().fatal();
        let mut fatal = None;
        let every = crate::uplink::tls::RELOAD_EVERY;
        let mut tls = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            self.main_beats.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = outbox_fatal.changed() => {
                    if let Some(why) = outbox_fatal.borrow().clone() {
                        tracing::error!(reason = %why, "stopping: the outbox cannot store records");
                        fatal = Some(why);
                        break;
                    }
                }
                signal = signals.recv() => match signal {
                    Some(Signal::Reload) => self.reload_files().await,
                    Some(Signal::Stop) | None => break,
                },
                msg = self.uplink.incoming.recv() => match msg {
                    Some(msg) => self.on_incoming(msg).await,
                    None => { tracing::error!("uplink task ended unexpectedly"); break; }
                },
                (action, result) = self.commands.next() => self.commands.finish(action, result).await,
                _ = idle.tick() => if self.probation.is_some() { self.check_window().await },
                _ = tls.tick() => self.reload_tls("periodic"),
            }
        }
        let _ = self.notifier.notify("STOPPING=1");
        self.live.set_ready(false);
        let start = Instant::now();
        let outbox = self.recorder.outbox().clone();
        let last = [self.uplink.abort_handle(), self.recorder.abort_handle()];
        let second = async {
            while let Some(s) = signals.recv().await {
                if s == Signal::Stop {
                    tracing::warn!("second stop signal: skipping to the final flush");
                    return;
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            () = self.stop(start) => {}
            () = second => {}
        }
        // Whatever still runs is aborted: what the outbox holds stays for the next run.
        last.iter().for_each(|t| t.abort());
        // The orderly stop closed the store; after a second signal this is its final flush. A
        // store thread that hangs must not keep the process from exiting.
        match tokio::time::timeout(Duration::from_secs(1), outbox.close()).await {
            Ok(Ok(()) | Err(crate::outbox::OutboxError::Stopped)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final outbox flush failed"),
            Err(_) => tracing::error!("final outbox flush: the store did not answer within 1 s"),
        }
        tracing::info!(took = ?start.elapsed(), "stopped");
        match fatal {
            // Exit 1: systemd restarts the daemon, which opens the store afresh.
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }

    /// A message of `P/C/cmd`, `P/all/cmd` or `P/C/config/desired`: each is verified first
    /// (`auth::accept`, in the command front and in `on_desired`).
    async fn on_incoming(&mut self, msg: Incoming) {
        let kind = TopicKind::of_topic(
            &msg.topic,
            &self.cfg.uplink.topic_prefix,
            &self.cfg.cabinet.id,
        );
        match kind {
            Some(TopicKind::Desired) => self.on_desired(&msg.payload).await,
            Some(kind) => {
                self.commands
                    .on_message(kind, &msg.payload, &self.cfg, self.rack.controls())
                    .await
            }
            None => tracing::debug!(topic = %msg.topic, "message on an unexpected topic ignored"),
        }
    }

    /// The orderly stop, each phase bounded by its share of the deadline.
    async fn stop(self, start: Instant) {
        let Daemon {
            root,
            mut rack,
            mut commands,
            mut background,
            records,
            mut recorder,
            mut uplink,
            ..
        } = self;
        let equipment_until = start + Duration::from_secs(3);
        root.cancel();
        rack.stop(equipment_until).await;
        commands.stop(equipment_until).await;
        background
            .join_until(equipment_until, "background tasks")
            .await;
        // With the rack, the commands and the accountant gone, so are the record senders: the
        // recorder ends after appending what they produced.
        drop((rack, commands, background, records));
        recorder.drain(start + Duration::from_secs(4)).await;
        uplink
            .stop(start + STOP_BUDGET - Duration::from_millis(500))
            .await;
        recorder.close(start + STOP_BUDGET).await;
    }
}
