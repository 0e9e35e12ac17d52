//! Automated and manual failover of a dead primary.
//!
//! Steps, in order (each persisted before it runs, audited after):
//!
//! 1. `confirm`: fresh probes of every member; the old primary must be unreachable (on a
//!    fresh run, analysis of the fresh probes must say `DeadPrimary`).
//! 2. `stop_io`: stop the IO thread of every direct replica, so nothing more arrives from a
//!    primary that may come back.
//! 3. `apply_relay`: wait (bounded) for each replica to apply what it received.
//! 4. `choose`: pick the candidate ([`crate::choose`]); stop and page if none is safe.
//! 5. `catch_up`: when the candidate lacks transactions, replicate them from the replica
//!    that has them all; fall back to that replica if the catch-up fails.
//! 6. `pre_hooks`: operator hooks; one failing stops the failover before promotion.
//! 7. `promote`: the candidate stops replicating; semi-sync on as a primary (still
//!    read-only).
//! 8. `repoint`: every other replica replicates from the candidate by GTID, with semi-sync
//!    as a replica, so the first write on the new primary is already semi-synchronous.
//! 9. `open_writes`: `read_only=OFF` on the candidate; the cluster's writer in the store
//!    moves to it.
//! 10. `verify_replicas`: each repointed replica runs both threads from the new primary.
//! 11. `fence_old`: the old primary, if reachable, is made read-only with semi-sync off and
//!     its clients killed; in every case it is marked fenced in the store and must pass an
//!     errant-GTID check (`dbfleet rejoin`) before it replicates again.
//! 12. `post_hooks`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::analysis::{analyze, errant_transactions, ClusterView, Errant};
use model::{Flavor, GtidState, InstanceAddr, Observation, ProblemKind, PromotionRule};
use probe::Credentials;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::OperationRecord;

use crate::candidate::{choose, Choice, ReplicaFacts};
use crate::conns::Conns;
use crate::hooks::{run_hooks, HookEnv, HookOutcome};
use crate::ops::{binlog_pos, Op, Outcome, StepResult};
use crate::{key_fenced, now_ms, ClusterSetup, Engine, EngineError};

/// The failover's steps, in order; each has failpoints `failover.<step>.before|after`.
pub const FAILOVER_STEPS: &[&str] = &[
    "confirm",
    "stop_io",
    "apply_relay",
    "choose",
    "catch_up",
    "pre_hooks",
    "promote",
    "repoint",
    "open_writes",
    "verify_replicas",
    "fence_old",
    "post_hooks",
];

/// A failover's context, persisted with every step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FailoverData {
    pub old_primary: Option<InstanceAddr>,
    /// When the monitor's analysis first said `DeadPrimary`, if the monitor triggered it.
    pub detected_ms: Option<u64>,
    pub started_ms: u64,
    pub trigger: String,
    pub replicas: Vec<InstanceAddr>,
    pub io_stopped: Vec<InstanceAddr>,
    pub not_applied: Vec<InstanceAddr>,
    pub choice: Option<Choice>,
    pub candidate: Option<InstanceAddr>,
    pub caught_up_from: Option<InstanceAddr>,
    pub promote_started: bool,
    pub writable_ms: Option<u64>,
    pub repointed: Vec<InstanceAddr>,
    /// Things that went wrong without stopping the failover.
    pub warnings: Vec<String>,
    pub fenced: Option<String>,
    pub hooks: Vec<HookOutcome>,
    /// Whether semi-sync guaranteed that no acknowledged write was lost.
    pub semi_sync_guarantee: Option<bool>,
    pub resumed: u32,
    pub finished_ms: Option<u64>,
    /// The old primary's last reachable observation, the errant-GTID baseline.
    pub old_primary_last: Option<Observation>,
}

/// What [`Engine::fresh_look`] found.
pub(crate) struct FreshLook {
    pub setup: ClusterSetup,
    pub repl: Credentials,
    pub conns: Conns,
    pub observations: Vec<Observation>,
    pub analysis: model::analysis::Analysis,
}

impl FailoverData {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl Engine {
    pub(crate) async fn members(&self, setup: &ClusterSetup) -> Vec<InstanceAddr> {
        let mut set: BTreeSet<InstanceAddr> = setup
            .spec
            .instances
            .iter()
            .map(|i| i.addr.clone())
            .collect();
        if let Ok(list) = self.store.instances(Some(&setup.spec.name)).await {
            set.extend(list.into_iter().map(|i| i.addr));
        }
        set.into_iter().collect()
    }

    /// The first look of a new operation: leadership, the cluster's setup and replication
    /// account, fresh probes of every member (MariaDB only), and their analysis.
    pub(crate) async fn fresh_look(
        &self,
        cluster: &str,
        what: &str,
    ) -> Result<FreshLook, EngineError> {
        self.require_leader()?;
        let setup = self.setup(cluster)?.clone();
        let repl = setup.repl.clone().ok_or_else(|| {
            EngineError::Refused(format!(
                "cluster {cluster} has no replication_credentials: {what} cannot repoint replicas"
            ))
        })?;
        let members = self.members(&setup).await;
        let mut conns = Conns::new(setup.admin.clone(), self.opts.probe);
        let observations = conns.observe_all(&members).await;
        if let Some(o) = observations
            .iter()
            .find(|o| o.state().is_some_and(|s| s.flavor != Flavor::Mariadb))
        {
            return Err(EngineError::Refused(format!(
                "{} is not MariaDB: dbfleet's operations support MariaDB only for now",
                o.addr
            )));
        }
        let analysis = analyze(&ClusterView {
            spec: &setup.spec,
            observations: &observations,
        });
        Ok(FreshLook {
            setup,
            repl,
            conns,
            observations,
            analysis,
        })
    }

    /// Start a failover of `cluster`: fresh probes must show a dead primary.
    pub(crate) async fn failover_from(
        self: &Arc<Self>,
        cluster: &str,
        trigger: &str,
        detected_ms: Option<u64>,
    ) -> Result<OperationRecord, EngineError> {
        let FreshLook {
            setup,
            repl,
            conns,
            observations: obs,
            analysis,
        } = self.fresh_look(cluster, "failover").await?;
        let dead = analysis
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::DeadPrimary)
            .and_then(|p| p.instance.clone());
        let Some(dead) = dead else {
            let why = analysis
                .problems
                .iter()
                .find(|p| p.kind == ProblemKind::UnreachablePrimary)
                .map(|p| p.summary.clone())
                .unwrap_or_else(|| match &analysis.primary {
                    Some(p) => format!("the primary {p} is alive: use `dbfleet switchover`"),
                    None => "no primary can be named".into(),
                });
            return Err(EngineError::Refused(format!(
                "no dead primary in {cluster}, failover refused: {why}"
            )));
        };
        let data = FailoverData {
            old_primary: Some(dead.clone()),
            detected_ms,
            started_ms: now_ms(),
            trigger: trigger.to_string(),
            ..Default::default()
        };
        let op = Op::begin(self, cluster, "failover", trigger, "confirm", data.json()).await?;
        self.drive_failover(op, conns, setup, repl, data, Some(obs))
            .await
    }

    /// Judge and go on with a failover left running by a crash.
    pub(crate) async fn resume_failover(
        self: &Arc<Self>,
        rec: OperationRecord,
    ) -> Result<(), EngineError> {
        let setup = self.setup(&rec.cluster)?.clone();
        let mut data: FailoverData = serde_json::from_value(rec.data.clone()).unwrap_or_default();
        data.resumed += 1;
        let op = Op::adopt(self, rec).await?;
        let Some(repl) = setup.repl.clone() else {
            let _ = op
                .finish(
                    Outcome::NeedsHuman("resumed without replication_credentials".into()),
                    data.json(),
                )
                .await;
            return Ok(());
        };
        if data.old_primary.is_none() {
            let _ = op
                .finish(
                    Outcome::NeedsHuman("interrupted before its old primary was recorded".into()),
                    data.json(),
                )
                .await;
            return Ok(());
        }
        let conns = Conns::new(setup.admin.clone(), self.opts.probe);
        let _ = self
            .drive_failover(op, conns, setup, repl, data, None)
            .await;
        Ok(())
    }

    async fn drive_failover(
        &self,
        mut op: Op<'_>,
        mut conns: Conns,
        setup: ClusterSetup,
        repl: Credentials,
        mut data: FailoverData,
        fresh: Option<Vec<Observation>>,
    ) -> Result<OperationRecord, EngineError> {
        let outcome = self
            .failover_steps(&mut op, &mut conns, &setup, &repl, &mut data, fresh)
            .await;
        data.finished_ms = Some(now_ms());
        let outcome = match outcome {
            Ok(m) => Outcome::Succeeded(m),
            Err(o) => o,
        };
        op.finish(outcome, data.json()).await
    }

    async fn failover_steps(
        &self,
        op: &mut Op<'_>,
        conns: &mut Conns,
        setup: &ClusterSetup,
        repl: &Credentials,
        data: &mut FailoverData,
        fresh: Option<Vec<Observation>>,
    ) -> StepResult<String> {
        let cluster = setup.spec.name.clone();
        let old = data
            .old_primary
            .clone()
            .ok_or_else(|| Outcome::NeedsHuman("no old primary recorded".into()))?;
        let members = self.members(setup).await;
        let resuming_after_promote = data.promote_started && data.candidate.is_some();

        if !resuming_after_promote {
            // 1. confirm
            let before = op.step("confirm", &data.json(), conns, &[]).await?;
            let obs = match fresh {
                Some(o) => o,
                None => conns.observe_all(&members).await,
            };
            if obs.iter().any(|o| o.addr == old && o.state().is_some()) {
                // The old primary answers: undo what an earlier run stopped.
                for r in data.io_stopped.clone() {
                    let _ = conns.exec(&r, "restart replication", "START SLAVE").await;
                }
                return Err(Outcome::RolledBack(format!(
                    "the old primary {old} answers again: failover called off before promotion"
                )));
            }
            let mut replicas: BTreeSet<InstanceAddr> = data.replicas.iter().cloned().collect();
            for o in &obs {
                if o.state()
                    .and_then(|s| s.replication.as_ref())
                    .is_some_and(|r| r.source == old)
                {
                    replicas.insert(o.addr.clone());
                }
            }
            data.replicas = replicas.into_iter().collect();
            if data.replicas.is_empty() {
                return Err(Outcome::NeedsHuman(format!(
                    "no reachable replica of {old}: nothing to promote"
                )));
            }
            let reps = data.replicas.clone();
            op.done("confirm", before, conns, &reps, json!({ "replicas": reps }))
                .await?;

            // 2. stop_io
            let before = op.step("stop_io", &data.json(), conns, &reps).await?;
            for r in &reps {
                match conns
                    .exec(r, "stop io thread", "STOP SLAVE IO_THREAD")
                    .await
                {
                    Ok(()) => {
                        if !data.io_stopped.contains(r) {
                            data.io_stopped.push(r.clone());
                        }
                    }
                    Err(e) => data.warnings.push(format!("stop IO thread on {r}: {e}")),
                }
            }
            op.done(
                "stop_io",
                before,
                conns,
                &reps,
                json!({ "stopped": data.io_stopped }),
            )
            .await?;

            // 3. apply_relay
            let before = op.step("apply_relay", &data.json(), conns, &reps).await?;
            let deadline = Instant::now() + setup.failover.relay_apply_timeout;
            data.not_applied.clear();
            for r in &reps {
                let o = conns.observe(r).await;
                let received = o
                    .state()
                    .and_then(|s| s.replication.as_ref())
                    .map(|x| x.received_gtid.clone())
                    .unwrap_or_default();
                if o.state().is_none() {
                    data.not_applied.push(r.clone());
                    continue;
                }
                if received.trim().is_empty() {
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let ok = match conns.get(r).await {
                    Ok(s) => {
                        s.wait_for_gtid(&received, left.max(Duration::from_millis(1)))
                            .await
                    }
                    Err(e) => Err(e),
                };
                match ok {
                    Ok(true) => {}
                    Ok(false) => data.not_applied.push(r.clone()),
                    Err(e) => {
                        data.warnings
                            .push(format!("wait for relay apply on {r}: {e}"));
                        data.not_applied.push(r.clone());
                    }
                }
            }
            op.done(
                "apply_relay",
                before,
                conns,
                &reps,
                json!({ "not_applied": data.not_applied }),
            )
            .await?;

            // 4. choose
            let before = op.step("choose", &data.json(), conns, &reps).await?;
            // The old primary's last good state is the baseline for errant GTIDs and the
            // semi-sync guarantee; it is kept with the operation so a resumed run has it.
            if data.old_primary_last.is_none() {
                data.old_primary_last = self.last_good(&old).await;
            }
            let old_last = data.old_primary_last.clone();
            if old_last.is_none() {
                data.warnings.push(format!(
                    "no reachable observation of {old} is known: errant GTIDs could not be checked against it"
                ));
            }
            let now = conns.observe_all(&members).await;
            let mut facts = Vec::new();
            for a in members.iter().filter(|a| **a != old) {
                let o = now.iter().find(|o| &o.addr == a);
                let direct_now = reps.contains(a);
                let was_direct = match self.store.last_observation(a).await.ok().flatten() {
                    Some(l) => l
                        .state()
                        .and_then(|s| s.replication.as_ref())
                        .is_some_and(|r| r.source == old),
                    None => false,
                };
                if !direct_now && !was_direct {
                    continue;
                }
                let spec = setup.spec.instance(a);
                let st = o.and_then(|o| o.state());
                let errant = match (o, &old_last) {
                    (Some(o), Some(p)) => match errant_transactions(o, p) {
                        Some(Errant::Mariadb(v)) => v,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                facts.push(ReplicaFacts {
                    addr: a.clone(),
                    rule: spec.map(|s| s.promotion).unwrap_or(PromotionRule::Neutral),
                    site: spec.and_then(|s| s.site.clone()),
                    reachable: st.is_some(),
                    relay_applied: st.is_some() && !data.not_applied.contains(a),
                    log_bin: st.is_some_and(|s| s.log_bin && s.log_replica_updates),
                    binlog_state: st.and_then(|s| match &s.gtid {
                        GtidState::Mariadb { binlog_state, .. } => Some(binlog_state.clone()),
                        _ => None,
                    }),
                    errant,
                    semi_sync_replica: st
                        .map(|s| s.semi_sync.replica_enabled)
                        .unwrap_or(setup.spec.semi_sync),
                });
            }
            let semi_active = setup.spec.semi_sync
                && old_last
                    .as_ref()
                    .and_then(|o| o.state())
                    .is_none_or(|s| s.semi_sync.source_active);
            data.semi_sync_guarantee = Some(semi_active);
            if setup.spec.semi_sync && !semi_active {
                data.warnings.push(format!(
                    "semi-sync was not active on {old} at its last probe: writes it acknowledged asynchronously may be lost"
                ));
            }
            let old_site = setup.spec.instance(&old).and_then(|s| s.site.clone());
            let choice = match choose(&facts, old_site.as_deref(), semi_active) {
                Ok(c) => c,
                Err(no) => {
                    return Err(Outcome::NeedsHuman(format!(
                        "no safe candidate: {}; {}",
                        no.reason,
                        no.per_replica
                            .iter()
                            .map(|(a, w)| format!("{a}: {w}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )))
                }
            };
            data.candidate = Some(choice.candidate.clone());
            data.choice = Some(choice.clone());
            op.done("choose", before, conns, &reps, json!({ "choice": choice }))
                .await?;

            // 5. catch_up
            if let Some(source) = choice.catch_up_from.clone() {
                let cand = choice.candidate.clone();
                let before = op.step("catch_up", &data.json(), conns, &reps).await?;
                let r = self
                    .catch_up(conns, &cand, &source, repl, setup.failover.catch_up_timeout)
                    .await;
                match r {
                    Ok(()) => data.caught_up_from = Some(source.clone()),
                    Err(e) => {
                        let Some(fb) = choice.fallback.clone() else {
                            return Err(Outcome::NeedsHuman(format!(
                                "candidate {cand} could not catch up from {source} ({e}), and no other safe replica holds every transaction"
                            )));
                        };
                        data.warnings.push(format!(
                            "candidate {cand} could not catch up from {source} ({e}); promoting {fb} instead"
                        ));
                        data.candidate = Some(fb);
                    }
                }
                op.done(
                    "catch_up",
                    before,
                    conns,
                    &reps,
                    json!({ "candidate": data.candidate }),
                )
                .await?;
            }

            // 6. pre_hooks
            let cand = data
                .candidate
                .clone()
                .unwrap_or_else(|| choice.candidate.clone());
            if !setup.failover.pre_failover.is_empty() {
                let before = op.step("pre_hooks", &data.json(), conns, &[]).await?;
                let out = run_hooks(
                    &setup.failover.pre_failover,
                    &self.hook_env(op, "pre", data, &old, &cand),
                    setup.failover.hook_timeout,
                    true,
                )
                .await;
                let failed = out.iter().find(|h| !h.ok).cloned();
                data.hooks.extend(out);
                if let Some(h) = failed {
                    for r in data.io_stopped.clone() {
                        let _ = conns.exec(&r, "restart replication", "START SLAVE").await;
                    }
                    return Err(Outcome::Failed(format!(
                        "pre-failover hook {:?} failed ({}): failover stopped before promotion; replicas restarted",
                        h.command, h.status
                    )));
                }
                op.done("pre_hooks", before, conns, &[], json!({})).await?;
            }
        } else {
            // Resuming after promotion started: re-read, and never leave two writers.
            let cand = data.candidate.clone().unwrap_or_else(|| old.clone());
            let obs = conns.observe_all(&members).await;
            if obs
                .iter()
                .find(|o| o.addr == cand)
                .and_then(|o| o.state())
                .is_none()
            {
                return Err(Outcome::NeedsHuman(format!(
                    "resumed after promotion started, but the candidate {cand} is unreachable"
                )));
            }
            for o in &obs {
                let Some(s) = o.state() else { continue };
                if o.addr != cand && !s.read_only && s.replication.is_none() {
                    if o.addr == old {
                        let _ = conns.fence(&old).await;
                        data.warnings.push(format!(
                            "old primary {old} came back writable during the failover; fenced"
                        ));
                    } else {
                        return Err(Outcome::NeedsHuman(format!(
                            "resumed after promotion started, but {} is also writable",
                            o.addr
                        )));
                    }
                }
            }
        }

        let cand = data
            .candidate
            .clone()
            .ok_or_else(|| Outcome::NeedsHuman("no candidate recorded".into()))?;
        let others: Vec<InstanceAddr> = data
            .replicas
            .iter()
            .filter(|r| **r != cand)
            .cloned()
            .collect();
        let touched: Vec<InstanceAddr> = std::iter::once(cand.clone())
            .chain(others.clone())
            .collect();

        // 7. promote
        data.promote_started = true;
        let before = op.step("promote", &data.json(), conns, &touched).await?;
        conns
            .prepare_primary(&cand, setup.spec.semi_sync)
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!("promote {cand}: {e}; it may be half-promoted"))
            })?;
        op.done(
            "promote",
            before,
            conns,
            &touched,
            json!({ "candidate": cand }),
        )
        .await?;

        // 8. repoint
        let before = op.step("repoint", &data.json(), conns, &touched).await?;
        let errant: Vec<InstanceAddr> = data
            .choice
            .as_ref()
            .map(|c| {
                c.passed_over
                    .iter()
                    .filter(|(_, w)| w.starts_with("errant"))
                    .map(|(a, _)| a.clone())
                    .collect()
            })
            .unwrap_or_default();
        data.repointed.clear();
        for r in &others {
            if errant.contains(r) {
                data.warnings
                    .push(format!("{r} has errant GTIDs: left stopped, not repointed"));
                continue;
            }
            match conns
                .repoint(r, &cand, repl, setup.spec.semi_sync, false)
                .await
            {
                Ok(()) => data.repointed.push(r.clone()),
                Err(e) => data.warnings.push(format!("repoint {r} to {cand}: {e}")),
            }
        }
        op.done(
            "repoint",
            before,
            conns,
            &touched,
            json!({ "repointed": data.repointed }),
        )
        .await?;

        // 9. open_writes
        let before = op
            .step(
                "open_writes",
                &data.json(),
                conns,
                std::slice::from_ref(&cand),
            )
            .await?;
        let (at, warning) = self
            .open_writes(conns, &cluster, &cand)
            .await
            .map_err(|e| Outcome::NeedsHuman(format!("set {cand} writable: {e}")))?;
        data.writable_ms = Some(at);
        data.warnings.extend(warning);
        // From here on the old primary must never take a write again: it is fenced the
        // moment it answers (crate::fence_guard), whatever the next steps wait on.
        self.guard_fenced(&cluster, &old);
        op.done(
            "open_writes",
            before,
            conns,
            std::slice::from_ref(&cand),
            json!({ "writable_ms": data.writable_ms }),
        )
        .await?;

        // 10. verify_replicas
        let before = op
            .step("verify_replicas", &data.json(), conns, &touched)
            .await?;
        let unhealthy = conns.verify_replicating(&data.repointed, &cand).await;
        data.warnings.extend(unhealthy);
        op.done("verify_replicas", before, conns, &touched, json!({}))
            .await?;

        // 11. fence_old
        let before = op.step("fence_old", &data.json(), conns, &[]).await?;
        let fenced = match tokio::time::timeout(Duration::from_secs(2), conns.fence(&old)).await {
            Ok(Ok(n)) => {
                format!("reachable: set read-only, semi-sync off, {n} client connection(s) killed")
            }
            Ok(Err(e)) => format!("unreachable ({e}): marked fenced in the store"),
            Err(_) => "did not answer in 2s: marked fenced in the store".to_string(),
        };
        data.fenced = Some(fenced.clone());
        let mark = json!({
            "operation_id": op.rec.id,
            "at_ms": now_ms(),
            "new_primary": cand.to_string(),
            "last_binlog_pos": data.old_primary_last.as_ref().and_then(binlog_pos),
        });
        if let Err(e) = self.store.kv_put(&key_fenced(&cluster, &old), &mark).await {
            data.warnings
                .push(format!("mark {old} fenced in the store: {e}"));
        }
        op.done("fence_old", before, conns, &[], json!({ "fenced": fenced }))
            .await?;

        // 12. post_hooks
        if !setup.failover.post_failover.is_empty() {
            let before = op.step("post_hooks", &data.json(), conns, &[]).await?;
            let out = run_hooks(
                &setup.failover.post_failover,
                &self.hook_env(op, "post", data, &old, &cand),
                setup.failover.hook_timeout,
                false,
            )
            .await;
            for h in out.iter().filter(|h| !h.ok) {
                data.warnings.push(format!(
                    "post-failover hook {:?} failed: {}",
                    h.command, h.status
                ));
            }
            data.hooks.extend(out);
            op.done("post_hooks", before, conns, &[], json!({})).await?;
        }

        let took = data
            .writable_ms
            .map(|w| w.saturating_sub(data.detected_ms.unwrap_or(data.started_ms)));
        Ok(format!(
            "{cand} is the new primary of {cluster} (was {old}); writable {} after {}; {} replica(s) repointed{}",
            took.map(|t| format!("{t} ms")).unwrap_or_else(|| "?".into()),
            if data.detected_ms.is_some() { "detection" } else { "the start" },
            data.repointed.len(),
            if data.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", data.warnings.join("; "))
            }
        ))
    }

    /// Make `addr` writable and record it as the cluster's writer. Returns when it became
    /// writable, and a warning when the store could not record it (the server is writable
    /// whatever the store says).
    pub(crate) async fn open_writes(
        &self,
        conns: &mut Conns,
        cluster: &str,
        addr: &InstanceAddr,
    ) -> Result<(u64, Option<String>), probe::ProbeError> {
        conns
            .exec(addr, "open writes", "SET GLOBAL read_only=OFF")
            .await?;
        let at = now_ms();
        let warning = self
            .store
            .set_writer(cluster, Some(addr.clone()), at)
            .await
            .err()
            .map(|e| format!("record the new writer in the store: {e}"));
        Ok((at, warning))
    }

    async fn catch_up(
        &self,
        conns: &mut Conns,
        cand: &InstanceAddr,
        source: &InstanceAddr,
        repl: &Credentials,
        within: Duration,
    ) -> Result<(), String> {
        let src = conns.observe(source).await;
        let pos = binlog_pos(&src).ok_or_else(|| format!("{source} is unreachable"))?;
        conns
            .repoint(cand, source, repl, false, false)
            .await
            .map_err(|e| format!("point {cand} at {source}: {e}"))?;
        let ok = conns
            .get(cand)
            .await
            .map_err(|e| e.to_string())?
            .wait_for_gtid(&pos, within)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conns.exec(cand, "stop slave", "STOP SLAVE").await;
        if ok {
            Ok(())
        } else {
            Err(format!("did not reach {pos} within {within:?}"))
        }
    }

    fn hook_env(
        &self,
        op: &Op<'_>,
        phase: &'static str,
        data: &FailoverData,
        old: &InstanceAddr,
        new: &InstanceAddr,
    ) -> HookEnv {
        HookEnv {
            cluster: op.rec.cluster.clone(),
            operation: "failover",
            operation_id: op.rec.id,
            phase,
            trigger: data.trigger.clone(),
            old_primary: old.to_string(),
            new_primary: new.to_string(),
        }
    }
}
