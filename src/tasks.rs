//! Named tasks: a `JoinSet` whose members are known by name, so a stop that runs out of time
//! can say which tasks it had to abort.
//!
//! Invariant: nothing is ever detached. [`NamedTasks::join_until`] waits for every task until a
//! deadline, then aborts the rest and awaits them too, so when it returns no task of the set
//! runs any more (and whatever a task owned — a serial port, a bus lock — is released).

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{AbortHandle, Id, JoinSet};
use tokio::time::Instant;

/// A set of tasks, each with a name for the logs.
#[derive(Default)]
pub struct NamedTasks {
    set: JoinSet<()>,
    names: HashMap<Id, String>,
}

impl NamedTasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut` as a member named `name`; the handle tells whether it ended.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let handle = self.set.spawn(fut);
        self.names.insert(handle.id(), name.into());
        handle
    }

    /// Tasks still running or not yet reaped.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits for every task until `deadline`; then aborts the others and awaits them. Returns the
    /// names of the aborted ones (also logged, naming `what` the set is). A task that panicked
    /// is logged and counted as ended.
    pub async fn join_until(&mut self, deadline: Instant, what: &str) -> Vec<String> {
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(None) => return Vec::new(),
                Ok(Some(ended)) => self.reap(ended),
                Err(_) => break,
            }
        }
        let mut aborted: Vec<String> = self.names.values().cloned().collect();
        aborted.sort();
        tracing::warn!(tasks = ?aborted, "{what}: still running at the stop deadline; aborted");
        self.set.abort_all();
        while let Some(ended) = self.set.join_next_with_id().await {
            self.reap(ended);
        }
        aborted
    }

    fn reap(&mut self, ended: Result<(Id, ()), tokio::task::JoinError>) {
        match ended {
            Ok((id, ())) => {
                self.names.remove(&id);
            }
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or_default();
                if e.is_panic() {
                    tracing::error!(task = %name, "task panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn stubborn_tasks_are_aborted_by_name_at_the_deadline() {
        let mut tasks = NamedTasks::new();
        tasks.spawn("quick", async {});
        tasks.spawn("stubborn", std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Owns `tx` until it is aborted: the receiver then sees it dropped.
        tasks.spawn("holder", async move {
            let _owned = tx;
            std::future::pending::<()>().await
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        let aborted = tasks.join_until(deadline, "test").await;
        assert_eq!(aborted, ["holder", "stubborn"]);
        assert!(tasks.is_empty());
        assert!(rx.await.is_err(), "what an aborted task owned is released");
        assert_eq!(Instant::now(), deadline);
    }
}
