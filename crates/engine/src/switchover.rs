//! Planned switchover: move the primary role to a healthy replica with writes blocked for
//! as short a time as possible, and roll back if anything fails before promotion.
//!
//! Steps: `check` (target healthy, caught up, no errant GTIDs), `block_writes` (old primary
//! read-only, clients killed), `catch_up` (target applies the old primary's last position),
//! `promote`, `repoint` (every other replica, and the old primary, as replicas of the
//! target), `open_writes` (target writable, writer moved in the store), `verify_replicas`.
//! A failure before `promote` makes the old primary writable again (`rolled_back`).

use std::sync::Arc;

use model::analysis::errant_transactions;
use model::{InstanceAddr, IoThreadState, Observation, OperationKind, PromotionRule};
use probe::commands::{Command, PointAt};
use probe::Credentials;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::OperationRecord;

use crate::conns::Conns;
use crate::hooks::{run_hooks, HookEnv};
use crate::ops::{binlog_pos, Op, Outcome, Step, StepResult, Steps};
use crate::registry::{BoxFuture, OperationSpec};
use crate::{now_ms, ClusterSetup, Engine, EngineError};

/// The switchover's steps, in order; each has failpoints `switchover.<step>.before|after`.
pub const SWITCHOVER_STEPS: &[&str] = &[
    "check",
    "block_writes",
    "catch_up",
    "promote",
    "repoint",
    "open_writes",
    "verify_replicas",
];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SwitchoverData {
    pub old_primary: Option<InstanceAddr>,
    pub target: Option<InstanceAddr>,
    pub replicas: Vec<InstanceAddr>,
    pub blocked_ms: Option<u64>,
    pub unblocked_ms: Option<u64>,
    /// How long writes were refused: read-only on the old primary until the target opened.
    pub write_block_ms: Option<u64>,
    pub target_pos: Option<String>,
    pub promote_started: bool,
    pub repointed: Vec<InstanceAddr>,
    pub warnings: Vec<String>,
}

impl SwitchoverData {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl Engine {
    /// Move the primary role to `to`, or to the best healthy replica.
    pub async fn switchover(
        self: &Arc<Self>,
        cluster: &str,
        to: Option<InstanceAddr>,
    ) -> Result<OperationRecord, EngineError> {
        let (me, cluster) = (self.clone(), cluster.to_string());
        self.run_operation(async move { me.switchover_now(&cluster, to).await })
            .await
    }

    /// [`Engine::switchover`], on the caller's task.
    async fn switchover_now(
        self: &Arc<Self>,
        cluster: &str,
        to: Option<InstanceAddr>,
    ) -> Result<OperationRecord, EngineError> {
        let crate::failover::FreshLook {
            setup,
            repl,
            conns,
            observations: obs,
            analysis,
        } = self.fresh_look(cluster, OperationKind::Switchover).await?;
        let primary = analysis
            .primary
            .clone()
            .filter(|p| {
                obs.iter()
                    .any(|o| &o.addr == p && o.state().is_some_and(|s| !s.read_only))
            })
            .ok_or_else(|| {
                EngineError::Refused(format!(
                    "{cluster} has no reachable, writable primary: switchover needs one (a dead primary needs `dbfleet failover`)"
                ))
            })?;
        let data = SwitchoverData {
            old_primary: Some(primary.clone()),
            target: to.clone(),
            ..Default::default()
        };
        let op = Op::begin(
            self,
            cluster,
            OperationKind::Switchover,
            "manual",
            "check",
            data.json(),
        )
        .await?;
        self.drive_switchover(op, conns, &setup, &repl, data, obs)
            .await
    }

    async fn drive_switchover(
        &self,
        mut op: Op<'_>,
        conns: Conns,
        setup: &ClusterSetup,
        repl: &Credentials,
        data: SwitchoverData,
        obs: Vec<Observation>,
    ) -> Result<OperationRecord, EngineError> {
        let mut run = SwitchoverRun {
            engine: self,
            setup,
            repl,
            conns,
            data,
            obs,
            old: InstanceAddr::new("", 0),
            target: InstanceAddr::new("", 0),
            others: Vec::new(),
            all: Vec::new(),
        };
        let r = run.run_all(&mut op).await;
        let SwitchoverRun {
            mut conns, data, ..
        } = run;
        let outcome = match r {
            Ok(m) => Outcome::Succeeded(m),
            Err(o) if !data.promote_started && data.blocked_ms.is_some() => {
                let msg = match o {
                    Outcome::Succeeded(m)
                    | Outcome::RolledBack(m)
                    | Outcome::Failed(m)
                    | Outcome::NeedsHuman(m) => m,
                };
                let old = data
                    .old_primary
                    .clone()
                    .unwrap_or_else(|| InstanceAddr::new("", 0));
                match unblock(&mut conns, &old, setup.spec.semi_sync).await {
                    Ok(()) => {
                        Outcome::RolledBack(format!("{msg}; rolled back: {old} is writable again"))
                    }
                    Err(e) => Outcome::NeedsHuman(format!(
                        "{msg}; the rollback FAILED, {old} is still read-only: {e}"
                    )),
                }
            }
            Err(o) => o,
        };
        op.finish(outcome, data.json()).await
    }
}

/// A switchover's steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SwitchoverStep {
    /// The target is healthy, caught up enough, with no errant GTIDs (or the best such
    /// replica is chosen).
    Check,
    /// The old primary read-only, its clients killed.
    BlockWrites,
    /// The target applies the old primary's last position.
    CatchUp,
    /// The target's replication reset, semi-sync set as a primary; still read-only.
    Promote,
    /// Every other replica, and the old primary, pointed at the target.
    Repoint,
    /// The target writable, the writer moved in the store.
    OpenWrites,
    /// Each replica checked.
    VerifyReplicas,
}

impl SwitchoverStep {
    /// Every step, in order.
    pub(crate) const ALL: [SwitchoverStep; 7] = [
        SwitchoverStep::Check,
        SwitchoverStep::BlockWrites,
        SwitchoverStep::CatchUp,
        SwitchoverStep::Promote,
        SwitchoverStep::Repoint,
        SwitchoverStep::OpenWrites,
        SwitchoverStep::VerifyReplicas,
    ];
}

impl Step for SwitchoverStep {
    fn name(self) -> &'static str {
        match self {
            SwitchoverStep::Check => "check",
            SwitchoverStep::BlockWrites => "block_writes",
            SwitchoverStep::CatchUp => "catch_up",
            SwitchoverStep::Promote => "promote",
            SwitchoverStep::Repoint => "repoint",
            SwitchoverStep::OpenWrites => "open_writes",
            SwitchoverStep::VerifyReplicas => "verify_replicas",
        }
    }
}

/// One run of a switchover: what its steps share.
struct SwitchoverRun<'a> {
    engine: &'a Engine,
    setup: &'a ClusterSetup,
    repl: &'a Credentials,
    conns: Conns,
    data: SwitchoverData,
    /// The fresh observations the switchover started from.
    obs: Vec<Observation>,
    old: InstanceAddr,
    /// The target, from `check` on.
    target: InstanceAddr,
    /// The other replicas, from `check` on.
    others: Vec<InstanceAddr>,
    /// The old primary, the target and the others: whose positions the audit records.
    all: Vec<InstanceAddr>,
}

impl SwitchoverRun<'_> {
    /// Every step, then the operation's message.
    async fn run_all(&mut self, op: &mut Op<'_>) -> StepResult<String> {
        self.old = self
            .data
            .old_primary
            .clone()
            .ok_or_else(|| Outcome::Failed("no primary".into()))?;
        let old = &self.old;
        if !self.obs.iter().any(|o| o.addr == *old) {
            return Err(Outcome::Failed(format!("{old} was not observed")));
        }
        self.data.replicas = self.replicas().iter().map(|o| o.addr.clone()).collect();
        op.run_steps(self, &SwitchoverStep::ALL).await?;
        Ok(format!(
            "{} is the new primary of {} (was {}); writes were blocked for {} ms{}",
            self.target,
            self.setup.spec.name,
            self.old,
            self.data.write_block_ms.unwrap_or(0),
            if self.data.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", self.data.warnings.join("; "))
            }
        ))
    }

    /// The observed replicas of the old primary.
    fn replicas(&self) -> Vec<&Observation> {
        self.obs
            .iter()
            .filter(|o| {
                o.state()
                    .and_then(|s| s.replication.as_ref())
                    .is_some_and(|r| r.source == self.old)
            })
            .collect()
    }

    async fn check(&mut self) -> StepResult<Value> {
        let setup = self.setup;
        let old = self.old.clone();
        let old_obs = self
            .obs
            .iter()
            .find(|o| o.addr == old)
            .ok_or_else(|| Outcome::Failed(format!("{old} was not observed")))?;
        let replicas = self.replicas();
        let max_lag = setup.spec.max_lag.as_secs();
        let health = |o: &Observation| -> Result<u64, String> {
            let s = o.state().ok_or("unreachable")?;
            let r = s.replication.as_ref().ok_or("not a replica")?;
            if r.io_thread != IoThreadState::Yes || !r.sql_running {
                return Err(format!(
                    "not replicating (io={:?}, sql={})",
                    r.io_thread, r.sql_running
                ));
            }
            let lag = r.seconds_behind_source.ok_or("lag unknown")?;
            if lag > max_lag {
                return Err(format!("{lag}s behind, more than max_lag {max_lag}s"));
            }
            if !(s.log_bin && s.log_replica_updates) {
                return Err("no binary log (log_bin and log_slave_updates needed)".into());
            }
            match errant_transactions(o, old_obs) {
                Some(e) if !e.is_empty() => return Err(format!("errant GTIDs: {e}")),
                _ => {}
            }
            Ok(lag)
        };
        let target = match self.data.target.clone() {
            Some(t) => {
                let o = replicas.iter().find(|o| o.addr == t).ok_or_else(|| {
                    Outcome::RolledBack(format!("{t} is not a replica of the primary {old}"))
                })?;
                health(o)
                    .map_err(|e| Outcome::RolledBack(format!("target {t} is not ready: {e}")))?;
                t
            }
            None => {
                let old_site = setup.spec.instance(&old).and_then(|s| s.site.clone());
                let mut ok: Vec<(bool, bool, u64, String, InstanceAddr)> = replicas
                    .iter()
                    .filter_map(|o| {
                        let spec = setup.spec.instance(&o.addr);
                        let rule = spec.map(|s| s.promotion).unwrap_or_default();
                        if rule == PromotionRule::MustNot {
                            return None;
                        }
                        let lag = health(o).ok()?;
                        let site = spec.and_then(|s| s.site.clone());
                        Some((
                            rule != PromotionRule::Prefer,
                            old_site.is_none() || site != old_site,
                            lag,
                            o.addr.to_string(),
                            o.addr.clone(),
                        ))
                    })
                    .collect();
                ok.sort();
                ok.into_iter().next().map(|t| t.4).ok_or_else(|| {
                    Outcome::RolledBack(format!("no healthy replica of {old} may be promoted"))
                })?
            }
        };
        self.data.target = Some(target.clone());
        self.others = self
            .data
            .replicas
            .iter()
            .filter(|r| **r != target)
            .cloned()
            .collect();
        self.all = [old, target.clone()]
            .into_iter()
            .chain(self.others.clone())
            .collect();
        self.target = target;
        Ok(json!({ "target": self.target }))
    }

    /// Before `block_writes`, the pre hooks (the failover hooks, with
    /// DBFLEET_OPERATION=switchover): one that fails stops the switchover before anything
    /// changed.
    async fn pre_hooks(&self, op: &Op<'_>) -> StepResult<()> {
        let policy = &self.setup.failover;
        if policy.pre_failover.is_empty() {
            return Ok(());
        }
        let env = HookEnv {
            cluster: self.setup.spec.name.clone(),
            operation: OperationKind::Switchover,
            operation_id: op.rec.id,
            phase: "pre",
            trigger: "manual".into(),
            old_primary: self.old.to_string(),
            new_primary: self.target.to_string(),
        };
        let out = run_hooks(&policy.pre_failover, &env, policy.hook_timeout, true).await;
        if let Some(h) = out.iter().find(|h| !h.ok) {
            return Err(Outcome::RolledBack(format!(
                "pre hook {:?} failed ({}): switchover not started",
                h.command, h.status
            )));
        }
        Ok(())
    }

    async fn block_writes(&mut self) -> StepResult<Value> {
        let old = &self.old;
        self.data.blocked_ms = Some(now_ms());
        self.conns
            .exec(old, Command::ReadOnly)
            .await
            .map_err(|e| Outcome::Failed(format!("set {old} read-only: {e}")))?;
        let killed = self
            .conns
            .kill_clients(old)
            .await
            .map_err(|e| Outcome::Failed(format!("kill clients on {old}: {e}")))?;
        Ok(json!({ "killed": killed }))
    }

    async fn catch_up(&mut self) -> StepResult<Value> {
        let (old, target) = (&self.old, &self.target);
        let within = self.setup.failover.switchover_catch_up_timeout;
        let o = self.conns.observe(old).await;
        let pos = binlog_pos(&o)
            .ok_or_else(|| Outcome::Failed(format!("read {old}'s position: unreachable")))?;
        self.data.target_pos = Some(pos.clone());
        let caught = match self.conns.get(target).await {
            Ok(s) => s
                .wait_for_gtid(&pos, within)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match caught {
            Ok(true) => {}
            Ok(false) => {
                return Err(Outcome::Failed(format!(
                    "{target} did not reach {pos} within {within:?}"
                )))
            }
            Err(e) => {
                return Err(Outcome::Failed(format!(
                    "wait for {target} to catch up: {e}"
                )))
            }
        }
        Ok(json!({ "position": pos }))
    }

    async fn promote(&mut self) -> StepResult<Value> {
        let (old, target) = (&self.old, &self.target);
        self.conns
            .prepare_primary(target, self.setup.spec.semi_sync)
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!(
                    "promote {target}: {e}; writes stay blocked on {old}"
                ))
            })?;
        Ok(json!({}))
    }

    async fn repoint(&mut self) -> StepResult<Value> {
        let (old, target) = (&self.old, &self.target);
        let (conns, data) = (&mut self.conns, &mut self.data);
        let to = PointAt {
            source: target,
            creds: self.repl,
            semi_sync: self.setup.spec.semi_sync,
            from_current_pos: false,
            delay_s: None,
        };
        for r in &self.others {
            match conns.repoint(r, &to).await {
                Ok(()) => data.repointed.push(r.clone()),
                Err(e) => data.warnings.push(format!("repoint {r} to {target}: {e}")),
            }
        }
        // The old primary replicates from its own binlog position.
        let to = PointAt {
            from_current_pos: true,
            ..to
        };
        match conns.repoint(old, &to).await {
            Ok(()) => data.repointed.push(old.clone()),
            Err(e) => data
                .warnings
                .push(format!("attach the old primary {old} to {target}: {e}")),
        }
        Ok(json!({ "repointed": data.repointed }))
    }

    async fn open_writes(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let target = &self.target;
        let (now, warning) = self
            .engine
            .open_writes(&mut self.conns, &self.setup.spec.name, target)
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!(
                    "set {target} writable: {e}; no primary takes writes"
                ))
            })?;
        let data = &mut self.data;
        data.unblocked_ms = Some(now);
        data.write_block_ms = data.blocked_ms.map(|b| now.saturating_sub(b));
        data.warnings.extend(warning);
        // HAProxy moves at once: the old primary out (its sessions cut), the target in.
        if let Some(api) = &self.setup.haproxy {
            let pushed = crate::routing::push_open(api, op, &self.old, target).await;
            self.data.warnings.extend(pushed);
        }
        Ok(json!({ "write_block_ms": self.data.write_block_ms }))
    }

    async fn verify_replicas(&mut self) -> StepResult<Value> {
        let unhealthy = self
            .conns
            .verify_replicating(&self.data.repointed, &self.target)
            .await;
        self.data.warnings.extend(unhealthy);
        Ok(json!({}))
    }
}

impl Steps for SwitchoverRun<'_> {
    type Step = SwitchoverStep;

    fn record(&self) -> Value {
        self.data.json()
    }

    fn conns(&mut self) -> &mut Conns {
        &mut self.conns
    }

    fn audited(&self, step: SwitchoverStep, after: bool) -> Vec<InstanceAddr> {
        match step {
            SwitchoverStep::Check if after => vec![self.old.clone(), self.target.clone()],
            SwitchoverStep::Check => Vec::new(),
            SwitchoverStep::OpenWrites => vec![self.target.clone()],
            _ => self.all.clone(),
        }
    }

    async fn precondition(&mut self, op: &mut Op<'_>, step: SwitchoverStep) -> StepResult<()> {
        match step {
            SwitchoverStep::BlockWrites => self.pre_hooks(op).await,
            SwitchoverStep::Promote => {
                self.data.promote_started = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn run(&mut self, op: &mut Op<'_>, step: SwitchoverStep) -> StepResult<Value> {
        match step {
            SwitchoverStep::Check => self.check().await,
            SwitchoverStep::BlockWrites => self.block_writes().await,
            SwitchoverStep::CatchUp => self.catch_up().await,
            SwitchoverStep::Promote => self.promote().await,
            SwitchoverStep::Repoint => self.repoint().await,
            SwitchoverStep::OpenWrites => self.open_writes(op).await,
            SwitchoverStep::VerifyReplicas => self.verify_replicas().await,
        }
    }
}

/// Make the old primary writable again, as it was.
async fn unblock(conns: &mut Conns, old: &InstanceAddr, semi_sync: bool) -> Result<(), String> {
    conns
        .exec(old, Command::Writable)
        .await
        .map_err(|e| e.to_string())?;
    if semi_sync {
        let _ = conns.exec(old, Command::SemiSyncPrimaryOn).await;
    }
    Ok(())
}

/// The switchover in the registry of kinds.
pub(crate) struct Switchover;

impl OperationSpec for Switchover {
    fn kind(&self) -> OperationKind {
        OperationKind::Switchover
    }

    fn description(&self) -> &'static str {
        "move the primary role to a chosen healthy replica, rolled back if anything fails before promotion"
    }

    fn steps(&self) -> &'static [&'static str] {
        SWITCHOVER_STEPS
    }

    /// Never resumed: `needs_human`, after the old primary is made writable again if the
    /// target was never promoted ([`undo_interrupted`]).
    fn undo_interrupted<'a>(&'a self, engine: &'a Engine, op: &'a Op<'_>) -> BoxFuture<'a, String> {
        Box::pin(undo_interrupted(engine, op))
    }
}

/// A switchover interrupted by a crash: if writes were blocked and the target was never
/// promoted, unblock the old primary. Returns a note for the operation's message.
pub(crate) async fn undo_interrupted(engine: &Engine, op: &Op<'_>) -> String {
    let Ok(d) = serde_json::from_value::<SwitchoverData>(op.rec.data.clone()) else {
        return String::new();
    };
    let Ok(setup) = engine.setup(&op.rec.cluster) else {
        return String::new();
    };
    let (Some(old), Some(_)) = (d.old_primary.clone(), d.blocked_ms) else {
        return "; writes were never blocked".into();
    };
    if d.promote_started {
        return format!(
            "; promotion of {} had started: check which instance is writable",
            d.target.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    let mut conns = Conns::new(setup.admin.clone(), engine.opts.probe);
    match unblock(&mut conns, &old, setup.spec.semi_sync).await {
        Ok(()) => format!("; its old primary {old} was made writable again"),
        Err(e) => {
            format!("; its old primary {old} is still read-only and could not be unblocked: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_the_listed_ones_in_order() {
        let names: Vec<&str> = SwitchoverStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, SWITCHOVER_STEPS);
    }
}
