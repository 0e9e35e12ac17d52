//! Policy `auto`: the automatic failover of one dead primary, as a task of its own that
//! starts the failover, retries it with backoff while it is refused or fails before
//! promotion and the primary stays dead, and tells the daemon's alerting
//! ([`AutoFailoverNotice`]) so that a failover that did not happen pages at once.
//!
//! One task per death ([`Engine::start_auto_failover`]). Between attempts it waits
//! `retry_backoff`, doubling up to `retry_backoff_max`; `dbfleet recoveries ack` wakes it
//! at once. It stops when:
//! - a failover succeeds;
//! - the rounds show the primary alive again or replaced ([`Engine::on_round`] cancels it);
//! - the dead primary answers a probe after a refused attempt (the rounds judge it again);
//! - this node stops leading, recoveries are disabled or a block window holds (the next
//!   round judges the death again, and a `failover_blocked` event says why);
//! - an attempt ends in a way a retry must not repeat: the failover needs a human, or it
//!   failed after promotion started. That pages as `operation_failed`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use model::InstanceAddr;
use store::{kinds, EventLevel, NewEvent, OperationState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{now_ms, Decision, Engine, EngineError};

/// What the engine tells the daemon's alerting about automatic failovers (see
/// [`Engine::auto_failover_notices`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoFailoverNotice {
    /// An automatic attempt did not fail over: it was refused before an operation could
    /// start, or its operation failed before promotion. Another attempt follows at
    /// `next_attempt_ms` (ms since the Unix epoch) unless the primary answers again first.
    Refused {
        cluster: String,
        dead: InstanceAddr,
        /// 1 for the first attempt of this death.
        attempt: u32,
        reason: String,
        /// The operation of the attempt, when one started.
        operation_id: Option<i64>,
        next_attempt_ms: u64,
    },
    /// The death is dealt with: a failover succeeded, or the primary answers again.
    Settled {
        cluster: String,
        dead: InstanceAddr,
        why: String,
    },
}

/// The running automatic failover of one cluster's dead primary.
pub(crate) struct AutoRun {
    pub dead: InstanceAddr,
    /// Tells a stale task from the current one.
    pub id: u64,
    pub cancel: CancellationToken,
    /// Wakes a task waiting out its backoff (`recoveries ack`).
    pub wake: Arc<Notify>,
}

/// How one attempt ended.
enum Attempt {
    Succeeded(i64),
    /// Nothing was promoted: try again after the backoff.
    Retry {
        reason: String,
        operation_id: Option<i64>,
    },
    /// The dead primary answers a probe: the rounds judge it again.
    Answers,
    /// A retry must not repeat it (the operation's own end pages), or this node cannot act.
    Stop(String),
}

impl Engine {
    /// Every automatic failover attempt that did not fail over, and every end of such an
    /// episode, from now on. The daemon's alerting raises `failover_refused` on the first
    /// and resolves it on the second. A subscriber more than 64 behind misses the oldest.
    pub fn auto_failover_notices(&self) -> tokio::sync::broadcast::Receiver<AutoFailoverNotice> {
        self.notices.subscribe()
    }

    /// Start the automatic failover of `dead` on a task of its own, replacing (cancelling)
    /// any run for another death of the cluster.
    pub(crate) fn start_auto_failover(
        self: &Arc<Self>,
        cluster: &str,
        dead: &InstanceAddr,
        detected_ms: u64,
    ) {
        let id = self.next_run.fetch_add(1, Ordering::SeqCst);
        let cancel = self.stop.child_token();
        let wake = Arc::new(Notify::new());
        let old = self.auto_runs_lock().insert(
            cluster.to_string(),
            AutoRun {
                dead: dead.clone(),
                id,
                cancel: cancel.clone(),
                wake: wake.clone(),
            },
        );
        if let Some(old) = old {
            old.cancel.cancel();
        }
        self.handled_lock()
            .insert(cluster.to_string(), (dead.clone(), Decision::Running));
        let me = self.clone();
        let cluster = cluster.to_string();
        let dead = dead.clone();
        self.spawn(async move {
            me.auto_failover_run(&cluster, &dead, detected_ms, id, cancel, wake)
                .await;
            let mut runs = me.auto_runs_lock();
            if runs.get(&cluster).is_some_and(|r| r.id == id) {
                runs.remove(&cluster);
            }
        });
    }

    /// Cancel the automatic failover of `cluster`, if one runs or waits; returns the dead
    /// primary it was for.
    pub(crate) fn stop_auto_failover(&self, cluster: &str) -> Option<InstanceAddr> {
        let run = self.auto_runs_lock().remove(cluster)?;
        run.cancel.cancel();
        Some(run.dead)
    }

    /// `recoveries ack`: a retry that waits out its backoff runs at once; a death left
    /// blocked or given up on is judged again now when the last round still said it is
    /// dead. Returns whether an attempt was woken or started.
    pub(crate) fn kick_auto_failover(self: &Arc<Self>, cluster: &str) -> bool {
        if let Some(run) = self.auto_runs_lock().get(cluster) {
            run.wake.notify_one();
            return true;
        }
        let judged = self.handled_lock().get(cluster).cloned();
        let dead_now = self.dead_now_lock().get(cluster).cloned();
        match (judged, dead_now) {
            (Some((d, Decision::Blocked | Decision::GaveUp)), Some((now, at_ms))) if d == now => {
                self.start_auto_failover(cluster, &d, at_ms);
                true
            }
            _ => false,
        }
    }

    /// Set the decision about `dead` when the run `id` is still the cluster's current one.
    fn decide(&self, cluster: &str, dead: &InstanceAddr, id: u64, decision: Option<Decision>) {
        let current = self
            .auto_runs_lock()
            .get(cluster)
            .is_some_and(|r| r.id == id);
        if !current {
            return;
        }
        let mut handled = self.handled_lock();
        match decision {
            Some(d) => {
                handled.insert(cluster.to_string(), (dead.clone(), d));
            }
            None => {
                if handled.get(cluster).is_some_and(|(d, _)| d == dead) {
                    handled.remove(cluster);
                }
            }
        }
    }

    async fn auto_failover_run(
        self: &Arc<Self>,
        cluster: &str,
        dead: &InstanceAddr,
        detected_ms: u64,
        id: u64,
        cancel: CancellationToken,
        wake: Arc<Notify>,
    ) {
        let Ok(setup) = self.setup(cluster) else {
            return;
        };
        let (first, max) = (
            setup.failover.retry_backoff,
            setup
                .failover
                .retry_backoff_max
                .max(setup.failover.retry_backoff),
        );
        let mut delay = first;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.decide(cluster, dead, id, Some(Decision::Running));
            let outcome = self.auto_attempt(cluster, dead, detected_ms).await;
            if cancel.is_cancelled() {
                return;
            }
            let (reason, operation_id) = match outcome {
                Attempt::Succeeded(op) => {
                    self.decide(cluster, dead, id, Some(Decision::Done));
                    let _ = self.notices.send(AutoFailoverNotice::Settled {
                        cluster: cluster.to_string(),
                        dead: dead.clone(),
                        why: format!("automatic failover {op} succeeded (attempt {attempt})"),
                    });
                    return;
                }
                Attempt::Answers => {
                    info!(cluster, primary = %dead, "the dead primary answers again: no more automatic attempts");
                    self.decide(cluster, dead, id, None);
                    return;
                }
                Attempt::Stop(why) => {
                    warn!(cluster, primary = %dead, attempt, reason = %why, "automatic failover not retried");
                    self.decide(cluster, dead, id, Some(Decision::GaveUp));
                    return;
                }
                Attempt::Retry {
                    reason,
                    operation_id,
                } => (reason, operation_id),
            };
            self.decide(cluster, dead, id, Some(Decision::Retrying));
            let next = now_ms() + delay.as_millis() as u64;
            self.refused(cluster, dead, attempt, &reason, operation_id, delay)
                .await;
            let _ = self.notices.send(AutoFailoverNotice::Refused {
                cluster: cluster.to_string(),
                dead: dead.clone(),
                attempt,
                reason,
                operation_id,
                next_attempt_ms: next,
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => delay = (delay * 2).min(max),
                _ = wake.notified() => {
                    info!(cluster, primary = %dead, "recoveries acknowledged: retrying the failover now");
                    delay = first;
                }
            }
            if !self.is_leader() {
                self.decide(cluster, dead, id, None);
                return;
            }
            if let Some(why) = self.auto_blocked(cluster, setup).await {
                // The next round judges the death again and records why it is blocked.
                info!(cluster, primary = %dead, reason = %why, "automatic failover retry held back");
                self.decide(cluster, dead, id, None);
                return;
            }
        }
    }

    /// One automatic attempt, judged.
    async fn auto_attempt(
        self: &Arc<Self>,
        cluster: &str,
        dead: &InstanceAddr,
        detected_ms: u64,
    ) -> Attempt {
        if !self.is_leader() {
            return Attempt::Stop("this node no longer leads".into());
        }
        match self.failover_from(cluster, "auto", Some(detected_ms)).await {
            Ok(rec) => Attempt::Succeeded(rec.id),
            Err(EngineError::Ended {
                id, state, record, ..
            }) => {
                let promoted = record.data["promote_started"].as_bool() == Some(true);
                match state {
                    OperationState::Failed | OperationState::RolledBack if !promoted => {
                        let reason = record.error.clone().unwrap_or_else(|| state.to_string());
                        self.retry_unless_answers(cluster, dead, reason, Some(id))
                            .await
                    }
                    _ => Attempt::Stop(format!(
                        "operation {id} ended {state}{}: it pages as operation_failed",
                        if promoted {
                            " after promotion started"
                        } else {
                            ""
                        }
                    )),
                }
            }
            Err(e @ (EngineError::NotLeader { .. } | EngineError::UnknownCluster(_))) => {
                Attempt::Stop(e.to_string())
            }
            Err(
                e @ (EngineError::Refused(_) | EngineError::Busy { .. } | EngineError::Store(_)),
            ) => {
                self.retry_unless_answers(cluster, dead, e.to_string(), None)
                    .await
            }
        }
    }

    /// A refused or failed attempt is retried, unless the dead primary answers now (then
    /// the refusal was right and the rounds judge it again).
    async fn retry_unless_answers(
        &self,
        cluster: &str,
        dead: &InstanceAddr,
        reason: String,
        operation_id: Option<i64>,
    ) -> Attempt {
        if let Ok(setup) = self.setup(cluster) {
            let o = probe::observe(dead, &setup.admin, self.opts.probe).await;
            if o.state().is_some() {
                return Attempt::Answers;
            }
        }
        Attempt::Retry {
            reason,
            operation_id,
        }
    }

    /// Record a refused attempt: a `failover_refused` event (critical for the first attempt
    /// of a death, warning for the retries) and a log line.
    async fn refused(
        &self,
        cluster: &str,
        dead: &InstanceAddr,
        attempt: u32,
        reason: &str,
        operation_id: Option<i64>,
        retry_in: Duration,
    ) {
        warn!(cluster, primary = %dead, attempt, retry_in = ?retry_in, reason, "automatic failover did not fail over; retrying");
        let msg = format!(
            "primary {dead} of {cluster} is dead and automatic failover attempt {attempt} did not fail over: {reason}; retrying in {retry_in:?}"
        );
        let level = if attempt == 1 {
            EventLevel::Critical
        } else {
            EventLevel::Warning
        };
        let _ = self
            .store
            .append_event(
                &NewEvent::new(now_ms(), kinds::FAILOVER_REFUSED, level, msg)
                    .with_cluster(cluster)
                    .with_instance(dead.clone())
                    .with_data(serde_json::json!({
                        "attempt": attempt,
                        "reason": reason,
                        "operation_id": operation_id,
                        "retry_in_ms": retry_in.as_millis() as u64,
                    })),
            )
            .await;
    }
}
