//! Automated and manual failover of a dead primary.
//!
//! Steps, in order (each persisted before it runs, audited after). No step waits on a
//! server that does not answer longer than its own deadline (`statement_timeout`, or the
//! step's own timeout): a frozen or silently cut old primary, or a replica whose IO thread
//! is stuck on it, costs a failover milliseconds.
//!
//! 1. `confirm`: fresh probes of every member; the old primary must be unreachable (on a
//!    fresh run, analysis of the fresh probes must say `DeadPrimary`). From here on the old
//!    primary is watched ([`crate::watch_old`]) and fenced the moment it answers.
//! 2. `stop_io`: ask every direct replica to stop its IO thread, at once; a replica stuck
//!    on a frozen primary is not waited for (it queues nothing more once asked).
//! 3. `apply_relay`: read what each replica applied and received (`Gtid_IO_Pos`), its
//!    delay and its SQL thread's error; an unreachable one by its last observation.
//! 4. `choose`: pick the candidate ([`crate::choose`]); stop and page if none is safe, or
//!    if transactions may be lost and `on_possible_loss = "page"`.
//! 5. `catch_up`: the candidate applies what it received (a delay lifted for it); when it
//!    lacks transactions, it replicates them from the replica that holds them; a failure
//!    excludes that replica and chooses again.
//! 6. `pre_hooks`: operator hooks; one failing stops the failover before promotion.
//! 7. `stonith`: with `fence = "required"`, the `fence_command` must succeed.
//! 8. `promote`: the old primary must not answer unfenced; the candidate stops replicating;
//!    semi-sync on as a primary (still read-only).
//! 9. `repoint`: every other replica replicates from the candidate by GTID, with semi-sync
//!    as a replica and its delay kept; one with a broken SQL thread or errant GTIDs is
//!    pointed there too but left stopped (parked), unless it alone holds transactions;
//!    then `min_semi_sync_replicas` is judged.
//! 10. `open_writes`: the old primary must not answer unfenced; `read_only=OFF` on the
//!     candidate; the cluster's writer in the store moves to it.
//! 11. `verify_replicas`: what was left stopping is finished; each repointed replica runs
//!     both threads from the new primary.
//! 12. `fence_old`: the old primary, if reachable, has its clients killed and is made
//!     read-only with semi-sync off; if not, `fence_command` runs (`best_effort`); in every
//!     case it is marked fenced in the store and must pass an errant-GTID check (`dbfleet
//!     rejoin`) before it replicates again.
//! 13. `post_hooks`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{PossibleLossPolicy, SemiSyncShortfallPolicy};
use model::analysis::{analyze, errant_transactions, ClusterView, Errant};
use model::gtid::MariadbGtidList;
use model::{
    Flavor, GtidState, InstanceAddr, Observation, OperationKind, ProblemKind, PromotionRule,
};
use probe::commands::{Command, PointAt};
use probe::{Credentials, ProbeOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{kinds, EventLevel, OperationRecord};

mod steps;

use steps::FailoverRun;

use crate::candidate::{has_unapplied, Choice, PossibleLoss, ReplicaFacts};
use crate::conns::Conns;
use crate::hooks::{run_hooks, HookEnv, HookOutcome};
use crate::ops::{binlog_pos, Op, Outcome, StepResult};
use crate::registry::{BoxFuture, OperationSpec};
use crate::salvage::Salvage;
use crate::watch_old::{OldPrimaryWatch, Seen};
use crate::{now_ms, ClusterSetup, Engine, EngineError};

/// The failover in the registry of kinds.
pub(crate) struct Failover;

impl OperationSpec for Failover {
    fn kind(&self) -> OperationKind {
        OperationKind::Failover
    }

    fn description(&self) -> &'static str {
        "promote the best replica in place of a dead primary, or losslessly of one whose writes stalled"
    }

    fn steps(&self) -> &'static [&'static str] {
        FAILOVER_STEPS
    }

    /// Run again from `confirm` with the same old primary when promotion had not started;
    /// from promotion with the same candidate when it had and the candidate answers;
    /// otherwise `needs_human` ([`Engine::resume_failover`]).
    fn resume(
        &self,
        engine: Arc<Engine>,
        rec: OperationRecord,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        Box::pin(async move { engine.resume_failover(rec).await })
    }
}

/// The failover's steps, in order; each has failpoints `failover.<step>.before|after`.
pub const FAILOVER_STEPS: &[&str] = &[
    "confirm",
    "stop_io",
    "apply_relay",
    "choose",
    "catch_up",
    "pre_hooks",
    "stonith",
    "promote",
    "repoint",
    "open_writes",
    "verify_replicas",
    "fence_old",
    "post_hooks",
];

/// A failover's context, persisted with every step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct FailoverData {
    pub old_primary: Option<InstanceAddr>,
    /// When the monitor's analysis first said `DeadPrimary`, if the monitor triggered it.
    pub detected_ms: Option<u64>,
    pub started_ms: u64,
    pub trigger: String,
    pub replicas: Vec<InstanceAddr>,
    pub io_stopped: Vec<InstanceAddr>,
    /// Replicas asked to stop their IO thread that had not stopped within the statement
    /// deadline (stuck on a frozen primary): they receive nothing more, and finish
    /// stopping on their own.
    pub io_stopping: Vec<InstanceAddr>,
    /// How each replica's IO thread stop went: replica, milliseconds, how many kills it
    /// took, and the error if it failed (a stop that waits on the old primary shows here).
    #[serde(default)]
    pub io_stop_took: Vec<(InstanceAddr, u64, usize, Option<String>)>,
    /// Replicas found unusable while preparing the candidate (relay log not applied in
    /// time, catch-up failed).
    pub not_applied: Vec<InstanceAddr>,
    /// Replicas whose `MASTER_DELAY` was lifted for the catch-up, with the delay to put
    /// back.
    pub delays_lifted: Vec<(InstanceAddr, u64)>,
    /// Every replica's `MASTER_DELAY` (seconds) when it was read, kept when it is repointed.
    pub delays: Vec<(InstanceAddr, u64)>,
    /// Transactions only an unusable replica holds (see `on_possible_loss`).
    pub possible_loss: Vec<PossibleLoss>,
    /// Replicas whose stream from the old primary was cut before it died, with the
    /// evidence (see [`streams_cut`]).
    pub streams_cut: Vec<(InstanceAddr, String)>,
    /// The candidate was promoted while its IO thread was still stopping: its `RESET SLAVE
    /// ALL` is finished in verify_replicas.
    pub reset_pending: bool,
    /// Replicas whose repoint did not finish within the statement deadline, finished in
    /// verify_replicas.
    pub repoint_pending: Vec<InstanceAddr>,
    /// Set when the old primary answered during the failover, and how it was fenced.
    pub old_primary_answered: Option<String>,
    /// The `fence_command` run, if one ran.
    pub fence_command: Option<HookOutcome>,
    /// When each step finished, in ms after the failover started (what a slow failover
    /// spent its time on).
    pub timeline: Vec<(String, u64)>,
    /// Semi-sync replicas the new primary had when writes opened.
    pub semi_sync_replicas: Option<usize>,
    /// A semi-sync shortfall, as reported in the `semi_sync_shortfall` event.
    pub semi_sync_shortfall: Option<String>,
    pub choice: Option<Choice>,
    pub candidate: Option<InstanceAddr>,
    pub caught_up_from: Option<InstanceAddr>,
    pub promote_started: bool,
    pub writable_ms: Option<u64>,
    pub repointed: Vec<InstanceAddr>,
    /// Replicas that must not replicate as they are (SQL thread broken, errant GTIDs):
    /// pointed at the new primary with replication stopped, with why. A human removes what
    /// is wrong on each, then `START SLAVE`.
    pub parked: Vec<(InstanceAddr, String)>,
    /// Such replicas whose IO thread was still stopping at `repoint`: parked in
    /// verify_replicas.
    pub park_pending: Vec<(InstanceAddr, String)>,
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
    /// Replicas of the old primary restarted with replication stopped whose relay log was
    /// applied at `apply_relay` (see [`crate::salvage`]).
    pub salvaged: Vec<Salvage>,
    /// Set when the old primary was failed over because its writes stalled while it still
    /// answered (`PrimaryWritesStalled`, `PrimaryDiskFull`): the problem's summary. It is
    /// then reachable all along: fenced first (clients killed, read-only), and semi-sync on
    /// it is never switched off.
    pub stalled: Option<String>,
    /// How the stalled old primary was fenced before anything else, once it was.
    pub stall_fenced: Option<String>,
    /// The stalled old primary could not be made read-only in time: `fence_command` must
    /// fence it before promotion (or its lossless semi-sync must keep it from
    /// acknowledging anything).
    pub stall_unfenced: bool,
}

/// How long a failover's first look keeps watching the replicas' streams beyond the
/// cluster's `stall_confirm` (see [`stall_pending`]): one heartbeat period and the probes'
/// spacing.
const STALL_SLACK: Duration = Duration::from_millis(1500);
/// How often it re-probes the replicas meanwhile.
const STALL_RECHECK: Duration = Duration::from_millis(100);

/// When the analysis says the primary is unreachable but not dead, its probe timed out
/// (not refused: a frozen or cut-off server), the cluster confirms deaths by silent streams
/// (`stall_confirm` > 0), and a direct replica still says its IO thread runs with a tracked
/// stream: the replicas to re-probe, whose streams may still confirm. `None` otherwise.
fn stall_pending(
    spec: &model::ClusterSpec,
    obs: &[Observation],
    analysis: &model::analysis::Analysis,
) -> Option<Vec<InstanceAddr>> {
    if spec.stall_confirm.is_zero() {
        return None;
    }
    let p = analysis
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::UnreachablePrimary)?
        .instance
        .as_ref()?;
    let timed_out = obs
        .iter()
        .find(|o| &o.addr == p)
        .and_then(Observation::failure)
        .is_some_and(|f| f.kind == model::ProbeFailureKind::Timeout);
    let replicas = model::analysis::direct_replicas(obs, p);
    let tracked = replicas.iter().any(|o| {
        o.state()
            .and_then(|s| s.replication.as_ref())
            .is_some_and(|r| {
                r.io_thread == model::IoThreadState::Yes && r.stream.stalled_ms.is_some()
            })
    });
    (timed_out && tracked).then(|| replicas.iter().map(|o| o.addr.clone()).collect())
}

/// How a failover points a replica `r` at the new primary `cand`, to replicate (a repoint)
/// or stopped (a park): by GTID from what it applied, semi-sync as the cluster has it,
/// and the delay a failover lifted (in `delays`) back on.
fn at_new_primary<'a>(
    cand: &'a InstanceAddr,
    repl: &'a Credentials,
    semi_sync: bool,
    delays: &[(InstanceAddr, u64)],
    r: &InstanceAddr,
) -> PointAt<'a> {
    PointAt {
        source: cand,
        creds: repl,
        semi_sync,
        from_current_pos: false,
        delay_s: delays.iter().find(|(a, _)| a == r).map(|(_, d)| *d),
    }
}

/// What the record says of a replica parked on the new primary `cand`.
fn parked_warning(r: &InstanceAddr, why: &str, cand: &InstanceAddr) -> String {
    format!(
        "{r} ({why}) is not replicating: pointed at {cand} with replication stopped; remove \
         what is wrong on it, then START SLAVE"
    )
}

/// The direct replicas of `old` whose stream was cut before it died, with the evidence:
/// `old` refuses connections (its host is up, its process gone: the kernel closed its
/// sockets, and a connected replica sees that within milliseconds), yet the replica's IO
/// thread still says `Yes` with nothing received for at least one heartbeat period. Its
/// connection stopped carrying packets earlier, as when they are dropped on the way: it may
/// lack what the primary committed, and another replica acknowledged, after that.
/// A primary that times out (frozen, cut off, powered off) proves nothing: every stream
/// goes silent at its death.
pub(crate) fn streams_cut(old: &InstanceAddr, obs: &[Observation]) -> Vec<(InstanceAddr, String)> {
    let refused = obs
        .iter()
        .find(|o| &o.addr == old)
        .and_then(Observation::failure)
        .is_some_and(|f| f.kind == model::ProbeFailureKind::Refused);
    if !refused {
        return Vec::new();
    }
    model::analysis::direct_replicas(obs, old)
        .iter()
        .filter_map(|o| {
            let r = o.state()?.replication.as_ref()?;
            let stalled = r.stream.stalled_ms?;
            let period = r.stream.heartbeat_period_ms.filter(|&p| p > 0)?;
            (r.io_thread == model::IoThreadState::Yes && stalled >= period).then(|| {
                (
                    o.addr.clone(),
                    format!(
                        "{}: IO thread still Yes with nothing received for {stalled} ms (heartbeat period {period} ms, Gtid_IO_Pos {}) while {old} refuses connections",
                        o.addr, r.received_gtid
                    ),
                )
            })
        })
        .collect()
}

/// Add to `choice` the losses earlier failovers of the same dead primary named
/// ([`Engine::prior_losses`]) that the choice does not cover (`now`: fresh probes).
///
/// - A holder that still does not answer: the loss stands as it was named.
/// - A holder that answers again is usable, and the choice's required position includes
///   what it holds now. That can be less than it was last seen with: a restarted MariaDB
///   replica (GTID mode) discards the relay log it had not applied and fetches again from
///   what it applied, from a source that is dead. What it no longer holds stands.
/// - An open-ended loss (the holder may have acknowledged more after its last
///   observation) stands even when the holder is back: what it acknowledged and had not
///   applied when it died is gone from it, and no one can say how much.
/// - Unless the holder came back with its relay log as it was when it died, and this
///   failover applied it (`kept`, see [`crate::salvage`]): then it holds everything it
///   received, and so everything it acknowledged, and a loss it covers (held up to the
///   named seq) is gone, open-ended or not.
fn carry_losses(
    choice: &mut Choice,
    prior: &[(i64, PossibleLoss)],
    now: &[Observation],
    kept: &[InstanceAddr],
) {
    for (id, l) in prior {
        let answers = now
            .iter()
            .any(|o| o.addr == l.holder && o.state().is_some());
        let known = choice
            .possible_loss
            .iter()
            .any(|x| x.holder == l.holder && x.domain == l.domain);
        let required = choice
            .required
            .iter()
            .filter_map(|r| r.split_once('-'))
            .find(|(d, _)| d.parse() == Ok(l.domain))
            .and_then(|(_, q)| q.parse::<u64>().ok())
            .unwrap_or(0);
        // A usable replica holds them now (given by hand, or the holder kept them).
        let covered = (!l.open_ended || kept.contains(&l.holder)) && required >= l.to_seq;
        if known || covered {
            continue;
        }
        let mut l = l.clone();
        if answers {
            l.why = format!(
                "named by failover {id} on {} and not held by any usable replica now: {} answers again but holds up to seq {required} (a replica restarted without skip_slave_start discards the relay log it had not applied){}",
                l.holder,
                l.holder,
                if l.open_ended {
                    ", and it may have acknowledged more after it was last seen"
                } else {
                    ""
                }
            );
            l.from_seq = l.from_seq.max(required + 1);
            l.to_seq = l.to_seq.max(l.from_seq - 1);
        } else if !l.why.starts_with("named by failover") {
            l.why = format!("named by failover {id}: {}", l.why);
        }
        choice.possible_loss.push(l);
    }
}

/// The replicas whose relay log this failover applied as it was when they died.
fn kept_relay(data: &FailoverData) -> Vec<InstanceAddr> {
    data.salvaged
        .iter()
        .filter(|s| s.kept)
        .filter_map(|s| s.addr.clone())
        .collect()
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
        what: OperationKind,
    ) -> Result<FreshLook, EngineError> {
        self.fresh_look_within(cluster, what, None).await
    }

    /// [`Engine::fresh_look`] whose probes take at most `limit` each when given: a primary
    /// with a frozen disk can hang its reads too, and the look must not wait the engine's
    /// long query timeout on it (measured: 4.4 s of a 10 s stall-primary-disk failover).
    pub(crate) async fn fresh_look_within(
        &self,
        cluster: &str,
        what: OperationKind,
        limit: Option<Duration>,
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
        let mut observations = match limit {
            Some(limit) => {
                let mut quick = Conns::new(
                    setup.admin.clone(),
                    ProbeOptions {
                        connect_timeout: self.opts.probe.connect_timeout.min(limit),
                        query_timeout: self.opts.probe.query_timeout.min(limit),
                    },
                );
                quick.observe_all(&members).await
            }
            None => conns.observe_all(&members).await,
        };
        self.streams.note_all(&mut observations);
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
            mut conns,
            observations: mut obs,
            mut analysis,
        } = self.fresh_look(cluster, OperationKind::Failover).await?;
        if let Some(members) = stall_pending(&setup.spec, &obs, &analysis) {
            // A primary that times out while its replicas still say they receive from it:
            // watch their streams (fresh probes of the replicas) until they confirm, or
            // `stall_confirm` plus a margin has passed. With the monitor's history shared,
            // the first look already confirms and this does not run.
            let deadline = Instant::now() + setup.spec.stall_confirm + STALL_SLACK;
            while Instant::now() < deadline {
                tokio::time::sleep(STALL_RECHECK).await;
                let mut again = conns.observe_all(&members).await;
                self.streams.note_all(&mut again);
                for o in again {
                    if let Some(old) = obs.iter_mut().find(|x| x.addr == o.addr) {
                        *old = o;
                    }
                }
                analysis = analyze(&ClusterView {
                    spec: &setup.spec,
                    observations: &obs,
                });
                if stall_pending(&setup.spec, &obs, &analysis).is_none() {
                    break;
                }
            }
        }
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
        self.start_failover(conns, setup, repl, data, obs).await
    }

    /// Record a new failover (`data` names its old primary and trigger) and run it from
    /// `confirm`, with `obs` as its fresh look.
    async fn start_failover(
        &self,
        conns: Conns,
        setup: ClusterSetup,
        repl: Credentials,
        data: FailoverData,
        obs: Vec<Observation>,
    ) -> Result<OperationRecord, EngineError> {
        let op = Op::begin(
            self,
            &setup.spec.name,
            OperationKind::Failover,
            &data.trigger,
            FAILOVER_STEPS[0],
            data.json(),
        )
        .await?;
        self.drive_failover(op, conns, setup, repl, data, Some(obs))
            .await
    }

    /// How long each probe of the fresh look before a stalled primary's failover may take.
    pub(crate) const STALLED_LOOK_LIMIT: Duration = Duration::from_secs(1);

    /// Start a failover of `cluster` whose primary `old` answers reads but whose writes
    /// stall (the monitor's `PrimaryWritesStalled` / `PrimaryDiskFull`, `why`): fresh probes
    /// must still name `old` the primary. Lossless: `old` is fenced before anything else
    /// (see [`FailoverData::stalled`]).
    pub(crate) async fn failover_stalled(
        self: &Arc<Self>,
        cluster: &str,
        old: &InstanceAddr,
        why: &str,
        detected_ms: Option<u64>,
        trigger: &str,
    ) -> Result<OperationRecord, EngineError> {
        let FreshLook {
            setup,
            repl,
            conns,
            observations: obs,
            analysis,
        } = self
            .fresh_look_within(
                cluster,
                OperationKind::Failover,
                Some(Self::STALLED_LOOK_LIMIT),
            )
            .await?;
        if analysis.primary.as_ref() != Some(old) {
            return Err(EngineError::Refused(format!(
                "failover of stalled primary {old} refused: fresh probes name {} the primary",
                analysis
                    .primary
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "no one".into())
            )));
        }
        let data = FailoverData {
            old_primary: Some(old.clone()),
            detected_ms,
            started_ms: now_ms(),
            trigger: trigger.into(),
            stalled: Some(why.to_string()),
            ..Default::default()
        };
        self.start_failover(conns, setup, repl, data, obs).await
    }

    /// Fence a stalled old primary before anything else: kill its client connections (a
    /// killed client never hears OK), then `read_only=ON` within `within`, then kill the
    /// clients that connected meanwhile. Semi-sync on it is never touched: with lossless
    /// semi-sync and no replica left to ack, whatever it commits later is acknowledged to
    /// no one. Returns how it went; `Err` when it could not be made read-only in time.
    async fn fence_stalled(
        &self,
        admin: &Credentials,
        old: &InstanceAddr,
        within: Duration,
    ) -> Result<String, String> {
        let opts = probe::ProbeOptions {
            connect_timeout: within,
            query_timeout: within,
        };
        let mut c = Conns::new(admin.clone(), opts);
        let work = async {
            let killed = c
                .kill_clients(old)
                .await
                .map_err(|e| format!("kill clients: {e}"))?;
            c.exec(old, Command::ReadOnly).await.map_err(|e| {
                format!("killed {killed} client connection(s), then read_only=ON: {e}")
            })?;
            let again = c.kill_clients(old).await.unwrap_or(0);
            Ok::<_, String>(format!(
                "{} client connection(s) killed, read-only, semi-sync left on",
                killed + again
            ))
        };
        match tokio::time::timeout(within * 3, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("not read-only within {:?}", within * 3)),
        }
    }

    /// Why a replica must not be promoted because of its own storage, by what the monitor
    /// last saw of it: a full disk, an applier that has not moved, or (`stream_counts`:
    /// the old primary still sends) a stream that has not moved while its IO thread says
    /// `Yes`.
    async fn storage_exclusion(
        &self,
        spec: &model::ClusterSpec,
        addr: &InstanceAddr,
        stream_counts: bool,
    ) -> Option<String> {
        let o = self.last_good(addr).await?;
        let st = o.state()?;
        if let Some(d) = st.disk.as_ref().filter(|d| d.is_full()) {
            return Some(format!(
                "its disk is full ({} of {} available on {}, {})",
                d.available_bytes, d.total_bytes, d.path, d.disk
            ));
        }
        let r = st.replication.as_ref()?;
        if let Some(ms) = r.stream.apply_stalled_ms {
            if !spec.storage.apply_stall.is_zero()
                && ms >= spec.storage.apply_stall.as_millis() as u64
            {
                return Some(format!(
                    "its applier has not moved for {ms} ms (stalled disk?)"
                ));
            }
        }
        if stream_counts
            && !spec.stall_confirm.is_zero()
            && r.io_thread == model::IoThreadState::Yes
        {
            let period = r.stream.heartbeat_period_ms.unwrap_or(0);
            if let Some(ms) = r
                .stream
                .stalled_ms
                .filter(|&ms| period > 0 && ms >= spec.stall_confirm.as_millis() as u64 + period)
            {
                return Some(format!("it has received nothing for {ms} ms from a primary that still sends (stalled disk?)"));
            }
        }
        None
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
        // No step waits on a server that does not answer longer than its own deadline.
        conns.limit_connect(setup.failover.statement_timeout);
        let Some(old) = data.old_primary.clone() else {
            data.finished_ms = Some(now_ms());
            let outcome = Outcome::NeedsHuman("no old primary recorded".into());
            return op.finish(outcome, data.json()).await;
        };
        let members = self.members(&setup).await;
        let mut run = FailoverRun::new(self, &setup, &repl, conns, data, old, members);
        run.fresh = fresh;
        let outcome = run.run_all(&mut op).await;
        if let Some(w) = run.watch.take() {
            let _ = w.stop().await;
        }
        run.data.finished_ms = Some(now_ms());
        let outcome = match outcome {
            Ok(m) => Outcome::Succeeded(m),
            Err(o) => o,
        };
        op.finish(outcome, run.data.json()).await
    }

    /// Before anything is promoted, a failover that stops puts the replicas back as they
    /// were: lifted delays restored, IO threads started again (so they witness the dead
    /// primary again, and a later `dbfleet failover` sees it dead). Bounded; failures
    /// become warnings.
    async fn undo_before_promote(&self, conns: &mut Conns, data: &mut FailoverData) {
        let within = Duration::from_secs(3);
        for (r, d) in std::mem::take(&mut data.delays_lifted) {
            if let Ok(Err(e)) | Err(e) = tokio::time::timeout(within, conns.restore_delay(&r, d))
                .await
                .map_err(|_| probe::ProbeError::Other(format!("no answer within {within:?}")))
            {
                data.warnings
                    .push(format!("put MASTER_DELAY={d} back on {r}: {e}"));
            }
        }
        let stopped: Vec<InstanceAddr> = data
            .io_stopped
            .iter()
            .chain(&data.io_stopping)
            .cloned()
            .collect();
        for r in stopped {
            if let Err(e) = conns
                .exec_within(&r, Command::StartReplication, within)
                .await
            {
                data.warnings
                    .push(format!("restart replication on {r}: {e}"));
            }
        }
    }

    /// Before `promote` and before `open_writes`: the old primary must not have answered,
    /// or must be fenced. Never waits: the watch tries it all along.
    async fn old_primary_still_out(
        &self,
        conns: &mut Conns,
        watch: &OldPrimaryWatch,
        old: &InstanceAddr,
        data: &mut FailoverData,
        before: &str,
    ) -> StepResult<()> {
        if data.stalled.is_some() && data.stall_fenced.is_some() {
            // Fenced (or kept from acknowledging) before anything else; it answers all
            // along.
            return Ok(());
        }
        match watch.seen() {
            Seen::Silent => Ok(()),
            Seen::Answered { at_ms, fenced } => {
                let note = match fenced {
                    Ok(n) => format!(
                        "the old primary {old} answered again during the failover ({} ms after it started); fenced at once ({n} client connection(s) killed, read-only)",
                        at_ms.saturating_sub(data.started_ms)
                    ),
                    Err(e) => {
                        // One more try, bounded; unreachable again is fine, an error is not.
                        let within = Duration::from_secs(1);
                        match tokio::time::timeout(within, conns.fence(old)).await {
                            Ok(Ok(n)) => format!(
                                "the old primary {old} answered again during the failover; fenced before {before} ({n} client connection(s) killed, read-only)"
                            ),
                            Ok(Err(probe::ProbeError::Refused))
                            | Ok(Err(probe::ProbeError::Timeout { what: "connect", .. })) => {
                                format!(
                                    "the old primary {old} answered during the failover, could not be fenced ({e}), and is unreachable again"
                                )
                            }
                            Ok(Err(e2)) => {
                                return Err(Outcome::NeedsHuman(format!(
                                    "the old primary {old} answers again and could not be fenced ({e}; then {e2}): stopped before {before}, so that there are never two writable primaries"
                                )))
                            }
                            Err(_) => {
                                return Err(Outcome::NeedsHuman(format!(
                                    "the old primary {old} answered again and its fence did not finish ({e}): stopped before {before}, so that there are never two writable primaries"
                                )))
                            }
                        }
                    }
                };
                data.old_primary_answered = Some(note.clone());
                if !data.warnings.contains(&note) {
                    data.warnings.push(note);
                }
                Ok(())
            }
        }
    }

    /// What failover knows of each replica of `old`: fresh reads of the reachable ones, the
    /// last reachable observation of the others.
    async fn replica_facts(
        &self,
        setup: &ClusterSetup,
        members: &[InstanceAddr],
        old: &InstanceAddr,
        now: &[Observation],
        old_last: Option<&Observation>,
        data_cut: &[(InstanceAddr, String)],
    ) -> Vec<(ReplicaFacts, bool)> {
        let mut facts = Vec::new();
        let at = now_ms();
        for a in members.iter().filter(|a| *a != old) {
            let fresh = now
                .iter()
                .find(|o| &o.addr == a)
                .filter(|o| o.state().is_some());
            let last = match fresh {
                Some(_) => None,
                None => self.last_good(a).await,
            };
            let Some(o) = fresh.or(last.as_ref()) else {
                continue;
            };
            let Some(st) = o.state() else { continue };
            let Some(rep) = st.replication.as_ref().filter(|r| r.source == *old) else {
                continue;
            };
            let spec = setup.spec.instance(a);
            let errant = match old_last {
                Some(p) => match errant_transactions(o, p) {
                    Some(Errant::Mariadb(v)) => v,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            let sql_error = (!rep.sql_running && rep.last_sql_errno != 0)
                .then(|| format!("error {}: {}", rep.last_sql_errno, rep.last_sql_error));
            facts.push((
                ReplicaFacts {
                    addr: a.clone(),
                    rule: spec.map(|s| s.promotion).unwrap_or(PromotionRule::Neutral),
                    site: spec.and_then(|s| s.site.clone()),
                    reachable: fresh.is_some(),
                    seen_ago_ms: at.saturating_sub(o.at_unix_ms),
                    log_bin: st.log_bin && st.log_replica_updates,
                    binlog_state: match &st.gtid {
                        GtidState::Mariadb { binlog_state, .. } => Some(binlog_state.clone()),
                        _ => None,
                    },
                    received: rep
                        .received_gtid
                        .parse::<MariadbGtidList>()
                        .ok()
                        .filter(|l| !l.is_empty()),
                    errant,
                    semi_sync_replica: st.semi_sync.replica_enabled,
                    sql_error,
                    delay_s: rep.sql_delay_s,
                    excluded: None,
                    stream_cut: data_cut
                        .iter()
                        .find(|(x, _)| x == a)
                        .map(|(_, why)| why.clone()),
                },
                rep.sql_running,
            ));
        }
        facts
    }

    /// Make `r` apply what it received, within `within`: its SQL thread started if it is
    /// stopped, its `MASTER_DELAY` lifted if it has one (recorded, to put back).
    async fn apply_received(
        &self,
        conns: &mut Conns,
        r: &ReplicaFacts,
        sql_running: bool,
        within: Duration,
        data: &mut FailoverData,
    ) -> Result<(), String> {
        if !has_unapplied(r) {
            return Ok(());
        }
        let deadline = Instant::now() + within;
        let Some(received) = r.received.as_ref().map(|l| l.to_string()) else {
            return Ok(());
        };
        if r.delay_s > 0 {
            let d = tokio::time::timeout(within, conns.lift_delay(&r.addr))
                .await
                .map_err(|_| format!("lifting its MASTER_DELAY took over {within:?}"))?
                .map_err(|e| format!("lift its MASTER_DELAY: {e}"))?;
            data.delays_lifted.push((r.addr.clone(), d.max(r.delay_s)));
        } else if !sql_running {
            tokio::time::timeout(within, conns.start_sql_keeping_relay(&r.addr))
                .await
                .map_err(|_| format!("starting its SQL thread took over {within:?}"))?
                .map_err(|e| format!("start its SQL thread: {e}"))?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let ok = conns
            .get(&r.addr)
            .await
            .map_err(|e| e.to_string())?
            .wait_for_gtid(&received, left.max(Duration::from_millis(1)))
            .await
            .map_err(|e| e.to_string())?;
        if ok {
            Ok(())
        } else {
            // What it looked like then, so that a human can tell a stuck applier from a
            // relay log that lacks the end of a transaction.
            let seen = tokio::time::timeout(
                Duration::from_secs(1),
                conns.observe_all(std::slice::from_ref(&r.addr)),
            )
            .await
            .ok()
            .and_then(|o| o.into_iter().next());
            let state = match seen.as_ref().and_then(|o| o.state()) {
                Some(st) => {
                    let applied = match &st.gtid {
                        GtidState::Mariadb { slave_pos, .. } => slave_pos.to_string(),
                        GtidState::Mysql { executed, .. } => executed.to_string(),
                    };
                    match st.replication.as_ref() {
                        Some(rep) => format!(
                            "; then: applied {applied}, received {}, io_thread {:?}, sql_running {}{}",
                            rep.received_gtid,
                            rep.io_thread,
                            rep.sql_running,
                            if rep.last_sql_error.is_empty() {
                                String::new()
                            } else {
                                format!(", last SQL error {}", rep.last_sql_error)
                            }
                        ),
                        None => format!("; then: applied {applied}, no replication configured"),
                    }
                }
                None => "; then: it did not answer a probe within 1s".into(),
            };
            Err(format!(
                "did not apply its relay log up to {received} within {within:?}{state}"
            ))
        }
    }

    /// Get the chosen candidate ready: the replica it catches up from applies what it
    /// received, then the candidate catches up from it; or the candidate applies what it
    /// received. On failure, the replica that failed and why.
    async fn prepare_candidate(
        &self,
        conns: &mut Conns,
        setup: &ClusterSetup,
        repl: &Credentials,
        choice: &Choice,
        facts: &[(ReplicaFacts, bool)],
        data: &mut FailoverData,
    ) -> Result<(), (InstanceAddr, String)> {
        let policy = &setup.failover;
        let fact = |a: &InstanceAddr| facts.iter().find(|(f, _)| f.addr == *a).cloned();
        let cand = choice.candidate.clone();
        if let Some(src) = &choice.catch_up_from {
            if let Some((f, running)) = fact(src) {
                self.apply_received(conns, &f, running, policy.relay_apply_timeout, data)
                    .await
                    .map_err(|e| (src.clone(), e))?;
            }
            // Bounded as a whole: its statements have the engine's query timeout.
            let within = policy.catch_up_timeout + Duration::from_secs(2);
            tokio::time::timeout(
                within,
                self.catch_up(conns, &cand, src, repl, policy.catch_up_timeout),
            )
            .await
            .map_err(|_| format!("no end within {within:?}"))
            .and_then(|r| r)
            .map_err(|e| (cand.clone(), format!("catch-up from {src}: {e}")))?;
            data.caught_up_from = Some(src.clone());
        } else if let Some((f, running)) = fact(&cand) {
            self.apply_received(conns, &f, running, policy.relay_apply_timeout, data)
                .await
                .map_err(|e| (cand.clone(), e))?;
        }
        Ok(())
    }

    /// The possibly lost transactions that earlier failovers of the same death of the
    /// primary (started after it was last seen alive) named when they ended `needs_human`: their evidence (a replica's stream cut before
    /// the primary died) is gone once the replicas' IO threads reconnect, the losses are not.
    async fn prior_losses(
        &self,
        cluster: &str,
        old: &InstanceAddr,
        this_op: i64,
    ) -> Vec<(i64, PossibleLoss)> {
        let Ok(ops) = self
            .store
            .operations(&store::OperationQuery {
                cluster: Some(cluster.to_string()),
                states: vec![store::OperationState::NeedsHuman],
                kind: Some(OperationKind::Failover.to_string()),
                limit: 10,
                before_id: None,
            })
            .await
        else {
            return Vec::new();
        };
        // The same death only: failovers that started after the old primary was last
        // seen alive (one that came back and died again is a new episode).
        let alive_ms = self.last_good(old).await.map_or(0, |o| o.at_unix_ms);
        let mut out = Vec::new();
        for rec in ops.into_iter().filter(|r| r.id != this_op) {
            let Ok(d) = serde_json::from_value::<FailoverData>(rec.data.clone()) else {
                continue;
            };
            if d.old_primary.as_ref() != Some(old) || d.started_ms < alive_ms {
                continue;
            }
            out.extend(d.possible_loss.into_iter().map(|l| (rec.id, l)));
        }
        out
    }

    /// Apply `on_possible_loss` to a choice that names possibly lost transactions.
    async fn judge_possible_loss(
        &self,
        op: &Op<'_>,
        conns: &mut Conns,
        data: &mut FailoverData,
        choice: &Choice,
        policy: PossibleLossPolicy,
    ) -> StepResult<()> {
        if choice.possible_loss.is_empty() {
            return Ok(());
        }
        data.possible_loss = choice.possible_loss.clone();
        let list = choice
            .possible_loss
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        match policy {
            PossibleLossPolicy::Page => {
                self.undo_before_promote(conns, data).await;
                Err(Outcome::NeedsHuman(format!(
                    "not promoted: acknowledged writes may be lost. Possibly lost GTIDs: {list}. No usable replica holds them (on_possible_loss = \"page\"). Bring that replica back and run `dbfleet failover {}` (it will be the candidate), or accept the loss with on_possible_loss = \"promote\"",
                    op.rec.cluster
                )))
            }
            PossibleLossPolicy::Promote => {
                let msg = format!(
                    "promoting {} although acknowledged writes may be lost (on_possible_loss = \"promote\"). Possibly lost GTIDs: {list}",
                    choice.candidate
                );
                if !data.warnings.contains(&msg) {
                    data.warnings.push(msg.clone());
                }
                op.event(
                    kinds::FAILOVER_POSSIBLE_LOSS,
                    EventLevel::Critical,
                    format!("{}: {msg}", op.rec.cluster),
                    json!({ "operation_id": op.rec.id, "possible_loss": choice.possible_loss }),
                )
                .await;
                Ok(())
            }
        }
    }

    /// `min_semi_sync_replicas` against the replicas repointed (or being repointed) with
    /// semi-sync, before writes open.
    async fn judge_semi_sync(
        &self,
        op: &Op<'_>,
        conns: &mut Conns,
        setup: &ClusterSetup,
        data: &mut FailoverData,
        cand: &InstanceAddr,
    ) -> StepResult<()> {
        if !setup.spec.semi_sync {
            return Ok(());
        }
        let have = data.repointed.len() + data.repoint_pending.len();
        data.semi_sync_replicas = Some(have);
        let need = setup.failover.min_semi_sync_replicas as usize;
        if have >= need {
            return Ok(());
        }
        let policy = setup.failover.semi_sync_shortfall;
        let relax = policy == SemiSyncShortfallPolicy::Relax && have == 0;
        let msg = if relax {
            conns
                .exec_within(
                    cand,
                    Command::SemiSyncPrimaryOff,
                    setup.failover.statement_timeout,
                )
                .await
                .map_err(|e| {
                    Outcome::NeedsHuman(format!(
                        "{cand} has no semi-sync replica and semi-sync could not be switched off on it ({e}): writes would wait; not opened"
                    ))
                })?;
            format!(
                "{cand} has no semi-sync replica (min_semi_sync_replicas = {need}): semi-sync switched OFF on it (semi_sync_shortfall = \"relax\"); the cluster now runs WITHOUT a second copy of each write"
            )
        } else if have == 0 {
            format!(
                "{cand} has no semi-sync replica (min_semi_sync_replicas = {need}): semi-sync stays on, so writes WAIT until a replica acknowledges (semi_sync_shortfall = \"page\"); bring a replica back or rejoin one"
            )
        } else {
            format!(
                "{cand} has {have} semi-sync replica(s), fewer than min_semi_sync_replicas = {need}: one more loss and writes wait"
            )
        };
        data.semi_sync_shortfall = Some(msg.clone());
        data.warnings.push(msg.clone());
        op.event(
            kinds::SEMI_SYNC_SHORTFALL,
            EventLevel::Critical,
            format!("{}: {msg}", op.rec.cluster),
            json!({
                "operation_id": op.rec.id,
                "new_primary": cand.to_string(),
                "semi_sync_replicas": have,
                "min_semi_sync_replicas": need,
                "policy": policy.to_string(),
                "relaxed": relax,
            }),
        )
        .await;
        Ok(())
    }

    /// Run the cluster's `fence_command`, if set; recorded in `data`.
    async fn run_fence_command(
        &self,
        op: &Op<'_>,
        setup: &ClusterSetup,
        data: &mut FailoverData,
        old: &InstanceAddr,
        cand: &InstanceAddr,
    ) -> Option<HookOutcome> {
        let cmd = setup.failover.fence_command.clone()?;
        let out = run_hooks(
            &[cmd],
            &self.hook_env(op, "fence", data, old, cand),
            setup.failover.hook_timeout,
            true,
        )
        .await
        .pop()?;
        data.fence_command = Some(out.clone());
        Some(out)
    }

    /// [`Engine::open_writes`] within `limit`.
    async fn open_writes_within(
        &self,
        conns: &mut Conns,
        cluster: &str,
        addr: &InstanceAddr,
        limit: Duration,
    ) -> Result<(u64, Option<String>), probe::ProbeError> {
        conns.exec_within(addr, Command::Writable, limit).await?;
        Ok(self.record_new_writer(cluster, addr).await)
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
        conns.exec(addr, Command::Writable).await?;
        Ok(self.record_new_writer(cluster, addr).await)
    }

    /// Record `addr`, writable now, as the cluster's writer: when, and a warning when the
    /// store could not record it (the server is writable whatever the store says).
    async fn record_new_writer(&self, cluster: &str, addr: &InstanceAddr) -> (u64, Option<String>) {
        let at = now_ms();
        let warning = self
            .store
            .set_writer(cluster, Some(addr.clone()), at)
            .await
            .err()
            .map(|e| format!("record the new writer in the store: {e}"));
        (at, warning)
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
            .repoint(
                cand,
                &PointAt {
                    source,
                    creds: repl,
                    semi_sync: false,
                    from_current_pos: false,
                    delay_s: None,
                },
            )
            .await
            .map_err(|e| format!("point {cand} at {source}: {e}"))?;
        let ok = conns
            .get(cand)
            .await
            .map_err(|e| e.to_string())?
            .wait_for_gtid(&pos, within)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conns.exec(cand, Command::StopReplication).await;
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
            operation: OperationKind::Failover,
            operation_id: op.rec.id,
            phase,
            trigger: data.trigger.clone(),
            old_primary: old.to_string(),
            new_primary: new.to_string(),
        }
    }
}

/// How long stopping one replica's IO thread may take ([`Conns::stop_io_now`]: kills, then
/// `STOP SLAVE IO_THREAD`). stop_io waits for every replica's stop to end, or for this
/// (plus [`STOP_MARGIN`]): a stop still running would race the repoint that follows,
/// its last `STOP SLAVE IO_THREAD` stopping the thread just started toward the new
/// primary (seen under load: the new primary then had no semi-sync replica, and writes
/// waited).
const STOP_CAP: Duration = Duration::from_secs(5);
/// Past [`STOP_CAP`], for a stop's own timeout to have ended it.
const STOP_MARGIN: Duration = Duration::from_millis(200);

/// Observe `addrs` at once, each within a few statement deadlines: fresh connections, so
/// one slow server delays no other.
async fn observe_all_within(
    creds: &Credentials,
    addrs: &[InstanceAddr],
    st: Duration,
) -> Vec<Observation> {
    let opts = probe::ProbeOptions {
        connect_timeout: st,
        query_timeout: st * 4,
    };
    let futs = addrs.iter().map(|a| {
        let creds = creds.clone();
        async move { probe::observe(a, &creds, opts).await }
    });
    futures_util::future::join_all(futs).await
}

/// Before writes open: every member but the old primary (the candidate included) is read,
/// and one whose IO thread still runs toward `old` has it killed
/// ([`Conns::stop_io_now`]), up to three rounds within [`STOP_CAP`], each read again. A
/// member so attached (a replica the failover did not count as one, or one whose stop did
/// not end) would acknowledge the old primary's commits the moment it comes back: a write
/// acknowledged there and missing on the new primary. A killed IO thread still on its way
/// out counts as detached: it acknowledges nothing more. Returns the members it detached,
/// and those still attached at the end, with why. A member that cannot be read is not
/// judged.
async fn detach_from_old(
    creds: &Credentials,
    members: &[InstanceAddr],
    old: &InstanceAddr,
    st: Duration,
) -> (Vec<InstanceAddr>, Vec<(InstanceAddr, String)>) {
    let others: Vec<InstanceAddr> = members.iter().filter(|a| *a != old).cloned().collect();
    let deadline = tokio::time::Instant::now() + STOP_CAP;
    let mut detached: Vec<InstanceAddr> = Vec::new();
    let mut still: Vec<(InstanceAddr, String)> = Vec::new();
    for round in 0..4 {
        let obs = observe_all_within(creds, &others, st).await;
        still.clear();
        let attached: Vec<InstanceAddr> = obs
            .iter()
            .filter_map(|o| {
                let r = o.state()?.replication.as_ref()?;
                (r.source == *old && r.io_thread != model::IoThreadState::No)
                    .then(|| o.addr.clone())
            })
            .filter(|a| !detached.contains(a))
            .collect();
        if attached.is_empty() {
            return (detached, still);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || round == 3 {
            still = attached
                .into_iter()
                .map(|a| (a, "its IO thread still runs".to_string()))
                .collect();
            break;
        }
        let opts = probe::ProbeOptions {
            connect_timeout: st,
            query_timeout: left,
        };
        let stops = attached.iter().map(|a| {
            let creds = creds.clone();
            async move {
                let mut c = Conns::new(creds, opts);
                (a.clone(), c.stop_io_now(a, left).await)
            }
        });
        for (a, r) in futures_util::future::join_all(stops).await {
            match r {
                // Stopped, or killed and on its way out.
                Ok(_) => detached.push(a),
                Err(e) => still.push((a, e.to_string())),
            }
        }
        if still.is_empty() {
            return (detached, still);
        }
    }
    (detached, still)
}
