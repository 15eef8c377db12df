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

mod reconfigure;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::command::exec::Commands;
use crate::config::{desired, Config};
use crate::equipment::{self, Rack};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::outbox::{Outbox, OutboxOptions};
use crate::readings::ReadingTap;
use crate::record::RecordBody;
use crate::recorder::Recorder;
use crate::status::Live;
use crate::tasks::NamedTasks;
use crate::uplink::{Uplink, UplinkParams};
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
        let cfg = desired::restore(&files, cfg);
        let boot_id = uuid::Uuid::new_v4().to_string();
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
        metrics
            .outbox_budget_bytes
            .set(i64::try_from(cfg.storage.max_bytes).unwrap_or(i64::MAX));
        let root = CancellationToken::new();
        let opts = OutboxOptions::from_config(&cfg.storage, &cfg.uplink);
        let (outbox, recovery) = Outbox::open(&cfg.storage.path, opts, metrics.clone())
            .with_context(|| format!("cannot open the outbox in {}", cfg.storage.path.display()))?;
        let listener = http::bind(cfg.http.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;

        // Nobody subscribes to the recorder's tap: the rules core and the energy accountant read
        // every reading before report by exception, on the readings tap.
        let (tap, _) = broadcast::channel(1);
        let (recorder, records) =
            Recorder::start(outbox.clone(), recovery, tap, cfg.storage.flush_interval);
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
        };
        let polling = ctx.beats.clone();
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
        let live = Arc::new(Live::new(
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
        ));

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
        let commands = Commands::new(records.clone(), metrics, rules.commands.clone());
        Ok(Daemon {
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
        })
    }

    /// What `/status`, `/metrics` and `/readyz` read (in-process tests read it directly).
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Runs until [`Signal::Stop`] (or the uplink ends), then stops (see the module docs).
    pub async fn run(mut self, mut signals: mpsc::Receiver<Signal>) -> anyhow::Result<()> {
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.main_beats.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(Signal::Reload) => self.reload_files().await,
                    Some(Signal::Stop) | None => break,
                },
                msg = self.uplink.incoming.recv() => match msg {
                    Some(msg) if msg.topic.ends_with("/config/desired") => self.on_desired(&msg.payload).await,
                    Some(msg) if msg.topic.ends_with("/cmd") => self.commands.on_message(&msg.payload, self.rack.controls()).await,
                    Some(_) => {}
                    None => { tracing::error!("uplink task ended unexpectedly"); break; }
                },
                (action, result) = self.commands.next() => self.commands.finish(action, result).await,
                _ = idle.tick() => {}
            }
        }
        let _ = self.notifier.notify("STOPPING=1");
        self.live.set_ready(false);
        let start = Instant::now();
        let outbox = self.recorder.outbox().clone();
        let [recorder, flusher] = self.recorder.abort_handles();
        let last = [self.uplink.abort_handle(), recorder, flusher];
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
        if let Err(e) = outbox.flush().await {
            tracing::error!(error = %e, "final outbox flush failed");
        }
        tracing::info!(took = ?start.elapsed(), "stopped");
        Ok(())
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
