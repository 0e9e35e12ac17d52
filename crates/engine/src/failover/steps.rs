//! The failover's steps ([`FailoverStep`]), each its own function over the state they
//! share ([`FailoverRun`]); `Op::run_step` runs them with the persisted step/done
//! ceremony and the failpoints.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use config::FencePolicy;
use model::{InstanceAddr, Observation};
use probe::commands::Command;
use probe::Credentials;
use serde_json::{json, Value};
use store::{kinds, EventLevel, Settings};

use super::{
    at_new_primary, carry_losses, detach_from_old, kept_relay, observe_all_within, parked_warning,
    streams_cut, FailoverData, STOP_CAP, STOP_MARGIN,
};
use crate::candidate::{choose, has_unapplied, Choice, PossibleLoss, ReplicaFacts};
use crate::conns::Conns;
use crate::hooks::run_hooks;
use crate::ops::{binlog_pos, Op, Outcome, Step, StepResult, Steps};
use crate::salvage::{needs_salvage, salvage};
use crate::watch_old::{OldPrimaryWatch, Seen};
use crate::{now_ms, ClusterSetup, Engine};

/// A failover's steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailoverStep {
    /// The old primary is dead (or its writes stall, and it is fenced first); its
    /// replicas are listed.
    Confirm,
    /// Every replica's IO thread stopped at once.
    StopIo,
    /// What each replica applied and received is read; a returned replica's relay log is
    /// applied (`salvage`).
    ApplyRelay,
    /// The candidate is chosen.
    Choose,
    /// The candidate applies what it received, or catches up from a replica that holds
    /// more (only when it needs to).
    CatchUp,
    /// The `pre_failover` hooks (only when there are some).
    PreHooks,
    /// The `fence_command` (with `fence = "required"`, or for a stalled old primary that
    /// could not be made read-only).
    Stonith,
    /// The candidate's replication reset, semi-sync set as a primary; still read-only.
    Promote,
    /// Every other replica pointed at the candidate.
    Repoint,
    /// The candidate made writable.
    OpenWrites,
    /// What was left stopping finished; each replica checked.
    VerifyReplicas,
    /// The old primary fenced, or marked fenced in the store.
    FenceOld,
    /// The `post_failover` hooks (only when there are some).
    PostHooks,
}

impl FailoverStep {
    /// Every step, in order.
    pub(crate) const ALL: [FailoverStep; 13] = [
        FailoverStep::Confirm,
        FailoverStep::StopIo,
        FailoverStep::ApplyRelay,
        FailoverStep::Choose,
        FailoverStep::CatchUp,
        FailoverStep::PreHooks,
        FailoverStep::Stonith,
        FailoverStep::Promote,
        FailoverStep::Repoint,
        FailoverStep::OpenWrites,
        FailoverStep::VerifyReplicas,
        FailoverStep::FenceOld,
        FailoverStep::PostHooks,
    ];

    /// Before promotion: skipped when a failover resumes after its promotion started.
    fn before_promote(self) -> bool {
        matches!(
            self,
            FailoverStep::Confirm
                | FailoverStep::StopIo
                | FailoverStep::ApplyRelay
                | FailoverStep::Choose
                | FailoverStep::CatchUp
                | FailoverStep::PreHooks
                | FailoverStep::Stonith
        )
    }
}

impl Step for FailoverStep {
    fn name(self) -> &'static str {
        match self {
            FailoverStep::Confirm => "confirm",
            FailoverStep::StopIo => "stop_io",
            FailoverStep::ApplyRelay => "apply_relay",
            FailoverStep::Choose => "choose",
            FailoverStep::CatchUp => "catch_up",
            FailoverStep::PreHooks => "pre_hooks",
            FailoverStep::Stonith => "stonith",
            FailoverStep::Promote => "promote",
            FailoverStep::Repoint => "repoint",
            FailoverStep::OpenWrites => "open_writes",
            FailoverStep::VerifyReplicas => "verify_replicas",
            FailoverStep::FenceOld => "fence_old",
            FailoverStep::PostHooks => "post_hooks",
        }
    }
}

/// One run of a failover: what its steps share.
pub(crate) struct FailoverRun<'a> {
    engine: &'a Engine,
    setup: &'a ClusterSetup,
    repl: &'a Credentials,
    pub(crate) conns: Conns,
    pub(crate) data: FailoverData,
    /// The old primary's watch, from `stop_io` on (or from `promote` on a resume).
    pub(crate) watch: Option<OldPrimaryWatch>,
    old: InstanceAddr,
    members: Vec<InstanceAddr>,
    /// The caller's fresh observations, for `confirm`.
    pub(crate) fresh: Option<Vec<Observation>>,
    /// This run resumes a failover whose promotion had started: the steps before it are
    /// not run again.
    resuming_after_promote: bool,
    /// Each replica's facts, from `apply_relay` (with whether its SQL thread runs).
    facts: Vec<(ReplicaFacts, bool)>,
    /// The replicas as `apply_relay` read them.
    now: Vec<Observation>,
    /// Possible losses earlier failovers of this old primary recorded, from `choose`.
    prior: Vec<(i64, PossibleLoss)>,
    /// The candidate, and the others, from `promote` on.
    cand: InstanceAddr,
    others: Vec<InstanceAddr>,
    touched: Vec<InstanceAddr>,
}

impl<'a> FailoverRun<'a> {
    pub(crate) fn new(
        engine: &'a Engine,
        setup: &'a ClusterSetup,
        repl: &'a Credentials,
        conns: Conns,
        data: FailoverData,
        old: InstanceAddr,
        members: Vec<InstanceAddr>,
    ) -> Self {
        let resuming_after_promote = data.promote_started && data.candidate.is_some();
        Self {
            engine,
            setup,
            repl,
            conns,
            data,
            watch: None,
            cand: old.clone(),
            old,
            members,
            fresh: None,
            resuming_after_promote,
            facts: Vec::new(),
            now: Vec::new(),
            prior: Vec::new(),
            others: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Every step, then the operation's message.
    pub(crate) async fn run_all(&mut self, op: &mut Op<'_>) -> StepResult<String> {
        op.run_steps(self, &FailoverStep::ALL).await?;
        let (data, cand, old) = (&self.data, &self.cand, &self.old);
        let cluster = &self.setup.spec.name;
        let after_start = data.writable_ms.map(|w| w.saturating_sub(data.started_ms));
        let after_detection = data
            .writable_ms
            .zip(data.detected_ms)
            .map(|(w, d)| w.saturating_sub(d));
        Ok(format!(
            "{cand} is the new primary of {cluster} (was {old}); writable {} after the start{}; {} replica(s) repointed{}",
            after_start.map(|t| format!("{t} ms")).unwrap_or_else(|| "?".into()),
            after_detection
                .map(|t| format!(" ({t} ms after detection)"))
                .unwrap_or_default(),
            data.repointed.len(),
            if data.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", data.warnings.join("; "))
            }
        ))
    }

    fn st(&self) -> Duration {
        self.setup.failover.statement_timeout
    }

    /// The chosen candidate (`choose` and `catch_up` record it).
    fn chosen(&self) -> StepResult<InstanceAddr> {
        self.data
            .candidate
            .clone()
            .ok_or_else(|| Outcome::NeedsHuman("no candidate recorded".into()))
    }

    /// The old primary's site, which `choose` prefers to leave.
    fn old_site(&self) -> Option<String> {
        self.setup
            .spec
            .instance(&self.old)
            .and_then(|s| s.site.clone())
    }

    /// Start watching the old primary: from here on it is tried all along, and fenced if
    /// it answers.
    fn start_watch(&mut self) {
        self.watch = Some(OldPrimaryWatch::start(
            self.old.clone(),
            self.setup.admin.clone(),
            self.st(),
            self.data.stalled.is_some(),
        ));
    }

    /// Before `promote` and before `open_writes`: the old primary must not have answered,
    /// or must be fenced.
    async fn old_primary_still_out(&mut self, before: &str) -> StepResult<()> {
        let watch = self
            .watch
            .as_ref()
            .ok_or_else(|| Outcome::Failed("the old primary's watch did not start".into()))?;
        self.engine
            .old_primary_still_out(&mut self.conns, watch, &self.old, &mut self.data, before)
            .await
    }

    /// Resuming after promotion started: re-read, and never leave two writers.
    async fn reread_after_promote(&mut self) -> StepResult<()> {
        self.start_watch();
        let (conns, data, old) = (&mut self.conns, &mut self.data, &self.old);
        let cand = data.candidate.clone().unwrap_or_else(|| old.clone());
        let obs = conns.observe_all(&self.members).await;
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
                if o.addr == *old {
                    let _ = conns.fence(old).await;
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
        Ok(())
    }

    /// Whether the candidate must catch up: it has unapplied transactions, or lacks some
    /// another replica holds.
    fn needs_catch_up(&self) -> bool {
        self.data.choice.as_ref().is_some_and(|c| {
            c.catch_up_from.is_some()
                || self
                    .facts
                    .iter()
                    .any(|(f, _)| f.addr == c.candidate && has_unapplied(f))
        })
    }

    async fn confirm(&mut self, _op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let st = policy.statement_timeout;
        let old = self.old.clone();
        let members = &self.members;
        let conns = &mut self.conns;
        let data = &mut self.data;
        let obs = match self.fresh.take() {
            Some(o) => o,
            None => conns.observe_all(members).await,
        };
        if data.stalled.is_some() {
            // Never fence a stalled primary when no replica could take its place (their
            // disks full or stalled too, or none reachable): the cluster would be left
            // with no writer once the disk comes back. Its problem pages, naming the
            // disk; this says why nothing was done.
            if data.stall_fenced.is_none() && !data.stall_unfenced {
                let mut why_not = Vec::new();
                let mut able = false;
                for a in members.iter().filter(|a| **a != old) {
                    let fresh = obs.iter().find(|o| o.addr == *a).and_then(|o| o.state());
                    let why = match fresh {
                        None => Some("unreachable".to_string()),
                        Some(st) => match st.replication.as_ref() {
                            Some(r) if r.source == old => {
                                match engine.storage_exclusion(&setup.spec, a, true).await {
                                    Some(w) => Some(w),
                                    // The monitor reads free space every few probes:
                                    // read it now.
                                    None => {
                                        match conns.disk_space(a, policy.statement_timeout).await {
                                            Ok(Some(d)) if d.is_full() => Some(format!(
                                                "its disk is full ({} of {} available on {}, {})",
                                                d.available_bytes, d.total_bytes, d.path, d.disk
                                            )),
                                            _ => None,
                                        }
                                    }
                                }
                            }
                            _ => Some(format!("not a replica of {old}")),
                        },
                    };
                    match why {
                        Some(w) => why_not.push(format!("{a}: {w}")),
                        None => {
                            able = true;
                            break;
                        }
                    }
                }
                if !able {
                    if why_not.is_empty() {
                        why_not.push("it has no replica".into());
                    }
                    return Err(Outcome::NeedsHuman(format!(
                        "the writes of {old} stall ({}), and no replica can take over: {}. Nothing was fenced or promoted: free or fix the storage",
                        data.stalled.clone().unwrap_or_default(),
                        why_not.join("; ")
                    )));
                }
            }
            engine.keep_semi_sync_on(&old);
            // A stalled primary answers all along: fence it before anything else.
            if data.stall_fenced.is_none() && !data.stall_unfenced {
                match engine
                    .fence_stalled(&setup.admin, &old, st.max(Duration::from_millis(300)))
                    .await
                {
                    Ok(how) => data.stall_fenced = Some(how),
                    Err(e) => {
                        data.stall_unfenced = true;
                        data.warnings.push(format!(
                            "the stalled old primary {old} could not be made read-only in time ({e}): fence_command must fence it before promotion"
                        ));
                    }
                }
            }
        } else if obs.iter().any(|o| o.addr == old && o.state().is_some()) {
            if data.old_primary_answered.is_some() {
                return Err(Outcome::NeedsHuman(format!(
                    "the old primary {old} answers again, and an earlier run of this failover fenced it (read-only): make one instance writable by hand"
                )));
            }
            // The old primary answers: undo what an earlier run stopped.
            engine.undo_before_promote(conns, data).await;
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
        for cut in streams_cut(&old, &obs) {
            if !data.streams_cut.iter().any(|(a, _)| *a == cut.0) {
                data.streams_cut.push(cut);
            }
        }
        if data.replicas.is_empty() {
            return Err(Outcome::NeedsHuman(format!(
                "no reachable replica of {old}: nothing to promote"
            )));
        }
        Ok(json!({ "replicas": data.replicas }))
    }

    /// Every replica at once, its IO thread killed first: a bare `STOP SLAVE IO_THREAD` on
    /// a frozen or silently cut-off primary returns after about 2 s, and meanwhile the
    /// thread still shows `Yes` toward the old primary, so nothing outside could prove that
    /// the old primary has no one left to acknowledge its commits. Killed, it exits within
    /// tens of milliseconds (a few hundred under CPU load). Every stop is waited for, up to
    /// STOP_CAP: one still running would race the repoint. One that did not answer is
    /// "stopping", and writes do not open while any member still receives from the old
    /// primary (step open_writes).
    async fn stop_io(&mut self, _op: &mut Op<'_>) -> StepResult<Value> {
        let st = self.st();
        let reps = self.data.replicas.clone();
        let data = &mut self.data;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for r in &reps {
            let mut c = Conns::new(
                self.setup.admin.clone(),
                probe::ProbeOptions {
                    connect_timeout: st,
                    query_timeout: STOP_CAP,
                },
            );
            let (r, tx) = (r.clone(), tx.clone());
            self.engine.spawn(async move {
                let t0 = Instant::now();
                let res = c.stop_io_now(&r, STOP_CAP).await;
                let took = t0.elapsed().as_millis() as u64;
                let _ = tx.send((r, took, res));
            });
        }
        drop(tx);
        let grace = tokio::time::sleep(STOP_CAP + STOP_MARGIN);
        tokio::pin!(grace);
        let mut answered = BTreeSet::new();
        loop {
            tokio::select! {
                _ = &mut grace => break,
                got = rx.recv() => {
                    let Some((r, took, res)) = got else { break };
                    answered.insert(r.clone());
                    data.io_stop_took.push((
                        r.clone(),
                        took,
                        res.as_ref().map(|x| x.kills).unwrap_or(0),
                        res.as_ref().err().map(ToString::to_string),
                    ));
                    match res {
                        // Killed, on its way out: nothing more is acknowledged, but a
                        // STOP SLAVE would wait for its exit, so its reset or repoint
                        // is finished in verify_replicas.
                        Ok(x) if x.exiting => {
                            answered.remove(&r);
                        }
                        Ok(_) => {
                            if !data.io_stopped.contains(&r) {
                                data.io_stopped.push(r);
                            }
                        }
                        Err(e) => data.warnings.push(format!("stop IO thread on {r}: {e}")),
                    }
                }
            }
        }
        data.io_stopping = reps
            .iter()
            .filter(|r| !answered.contains(*r))
            .cloned()
            .collect();
        Ok(json!({ "stopped": data.io_stopped, "stopping": data.io_stopping }))
    }

    /// Read what each replica applied and received. Nothing is waited for here: only the
    /// chosen candidate (and a replica it catches up from) must apply its relay log, in
    /// step catch_up.
    async fn apply_relay(&mut self, _op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let st = policy.statement_timeout;
        let cluster = &setup.spec.name;
        let old = self.old.clone();
        let members = &self.members;
        let conns = &mut self.conns;
        let data = &mut self.data;
        if data.old_primary_last.is_none() {
            data.old_primary_last = engine.last_good(&old).await;
        }
        let old_last = data.old_primary_last.clone();
        if old_last.is_none() {
            data.warnings.push(format!(
                "no reachable observation of {old} is known: errant GTIDs could not be checked against it"
            ));
        }
        let others: Vec<InstanceAddr> = members.iter().filter(|a| **a != old).cloned().collect();
        let mut now = observe_all_within(&setup.admin, &others, st).await;
        // A replica restarted with replication stopped (`skip_slave_start`) still has the
        // relay log it had not applied: its SQL thread alone applies it now, before
        // anything could start its IO thread (which would delete it).
        let returned: Vec<InstanceAddr> = now
            .iter()
            .filter(|o| needs_salvage(o, &old))
            .map(|o| o.addr.clone())
            .collect();
        for a in &returned {
            let within = policy.relay_apply_timeout;
            let bound = within + Duration::from_secs(1);
            let r = tokio::time::timeout(bound, salvage(conns, a, within))
                .await
                .unwrap_or_else(|_| Err(format!("no end within {bound:?}")));
            match r {
                Ok(s) => {
                    if s.transactions > 0 || !s.kept {
                        tracing::info!(
                            cluster = %cluster,
                            replica = %a,
                            transactions = s.transactions,
                            kept = s.kept,
                            took_ms = s.took_ms,
                            "applied the relay log of a returned replica"
                        );
                    }
                    data.salvaged.retain(|x| x.addr.as_ref() != Some(a));
                    data.salvaged.push(s);
                }
                Err(e) => data.warnings.push(format!(
                    "{a} came back with replication stopped, and its relay log could not be applied ({e}): what it received and had not applied is not counted on it"
                )),
            }
        }
        if !returned.is_empty() {
            now = observe_all_within(&setup.admin, &others, st).await;
        }
        let mut facts = engine
            .replica_facts(
                setup,
                members,
                &old,
                &now,
                old_last.as_ref(),
                &data.streams_cut,
            )
            .await;
        // Never promote a replica whose own disk is stalled or full.
        for (f, _) in facts.iter_mut() {
            if f.excluded.is_none() {
                f.excluded = engine
                    .storage_exclusion(&setup.spec, &f.addr, data.stalled.is_some())
                    .await;
            }
        }
        data.delays = facts
            .iter()
            .filter(|(f, _)| f.delay_s > 0)
            .map(|(f, _)| (f.addr.clone(), f.delay_s))
            .collect();
        let positions: serde_json::Map<String, Value> = facts
            .iter()
            .map(|(f, _)| {
                (
                    f.addr.to_string(),
                    json!({
                        "reachable": f.reachable,
                        "seen_ago_ms": f.seen_ago_ms,
                        "received": f.received.as_ref().map(|l| l.to_string()),
                        "applied": f.binlog_state.as_ref().map(|b| b.to_string()),
                        "delay_s": f.delay_s,
                        "sql_error": f.sql_error,
                        "stream_cut": f.stream_cut,
                    }),
                )
            })
            .collect();
        self.facts = facts;
        self.now = now;
        Ok(json!({ "replicas": positions, "salvaged": data.salvaged }))
    }

    async fn choose(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let cluster = &setup.spec.name;
        let old = self.old.clone();
        let old_site = self.old_site();
        let conns = &mut self.conns;
        let data = &mut self.data;
        let semi_active = setup.spec.semi_sync
            && data
                .old_primary_last
                .as_ref()
                .and_then(|o| o.state())
                .is_none_or(|s| s.semi_sync.source_active);
        if setup.spec.semi_sync && !semi_active {
            data.warnings.push(format!(
                "semi-sync was not active on {old} at its last probe: writes it acknowledged asynchronously may be lost"
            ));
        }
        let plain: Vec<ReplicaFacts> = self.facts.iter().map(|(f, _)| f.clone()).collect();
        self.prior = engine.prior_losses(cluster, &old, op.rec.id).await;
        let choice = match choose(&plain, old_site.as_deref()) {
            Ok(mut c) => {
                carry_losses(&mut c, &self.prior, &self.now, &kept_relay(data));
                c
            }
            Err(no) => {
                engine.undo_before_promote(conns, data).await;
                return Err(Outcome::NeedsHuman(format!(
                    "no safe candidate: {}; {}",
                    no.reason,
                    no.per_replica
                        .iter()
                        .map(|(a, w)| format!("{a}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
        };
        data.choice = Some(choice.clone());
        engine
            .judge_possible_loss(op, conns, data, &choice, policy.on_possible_loss)
            .await?;
        for (a, why) in &choice.unread_semi_sync {
            data.warnings.push(format!(
                "semi-sync replica {a} could not be read ({why}): it may have acknowledged transactions after that; the semi-sync guarantee is not claimed"
            ));
        }
        data.semi_sync_guarantee = Some(
            semi_active && choice.unread_semi_sync.is_empty() && choice.possible_loss.is_empty(),
        );
        data.candidate = Some(choice.candidate.clone());
        data.choice = Some(choice.clone());
        Ok(json!({ "choice": choice }))
    }

    /// The candidate applies what it received (only it is waited for); when it lacks
    /// transactions, it replicates them from a replica that holds them all, after that one
    /// applied what it received. A failure excludes the replica and chooses again.
    async fn catch_up(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let old_site = self.old_site();
        let conns = &mut self.conns;
        let data = &mut self.data;
        let facts = &mut self.facts;
        let mut choice: Choice = data
            .choice
            .clone()
            .ok_or_else(|| Outcome::NeedsHuman("no candidate chosen".into()))?;
        let mut tries = facts.len() + 1;
        loop {
            let cand = choice.candidate.clone();
            let r = engine
                .prepare_candidate(conns, setup, self.repl, &choice, facts, data)
                .await;
            let failed = match r {
                Ok(()) => break,
                Err(f) => f,
            };
            let (who, why) = failed;
            data.warnings
                .push(format!("{who} cannot be used: {why}; choosing again"));
            data.not_applied.push(who.clone());
            if let Some((f, _)) = facts.iter_mut().find(|(f, _)| f.addr == who) {
                f.excluded = Some(why.clone());
            }
            tries -= 1;
            let plain: Vec<ReplicaFacts> = facts.iter().map(|(f, _)| f.clone()).collect();
            choice = match (tries > 0).then(|| choose(&plain, old_site.as_deref())) {
                Some(Ok(mut c)) => {
                    carry_losses(&mut c, &self.prior, &self.now, &kept_relay(data));
                    c
                }
                Some(Err(no)) => {
                    engine.undo_before_promote(conns, data).await;
                    return Err(Outcome::NeedsHuman(format!(
                        "candidate {cand} could not be prepared ({why}), and no other is safe: {}",
                        no.reason
                    )));
                }
                None => {
                    engine.undo_before_promote(conns, data).await;
                    return Err(Outcome::NeedsHuman(format!(
                        "candidate {cand} could not be prepared ({why})"
                    )));
                }
            };
            engine
                .judge_possible_loss(op, conns, data, &choice, policy.on_possible_loss)
                .await?;
            if !choice.possible_loss.is_empty() {
                data.semi_sync_guarantee = Some(false);
            }
            data.candidate = Some(choice.candidate.clone());
            data.choice = Some(choice.clone());
        }
        Ok(
            json!({ "candidate": data.candidate, "caught_up_from": data.caught_up_from, "delays_lifted": data.delays_lifted }),
        )
    }

    async fn pre_hooks(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let policy = &self.setup.failover;
        let cand = self.chosen()?;
        let out = run_hooks(
            &policy.pre_failover,
            &self
                .engine
                .hook_env(op, "pre", &self.data, &self.old, &cand),
            policy.hook_timeout,
            true,
        )
        .await;
        let failed = out.iter().find(|h| !h.ok).cloned();
        self.data.hooks.extend(out);
        if let Some(h) = failed {
            self.engine
                .undo_before_promote(&mut self.conns, &mut self.data)
                .await;
            return Err(Outcome::Failed(format!(
                "pre-failover hook {:?} failed ({}): failover stopped before promotion; replicas restarted",
                h.command, h.status
            )));
        }
        Ok(json!({}))
    }

    /// With fence = "required", the old primary is fenced by the operator's command
    /// before anything is promoted.
    async fn stonith(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let cluster = &setup.spec.name;
        let old = self.old.clone();
        let cand = self.chosen()?;
        let conns = &mut self.conns;
        let data = &mut self.data;
        let out = engine.run_fence_command(op, setup, data, &old, &cand).await;
        // A stalled primary that could not be made read-only and has no working fence
        // command may still be failed over when its semi-sync is lossless: with every
        // replica gone from it, nothing it commits is acknowledged.
        let lossless = data
            .old_primary_last
            .as_ref()
            .and_then(|o| o.state())
            .is_some_and(|s| s.semi_sync.source_enabled && !s.semi_sync.can_fall_back());
        match out {
            Some(h) if h.ok => {
                if data.stall_unfenced {
                    data.stall_fenced = Some("fenced by fence_command".into());
                }
            }
            other if data.stall_unfenced && policy.fence != FencePolicy::Required && lossless => {
                let why = other
                    .map(|h| format!("the fence command {:?} failed ({})", h.command, h.status))
                    .unwrap_or_else(|| "no fence_command is set".into());
                data.warnings.push(format!(
                    "the stalled old primary {old} is not fenced ({why}); its lossless semi-sync keeps it from acknowledging anything once its replicas leave it"
                ));
                data.stall_fenced = Some("not fenced; lossless semi-sync, never relaxed".into());
            }
            other => {
                let why = other
                    .map(|h| format!("{:?} failed ({})", h.command, h.status))
                    .unwrap_or_else(|| "no fence_command is set".into());
                engine.undo_before_promote(conns, data).await;
                let need = if data.stall_unfenced {
                    format!("the stalled old primary {old} could not be made read-only")
                } else {
                    "fence = \"required\"".to_string()
                };
                return Err(Outcome::NeedsHuman(format!(
                    "{need} and the fence command {why}: nothing promoted, writes not opened; replicas restarted. Make sure {old} is down, then run `dbfleet failover {cluster}`"
                )));
            }
        }
        Ok(json!({ "fence_command": data.fence_command }))
    }

    /// Before `promote`: the candidate and the others are known (re-read first when the
    /// failover resumes after promotion started), the old primary is still out, and the
    /// promotion is recorded as started.
    async fn before_promote(&mut self) -> StepResult<()> {
        if self.resuming_after_promote {
            self.reread_after_promote().await?;
        }
        if self.watch.is_none() {
            return Err(Outcome::Failed(
                "the old primary's watch did not start".into(),
            ));
        }
        let cand = self.chosen()?;
        self.others = self
            .data
            .replicas
            .iter()
            .filter(|r| **r != cand)
            .cloned()
            .collect();
        self.touched = std::iter::once(cand.clone())
            .chain(self.others.clone())
            .collect();
        self.cand = cand;
        self.old_primary_still_out("promote").await?;
        self.data.promote_started = true;
        Ok(())
    }

    /// Still read-only. A candidate whose IO thread is still stopping (stuck on a frozen
    /// primary) cannot be reset yet; its SQL thread has applied everything and nothing
    /// more arrives, so the reset is finished in verify_replicas.
    async fn promote(&mut self, _op: &mut Op<'_>) -> StepResult<Value> {
        let st = self.st();
        let cand = self.cand.clone();
        let conns = &mut self.conns;
        let data = &mut self.data;
        let stop = if data.io_stopping.contains(&cand) {
            // Its IO thread is still stopping: STOP SLAVE would wait for it.
            Err(probe::ProbeError::Timeout {
                what: "stop slave",
                after: Duration::ZERO,
            })
        } else {
            conns.exec_within(&cand, Command::StopReplication, st).await
        };
        match stop {
            Ok(()) => match conns
                .exec_within(&cand, Command::ResetReplicationAll, st)
                .await
            {
                Ok(()) => data.reset_pending = false,
                Err(probe::ProbeError::Timeout { .. }) => data.reset_pending = true,
                Err(e) => {
                    return Err(Outcome::NeedsHuman(format!(
                        "promote {cand}: reset slave all: {e}; it may be half-promoted"
                    )))
                }
            },
            Err(probe::ProbeError::Timeout { what, .. }) if what != "connect" => {
                data.reset_pending = true
            }
            Err(e) => {
                return Err(Outcome::NeedsHuman(format!(
                    "promote {cand}: stop slave: {e}; it may be half-promoted"
                )))
            }
        }
        conns
            .exec_within(
                &cand,
                Command::PromotedSemiSync {
                    semi_sync: self.setup.spec.semi_sync,
                },
                st,
            )
            .await
            .map_err(|e| {
                Outcome::NeedsHuman(format!("promote {cand}: {e}; it may be half-promoted"))
            })?;
        Ok(json!({ "candidate": cand, "reset_pending": data.reset_pending }))
    }

    /// Every other replica at once, each within the statement deadline; one still
    /// stopping its IO thread is finished in verify_replicas.
    async fn repoint(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let repl = self.repl;
        let st = self.st();
        let old = self.old.clone();
        let cand = self.cand.clone();
        let conns = &mut self.conns;
        let data = &mut self.data;
        // Replicas that must not replicate as they are: a broken SQL thread, errant GTIDs.
        let errant: Vec<(InstanceAddr, String)> = data
            .choice
            .as_ref()
            .map(|c| {
                c.passed_over
                    .iter()
                    .filter(|(_, w)| w.starts_with("errant") || w.starts_with("SQL thread"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        data.repointed.clear();
        data.repoint_pending.clear();
        data.parked.clear();
        data.park_pending.clear();
        let mut targets = Vec::new();
        let mut to_park = Vec::new();
        for r in &self.others {
            let stopping = data.io_stopping.contains(r);
            match errant.iter().find(|(a, _)| a == r) {
                Some((_, why)) => {
                    let holds_more = data
                        .choice
                        .as_ref()
                        .is_some_and(|c| c.possible_loss.iter().any(|l| l.holder == *r));
                    if holds_more {
                        // Its relay log may hold the only copy: repointing would drop it.
                        data.warnings.push(format!(
                            "{r} ({why}) holds transactions no other replica has: left \
                             stopped and pointed at the old primary {old}, its relay log kept"
                        ));
                    } else if stopping {
                        data.park_pending.push((r.clone(), why.clone()));
                    } else {
                        to_park.push((r.clone(), why.clone()));
                    }
                }
                // Its IO thread is still stopping: STOP SLAVE would wait for it.
                None if stopping => data.repoint_pending.push(r.clone()),
                None => targets.push(r.clone()),
            }
        }
        let lifted = data.delays.clone();
        let creds = setup.admin.clone();
        let opts = probe::ProbeOptions {
            connect_timeout: st,
            query_timeout: st,
        };
        let semi = setup.spec.semi_sync;
        let repoints = targets.iter().map(|r| {
            let creds = creds.clone();
            let to = at_new_primary(&cand, repl, semi, &lifted, r);
            async move {
                let mut c = Conns::new(creds, opts);
                let res = tokio::time::timeout(st, c.repoint(r, &to)).await;
                (r.clone(), res)
            }
        });
        // A replica to park is never left pointed at the old primary, which may come back:
        // it points at the new one, stopped, so that a human's repair ends with `START
        // SLAVE`. At the same time as the repoints, each within the statement deadline.
        let parks = to_park.iter().map(|(r, why)| {
            let creds = creds.clone();
            let to = at_new_primary(&cand, repl, semi, &lifted, r);
            async move {
                let mut c = Conns::new(creds, opts);
                let res = tokio::time::timeout(st, c.park(r, &to)).await;
                (r.clone(), why.clone(), res)
            }
        });
        let (repointed, parked) = futures_util::future::join(
            futures_util::future::join_all(repoints),
            futures_util::future::join_all(parks),
        )
        .await;
        for (r, res) in repointed {
            match res {
                Ok(Ok(())) => data.repointed.push(r),
                Err(_) | Ok(Err(probe::ProbeError::Timeout { .. })) => data.repoint_pending.push(r),
                Ok(Err(e)) => data.warnings.push(format!("repoint {r} to {cand}: {e}")),
            }
        }
        for (r, why, res) in parked {
            match res {
                Ok(Ok(())) => {
                    data.warnings.push(parked_warning(&r, &why, &cand));
                    data.parked.push((r, why));
                }
                Err(_) | Ok(Err(probe::ProbeError::Timeout { .. })) => {
                    data.park_pending.push((r, why))
                }
                Ok(Err(e)) => data.warnings.push(format!(
                    "{r} ({why}): point it at {cand} with replication stopped: {e}; it still \
                     names the old primary {old} as its source"
                )),
            }
        }
        data.delays_lifted
            .retain(|(a, _)| !data.repointed.contains(a) && *a != cand);
        engine
            .judge_semi_sync(op, conns, setup, data, &cand)
            .await?;
        Ok(
            json!({ "repointed": data.repointed, "pending": data.repoint_pending, "parked": data.parked, "park_pending": data.park_pending, "semi_sync_replicas": data.semi_sync_replicas }),
        )
    }

    /// Before `open_writes`: never while a member still receives from the old primary.
    async fn before_open_writes(&mut self) -> StepResult<()> {
        self.old_primary_still_out("open_writes").await?;
        let st = self.st();
        let (old, cand, data) = (&self.old, &self.cand, &mut self.data);
        let (detached, still) = detach_from_old(&self.setup.admin, &self.members, old, st).await;
        for a in &detached {
            if data.io_stopping.contains(a) {
                // Killed at stop_io and still on its way out: as expected.
                continue;
            }
            let known = data.io_stopped.contains(a);
            data.warnings.push(if known {
                format!("{a} was still receiving from the old primary {old} before writes opened: its IO thread was killed")
            } else {
                format!("{a} was receiving from the old primary {old} and was not counted as its replica: its IO thread was killed; it still names {old} as its source")
            });
        }
        if !still.is_empty() {
            let list: Vec<String> = still
                .iter()
                .map(|(a, why)| format!("{a} ({why})"))
                .collect();
            return Err(Outcome::NeedsHuman(format!(
                "{cand} is promoted but writes were not opened: {} still receive(s) from the old primary {old}, and would acknowledge its commits when it comes back. Stop replication there, then `SET GLOBAL read_only=OFF` on {cand}",
                list.join(", ")
            )));
        }
        Ok(())
    }

    async fn open_writes(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let setup = self.setup;
        let st = self.st();
        let cluster = &setup.spec.name;
        let cand = &self.cand;
        let (at, warning) = self
            .engine
            .open_writes_within(&mut self.conns, cluster, cand, st)
            .await
            .map_err(|e| Outcome::NeedsHuman(format!("set {cand} writable: {e}")))?;
        self.data.writable_ms = Some(at);
        self.data.warnings.extend(warning);
        // From here on the old primary must never take a write again: it is fenced the
        // moment it answers (crate::fence_guard), whatever the next steps wait on.
        self.engine.guard_fenced(cluster, &self.old);
        // HAProxy moves at once: the old primary out (its sessions cut), the new one in.
        if let Some(api) = &setup.haproxy {
            let pushed = crate::routing::push_open(api, op, &self.old, &self.cand).await;
            self.data.warnings.extend(pushed);
        }
        Ok(json!({ "writable_ms": self.data.writable_ms }))
    }

    /// Finish what was left stopping, then check each replica.
    async fn verify_replicas(&mut self, _op: &mut Op<'_>) -> StepResult<Value> {
        let setup = self.setup;
        let repl = self.repl;
        let cand = self.cand.clone();
        let conns = &mut self.conns;
        let data = &mut self.data;
        let slow = Duration::from_secs(5);
        if data.reset_pending {
            let r = async {
                conns
                    .exec_within(&cand, Command::StopReplication, slow)
                    .await?;
                conns
                    .exec_within(&cand, Command::ResetReplicationAll, slow)
                    .await
            }
            .await;
            match r {
                Ok(()) => data.reset_pending = false,
                Err(e) => data.warnings.push(format!(
                    "{cand} is writable but still has its old replication settings: reset slave all: {e}"
                )),
            }
        }
        for r in std::mem::take(&mut data.repoint_pending) {
            let to = at_new_primary(&cand, repl, setup.spec.semi_sync, &data.delays, &r);
            match tokio::time::timeout(slow, conns.repoint(&r, &to)).await {
                Ok(Ok(())) => data.repointed.push(r),
                Ok(Err(e)) => data.warnings.push(format!("repoint {r} to {cand}: {e}")),
                Err(_) => data
                    .warnings
                    .push(format!("repoint {r} to {cand}: no answer within {slow:?}")),
            }
        }
        for (r, why) in std::mem::take(&mut data.park_pending) {
            let to = at_new_primary(&cand, repl, setup.spec.semi_sync, &data.delays, &r);
            match tokio::time::timeout(slow, conns.park(&r, &to)).await {
                Ok(Ok(())) => {
                    data.warnings.push(parked_warning(&r, &why, &cand));
                    data.parked.push((r, why));
                }
                Ok(Err(e)) => data.warnings.push(format!(
                    "{r} ({why}): point it at {cand} with replication stopped: {e}"
                )),
                Err(_) => data.warnings.push(format!(
                    "{r} ({why}): point it at {cand} with replication stopped: no answer within {slow:?}"
                )),
            }
        }
        data.delays_lifted.clear();
        let unhealthy = conns.verify_replicating(&data.repointed, &cand).await;
        data.warnings.extend(unhealthy);
        Ok(json!({}))
    }

    async fn fence_old(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let engine = self.engine;
        let setup = self.setup;
        let policy = &setup.failover;
        let st = policy.statement_timeout;
        let cluster = &setup.spec.name;
        let old = self.old.clone();
        let cand = self.cand.clone();
        let seen = match self.watch.take() {
            Some(w) => w.stop().await,
            None => Seen::Silent,
        };
        let conns = &mut self.conns;
        let data = &mut self.data;
        let fenced = match seen {
            Seen::Answered { fenced: Ok(n), .. } => format!(
                "answered during the failover: set read-only, {n} client connection(s) killed"
            ),
            _ if data.stalled.is_some() => match engine
                .fence_stalled(&setup.admin, &old, st.max(Duration::from_millis(300)))
                .await
            {
                Ok(how) => format!("stalled, reachable: {how}"),
                Err(e) => format!(
                    "stalled: {e}; {}; marked fenced in the store",
                    data.stall_fenced.clone().unwrap_or_default()
                ),
            },
            _ => match tokio::time::timeout(st.max(Duration::from_millis(200)), conns.fence(&old))
                .await
            {
                Ok(Ok(n)) => format!(
                    "reachable: {n} client connection(s) killed, set read-only, semi-sync off"
                ),
                other => {
                    let why = match other {
                        Ok(Err(e)) => format!("unreachable ({e})"),
                        _ => "did not answer".to_string(),
                    };
                    let stonith = if policy.fence == FencePolicy::BestEffort {
                        match engine.run_fence_command(op, setup, data, &old, &cand).await {
                            Some(h) if h.ok => "; fence command succeeded".to_string(),
                            Some(h) => {
                                let msg = format!(
                                    "the fence command {:?} for the old primary {old} failed ({}): it may come back writable",
                                    h.command, h.status
                                );
                                data.warnings.push(msg.clone());
                                op.event(
                                    kinds::FENCE_FAILED,
                                    EventLevel::Critical,
                                    format!("{cluster}: {msg}"),
                                    json!({ "operation_id": op.rec.id, "old_primary": old.to_string(), "status": h.status }),
                                )
                                .await;
                                "; fence command FAILED".to_string()
                            }
                            None => String::new(),
                        }
                    } else {
                        "; fence command ran before promotion".to_string()
                    };
                    format!("{why}: marked fenced in the store{stonith}")
                }
            },
        };
        data.fenced = Some(fenced.clone());
        let mark = store::FencedMark {
            operation_id: Some(op.rec.id),
            at_ms: now_ms(),
            new_primary: Some(cand.to_string()),
            last_binlog_pos: data.old_primary_last.as_ref().and_then(binlog_pos),
            keep_semi_sync: data.stalled.is_some(),
        };
        if let Err(e) = engine.store.mark_fenced(cluster, &old, &mark).await {
            data.warnings
                .push(format!("mark {old} fenced in the store: {e}"));
        }
        // Out of HAProxy's writer backend again, for a server that came back meanwhile.
        if let Some(api) = &setup.haproxy {
            let pushed = crate::routing::push_fence(api, op, &old).await;
            data.warnings.extend(pushed);
        }
        Ok(json!({ "fenced": fenced }))
    }

    async fn post_hooks(&mut self, op: &mut Op<'_>) -> StepResult<Value> {
        let policy = &self.setup.failover;
        let out = run_hooks(
            &policy.post_failover,
            &self
                .engine
                .hook_env(op, "post", &self.data, &self.old, &self.cand),
            policy.hook_timeout,
            false,
        )
        .await;
        for h in out.iter().filter(|h| !h.ok) {
            self.data.warnings.push(format!(
                "post-failover hook {:?} failed: {}",
                h.command, h.status
            ));
        }
        self.data.hooks.extend(out);
        Ok(json!({}))
    }
}

impl Steps for FailoverRun<'_> {
    type Step = FailoverStep;

    fn record(&self) -> Value {
        self.data.json()
    }

    fn conns(&mut self) -> &mut Conns {
        &mut self.conns
    }

    fn wanted(&self, step: FailoverStep) -> bool {
        if step.before_promote() && self.resuming_after_promote {
            return false;
        }
        let policy = &self.setup.failover;
        match step {
            FailoverStep::CatchUp => self.needs_catch_up(),
            FailoverStep::PreHooks => !policy.pre_failover.is_empty(),
            FailoverStep::Stonith => {
                policy.fence == FencePolicy::Required || self.data.stall_unfenced
            }
            FailoverStep::PostHooks => !policy.post_failover.is_empty(),
            _ => true,
        }
    }

    fn audited(&self, step: FailoverStep, after: bool) -> Vec<InstanceAddr> {
        match step {
            FailoverStep::Confirm if !after => Vec::new(),
            FailoverStep::Confirm
            | FailoverStep::StopIo
            | FailoverStep::ApplyRelay
            | FailoverStep::Choose
            | FailoverStep::CatchUp => self.data.replicas.clone(),
            FailoverStep::Promote | FailoverStep::Repoint | FailoverStep::VerifyReplicas => {
                self.touched.clone()
            }
            FailoverStep::OpenWrites => vec![self.cand.clone()],
            FailoverStep::PreHooks
            | FailoverStep::Stonith
            | FailoverStep::FenceOld
            | FailoverStep::PostHooks => Vec::new(),
        }
    }

    async fn precondition(&mut self, _op: &mut Op<'_>, step: FailoverStep) -> StepResult<()> {
        match step {
            // From here on the old primary is tried all along, and fenced if it answers.
            FailoverStep::StopIo => {
                self.start_watch();
                Ok(())
            }
            FailoverStep::Promote => self.before_promote().await,
            FailoverStep::OpenWrites => self.before_open_writes().await,
            _ => Ok(()),
        }
    }

    async fn run(&mut self, op: &mut Op<'_>, step: FailoverStep) -> StepResult<Value> {
        match step {
            FailoverStep::Confirm => self.confirm(op).await,
            FailoverStep::StopIo => self.stop_io(op).await,
            FailoverStep::ApplyRelay => self.apply_relay(op).await,
            FailoverStep::Choose => self.choose(op).await,
            FailoverStep::CatchUp => self.catch_up(op).await,
            FailoverStep::PreHooks => self.pre_hooks(op).await,
            FailoverStep::Stonith => self.stonith(op).await,
            FailoverStep::Promote => self.promote(op).await,
            FailoverStep::Repoint => self.repoint(op).await,
            FailoverStep::OpenWrites => self.open_writes(op).await,
            FailoverStep::VerifyReplicas => self.verify_replicas(op).await,
            FailoverStep::FenceOld => self.fence_old(op).await,
            FailoverStep::PostHooks => self.post_hooks(op).await,
        }
    }

    /// Each step's end, in ms after the failover started: what a slow failover spent its
    /// time on.
    fn finished(&mut self, step: FailoverStep) {
        self.data.timeline.push((
            step.name().into(),
            now_ms().saturating_sub(self.data.started_ms),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_the_listed_ones_in_order() {
        let names: Vec<&str> = FailoverStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, super::super::FAILOVER_STEPS);
    }
}
