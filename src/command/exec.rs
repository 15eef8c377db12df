//! Executing commands: [`Commands`] takes a payload from the uplink to exactly one result record.
//!
//! - The front (`front.rs`, [`Commands::accept`]): the signature checks, parsing, then the
//!   persisted id window ([`Ledger`]): a running id is ignored, a finished id gets its first
//!   result published again; an expired command is `expired`. What it lets through is a new
//!   [`Command`], handed to [`Commands::submit`].
//! - An accepted, new command goes to the rules core ([`Executor::submit`] → a [`Submitted`] on
//!   the core's channel, see `rules::run`): central `light.*`, `point.write`, `scene.*` and
//!   `camera.*` are arbitrated there (central > scene > rule > programme) and carried out by the
//!   core's action lanes through the equipment ([`execute`]). The result is decided by the
//!   actions that carry the command's id (all succeeded → `succeeded`; one rejected →
//!   `rejected`; one failed → `failed`); a command no action carries (releasing what was not
//!   overridden) succeeded; one the core refuses (unknown scene, target or point) is
//!   `rejected` naming the field.
//! - Each command waits for its outcome as one task of a `JoinSet` ([`Executor`]), off the main
//!   loop. At most [`MAX_IN_FLIGHT`] commands wait at once; a command beyond that is `rejected`
//!   with a reason starting `busy` (a flood of distinct ids cannot grow tasks without bound). A
//!   command without an outcome after [`COMMAND_TIMEOUT`] is `failed` (its action may still be
//!   applied later: the reason says the outcome is unknown).
//! - A point write waits at most [`WRITE_TIMEOUT`] for the device, a light action at most
//!   `equipment::lights::LIGHT_TIMEOUT` per bus, a camera action at most
//!   `equipment::camera::COMMAND_TIMEOUT`.
//! - At the stop, commands still running when the equipment phase of the stop deadline ends are
//!   aborted and get a `failed` result ([`Commands::stop`]), which the daemon flushes before it
//!   exits: no command goes without its final result.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::{outcome, result, Action, Command, CommandError, Ledger};
use crate::audit::{AuditEntry, AuditLog, AuthGate};
use crate::config::RuleAction;
use crate::equipment::camera::CameraError;
use crate::equipment::Controls;
use crate::light::LightAction;
use crate::metrics::Metrics;
use crate::record::{CommandResult, CommandStatus, RecordBody};

/// Commands executing at once, at most.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a point write may take end to end before the action fails.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command may wait for its outcome (queued behind other actions of its device or
/// bus, then carried out).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// An accepted command handed to the rules core, answered exactly once on `reply` (a dropped
/// reply is a `failed` result).
#[derive(Debug)]
pub struct Submitted {
    /// The command's id.
    pub id: String,
    /// What it asks.
    pub action: RuleAction,
    /// Its outcome.
    pub reply: oneshot::Sender<Result<(), CommandError>>,
}

/// The rules core's command channel.
pub type CoreSender = mpsc::Sender<Submitted>;

/// A bounded set of commands waiting for their outcome.
pub struct Executor {
    set: JoinSet<(&'static str, CommandResult)>,
    running: HashMap<Id, (String, &'static str)>,
    limit: usize,
    core: CoreSender,
}

impl Executor {
    /// At most `limit` commands at once, handed to the rules core on `core`.
    pub fn new(limit: usize, core: CoreSender) -> Executor {
        Executor {
            set: JoinSet::new(),
            running: HashMap::new(),
            limit,
            core,
        }
    }

    /// Commands running now.
    pub fn in_flight(&self) -> usize {
        self.set.len()
    }

    /// Hands `cmd` to the rules core; `Err` is a result decided at once (busy). The running
    /// equipment is the core's to reach (its lanes follow every reload), hence `_controls`.
    pub fn submit(&mut self, cmd: Command, _controls: &Controls) -> Result<(), CommandResult> {
        if self.set.len() >= self.limit {
            return Err(CommandError::Busy(self.set.len()).result(&cmd.id));
        }
        let (id, action) = (cmd.id, cmd.action);
        let name = action.name();
        let core = self.core.clone();
        let task_id = id.clone();
        let handle = self.set.spawn(async move {
            let (reply, rx) = oneshot::channel();
            let submitted = Submitted {
                id: task_id.clone(),
                action: RuleAction::from_command(action),
                reply,
            };
            let r = if core.send(submitted).await.is_err() {
                Err(CommandError::Failed("the rules core has stopped".into()))
            } else {
                match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(CommandError::Failed(
                        "the rules core stopped before the command completed".into(),
                    )),
                    Err(_) => Err(CommandError::Failed(format!(
                        "no outcome within {COMMAND_TIMEOUT:?}: unknown whether it was applied"
                    ))),
                }
            };
            (name, outcome(&task_id, r))
        });
        self.running.insert(handle.id(), (id, name));
        Ok(())
    }

    /// The next command to finish, with its action name; never resolves while none runs (so it
    /// can sit in a `select!`). Cancel-safe.
    pub async fn next(&mut self) -> (&'static str, CommandResult) {
        loop {
            match self.set.join_next_with_id().await {
                None => std::future::pending::<()>().await,
                Some(ended) => {
                    if let Some(done) = self.reap(ended) {
                        return done;
                    }
                }
            }
        }
    }

    /// Waits for the running commands until `deadline`, then aborts the rest: each gets a
    /// `failed` result. Returns every result, in the order they ended.
    pub async fn stop(&mut self, deadline: Instant) -> Vec<(&'static str, CommandResult)> {
        let mut done = Vec::new();
        while let Ok(Some(ended)) =
            tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await
        {
            done.extend(self.reap(ended));
        }
        self.set.abort_all();
        while let Some(ended) = self.set.join_next_with_id().await {
            done.extend(self.reap(ended));
        }
        done
    }

    fn reap(
        &mut self,
        ended: Result<(Id, (&'static str, CommandResult)), tokio::task::JoinError>,
    ) -> Option<(&'static str, CommandResult)> {
        match ended {
            Ok((id, done)) => {
                self.running.remove(&id);
                Some(done)
            }
            Err(e) => {
                let (id, name) = self.running.remove(&e.id())?;
                let reason = if e.is_panic() {
                    tracing::error!(%id, action = name, "command task panicked");
                    "internal error while executing the command".to_owned()
                } else {
                    "aborted: the daemon stopped before the command completed".to_owned()
                };
                Some((name, result(&id, CommandStatus::Failed, reason)))
            }
        }
    }
}

/// A camera command's outcome: rejected (the reason names the field) or failed.
fn camera_outcome<T>(r: Result<T, CameraError>) -> Result<(), CommandError> {
    match r {
        Ok(_) => Ok(()),
        Err(CameraError::Rejected(why)) => Err(CommandError::Rejected(why)),
        Err(CameraError::Failed(why)) => Err(CommandError::Failed(why)),
    }
}

/// Carries out one action on the running equipment (the rules core's lanes call it): a point
/// write through its device's task, a light level through the light router, a camera action
/// through the camera's handle. `light.release` and `scene.*` are decided by the core, never
/// equipment actions. `command` is the central command the action carries out, if any (a
/// write's `write_outcome` event echoes it).
pub async fn execute(
    action: &Action,
    command: Option<&str>,
    controls: &Controls,
) -> Result<(), CommandError> {
    match action {
        Action::PointWrite { point, value } => {
            let (device, name) = point.split_once('/').unwrap_or((point, ""));
            let Some(writer) = controls.writers.get(device).cloned() else {
                return Err(CommandError::Failed(format!(
                    "Modbus device {device:?} is not running"
                )));
            };
            write(writer, command, name.to_owned(), *value).await
        }
        Action::LightSet {
            target,
            level_percent,
            fade_s,
            ..
        } => {
            let action = LightAction::Set {
                level_percent: *level_percent,
                fade_s: *fade_s,
            };
            controls
                .lights
                .send(target, action)
                .await
                .map_err(Into::into)
        }
        Action::CameraGotoPreset { .. }
        | Action::CameraReboot { .. }
        | Action::CameraSyncTime { .. } => camera(action, controls).await,
        Action::LightRelease { .. } | Action::SceneRun { .. } | Action::SceneRelease { .. } => {
            Err(CommandError::Rejected(format!(
                "field `action`: {} is decided by the rules core, not carried out on equipment",
                action.name()
            )))
        }
    }
}

/// A camera action through the camera's handle (`equipment::camera::CameraHandle`: the
/// camera's supervisor does the work, bounded by its command timeout).
async fn camera(action: &Action, controls: &Controls) -> Result<(), CommandError> {
    let (Action::CameraGotoPreset { camera, .. }
    | Action::CameraReboot { camera }
    | Action::CameraSyncTime { camera }) = action
    else {
        return Err(CommandError::Rejected(
            "field `action`: not a camera action".into(),
        ));
    };
    let Some(cam) = controls.cameras.get(camera.as_str()) else {
        return Err(CommandError::Rejected(format!(
            "field `args.camera`: no camera {camera:?}"
        )));
    };
    match action {
        Action::CameraGotoPreset { preset, .. } => camera_outcome(cam.goto_preset(preset).await),
        Action::CameraReboot { .. } => camera_outcome(cam.reboot().await),
        _ => camera_outcome(cam.sync_time().await),
    }
}

/// One point write through the device's task, bounded by [`WRITE_TIMEOUT`].
async fn write(
    writer: mpsc::Sender<cabinetd_modbus::WriteRequest>,
    id: Option<&str>,
    point: String,
    value: cabinetd_modbus::Value,
) -> Result<(), CommandError> {
    let stopped = || CommandError::Failed("device task stopped".into());
    let (reply, rx) = oneshot::channel();
    let req = cabinetd_modbus::WriteRequest {
        point,
        value,
        // Echoed in the `write_outcome` event should the outcome be unknown.
        id: id.map(str::to_owned),
        reply,
    };
    writer.send(req).await.map_err(|_| stopped())?;
    match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
        Ok(Ok(r)) => r.map_err(Into::into),
        Ok(Err(_)) => Err(stopped()),
        Err(_) => Err(CommandError::Failed(format!(
            "no confirmation within {WRITE_TIMEOUT:?}"
        ))),
    }
}

/// Commands from the uplink to their results: the front (`front.rs`: verify, parse, the id
/// window), the executor, records, metrics and the audit trail.
pub struct Commands {
    pub(super) ledger: Ledger,
    pub(super) exec: Executor,
    pub(super) records: mpsc::Sender<RecordBody>,
    pub(super) metrics: Metrics,
    pub(super) gate: AuthGate,
    pub(super) audit: AuditLog,
    /// Bounds the `command_rejected` events a flood of id-less junk can raise.
    pub(super) idless: crate::auth::RejectionThrottle,
    /// Where each accepted command came from, until its result is recorded (for its audit
    /// entry); at most one per command in flight or decided at once.
    pub(super) origins: HashMap<String, Origin>,
}

/// Where an accepted command came from (its audit entry).
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub(super) via: &'static str,
    pub(super) kid: Option<String>,
    pub(super) action: String,
    pub(super) target: Option<String>,
}

impl Commands {
    /// Results and `auth_rejected` events go to `records`; `cabinetd_commands_total` to
    /// `metrics`; `ledger` is the persisted id window; every outcome is kept in `audit`;
    /// accepted commands go to the rules core on `core`.
    pub fn new(
        records: mpsc::Sender<RecordBody>,
        metrics: Metrics,
        ledger: Ledger,
        audit: AuditLog,
        core: CoreSender,
    ) -> Commands {
        Commands {
            ledger,
            exec: Executor::new(MAX_IN_FLIGHT, core),
            gate: AuthGate::new(metrics.clone(), records.clone()),
            records,
            metrics,
            audit,
            idless: crate::auth::RejectionThrottle::default(),
            origins: HashMap::new(),
        }
    }

    /// Executes an accepted, new command ([`Commands::accept`]); its result comes back through
    /// [`Commands::next`], or at once when it can be decided at once.
    pub async fn submit(&mut self, cmd: Command, controls: &Controls) {
        let action = cmd.action.name();
        let submitted = self.exec.submit(cmd, controls);
        self.gauge();
        if let Err(r) = submitted {
            self.finish(action, r).await;
        }
    }

    /// The next command to finish (for `select!`; never resolves while none runs).
    pub async fn next(&mut self) -> (&'static str, CommandResult) {
        self.exec.next().await
    }

    /// Records a final result: ledger, metrics, audit (which logs it), record.
    pub async fn finish(&mut self, action: &'static str, r: CommandResult) {
        self.gauge();
        self.count(action, r.status);
        if let Err(e) = self.ledger.finish(&r) {
            tracing::error!(error = %e, id = %r.id, "command result not recorded in the id window");
        }
        if let Some(o) = self.origins.remove(&r.id) {
            self.audit.record(
                AuditEntry::new(
                    o.via,
                    Some(&r.id),
                    Some(&o.action),
                    o.target.as_deref(),
                    o.kid.as_deref(),
                    r.status.as_str(),
                    &r.reason,
                ),
                true,
            );
        } else {
            tracing::info!(id = %r.id, status = r.status.as_str(), reason = %r.reason, "command result");
        }
        self.publish(r).await;
    }

    /// At the stop: commands still running at `deadline` are aborted with a `failed` result;
    /// every result is recorded, and the id window made durable.
    pub async fn stop(&mut self, deadline: Instant) {
        let n = self.exec.in_flight();
        if n > 0 {
            tracing::info!(commands = n, "waiting for the commands in flight");
        }
        for (action, r) in self.exec.stop(deadline).await {
            self.finish(action, r).await;
        }
        if let Err(e) = self.ledger.sync() {
            tracing::error!(error = %e, "command-id window not synced at the stop");
        }
    }

    fn gauge(&self) {
        let n = i64::try_from(self.exec.in_flight()).unwrap_or(i64::MAX);
        self.metrics.commands_in_flight.set(n);
    }

    pub(super) fn count(&self, action: &str, status: CommandStatus) {
        self.metrics
            .commands_total
            .with_label_values(&[action, status.as_str()])
            .inc();
    }

    pub(super) async fn publish(&self, r: CommandResult) {
        let _ = self.records.send(RecordBody::Result(r)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::light::LightTarget;

    fn cmd(id: &str, action: Action) -> Command {
        Command {
            id: id.into(),
            action,
            expires_at: None,
        }
    }

    fn write_to(device: &str) -> Action {
        Action::PointWrite {
            point: format!("{device}/setpoint"),
            value: cabinetd_modbus::Value::Int(1),
        }
    }

    /// A core that keeps what it is given (answers are the test's).
    fn core() -> (CoreSender, mpsc::Receiver<Submitted>) {
        mpsc::channel(64)
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_limit_commands_are_rejected_busy() {
        let (tx, mut rx) = core();
        let controls = Controls::default();
        let mut exec = Executor::new(2, tx);
        exec.submit(cmd("a", write_to("meter")), &controls).unwrap();
        exec.submit(cmd("b", write_to("meter")), &controls).unwrap();
        let busy = exec
            .submit(cmd("c", write_to("meter")), &controls)
            .unwrap_err();
        assert_eq!(
            (busy.id.as_str(), busy.status),
            ("c", CommandStatus::Rejected)
        );
        assert!(busy.reason.starts_with("busy"), "{}", busy.reason);
        // The core decides one: room for another.
        let first = rx.recv().await.unwrap();
        assert_eq!(first.id, "a");
        assert!(matches!(
            first.action,
            RuleAction::Command(Action::PointWrite { .. })
        ));
        first.reply.send(Ok(())).unwrap();
        let (action, r) = exec.next().await;
        assert_eq!(
            (action, r.id.as_str(), r.status),
            ("point.write", "a", CommandStatus::Succeeded)
        );
        exec.submit(cmd("d", write_to("meter")), &controls).unwrap();
        assert_eq!(exec.in_flight(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn scenes_reach_the_core_as_scene_actions_and_refusals_are_rejections() {
        let (tx, mut rx) = core();
        let controls = Controls::default();
        let mut exec = Executor::new(4, tx);
        let run = Action::SceneRun {
            scene: "route-a".into(),
            hold_s: Some(60.0),
        };
        exec.submit(cmd("s", run), &controls).unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(
            got.action,
            RuleAction::SceneRun {
                scene: "route-a".into(),
                hold_s: Some(60.0)
            }
        );
        got.reply
            .send(Err(CommandError::Rejected(
                "field `args.scene`: unknown scene \"route-a\"".into(),
            )))
            .unwrap();
        let (action, r) = exec.next().await;
        assert_eq!((action, r.status), ("scene.run", CommandStatus::Rejected));
        assert!(r.reason.contains("args.scene"), "{}", r.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn commands_running_at_the_stop_deadline_fail_with_a_result() {
        // A core that takes the commands and never answers (a hung device behind it).
        let (tx, mut rx) = core();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(s) = rx.recv().await {
                held.push(s);
            }
        });
        let controls = Controls::default();
        let mut exec = Executor::new(8, tx);
        exec.submit(cmd("a", write_to("meter")), &controls).unwrap();
        exec.submit(cmd("b", write_to("meter")), &controls).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let done = exec.stop(deadline).await;
        assert_eq!(
            Instant::now(),
            deadline,
            "waited for them until the deadline"
        );
        let mut ids: Vec<&str> = done.iter().map(|(_, r)| r.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        for (action, r) in &done {
            assert_eq!((*action, r.status), ("point.write", CommandStatus::Failed));
            assert!(r.reason.contains("aborted"), "{}", r.reason);
        }
        held.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_without_outcome_fails_at_its_timeout_saying_so() {
        let (tx, mut rx) = core();
        let controls = Controls::default();
        let mut exec = Executor::new(8, tx);
        exec.submit(cmd("a", write_to("meter")), &controls).unwrap();
        let _kept = rx.recv().await.unwrap();
        let started = Instant::now();
        let (_, r) = exec.next().await;
        assert_eq!(Instant::now() - started, COMMAND_TIMEOUT);
        assert_eq!(r.status, CommandStatus::Failed);
        assert!(r.reason.contains("unknown whether"), "{}", r.reason);
        // A core gone: failed at once.
        drop(rx);
        exec.submit(cmd("b", write_to("meter")), &controls).unwrap();
        let (_, r) = exec.next().await;
        assert_eq!(r.status, CommandStatus::Failed);
        assert!(r.reason.contains("stopped"), "{}", r.reason);
    }

    /// Merging the Modbus line work (whose writes carry the command id for `write_outcome`)
    /// with the rules core's lanes: a write carried out for a central command still names it;
    /// one of the cabinet's own (a rule, the programme) names none.
    #[tokio::test]
    async fn a_write_carries_the_command_id_it_carries_out() {
        let (w_tx, mut w_rx) = mpsc::channel::<cabinetd_modbus::WriteRequest>(4);
        let mut controls = Controls::default();
        controls.writers.insert("meter".into(), w_tx);
        let device = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(req) = w_rx.recv().await {
                ids.push(req.id.clone());
                let _ = req.reply.send(Ok(()));
            }
            ids
        });
        execute(&write_to("meter"), Some("c-7"), &controls)
            .await
            .unwrap();
        execute(&write_to("meter"), None, &controls).await.unwrap();
        drop(controls);
        assert_eq!(device.await.unwrap(), vec![Some("c-7".to_string()), None]);
    }

    #[tokio::test]
    async fn equipment_actions_name_what_is_missing() {
        let controls = Controls::default();
        let e = execute(&write_to("nope"), None, &controls)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("\"nope\" is not running"), "{e}");
        let e = execute(
            &Action::CameraReboot {
                camera: "cam-1".into(),
            },
            None,
            &controls,
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "field `args.camera`: no camera \"cam-1\"");
        // A light action without buses is rejected by the router.
        let e = execute(
            &Action::LightSet {
                target: LightTarget::All,
                level_percent: 50.0,
                fade_s: None,
                hold_s: None,
            },
            None,
            &controls,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), CommandStatus::Rejected);
        assert!(e.to_string().contains("no DALI bus"), "{e}");
    }

    /// Issue 13 item 14: a command without a usable id got no answer at all. It is counted and
    /// answered with a `command_rejected` event (throttled).
    #[tokio::test]
    async fn a_command_without_a_usable_id_raises_an_event() {
        let (tx, mut rx) = mpsc::channel(64);
        let metrics = Metrics::new("test");
        let (core, _core_rx) = core();
        let mut commands = Commands::new(
            tx,
            metrics.clone(),
            crate::command::Ledger::memory(),
            crate::audit::AuditLog::default(),
            core,
        );
        let controls = Controls::default();
        let cfg = crate::config::load_sources(&[crate::config::Source {
            name: "t.toml".into(),
            text: "[cabinet]\nid = \"c-1\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n[security]\nrequire_signed = false\n".into(),
        }])
        .unwrap();
        let cabinet = crate::auth::TopicKind::Cabinet;
        for payload in [
            &br#"{"id":7,"action":"light.release","args":{"target":"all"}}"#[..],
            br#"{"action":"light.release","args":{"target":"all"}}"#,
            br#"{"id":"a","id":"b","action":"light.release"}"#,
        ] {
            commands.on_message(cabinet, payload, &cfg, &controls).await;
            match rx.try_recv() {
                Ok(RecordBody::Event(e)) => {
                    assert_eq!(e.kind, crate::event::EventKind::CommandRejected);
                    assert!(
                        e.data["reason"].as_str().unwrap().contains("id")
                            || e.data["reason"].as_str().unwrap().contains("JSON"),
                        "{}",
                        e.data
                    );
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(payload)),
            }
        }
        // Not JSON at all is taken for a malformed signed message: the auth gate answers it.
        commands
            .on_message(cabinet, b"not json", &cfg, &controls)
            .await;
        match rx.try_recv() {
            Ok(RecordBody::Event(e)) => {
                assert_eq!(e.kind, crate::event::EventKind::AuthRejected);
                assert_eq!(e.data["reason"], "malformed", "{}", e.data);
            }
            other => panic!("not json: {other:?}"),
        }
        let m = metrics.render();
        assert!(
            m.contains(r#"cabinetd_commands_total{action="light.release",status="rejected"} 3"#),
            "{m}"
        );
        // A flood is throttled: the metric counts all, the events stop at the burst.
        for _ in 0..100 {
            commands.on_message(cabinet, b"{}", &cfg, &controls).await;
        }
        let mut events = 0;
        while rx.try_recv().is_ok() {
            events += 1;
        }
        assert!(events < 30, "{events} events for 100 junk messages");
    }
}
