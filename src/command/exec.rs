//! Executing commands: [`Commands`] takes a payload from the uplink to exactly one result record.
//!
//! - Parse, then the [`Ledger`]: a running id is ignored, a finished id gets its first result
//!   published again; an expired command is `expired`.
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
//!   `equipment::lights::LIGHT_TIMEOUT` per bus.
//! - At the stop, commands still running when the equipment phase of the stop deadline ends are
//!   aborted and get a `failed` result ([`Commands::stop`]), which the daemon flushes before it
//!   exits: no command goes without its final result.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::{outcome, parse, result, Action, Command, CommandError, Ledger, Seen};
use crate::config::RuleAction;
use crate::equipment::Controls;
use crate::light::LightAction;
use crate::metrics::{Metrics, SPEC_ACTIONS};
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

/// Carries out one action on the running equipment (the rules core's lanes call it): a point
/// write through its device's task, a light level through the light router, a camera action
/// through the camera's handle. `light.release` and `scene.*` are decided by the core, never
/// equipment actions.
pub async fn execute(action: &Action, controls: &Controls) -> Result<(), CommandError> {
    match action {
        Action::PointWrite { point, value } => {
            let (device, name) = point.split_once('/').unwrap_or((point, ""));
            let Some(writer) = controls.writers.get(device).cloned() else {
                return Err(CommandError::Failed(format!(
                    "Modbus device {device:?} is not running"
                )));
            };
            write(writer, name.to_owned(), *value).await
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

/// A camera action through what [`Controls`] offers for cameras (a thin call: the camera's own
/// module does the work).
async fn camera(action: &Action, controls: &Controls) -> Result<(), CommandError> {
    let (Action::CameraGotoPreset { camera, .. }
    | Action::CameraReboot { camera }
    | Action::CameraSyncTime { camera }) = action
    else {
        return Err(CommandError::Rejected(
            "field `action`: not a camera action".into(),
        ));
    };
    Err(CommandError::Rejected(
        if controls.cameras.contains(camera) {
            format!(
                "field `args.camera`: {camera:?} is configured but this build has no ONVIF adapter"
            )
        } else {
            format!("field `args.camera`: no camera {camera:?}")
        },
    ))
}

/// One point write through the device's task, bounded by [`WRITE_TIMEOUT`].
async fn write(
    writer: mpsc::Sender<cabinetd_modbus::WriteRequest>,
    point: String,
    value: cabinetd_modbus::Value,
) -> Result<(), CommandError> {
    let stopped = || CommandError::Failed("device task stopped".into());
    let (reply, rx) = oneshot::channel();
    let req = cabinetd_modbus::WriteRequest {
        point,
        value,
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

/// Commands from the uplink to their results: parse, ledger, executor, records and metrics.
pub struct Commands {
    ledger: Ledger,
    exec: Executor,
    records: mpsc::Sender<RecordBody>,
    metrics: Metrics,
}

impl Commands {
    /// Results go to `records`; `cabinetd_commands_total` to `metrics`; accepted commands to
    /// the rules core on `core`.
    pub fn new(records: mpsc::Sender<RecordBody>, metrics: Metrics, core: CoreSender) -> Commands {
        Commands {
            ledger: Ledger::default(),
            exec: Executor::new(MAX_IN_FLIGHT, core),
            records,
            metrics,
        }
    }

    /// A payload from `P/C/cmd` or `P/all/cmd`.
    pub async fn on_message(&mut self, payload: &[u8], controls: &Controls) {
        let cmd = match parse(payload) {
            Ok(cmd) => cmd,
            Err(rej) => {
                tracing::warn!(id = ?rej.id, reason = %rej.reason, "command rejected");
                // The label is bounded: an unknown action counts as `unknown`.
                let action = SPEC_ACTIONS
                    .into_iter()
                    .find(|a| *a == rej.action)
                    .unwrap_or("unknown");
                if let Some(id) = rej.id {
                    if let Seen::Done(prev) = self.ledger.begin(&id) {
                        self.publish(prev).await;
                        return;
                    }
                    let r = CommandError::Rejected(rej.reason).result(&id);
                    self.finish(action, r).await;
                } else {
                    self.count(action, CommandStatus::Rejected);
                }
                return;
            }
        };
        match self.ledger.begin(&cmd.id) {
            Seen::Running => return,
            Seen::Done(prev) => {
                tracing::info!(id = %cmd.id, "command seen before; publishing its result again");
                self.publish(prev).await;
                return;
            }
            Seen::New => {}
        }
        let action = cmd.action.name();
        if cmd
            .expires_at
            .is_some_and(|t| t < std::time::SystemTime::now())
        {
            let e = CommandError::Expired("field `expires_at`: already past when received".into());
            self.finish(action, e.result(&cmd.id)).await;
            return;
        }
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

    /// Records a final result: ledger, metrics, log, record.
    pub async fn finish(&mut self, action: &'static str, r: CommandResult) {
        self.gauge();
        tracing::info!(id = %r.id, status = r.status.as_str(), reason = %r.reason, "command result");
        self.count(action, r.status);
        self.ledger.finish(&r);
        self.publish(r).await;
    }

    /// At the stop: commands still running at `deadline` are aborted with a `failed` result;
    /// every result is recorded.
    pub async fn stop(&mut self, deadline: Instant) {
        let n = self.exec.in_flight();
        if n > 0 {
            tracing::info!(commands = n, "waiting for the commands in flight");
        }
        for (action, r) in self.exec.stop(deadline).await {
            self.finish(action, r).await;
        }
    }

    fn gauge(&self) {
        let n = i64::try_from(self.exec.in_flight()).unwrap_or(i64::MAX);
        self.metrics.commands_in_flight.set(n);
    }

    fn count(&self, action: &str, status: CommandStatus) {
        self.metrics
            .commands_total
            .with_label_values(&[action, status.as_str()])
            .inc();
    }

    async fn publish(&self, r: CommandResult) {
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

    #[tokio::test]
    async fn equipment_actions_name_what_is_missing() {
        let mut controls = Controls::default();
        controls.cameras.insert("cam-1".into());
        let e = execute(&write_to("nope"), &controls).await.unwrap_err();
        assert!(e.to_string().contains("\"nope\" is not running"), "{e}");
        let e = execute(
            &Action::CameraReboot {
                camera: "cam-1".into(),
            },
            &controls,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no ONVIF adapter"), "{e}");
        // A light action without buses is rejected by the router.
        let e = execute(
            &Action::LightSet {
                target: LightTarget::All,
                level_percent: 50.0,
                fade_s: None,
                hold_s: None,
            },
            &controls,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), CommandStatus::Rejected);
        assert!(e.to_string().contains("no DALI bus"), "{e}");
    }
}
