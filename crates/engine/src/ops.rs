//! The persisted-operation context every operation runs in ([`Op`]), and the step ceremony
//! every kind's steps share ([`Op::run_step`] over a kind's [`Steps`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use model::analysis::{errant_transactions, Errant};
use model::{GtidState, InstanceAddr, Observation, OperationKind};
use serde_json::{json, Value};
use store::{kinds, EventLevel, NewEvent, OperationRecord, OperationState, OperationUpdate, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::conns::Conns;
use crate::{failpoint, now_ms, Engine, EngineError};

/// How an operation ended.
pub(crate) enum Outcome {
    Succeeded(String),
    RolledBack(String),
    Failed(String),
    NeedsHuman(String),
}

/// A step that could not go on; the operation ends with this outcome.
pub(crate) type StepResult<T> = Result<T, Outcome>;

/// One step of an operation kind. Its name is what the record says the operation is at,
/// what the step's audit event names, and its failpoints (`<kind>.<name>.before|after`).
pub(crate) trait Step: Copy {
    fn name(self) -> &'static str;
}

/// A running operation of one kind: the state its steps share, and the steps themselves,
/// which [`Op::run_step`] runs one at a time.
pub(crate) trait Steps {
    type Step: Step;

    /// The operation's data, recorded with each step.
    fn record(&self) -> Value;

    /// The sessions the steps speak over (the audit reads positions through them too).
    fn conns(&mut self) -> &mut Conns;

    /// Whether `step` runs in this run: a step an earlier run finished is skipped when the
    /// operation resumes, and a step the cluster's settings leave out (no hooks) is not
    /// run.
    fn wanted(&self, _step: Self::Step) -> bool {
        true
    }

    /// The instances whose GTID positions the step's audit event records, before it
    /// (`after` false) and after it.
    fn audited(&self, step: Self::Step, after: bool) -> Vec<InstanceAddr>;

    /// What must hold before `step` starts, checked before it is recorded.
    async fn precondition(&mut self, _op: &mut Op<'_>, _step: Self::Step) -> StepResult<()> {
        Ok(())
    }

    /// The step itself; returns its detail for the audit event.
    async fn run(&mut self, op: &mut Op<'_>, step: Self::Step) -> StepResult<Value>;

    /// After `step` was recorded done.
    fn finished(&mut self, _step: Self::Step) {}
}

/// One running operation: its record, its lock, its audit trail.
pub(crate) struct Op<'e> {
    pub engine: &'e Engine,
    pub rec: OperationRecord,
    lock_lost: Arc<AtomicBool>,
    renew: CancellationToken,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.renew.cancel();
        self.engine.running_lock().remove(&self.rec.cluster);
        self.engine.operation_ended(&self.rec.cluster);
    }
}

impl<'e> Op<'e> {
    /// Take the cluster (this node's running set, then the store lock) and record a new
    /// running operation.
    pub async fn begin(
        engine: &'e Engine,
        cluster: &str,
        kind: OperationKind,
        trigger: &str,
        first_step: &str,
        data: Value,
    ) -> Result<Op<'e>, EngineError> {
        engine.require_leader()?;
        Self::claim(engine, cluster).await?;
        let rec = match engine
            .store
            .create_operation(&store::NewOperation {
                cluster: cluster.to_string(),
                kind: kind.as_str().to_string(),
                trigger: trigger.to_string(),
                state: OperationState::Running,
                step: first_step.to_string(),
                data,
                owner: engine.opts.node_id.clone(),
                created_ms: now_ms(),
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                engine.running_lock().remove(cluster);
                let _ = engine
                    .store
                    .unlock_cluster(cluster, &engine.opts.node_id)
                    .await;
                return Err(e.into());
            }
        };
        let op = Self::with_record(engine, rec);
        info!(
            operation = op.rec.id,
            cluster, kind = %kind, trigger, "operation started"
        );
        op.event(
            kinds::OPERATION_STARTED,
            EventLevel::Warning,
            format!(
                "{kind} of {cluster} started (operation {}, trigger {trigger})",
                op.rec.id
            ),
            json!({ "operation_id": op.rec.id, "kind": kind, "trigger": trigger }),
        )
        .await;
        Ok(op)
    }

    /// Take over an operation left running by a crash.
    pub async fn adopt(engine: &'e Engine, rec: OperationRecord) -> Result<Op<'e>, EngineError> {
        engine.require_leader()?;
        Self::claim(engine, &rec.cluster).await?;
        let mut op = Self::with_record(engine, rec);
        let data = op.rec.data.clone();
        op.rec = engine
            .store
            .update_operation(
                op.rec.id,
                &OperationUpdate {
                    state: OperationState::Running,
                    step: op.rec.step.clone(),
                    data: Some(data),
                    error: None,
                    owner: Some(engine.opts.node_id.clone()),
                    now_ms: now_ms(),
                },
            )
            .await?;
        Ok(op)
    }

    async fn claim(engine: &Engine, cluster: &str) -> Result<(), EngineError> {
        if engine.is_stopping() {
            return Err(EngineError::Refused(format!(
                "{} is shutting down: no new operation starts",
                engine.opts.node_id
            )));
        }
        if !engine.running_lock().insert(cluster.to_string()) {
            return Err(EngineError::Busy {
                cluster: cluster.to_string(),
                holder: format!("{} (an operation on this node)", engine.opts.node_id),
            });
        }
        let ttl = engine.opts.lock_ttl.as_millis() as u64;
        match engine
            .store
            .try_lock_cluster(cluster, &engine.opts.node_id, ttl, now_ms())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                engine.running_lock().remove(cluster);
                let holder = engine
                    .store
                    .cluster_lock(cluster)
                    .await
                    .ok()
                    .flatten()
                    .map(|l| l.holder)
                    .unwrap_or_else(|| "another node".into());
                Err(EngineError::Busy {
                    cluster: cluster.to_string(),
                    holder,
                })
            }
            Err(e) => {
                engine.running_lock().remove(cluster);
                Err(e.into())
            }
        }
    }

    fn with_record(engine: &'e Engine, rec: OperationRecord) -> Self {
        let lock_lost = Arc::new(AtomicBool::new(false));
        let renew = CancellationToken::new();
        {
            let store = engine.store.clone();
            let cluster = rec.cluster.clone();
            let node = engine.opts.node_id.clone();
            let ttl = engine.opts.lock_ttl;
            let lost = lock_lost.clone();
            let cancel = renew.clone();
            engine.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    match store
                        .try_lock_cluster(&cluster, &node, ttl.as_millis() as u64, now_ms())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            break;
                        }
                        Err(e) => warn!(cluster = %cluster, error = %e, "renew cluster lock"),
                    }
                }
            });
        }
        Self {
            engine,
            rec,
            lock_lost,
            renew,
        }
    }

    /// Run one step of `run`, unless it is not [`Steps::wanted`]: its precondition, then
    /// the step recorded as started (after a check that this node still holds the cluster
    /// lock and leads), its `before` failpoint, the step, its audit event with positions
    /// before and after, its `after` failpoint.
    pub async fn run_step<S: Steps>(&mut self, run: &mut S, step: S::Step) -> StepResult<()> {
        if !run.wanted(step) {
            return Ok(());
        }
        run.precondition(self, step).await?;
        let addrs = run.audited(step, false);
        let before = self
            .step(step.name(), &run.record(), run.conns(), &addrs)
            .await?;
        let detail = run.run(self, step).await?;
        let addrs = run.audited(step, true);
        self.done(step.name(), before, run.conns(), &addrs, detail)
            .await?;
        run.finished(step);
        Ok(())
    }

    /// [`Op::run_step`] for each of `steps`, in order, up to the first that stops.
    pub async fn run_steps<S: Steps>(&mut self, run: &mut S, steps: &[S::Step]) -> StepResult<()> {
        for step in steps {
            self.run_step(run, *step).await?;
        }
        Ok(())
    }

    /// Record that `step` starts, with the operation's context; returns the positions of
    /// `addrs` before it.
    async fn step(
        &mut self,
        step: &str,
        data: &Value,
        conns: &mut Conns,
        addrs: &[InstanceAddr],
    ) -> StepResult<BTreeMap<String, String>> {
        if self.lock_lost.load(Ordering::SeqCst) || !self.engine.is_leader() {
            return Err(Outcome::NeedsHuman(format!(
                "lost the cluster lock or leadership before step {step}: another node may act; stopped"
            )));
        }
        match self
            .engine
            .store
            .update_operation(
                self.rec.id,
                &OperationUpdate {
                    state: OperationState::Running,
                    step: step.to_string(),
                    data: Some(data.clone()),
                    error: None,
                    owner: None,
                    now_ms: now_ms(),
                },
            )
            .await
        {
            Ok(r) => self.rec = r,
            Err(e) => {
                return Err(Outcome::Failed(format!(
                    "cannot record step {step} in the store: {e}"
                )))
            }
        }
        failpoint::hit_for(
            &format!("{}.{step}.before", self.rec.kind),
            &self.rec.cluster,
        )
        .map_err(Outcome::Failed)?;
        Ok(conns.positions(addrs).await)
    }

    /// Record that `step` finished: an audit event with positions before and after.
    async fn done(
        &mut self,
        step: &str,
        before: BTreeMap<String, String>,
        conns: &mut Conns,
        addrs: &[InstanceAddr],
        detail: Value,
    ) -> StepResult<()> {
        let after = conns.positions(addrs).await;
        self.event(
            kinds::OPERATION_STEP,
            EventLevel::Info,
            format!("{} {}: step {step} done", self.rec.kind, self.rec.id),
            json!({
                "operation_id": self.rec.id,
                "step": step,
                "gtid_before": before,
                "gtid_after": after,
                "detail": detail,
            }),
        )
        .await;
        failpoint::hit_for(
            &format!("{}.{step}.after", self.rec.kind),
            &self.rec.cluster,
        )
        .map_err(Outcome::Failed)
    }

    pub async fn event(&self, kind: &str, level: EventLevel, msg: String, data: Value) {
        let ev = NewEvent::new(now_ms(), kind, level, msg)
            .with_cluster(self.rec.cluster.clone())
            .with_data(data);
        if let Err(e) = self.engine.store.append_event(&ev).await {
            warn!(operation = self.rec.id, error = %e, "cannot append an operation event");
        }
    }

    /// End the operation: final state, event, lock released.
    pub async fn finish(
        mut self,
        outcome: Outcome,
        data: Value,
    ) -> Result<OperationRecord, EngineError> {
        let (state, level, msg) = match outcome {
            Outcome::Succeeded(m) => (OperationState::Succeeded, EventLevel::Warning, m),
            Outcome::RolledBack(m) => (OperationState::RolledBack, EventLevel::Error, m),
            Outcome::Failed(m) => (OperationState::Failed, EventLevel::Critical, m),
            Outcome::NeedsHuman(m) => (OperationState::NeedsHuman, EventLevel::Critical, m),
        };
        let error = (state != OperationState::Succeeded).then(|| msg.clone());
        let step = self.rec.step.clone();
        let rec = self
            .engine
            .store
            .update_operation(
                self.rec.id,
                &OperationUpdate {
                    state,
                    step,
                    data: Some(data),
                    error,
                    owner: None,
                    now_ms: now_ms(),
                },
            )
            .await;
        let text = format!(
            "{} {} of {} {}: {msg}",
            self.rec.kind, self.rec.id, self.rec.cluster, state
        );
        if state == OperationState::Succeeded {
            info!("{text}");
        } else {
            warn!("{text}");
        }
        self.event(
            kinds::OPERATION_FINISHED,
            level,
            text,
            json!({ "operation_id": self.rec.id, "kind": self.rec.kind, "state": state }),
        )
        .await;
        self.renew.cancel();
        let _ = self
            .engine
            .store
            .unlock_cluster(&self.rec.cluster, &self.engine.opts.node_id)
            .await;
        let rec = rec?;
        self.rec = rec.clone();
        // No subscriber is fine: nobody is listening.
        let _ = self.engine.finished.send(rec.clone());
        if state == OperationState::Succeeded {
            Ok(rec)
        } else {
            Err(EngineError::Ended {
                id: rec.id,
                kind: rec.kind.clone(),
                cluster: rec.cluster.clone(),
                state,
                message: msg,
                record: Box::new(rec),
            })
        }
    }
}

/// The errant GTIDs of `obs` against the cluster's current writer, as text.
pub(crate) async fn errant_against_writer(
    store: &dyn Store,
    cluster: &str,
    obs: &Observation,
    conns: &mut Conns,
) -> Result<Vec<String>, String> {
    let writer = store
        .cluster(cluster)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|c| c.writer)
        .ok_or_else(|| format!("cluster {cluster} has no writer recorded"))?;
    if writer == obs.addr {
        return Err(format!("{} is the cluster's writer", obs.addr));
    }
    let w = conns.observe(&writer).await;
    match errant_transactions(obs, &w) {
        Some(Errant::Mariadb(v)) => Ok(v
            .iter()
            .map(|e| format!("{}-{}-{}", e.domain, e.server_id, e.replica_seq))
            .collect()),
        Some(Errant::Mysql(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Errant::Mysql(s)) => Ok(vec![s.to_string()]),
        None => Err(format!(
            "cannot compare {} with the writer {writer}: one is unreachable or runs without GTIDs",
            obs.addr
        )),
    }
}

/// `@@gtid_binlog_pos` of an observation, as text.
pub(crate) fn binlog_pos(obs: &Observation) -> Option<String> {
    match &obs.state()?.gtid {
        GtidState::Mariadb { binlog_pos, .. } => Some(binlog_pos.to_string()),
        GtidState::Mysql { .. } => None,
    }
}

impl Engine {
    /// An interrupted operation the engine does not resume: make it `needs_human`.
    pub(crate) async fn interrupted_needs_human(
        self: &Arc<Self>,
        rec: OperationRecord,
    ) -> Result<(), EngineError> {
        let op = Op::adopt(self, rec).await?;
        op.give_up_interrupted(String::new()).await;
        Ok(())
    }
}

impl Op<'_> {
    /// End an adopted operation that is not resumed: `needs_human`, saying the step it
    /// stopped at, and `note` (what was undone, from its kind).
    pub async fn give_up_interrupted(self, note: String) {
        let step = self.rec.step.clone();
        let kind = self.rec.kind.clone();
        let data = self.rec.data.clone();
        let _ = self
            .finish(
                Outcome::NeedsHuman(format!(
                    "the daemon stopped during step {step}; a {kind} is not resumed automatically{note}"
                )),
                data,
            )
            .await;
    }
}
