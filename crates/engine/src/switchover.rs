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
use serde_json::json;
use store::OperationRecord;

use crate::conns::Conns;
use crate::hooks::{run_hooks, HookEnv};
use crate::ops::{binlog_pos, Op, Outcome, StepResult};
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
        mut conns: Conns,
        setup: &ClusterSetup,
        repl: &Credentials,
        mut data: SwitchoverData,
        obs: Vec<Observation>,
    ) -> Result<OperationRecord, EngineError> {
        let r = self
            .switchover_steps(&mut op, &mut conns, setup, repl, &mut data, obs)
            .await;
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

    async fn switchover_steps(
        &self,
        op: &mut Op<'_>,
        conns: &mut Conns,
        setup: &ClusterSetup,
        repl: &Credentials,
        data: &mut SwitchoverData,
        obs: Vec<Observation>,
    ) -> StepResult<String> {
        let cluster = setup.spec.name.clone();
        let old = data
            .old_primary
            .clone()
            .ok_or_else(|| Outcome::Failed("no primary".into()))?;
        let old_obs = obs
            .iter()
            .find(|o| o.addr == old)
            .cloned()
            .ok_or_else(|| Outcome::Failed(format!("{old} was not observed")))?;
        let replicas: Vec<&Observation> = obs
            .iter()
            .filter(|o| {
                o.state()
                    .and_then(|s| s.replication.as_ref())
                    .is_some_and(|r| r.source == old)
            })
            .collect();
        data.replicas = replicas.iter().map(|o| o.addr.clone()).collect();

        // 1. check
        let before = op.step("check", &data.json(), conns, &[]).await?;
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
            match errant_transactions(o, &old_obs) {
                Some(e) if !e.is_empty() => return Err(format!("errant GTIDs: {e}")),
                _ => {}
            }
            Ok(lag)
        };
        let target = match data.target.clone() {
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
        data.target = Some(target.clone());
        op.done(
            "check",
            before,
            conns,
            &[old.clone(), target.clone()],
            json!({ "target": target }),
        )
        .await?;
        let others: Vec<InstanceAddr> = data
            .replicas
            .iter()
            .filter(|r| **r != target)
            .cloned()
            .collect();
        let all: Vec<InstanceAddr> = [old.clone(), target.clone()]
            .into_iter()
            .chain(others.clone())
            .collect();

        // Pre hooks (the failover hooks, with DBFLEET_OPERATION=switchover): one that fails
        // stops the switchover before anything changed.
        let hook_env = |phase: &'static str| HookEnv {
            cluster: cluster.clone(),
            operation: OperationKind::Switchover,
            operation_id: op.rec.id,
            phase,
            trigger: "manual".into(),
            old_primary: old.to_string(),
            new_primary: target.to_string(),
        };
        if !setup.failover.pre_failover.is_empty() {
            let out = run_hooks(
                &setup.failover.pre_failover,
                &hook_env("pre"),
                setup.failover.hook_timeout,
                true,
            )
            .await;
            if let Some(h) = out.iter().find(|h| !h.ok) {
                return Err(Outcome::RolledBack(format!(
                    "pre hook {:?} failed ({}): switchover not started",
                    h.command, h.status
                )));
            }
        }

        // 2. block_writes
        let before = op.step("block_writes", &data.json(), conns, &all).await?;
        data.blocked_ms = Some(now_ms());
        conns
            .exec(&old, Command::ReadOnly)
            .await
            .map_err(|e| Outcome::Failed(format!("set {old} read-only: {e}")))?;
        let killed = conns
            .kill_clients(&old)
            .await
            .map_err(|e| Outcome::Failed(format!("kill clients on {old}: {e}")))?;
        op.done(
            "block_writes",
            before,
            conns,
            &all,
            json!({ "killed": killed }),
        )
        .await?;

        // 3. catch_up
        let before = op.step("catch_up", &data.json(), conns, &all).await?;
        let o = conns.observe(&old).await;
        let pos = binlog_pos(&o)
            .ok_or_else(|| Outcome::Failed(format!("read {old}'s position: unreachable")))?;
        data.target_pos = Some(pos.clone());
        let caught = match conns.get(&target).await {
            Ok(s) => s
                .wait_for_gtid(&pos, setup.failover.switchover_catch_up_timeout)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match caught {
            Ok(true) => {}
            Ok(false) => {
                return Err(Outcome::Failed(format!(
                    "{target} did not reach {pos} within {:?}",
                    setup.failover.switchover_catch_up_timeout
                )))
            }
            Err(e) => {
                return Err(Outcome::Failed(format!(
                    "wait for {target} to catch up: {e}"
                )))
            }
        }
        op.done("catch_up", before, conns, &all, json!({ "position": pos }))
            .await?;

        // 4. promote
        data.promote_started = true;
        let before = op.step("promote", &data.json(), conns, &all).await?;
        conns
            .prepare_primary(&target, setup.spec.semi_sync)
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!(
                    "promote {target}: {e}; writes stay blocked on {old}"
                ))
            })?;
        op.done("promote", before, conns, &all, json!({})).await?;

        // 5. repoint
        let before = op.step("repoint", &data.json(), conns, &all).await?;
        for r in &others {
            match conns
                .repoint(
                    r,
                    &PointAt {
                        source: &target,
                        creds: repl,
                        semi_sync: setup.spec.semi_sync,
                        from_current_pos: false,
                        delay_s: None,
                    },
                )
                .await
            {
                Ok(()) => data.repointed.push(r.clone()),
                Err(e) => data.warnings.push(format!("repoint {r} to {target}: {e}")),
            }
        }
        match conns
            .repoint(
                &old,
                &PointAt {
                    source: &target,
                    creds: repl,
                    semi_sync: setup.spec.semi_sync,
                    from_current_pos: true,
                    delay_s: None,
                },
            )
            .await
        {
            Ok(()) => data.repointed.push(old.clone()),
            Err(e) => data
                .warnings
                .push(format!("attach the old primary {old} to {target}: {e}")),
        }
        op.done(
            "repoint",
            before,
            conns,
            &all,
            json!({ "repointed": data.repointed }),
        )
        .await?;

        // 6. open_writes
        let before = op
            .step(
                "open_writes",
                &data.json(),
                conns,
                std::slice::from_ref(&target),
            )
            .await?;
        let (now, warning) = self
            .open_writes(conns, &cluster, &target)
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!(
                    "set {target} writable: {e}; no primary takes writes"
                ))
            })?;
        data.unblocked_ms = Some(now);
        data.write_block_ms = data.blocked_ms.map(|b| now.saturating_sub(b));
        data.warnings.extend(warning);
        op.done(
            "open_writes",
            before,
            conns,
            std::slice::from_ref(&target),
            json!({ "write_block_ms": data.write_block_ms }),
        )
        .await?;

        // 7. verify_replicas
        let before = op
            .step("verify_replicas", &data.json(), conns, &all)
            .await?;
        let unhealthy = conns.verify_replicating(&data.repointed, &target).await;
        data.warnings.extend(unhealthy);
        op.done("verify_replicas", before, conns, &all, json!({}))
            .await?;
        Ok(format!(
            "{target} is the new primary of {cluster} (was {old}); writes were blocked for {} ms{}",
            data.write_block_ms.unwrap_or(0),
            if data.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", data.warnings.join("; "))
            }
        ))
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

    /// Never guessed at: `needs_human`, after the old primary is made writable again if the
    /// target was never promoted ([`undo_interrupted`]).
    fn resume(
        &self,
        engine: Arc<Engine>,
        rec: OperationRecord,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        Box::pin(async move {
            let op = Op::adopt(&engine, rec).await?;
            let data = op.rec.data.clone();
            let note = undo_interrupted(&engine, &op, &data).await;
            op.give_up_interrupted(note).await;
            Ok(())
        })
    }
}

/// A switchover interrupted by a crash: if writes were blocked and the target was never
/// promoted, unblock the old primary. Returns a note for the operation's message.
pub(crate) async fn undo_interrupted(
    engine: &Engine,
    op: &Op<'_>,
    data: &serde_json::Value,
) -> String {
    let Ok(d) = serde_json::from_value::<SwitchoverData>(data.clone()) else {
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
