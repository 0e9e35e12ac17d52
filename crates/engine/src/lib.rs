//! dbfleet's operations engine: failover, switchover and rejoin as persisted, audited state
//! machines, the policy that starts them, anti-flapping, hooks and leadership.
//!
//! # An operation
//!
//! An operation is a row in the store ([`store::OperationRecord`]) and a list of named
//! steps. Before a step runs, the row records the step and the operation's context (old
//! primary, candidate, what was done so far); after it, an `operation_step` event records
//! the GTID positions of the instances before and after. An operation:
//!
//! - holds its cluster's lock ([`store::Store::try_lock_cluster`]) for its whole run, renewed
//!   in the background, so two operations never touch one cluster, across nodes too;
//! - re-reads the servers (fresh probes) before it acts, and again after a restart;
//! - runs only on the leader node;
//! - stops on a failed step with a recorded state and an `error`/`critical` event, and never
//!   retries blindly.
//!
//! # After a crash
//!
//! When a node becomes leader it looks for operations left `running`. A failover that had
//! not started promoting is run again from its first step with the same old primary (every
//! step before promotion is safe to repeat; if the old primary answers again, it is rolled
//! back instead). One that had started promoting goes on from promotion with the same
//! candidate when the candidate answers, and otherwise becomes `needs_human` with a critical
//! event. A switchover or rejoin interrupted midway is never guessed at: it becomes
//! `needs_human`, after its old primary is made writable again if the target was never
//! promoted.
//!
//! # Failpoints
//!
//! See [`failpoint`]: every step has `<kind>.<step>.before` and `.after`.

mod auto;
mod candidate;
mod conns;
mod failover;
pub mod failpoint;
mod fence_guard;
pub mod hooks;
mod ops;
mod registry;
mod rejoin;
pub mod routing;
mod salvage;
mod switchover;
mod watch_old;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use config::{FailoverConfig, FailoverMode, RejoinMode};
use model::{
    ClusterRound, ClusterSpec, InstanceAddr, Observation, OperationKind, Problem, ProblemKind,
};
use probe::{Credentials, ProbeOptions};
use serde::{Deserialize, Serialize};
use store::{
    kinds, EventLevel, NewEvent, OperationQuery, OperationRecord, OperationState, Settings, Store,
    StoreError,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use auto::AutoFailoverNotice;
pub use candidate::{choose, Choice, NoCandidate, PossibleLoss, ReplicaFacts};
pub use failover::FAILOVER_STEPS;
pub use registry::{operation_kinds, operation_steps};
pub use switchover::SWITCHOVER_STEPS;

pub use model::clock::now_ms;

/// What the engine needs to act on one cluster.
#[derive(Clone, Debug)]
pub struct ClusterSetup {
    pub spec: ClusterSpec,
    /// The admin account it logs in with.
    pub admin: Credentials,
    /// The account replicas replicate with; failover and switchover refuse without it.
    pub repl: Option<Credentials>,
    pub failover: FailoverConfig,
    /// The cluster's HAProxy, told at once when a failover or switchover moves the primary
    /// (`[cluster.haproxy] runtime_api`; see [`routing`]). `None`: no push.
    pub haproxy: Option<haproxy::RuntimeApi>,
}

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// This node's name, unique among the nodes sharing the store.
    pub node_id: String,
    /// The leader lease's TTL.
    pub lease_ttl: Duration,
    /// A cluster lock's TTL; the holder renews it every third of it.
    pub lock_ttl: Duration,
    /// Timeouts for the engine's own connections.
    pub probe: ProbeOptions,
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cluster {0:?} is not in this node's config")]
    UnknownCluster(String),
    #[error("this node ({node}) is not the leader{}; send the request to the leader", leader.as_ref().map(|l| format!(": {l} leads")).unwrap_or_default())]
    NotLeader {
        node: String,
        leader: Option<String>,
    },
    #[error("cluster {cluster:?} is busy: {holder} holds its lock")]
    Busy { cluster: String, holder: String },
    #[error("{0}")]
    Refused(String),
    #[error("operation {id} ({kind}) on {cluster} ended {state}: {message}")]
    Ended {
        id: i64,
        kind: String,
        cluster: String,
        state: OperationState,
        message: String,
        record: Box<OperationRecord>,
    },
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
}

/// The fleet-wide and per-cluster recovery switches, as the API shows them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveriesStatus {
    pub enabled: bool,
    pub clusters: Vec<ClusterRecoveries>,
}

/// One cluster's failover policy and block window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterRecoveries {
    pub cluster: String,
    pub mode: String,
    pub block_window_s: u64,
    /// The automatic failover that blocks the next one, if any.
    pub blocked_by: Option<i64>,
    /// When the block lapses, in ms since the Unix epoch.
    pub blocked_until_ms: Option<u64>,
    pub acked_ms: Option<u64>,
    /// Instances fenced after a failover, waiting for `dbfleet rejoin`.
    pub fenced: Vec<String>,
    /// `manual` or `auto`: how a fenced instance that answers again is rejoined.
    pub rejoin: String,
}

/// What the engine decided about a cluster's dead primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Failed over (policy `auto`), proposed, or alerted only: never decided again for the
    /// same death.
    Done,
    /// Held back by anti-flapping or the fleet-wide switch: decided again each round, so an
    /// `ack` or `enable` (on any node) lets it run.
    Blocked,
    /// Policy `auto`: an automatic failover of it runs on this node.
    Running,
    /// Policy `auto`: an attempt was refused or failed before promotion; its task waits to
    /// try again ([`auto`]).
    Retrying,
    /// Policy `auto`: an attempt ended in a way a retry must not repeat (it needs a human,
    /// or failed after promotion started); `recoveries ack` tries again.
    GaveUp,
}

/// The operations engine. Cheap to share as `Arc<Engine>`.
pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) opts: EngineOptions,
    pub(crate) clusters: BTreeMap<String, ClusterSetup>,
    leader: AtomicBool,
    leader_name: Mutex<Option<String>>,
    term: AtomicU64,
    /// Clusters with an operation running on this node.
    running: Mutex<HashSet<String>>,
    /// Per cluster, the dead primary whose episode was already handled (started, proposed
    /// or blocked), so one death makes one decision.
    handled: Mutex<HashMap<String, (InstanceAddr, Decision)>>,
    /// The last reachable observation of each instance, from the rounds (the shared
    /// tracker `streams` keeps the probes' too; see [`Engine::last_good`]).
    last_good: Mutex<HashMap<InstanceAddr, Observation>>,
    /// Fenced instances already seen returning, so each return is handled once.
    returned: Mutex<HashSet<InstanceAddr>>,
    /// Automatic rejoins tried per fenced instance (policy `rejoin = "auto"`): attempts
    /// made and when the next may start, in ms since the Unix epoch.
    auto_rejoins: Mutex<HashMap<InstanceAddr, (u32, u64)>>,
    /// Every operation this node finishes, as recorded (see [`Engine::finished_operations`]).
    pub(crate) finished: tokio::sync::broadcast::Sender<OperationRecord>,
    /// How long each replica's received stream has not moved; the daemon shares the
    /// monitor's, so that a failover's fresh look sees a frozen primary's silent replicas
    /// as the monitor did (see [`Engine::with_streams`]).
    pub(crate) streams: Arc<model::SharedStreams>,
    /// Refused automatic failovers and their ends (see [`Engine::auto_failover_notices`]).
    notices: tokio::sync::broadcast::Sender<AutoFailoverNotice>,
    /// Per cluster, the automatic failover task of its dead primary ([`auto`]).
    auto_runs: Mutex<HashMap<String, auto::AutoRun>>,
    /// Ids of automatic failover tasks.
    next_run: AtomicU64,
    /// Per cluster, the dead primary the last round named, and when it was detected.
    dead_now: Mutex<HashMap<String, (InstanceAddr, u64)>>,
    /// The fence guards of replaced primaries that could not be fenced yet ([`fence_guard`]).
    guards: Mutex<HashMap<InstanceAddr, fence_guard::Guard>>,
    /// Per cluster, when its last operation on this node ended, in ms since the Unix epoch.
    op_ended: Mutex<HashMap<String, u64>>,
    /// Per cluster, the stalled primary (`PrimaryWritesStalled`, `PrimaryDiskFull`) already
    /// acted on or paged for, so that one stall makes one decision.
    stalls: Mutex<HashMap<String, InstanceAddr>>,
    /// Replaced primaries that were failed over for stalled writes: their fences never
    /// switch semi-sync off (from the failover, and from the `fenced/` marks in the store
    /// after a restart).
    keep_semi_sync: Mutex<HashSet<InstanceAddr>>,
    /// Cancels every task the engine spawned on its own ([`Engine::stop_tasks`]), and once
    /// cancelled, no new operation starts ([`Engine::shutdown`]).
    pub(crate) stop: CancellationToken,
    /// Every operation, and every task the engine runs for them or on its own (automatic
    /// failovers and their retries, fence guards, resumptions, lock renewals):
    /// [`Engine::shutdown`] waits for them.
    tasks: TaskTracker,
    /// This engine, for tasks spawned where only `&self` is at hand.
    me: Weak<Engine>,
}

/// Finished operations a slow subscriber may fall behind by before it misses some.
const FINISHED_QUEUE: usize = 64;

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clusters: Vec<ClusterSetup>,
    ) -> Arc<Self> {
        Self::with_streams(store, opts, clusters, Arc::default())
    }

    /// [`Engine::new`], sharing a stream tracker with the monitor (`monitor::Stats::streams`):
    /// the fresh probes a failover starts from then carry the monitor's history of each
    /// replica's received stream, so a primary the monitor found dead by its replicas'
    /// silence is found dead again at once. With a tracker of its own, the engine watches
    /// the streams itself for up to the cluster's `stall_confirm` before it refuses.
    pub fn with_streams(
        store: Arc<dyn Store>,
        opts: EngineOptions,
        clusters: Vec<ClusterSetup>,
        streams: Arc<model::SharedStreams>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            streams,
            store,
            opts,
            clusters: clusters
                .into_iter()
                .map(|c| (c.spec.name.clone(), c))
                .collect(),
            leader: AtomicBool::new(false),
            leader_name: Mutex::new(None),
            term: AtomicU64::new(0),
            running: Mutex::new(HashSet::new()),
            handled: Mutex::new(HashMap::new()),
            last_good: Mutex::new(HashMap::new()),
            returned: Mutex::new(HashSet::new()),
            auto_rejoins: Mutex::new(HashMap::new()),
            finished: tokio::sync::broadcast::channel(FINISHED_QUEUE).0,
            notices: tokio::sync::broadcast::channel(FINISHED_QUEUE).0,
            auto_runs: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(1),
            dead_now: Mutex::new(HashMap::new()),
            guards: Mutex::new(HashMap::new()),
            op_ended: Mutex::new(HashMap::new()),
            stalls: Mutex::new(HashMap::new()),
            keep_semi_sync: Mutex::new(HashSet::new()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            me: me.clone(),
        })
    }

    /// Cancel the tasks the engine runs on its own: automatic failovers waiting to retry
    /// and fence guards; no new operation starts from now on. An operation that runs is not
    /// interrupted. For shutdown ([`Engine::shutdown`] also waits for what runs).
    pub fn stop_tasks(&self) {
        self.stop.cancel();
    }

    /// Shut the engine down: [`Engine::stop_tasks`], then wait up to `within` for every
    /// operation that runs (and every task the engine runs) to end. An operation is never
    /// cut short between its steps: one that outlasts `within` is left `running` in the
    /// store, and resumed or judged by the next leader. Returns whether all ended.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.stop_tasks();
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Whether shutdown began ([`Engine::stop_tasks`]): no new operation starts.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Run `fut` on a task of the engine's tracker, which [`Engine::shutdown`] waits for.
    pub(crate) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    /// Run an operation on a tracked task of its own and wait for its end: a caller that
    /// goes away (an API client that disconnects) does not cut it short, and shutdown
    /// waits for it.
    pub(crate) async fn run_operation<F>(&self, op: F) -> Result<OperationRecord, EngineError>
    where
        F: std::future::Future<Output = Result<OperationRecord, EngineError>> + Send + 'static,
    {
        match self.spawn(op).await {
            Ok(r) => r,
            // A panic in the operation is the caller's, as it was when it ran inline.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(EngineError::Refused(format!(
                "the operation's task was cancelled: {e}"
            ))),
        }
    }

    /// Whether an operation of `cluster` may explain what `observations` show: one runs on
    /// this node, or one ended after a reachable instance among them was observed, so the
    /// round mixes views from before and after it (each instance is probed on its own
    /// clock). The daemon's alerting does not page `NoPrimary` then: a failover's new
    /// primary can look isolated beside a replica still seen following the old one.
    pub fn operation_overlaps(&self, cluster: &str, observations: &[Observation]) -> bool {
        if self.running_lock().contains(cluster) {
            return true;
        }
        let Some(ended) = self
            .op_ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .copied()
        else {
            return false;
        };
        observations
            .iter()
            .any(|o| o.state().is_some() && o.at_unix_ms <= ended)
    }

    /// Record that an operation of `cluster` ended now.
    pub(crate) fn operation_ended(&self, cluster: &str) {
        self.op_ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_string(), now_ms());
    }

    fn auto_runs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, auto::AutoRun>> {
        self.auto_runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dead_now_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (InstanceAddr, u64)>> {
        self.dead_now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every operation this node finishes from now on (succeeded, rolled back, failed or
    /// needing a human), as stored. The daemon's alerting pages the ones that did not
    /// succeed. A subscriber more than 64 behind misses the oldest.
    pub fn finished_operations(&self) -> tokio::sync::broadcast::Receiver<OperationRecord> {
        self.finished.subscribe()
    }

    pub fn node_id(&self) -> &str {
        &self.opts.node_id
    }

    /// Whether this node leads (as of its last campaign).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// The leader as last seen, and its term.
    pub fn leader(&self) -> (Option<String>, u64) {
        (
            self.leader_name
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            self.term.load(Ordering::SeqCst),
        )
    }

    pub(crate) fn setup(&self, cluster: &str) -> Result<&ClusterSetup, EngineError> {
        self.clusters
            .get(cluster)
            .ok_or_else(|| EngineError::UnknownCluster(cluster.to_string()))
    }

    pub(crate) fn require_leader(&self) -> Result<(), EngineError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(EngineError::NotLeader {
                node: self.opts.node_id.clone(),
                leader: self.leader().0,
            })
        }
    }

    /// Campaign once: take or renew the lease. Returns whether this node leads.
    pub async fn campaign_once(self: &Arc<Self>) -> bool {
        let ttl = self.opts.lease_ttl.as_millis() as u64;
        match self.store.campaign(&self.opts.node_id, ttl, now_ms()).await {
            Ok(l) => {
                let was = self.leader.swap(l.is_leader, Ordering::SeqCst);
                self.term.store(l.term, Ordering::SeqCst);
                *self.leader_name.lock().unwrap_or_else(|p| p.into_inner()) = l.leader.clone();
                if was != l.is_leader {
                    info!(node = %self.opts.node_id, leader = l.is_leader, term = l.term, "leadership changed");
                    let _ = self
                        .store
                        .append_event(
                            &NewEvent::new(
                                now_ms(),
                                kinds::LEADERSHIP_CHANGED,
                                EventLevel::Info,
                                if l.is_leader {
                                    format!(
                                        "{} became the leader (term {})",
                                        self.opts.node_id, l.term
                                    )
                                } else {
                                    format!("{} is no longer the leader", self.opts.node_id)
                                },
                            )
                            .with_data(serde_json::json!({
                                "node": self.opts.node_id, "leader": l.is_leader, "term": l.term
                            })),
                        )
                        .await;
                    if l.is_leader {
                        let me = self.clone();
                        self.spawn(async move { me.resume_interrupted().await });
                    }
                }
                l.is_leader
            }
            Err(e) => {
                // Without the store we cannot prove we lead: stop acting.
                if self.leader.swap(false, Ordering::SeqCst) {
                    warn!(error = %e, "lost contact with the store: no longer acting as leader");
                }
                false
            }
        }
    }

    /// Campaign every third of the lease TTL until `cancel`; resign on the way out.
    pub async fn run_leadership(self: Arc<Self>, cancel: CancellationToken) {
        let every = self.opts.lease_ttl / 3;
        loop {
            self.campaign_once().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if self.leader.swap(false, Ordering::SeqCst) {
            let _ = self.store.resign(&self.opts.node_id).await;
        }
    }

    /// Consume one round of analysis (the monitor's): start, propose or block a failover on
    /// `DeadPrimary`, and keep returning fenced instances out. Never blocks the caller for
    /// long: a failover runs on its own task.
    pub async fn on_round(self: &Arc<Self>, round: &ClusterRound) {
        let ClusterRound {
            cluster,
            at_ms,
            trigger: _,
            observations,
            primary,
            problems,
        } = round;
        let (cluster, at_ms, primary) = (cluster.as_str(), *at_ms, primary.as_ref());
        // Remember the last reachable observation of every instance, on every node: a dead
        // primary's errant-GTID baseline is its last good state, not its failed probe.
        {
            let mut good = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
            for o in observations.iter().filter(|o| o.state().is_some()) {
                good.insert(o.addr.clone(), o.clone());
            }
        }
        if !self.is_leader() {
            return;
        }
        let Ok(setup) = self.setup(cluster) else {
            return;
        };
        let dead = problems
            .iter()
            .find(|p| p.kind == ProblemKind::DeadPrimary)
            .and_then(|p| p.instance.clone());
        {
            let mut now = self.dead_now_lock();
            match &dead {
                Some(d) => {
                    if now.get(cluster).is_none_or(|(x, _)| x != d) {
                        now.insert(cluster.to_string(), (d.clone(), at_ms));
                    }
                }
                None => {
                    now.remove(cluster);
                }
            }
        }
        self.record_writer(cluster, primary, observations).await;
        self.keep_fenced_out(cluster, observations).await;
        if self.running_lock().contains(cluster) {
            return;
        }
        // An operation left running (a crash, a lost leader) is resumed, never raced by a
        // new one; resuming is retried each round until its cluster lock can be taken.
        match self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                states: vec![OperationState::Running],
                limit: 1,
                ..Default::default()
            })
            .await
        {
            Ok(ops) if ops.is_empty() => {}
            Ok(mut ops) => {
                let op = ops.remove(0);
                let me = self.clone();
                self.spawn(async move {
                    if let Err(e) = registry::resume(me, op).await {
                        info!(error = %e, "interrupted operation not resumed yet");
                    }
                });
                return;
            }
            Err(e) => {
                warn!(cluster, error = %e, "cannot check for running operations");
                return;
            }
        }
        if dead.is_none()
            && self
                .on_write_stall(cluster, setup, primary, problems, observations)
                .await
        {
            return;
        }
        let Some(dead) = dead else {
            // An automatic failover waiting to retry goes on through rounds that cannot
            // tell (a blind monitor, no primary named): it stops once the dead primary
            // answers or a reachable primary is named.
            let retrying = self.auto_runs_lock().get(cluster).map(|r| r.dead.clone());
            if let Some(d) = &retrying {
                let answers = |a: &InstanceAddr| {
                    observations
                        .iter()
                        .any(|o| &o.addr == a && o.state().is_some())
                };
                if !answers(d) && !primary.is_some_and(answers) {
                    return;
                }
            }
            let judged = self.handled_lock().remove(cluster);
            if judged.is_some() {
                self.withdraw_proposals(cluster).await;
            }
            self.stop_auto_failover(cluster);
            if let Some(d) = retrying.or(judged.map(|(d, _)| d)) {
                let why = match primary {
                    Some(p) if *p != d => format!("{p} is the primary now"),
                    _ => format!("{d} answers again"),
                };
                let _ = self.notices.send(AutoFailoverNotice::Settled {
                    cluster: cluster.to_string(),
                    dead: d,
                    why,
                });
            }
            return;
        };
        let prior = self.handled_lock().get(cluster).cloned();
        let was_blocked = match &prior {
            Some((d, Decision::Blocked)) if *d == dead => true,
            Some((d, Decision::GaveUp)) if *d == dead => {
                // Paged for a possible loss on a replica that did not answer: once it
                // answers again, the failover is tried again (it will be the candidate).
                if setup.failover.mode == FailoverMode::Auto
                    && self.loss_holder_back(cluster, &dead, observations).await
                    && self.auto_blocked(cluster, setup).await.is_none()
                {
                    info!(cluster, primary = %dead, "a replica that may hold lost writes answers again: retrying the failover");
                    let detected = self
                        .dead_now_lock()
                        .get(cluster)
                        .map(|(_, at)| *at)
                        .unwrap_or(at_ms);
                    self.start_auto_failover(cluster, &dead, detected);
                }
                return;
            }
            Some((d, _)) if *d == dead => return,
            _ => false,
        };
        match setup.failover.mode {
            FailoverMode::Off => {
                self.handled_lock()
                    .insert(cluster.to_string(), (dead.clone(), Decision::Done));
                info!(cluster, primary = %dead, "dead primary: failover mode is off, alerting only");
            }
            FailoverMode::Approve => {
                self.handled_lock()
                    .insert(cluster.to_string(), (dead.clone(), Decision::Done));
                let _ = self.propose_failover(cluster, &dead).await;
            }
            FailoverMode::Auto => {
                if let Some(why) = self.auto_blocked(cluster, setup).await {
                    self.handled_lock()
                        .insert(cluster.to_string(), (dead.clone(), Decision::Blocked));
                    if was_blocked {
                        return;
                    }
                    warn!(cluster, primary = %dead, reason = %why, "automatic failover blocked");
                    let _ = self
                        .store
                        .append_event(
                            &NewEvent::new(
                                now_ms(),
                                kinds::FAILOVER_BLOCKED,
                                EventLevel::Critical,
                                format!("primary {dead} of {cluster} is dead but automatic failover is blocked: {why}"),
                            )
                            .with_cluster(cluster)
                            .with_instance(dead.clone())
                            .with_data(serde_json::json!({ "reason": why })),
                        )
                        .await;
                    return;
                }
                let detected = self
                    .dead_now_lock()
                    .get(cluster)
                    .map(|(_, at)| *at)
                    .unwrap_or(at_ms);
                self.start_auto_failover(cluster, &dead, detected);
            }
        }
    }

    /// `old`'s stall in `cluster` is decided: no other decision until it clears.
    fn stall_decided(&self, cluster: &str, old: &InstanceAddr) {
        self.stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_string(), old.clone());
    }

    /// Never switch semi-sync off on `addr` when fencing it (a primary failed over for
    /// stalled writes).
    pub(crate) fn keep_semi_sync_on(&self, addr: &InstanceAddr) {
        self.keep_semi_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone());
    }

    /// `addr` rejoined as a replica: its next fence follows its next failover's mark.
    pub(crate) fn forget_keep_semi_sync(&self, addr: &InstanceAddr) {
        self.keep_semi_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Whether fences of `addr` must leave semi-sync on.
    pub(crate) fn keeps_semi_sync(&self, addr: &InstanceAddr) -> bool {
        self.keep_semi_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(addr)
    }

    /// The policy `on_write_stall` for a primary that answers reads but whose writes stall
    /// (`PrimaryWritesStalled`, `PrimaryDiskFull`): the problem pages at once through the
    /// alerting either way; with `failover` and `mode = "auto"`, once the heartbeat write
    /// has not completed for `write_stall_failover_after`, a lossless failover starts
    /// ([`Engine::failover_stalled`]); with `approve` or `off` it only pages. One decision
    /// per stall. Returns whether the round showed a stalled primary.
    async fn on_write_stall(
        self: &Arc<Self>,
        cluster: &str,
        setup: &ClusterSetup,
        primary: Option<&InstanceAddr>,
        problems: &[Problem],
        observations: &[Observation],
    ) -> bool {
        let stall = problems.iter().find(|p| {
            matches!(
                p.kind,
                ProblemKind::PrimaryWritesStalled | ProblemKind::PrimaryDiskFull
            ) && p.instance.as_ref() == primary
                && primary.is_some()
        });
        let Some(stall) = stall else {
            let was = self
                .stalls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(cluster);
            if was.is_some() {
                self.withdraw_stall_proposals(cluster).await;
            }
            return false;
        };
        let Some(old) = primary.cloned() else {
            return false;
        };
        let already = self
            .stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            == Some(&old);
        if already {
            return true;
        }
        let policy = &setup.failover;
        let stalled_ms = observations
            .iter()
            .find(|o| o.addr == old)
            .and_then(|o| o.write.as_ref())
            .and_then(model::WriteProbe::stalled_ms)
            .unwrap_or(0);
        // `mode = "auto"` acts; `approve` proposes the failover, which `dbfleet failover`
        // then runs; `off` only pages.
        let wants = policy.on_write_stall == config::WriteStallPolicy::Failover;
        let act = wants && policy.mode == FailoverMode::Auto;
        let propose = wants && policy.mode == FailoverMode::Approve;
        if !act && !propose {
            self.stall_decided(cluster, &old);
            info!(cluster, primary = %old, problem = %stall.kind, on_write_stall = %policy.on_write_stall, mode = %policy.mode, "stalled primary: paging only");
            return true;
        }
        if (stalled_ms as u128) < policy.write_stall_failover_after.as_millis() {
            return true;
        }
        self.stall_decided(cluster, &old);
        if propose {
            info!(cluster, primary = %old, problem = %stall.kind, stalled_ms, "stalled primary: failover proposed");
            if let Err(e) = self
                .propose(
                    cluster,
                    &old,
                    serde_json::json!({ "old_primary": old.to_string(), "stalled": stall.summary }),
                    format!(
                        "primary {old} of {cluster} answers reads but its writes have stalled for {} s ({}); a failover is proposed",
                        stalled_ms / 1000,
                        stall.kind
                    ),
                )
                .await
            {
                warn!(cluster, error = %e, "could not propose the failover of a stalled primary");
            }
            return true;
        }
        if let Some(why) = self.auto_blocked(cluster, setup).await {
            warn!(cluster, primary = %old, reason = %why, "failover of a stalled primary blocked");
            let _ = self
                .store
                .append_event(
                    &NewEvent::new(
                        now_ms(),
                        kinds::FAILOVER_BLOCKED,
                        EventLevel::Critical,
                        format!("primary {old} of {cluster} has stalled writes but automatic failover is blocked: {why}"),
                    )
                    .with_cluster(cluster)
                    .with_instance(old.clone())
                    .with_data(serde_json::json!({ "reason": why, "problem": stall.kind.to_string() })),
                )
                .await;
            return true;
        }
        warn!(cluster, primary = %old, stalled_ms, problem = %stall.kind, "writes stalled past write_stall_failover_after: failing over");
        let me = self.clone();
        let cluster = cluster.to_string();
        let why = stall.summary.clone();
        let detected = now_ms().saturating_sub(stalled_ms);
        self.spawn(async move {
            match me
                .failover_stalled(&cluster, &old, &why, Some(detected), "write_stall")
                .await
            {
                Ok(rec) => {
                    info!(cluster, operation = rec.id, state = %rec.state, "failover of a stalled primary ended")
                }
                Err(e) => {
                    warn!(cluster, error = %e, "failover of a stalled primary did not run");
                    // Let a later round decide again.
                    me.stalls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&cluster);
                }
            }
        });
        true
    }

    /// Whether the cluster's last failover, of `dead`, ended `needs_human` naming possibly
    /// lost transactions on a replica that did not answer then and answers in
    /// `observations` now.
    async fn loss_holder_back(
        &self,
        cluster: &str,
        dead: &InstanceAddr,
        observations: &[Observation],
    ) -> bool {
        let Ok(ops) = self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                kind: Some(OperationKind::Failover.to_string()),
                limit: 1,
                ..Default::default()
            })
            .await
        else {
            return false;
        };
        let Some(last) = ops.first() else {
            return false;
        };
        if last.state != OperationState::NeedsHuman
            || last.data["old_primary"].as_str() != Some(&dead.to_string())
        {
            return false;
        }
        let Ok(losses) =
            serde_json::from_value::<Vec<PossibleLoss>>(last.data["possible_loss"].clone())
        else {
            return false;
        };
        // Holders that did not answer then (once they did, a retry judged them).
        let unread: Vec<String> = last.data["choice"]["unread_semi_sync"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                last.data["choice"]["passed_over"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .filter(|e| e[1].as_str().is_some_and(|w| w.starts_with("unreachable")))
            .filter_map(|e| e[0].as_str().map(str::to_string))
            .collect();
        losses.iter().any(|l| {
            unread.contains(&l.holder.to_string())
                && observations
                    .iter()
                    .any(|o| o.addr == l.holder && o.state().is_some())
        })
    }

    /// The last reachable observation of `addr` this node saw: the newer of the rounds' and
    /// the probes' (the shared tracker notes every probe, also those no round carried,
    /// e.g. a replica's last probe before it died with the primary), else the store's.
    pub(crate) async fn last_good(&self, addr: &InstanceAddr) -> Option<Observation> {
        let round = self
            .last_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned();
        let probe = self.streams.last_reachable(addr);
        let newest = match (round, probe) {
            (Some(r), Some(p)) => Some(if p.at_unix_ms > r.at_unix_ms { p } else { r }),
            (r, p) => r.or(p),
        };
        if newest.is_some() {
            return newest;
        }
        self.store
            .last_observation(addr)
            .await
            .ok()
            .flatten()
            .filter(|o| o.state().is_some())
    }

    /// Record the cluster's writer when none is recorded yet and analysis names a reachable,
    /// writable primary (operations move it afterwards).
    async fn record_writer(
        &self,
        cluster: &str,
        primary: Option<&InstanceAddr>,
        observations: &[Observation],
    ) {
        let Some(p) = primary else { return };
        let writable = observations.iter().any(|o| {
            &o.addr == p
                && o.state()
                    .is_some_and(|s| !s.read_only && s.replication.is_none())
        });
        if !writable {
            return;
        }
        if let Ok(Some(c)) = self.store.cluster(cluster).await {
            if c.writer.is_none() {
                let _ = self
                    .store
                    .set_writer(cluster, Some(p.clone()), now_ms())
                    .await;
            }
        }
    }

    /// A stalled primary whose writes complete again: proposals made for the stall are
    /// withdrawn.
    async fn withdraw_stall_proposals(&self, cluster: &str) {
        self.withdraw_where(
            cluster,
            |p| !p.data["stalled"].is_null(),
            "the primary's writes complete again: proposal withdrawn",
        )
        .await
    }

    /// A dead primary that is no longer dead (it answered, or the topology changed):
    /// proposals made for it are withdrawn.
    async fn withdraw_proposals(&self, cluster: &str) {
        self.withdraw_where(
            cluster,
            |p| p.data["stalled"].is_null(),
            "the primary is no longer dead: proposal withdrawn",
        )
        .await
    }

    /// Withdraw the cluster's proposed failovers that `which` picks, saying `why`.
    async fn withdraw_where(
        &self,
        cluster: &str,
        which: impl Fn(&OperationRecord) -> bool,
        why: &str,
    ) {
        let Ok(props) = self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                states: vec![OperationState::Proposed],
                kind: Some(OperationKind::Failover.to_string()),
                limit: 0,
                before_id: None,
            })
            .await
        else {
            return;
        };
        for p in props.into_iter().filter(|p| which(p)) {
            let _ = self
                .store
                .update_operation(
                    p.id,
                    &store::OperationUpdate {
                        state: OperationState::RolledBack,
                        step: "withdrawn".into(),
                        data: None,
                        error: Some(why.into()),
                        owner: None,
                        now_ms: now_ms(),
                    },
                )
                .await;
        }
    }

    fn handled_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (InstanceAddr, Decision)>> {
        self.handled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether automation takes care of `dead`, the dead primary of `cluster`, so that its
    /// death need not page a human: policy `auto`, and on this node a failover of this
    /// death runs or succeeded, or (not having judged it yet) this node would start one now,
    /// with recoveries on and no block window in the way. While an attempt that was refused
    /// or failed waits to be retried, or after automation gave up, it is not handled: the
    /// death pages.
    pub async fn automation_handles_dead_primary(
        &self,
        cluster: &str,
        dead: &InstanceAddr,
    ) -> bool {
        let Ok(setup) = self.setup(cluster) else {
            return false;
        };
        if setup.failover.mode != FailoverMode::Auto || !self.is_leader() {
            return false;
        }
        let judged = self.handled_lock().get(cluster).cloned();
        match judged {
            Some((d, Decision::Done | Decision::Running)) if &d == dead => true,
            Some((d, Decision::Blocked | Decision::Retrying | Decision::GaveUp)) if &d == dead => {
                false
            }
            _ => self.auto_blocked(cluster, setup).await.is_none(),
        }
    }

    /// Wait up to `within` until no operation runs on this node. Returns whether none does.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.running_lock().is_empty() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn running_lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn propose_failover(
        &self,
        cluster: &str,
        dead: &InstanceAddr,
    ) -> Result<(), EngineError> {
        self.propose(
            cluster,
            dead,
            serde_json::json!({ "old_primary": dead.to_string() }),
            format!("primary {dead} of {cluster} is dead; failover is proposed"),
        )
        .await
    }

    /// Record a proposed failover of `old` (policy `approve`), with `data`, unless one is
    /// open already, and a critical `failover_proposed` event: `what`, the operation's id,
    /// and the command that carries it out.
    async fn propose(
        &self,
        cluster: &str,
        old: &InstanceAddr,
        data: serde_json::Value,
        what: String,
    ) -> Result<(), EngineError> {
        let open = self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                states: vec![OperationState::Proposed],
                kind: Some(OperationKind::Failover.to_string()),
                limit: 1,
                before_id: None,
            })
            .await?;
        if !open.is_empty() {
            return Ok(());
        }
        let rec = self
            .store
            .create_operation(&store::NewOperation {
                cluster: cluster.to_string(),
                kind: OperationKind::Failover.to_string(),
                trigger: "policy".into(),
                state: OperationState::Proposed,
                step: "proposed".into(),
                data,
                owner: self.opts.node_id.clone(),
                created_ms: now_ms(),
            })
            .await?;
        self.store
            .append_event(
                &NewEvent::new(
                    now_ms(),
                    kinds::FAILOVER_PROPOSED,
                    EventLevel::Critical,
                    format!(
                        "{what} (operation {}): run `dbfleet failover {cluster}`",
                        rec.id
                    ),
                )
                .with_cluster(cluster)
                .with_instance(old.clone())
                .with_data(serde_json::json!({ "operation_id": rec.id })),
            )
            .await?;
        Ok(())
    }

    /// Whether automatic recoveries are switched off fleet-wide (`dbfleet recoveries
    /// disable`).
    async fn recoveries_disabled(&self) -> Result<bool, StoreError> {
        self.store.recoveries_disabled().await
    }

    /// Why an automatic failover of `cluster` may not run now, if it may not.
    async fn auto_blocked(&self, cluster: &str, setup: &ClusterSetup) -> Option<String> {
        match self.recoveries_disabled().await {
            Ok(true) => {
                return Some(
                    "automatic recoveries are disabled fleet-wide (`dbfleet recoveries enable`)"
                        .into(),
                )
            }
            Ok(false) => {}
            Err(e) => return Some(format!("cannot read the recovery switch: {e}")),
        }
        match self.blocking_failover(cluster, setup).await {
            Ok(Some((op, until))) => Some(format!(
                "automatic failover {} ran within the block window ({}s); it lapses at {} ms, or run `dbfleet recoveries ack {cluster}`",
                op.id,
                setup.failover.block_window.as_secs(),
                until
            )),
            Ok(None) => None,
            Err(e) => Some(format!("cannot read past failovers: {e}")),
        }
    }

    /// The automatic failover that blocks the next one, with the time the block lapses: the
    /// last one that promoted (or began to), not acknowledged since, within the window. One
    /// refused or failed before promotion changed nothing, and blocks nothing: it is retried.
    async fn blocking_failover(
        &self,
        cluster: &str,
        setup: &ClusterSetup,
    ) -> Result<Option<(OperationRecord, u64)>, StoreError> {
        let ack = self.store.recoveries_acked(cluster).await?.unwrap_or(0);
        let window = setup.failover.block_window.as_millis() as u64;
        let now = now_ms();
        let recent = self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                kind: Some(OperationKind::Failover.to_string()),
                limit: 20,
                ..Default::default()
            })
            .await?;
        Ok(recent
            .into_iter()
            .filter(|o| {
                o.trigger == "auto"
                    && o.state != OperationState::RolledBack
                    && o.data["promote_started"].as_bool() == Some(true)
            })
            .find(|o| o.created_ms > ack && o.created_ms + window > now)
            .map(|o| {
                let until = o.created_ms + window;
                (o, until)
            }))
    }

    /// Lift the cluster's block window: the next automatic failover may run. An automatic
    /// failover waiting to retry runs at once, and a dead primary left blocked or given up
    /// on is failed over now (policy `auto`, on the leader).
    pub async fn ack_recoveries(
        self: &Arc<Self>,
        cluster: &str,
        by: &str,
    ) -> Result<(), EngineError> {
        self.setup(cluster)?;
        let now = now_ms();
        self.store.ack_recoveries(cluster, now).await?;
        self.store
            .append_event(
                &NewEvent::new(
                    now,
                    kinds::RECOVERIES_ACKNOWLEDGED,
                    EventLevel::Info,
                    format!(
                        "recoveries of {cluster} acknowledged by {by}: the block window is lifted"
                    ),
                )
                .with_cluster(cluster)
                .with_data(serde_json::json!({ "by": by })),
            )
            .await?;
        if self.is_leader() && self.setup(cluster)?.failover.mode == FailoverMode::Auto {
            self.kick_auto_failover(cluster);
        }
        Ok(())
    }

    /// Switch automatic recoveries on or off fleet-wide.
    pub async fn set_recoveries_enabled(&self, enabled: bool, by: &str) -> Result<(), EngineError> {
        self.store.set_recoveries_disabled(!enabled).await?;
        self.store
            .append_event(
                &NewEvent::new(
                    now_ms(),
                    kinds::RECOVERIES_SWITCHED,
                    if enabled {
                        EventLevel::Info
                    } else {
                        EventLevel::Warning
                    },
                    format!(
                        "automatic recoveries {} fleet-wide by {by}",
                        if enabled { "enabled" } else { "disabled" }
                    ),
                )
                .with_data(serde_json::json!({ "enabled": enabled, "by": by })),
            )
            .await?;
        Ok(())
    }

    /// The recovery switches and block windows.
    pub async fn recoveries(&self) -> Result<RecoveriesStatus, EngineError> {
        let enabled = !self.recoveries_disabled().await?;
        let mut clusters = Vec::new();
        for (name, setup) in &self.clusters {
            let blocking = self.blocking_failover(name, setup).await?;
            let acked_ms = self.store.recoveries_acked(name).await?;
            let fenced = self
                .store
                .fenced(name)
                .await?
                .into_iter()
                .map(|(addr, _)| addr.to_string())
                .collect();
            clusters.push(ClusterRecoveries {
                cluster: name.clone(),
                mode: setup.failover.mode.to_string(),
                block_window_s: setup.failover.block_window.as_secs(),
                blocked_by: blocking.as_ref().map(|(o, _)| o.id),
                blocked_until_ms: blocking.map(|(_, u)| u),
                acked_ms,
                fenced,
                rejoin: setup.failover.rejoin.to_string(),
            });
        }
        Ok(RecoveriesStatus { enabled, clusters })
    }

    /// Run a failover of `cluster` now, by hand: whatever the policy and block window (a
    /// human decided), but only when its primary is dead. Returns the finished operation.
    pub async fn failover(self: &Arc<Self>, cluster: &str) -> Result<OperationRecord, EngineError> {
        let (me, cluster) = (self.clone(), cluster.to_string());
        self.run_operation(async move { me.failover_manual(&cluster).await })
            .await
    }

    /// [`Engine::failover`], on the caller's task.
    async fn failover_manual(
        self: &Arc<Self>,
        cluster: &str,
    ) -> Result<OperationRecord, EngineError> {
        let rec = match self.failover_from(cluster, "manual", None).await {
            Err(EngineError::Refused(why)) => match self.open_stall(cluster).await {
                // Alive but its writes stall (`PrimaryWritesStalled`, `PrimaryDiskFull`,
                // open in the store): the lossless failover of a stalled primary.
                Some((old, summary)) => {
                    self.failover_stalled(cluster, &old, &summary, None, "manual")
                        .await?
                }
                None => return Err(EngineError::Refused(why)),
            },
            r => r?,
        };
        // A proposal made by policy `approve` is settled by this run.
        if let Ok(props) = self
            .store
            .operations(&OperationQuery {
                cluster: Some(cluster.to_string()),
                states: vec![OperationState::Proposed],
                kind: Some(OperationKind::Failover.to_string()),
                limit: 0,
                before_id: None,
            })
            .await
        {
            for p in props {
                let _ = self
                    .store
                    .update_operation(
                        p.id,
                        &store::OperationUpdate {
                            state: OperationState::Succeeded,
                            step: "superseded".into(),
                            data: None,
                            error: Some(format!("carried out by operation {}", rec.id)),
                            owner: None,
                            now_ms: now_ms(),
                        },
                    )
                    .await;
            }
        }
        Ok(rec)
    }

    /// The cluster's writer, when the store holds an open `PrimaryWritesStalled` or
    /// `PrimaryDiskFull` on it: (it, the problem's summary).
    async fn open_stall(&self, cluster: &str) -> Option<(InstanceAddr, String)> {
        let writer = self.store.cluster(cluster).await.ok()??.writer?;
        let open = self.store.open_problems(Some(cluster)).await.ok()?;
        open.into_iter()
            .find(|p| {
                matches!(
                    p.problem.kind,
                    ProblemKind::PrimaryWritesStalled | ProblemKind::PrimaryDiskFull
                ) && p.problem.instance.as_ref() == Some(&writer)
            })
            .map(|p| (writer, p.problem.summary))
    }

    /// Keep fenced instances that answer again out of the cluster: read-only, semi-sync
    /// off, clients killed, and one event with their errant GTIDs. One that does not answer
    /// gets a fence guard ([`fence_guard`]), which fences it the moment it answers.
    async fn keep_fenced_out(self: &Arc<Self>, cluster: &str, observations: &[Observation]) {
        let fenced = match self.store.fenced(cluster).await {
            Ok(f) => f,
            Err(e) => {
                warn!(cluster, error = %e, "cannot read the fenced instances; fenced instances that answer again are not checked this round");
                return;
            }
        };
        if fenced.is_empty() {
            return;
        }
        // An operation that runs (a rejoin attaching this very instance) or just ended
        // explains what the round saw; fencing now would kill its connections mid-step.
        // The failover that fenced an instance guards it on its own meanwhile.
        if self.operation_overlaps(cluster, observations) {
            return;
        }
        let Ok(setup) = self.setup(cluster) else {
            return;
        };
        let auto = setup.failover.rejoin == RejoinMode::Auto;
        for (addr, mark) in fenced {
            let Some(obs) = observations.iter().find(|o| o.addr == addr) else {
                continue;
            };
            let Some(st) = obs.state() else {
                self.returned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&addr);
                // Fenced the moment it answers, not at the next round.
                self.guard_fenced(cluster, &addr);
                continue;
            };
            if mark.keep_semi_sync {
                self.keep_semi_sync_on(&addr);
            }
            let keep = self.keeps_semi_sync(&addr);
            let needs = !st.read_only || (st.semi_sync.source_enabled && !keep);
            let first = self
                .returned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(addr.clone());
            if !needs && !first {
                // A retry, for an instance whose errant-GTID check came back clean.
                if auto && self.auto_rejoin_pending(&addr, setup.failover.rejoin_attempts) {
                    self.auto_rejoin(cluster, &addr).await;
                }
                continue;
            }
            let mut conns = conns::Conns::new(setup.admin.clone(), self.opts.probe);
            let fenced = if needs {
                match conns.get(&addr).await {
                    Ok(s) => fence_guard::fence_session(s, keep).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            } else {
                Ok(())
            };
            let errant = ops::errant_against_writer(&*self.store, cluster, obs, &mut conns).await;
            let msg = match (&fenced, &errant) {
                (Ok(()), Ok(e)) if e.is_empty() && auto => format!(
                    "fenced instance {addr} answers again with no errant GTIDs; rejoining it to {cluster} as a replica (rejoin = \"auto\")"
                ),
                (Ok(()), Ok(e)) if e.is_empty() => format!(
                    "fenced instance {addr} answers again; kept read-only and out of {cluster}. It has no errant GTIDs: `dbfleet rejoin {cluster} {addr}` can attach it"
                ),
                (Ok(()), Ok(e)) => format!(
                    "fenced instance {addr} answers again; kept read-only and out of {cluster}. It has errant GTIDs {}: it must not rejoin as is",
                    e.join(",")
                ),
                (Ok(()), Err(e)) => format!(
                    "fenced instance {addr} answers again; kept read-only and out of {cluster}; errant-GTID check failed: {e}"
                ),
                (Err(e), _) => format!("fenced instance {addr} answers again and could NOT be fenced: {e}"),
            };
            let level = if fenced.is_err() {
                EventLevel::Critical
            } else {
                EventLevel::Warning
            };
            warn!(cluster, instance = %addr, "{msg}");
            let _ = self
                .store
                .append_event(
                    &NewEvent::new(now_ms(), kinds::FENCED_INSTANCE_RETURNED, level, msg)
                        .with_cluster(cluster)
                        .with_instance(addr.clone())
                        .with_data(serde_json::json!({
                            "errant": errant.as_ref().ok(),
                            "fenced": fenced.is_ok(),
                        })),
                )
                .await;
            if auto && fenced.is_ok() && errant.as_ref().is_ok_and(|e| e.is_empty()) {
                self.auto_rejoin(cluster, &addr).await;
            }
        }
    }

    /// Whether an automatic rejoin of `addr` was started and may be tried again.
    fn auto_rejoin_pending(&self, addr: &InstanceAddr, attempts: u32) -> bool {
        self.auto_rejoins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .is_some_and(|&(n, _)| n < attempts)
    }

    /// Policy `rejoin = "auto"`: start a rejoin of the fenced instance `addr` on its own
    /// task, unless recoveries are off, an operation holds the cluster, the last attempt is
    /// too recent (`rejoin_retry`), or `rejoin_attempts` failed already (the last failure
    /// pages). The rejoin checks errant GTIDs again itself and refuses an instance that has
    /// any.
    async fn auto_rejoin(self: &Arc<Self>, cluster: &str, addr: &InstanceAddr) {
        if self.running_lock().contains(cluster) {
            return;
        }
        let Ok(setup) = self.setup(cluster) else {
            return;
        };
        let (max, retry) = (setup.failover.rejoin_attempts, setup.failover.rejoin_retry);
        let now = now_ms();
        {
            let tried = self.auto_rejoins.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&(n, next)) = tried.get(addr) {
                if n >= max || now < next {
                    return;
                }
            }
        }
        // A switch that cannot be read holds it back, as it holds back a failover.
        if self.recoveries_disabled().await.unwrap_or(true) {
            return;
        }
        let attempt = {
            let mut tried = self.auto_rejoins.lock().unwrap_or_else(|p| p.into_inner());
            let e = tried.entry(addr.clone()).or_insert((0, 0));
            e.0 += 1;
            e.1 = now + retry.as_millis() as u64;
            e.0
        };
        let me = self.clone();
        let cluster = cluster.to_string();
        let addr = addr.clone();
        self.spawn(async move {
            let r = me.rejoin_by(&cluster, &addr, "auto").await;
            // Errant GTIDs found by the rejoin's own check are final: no retry.
            let record = match &r {
                Ok(rec) => Some(rec),
                Err(EngineError::Ended { record, .. }) => Some(&**record),
                Err(_) => None,
            };
            let errant = record
                .is_some_and(|rec| rec.data["errant"].as_array().is_some_and(|a| !a.is_empty()));
            let failure = match &r {
                Ok(rec) if rec.state == OperationState::Succeeded => None,
                Ok(rec) => Some(rec.error.clone().unwrap_or_else(|| rec.state.to_string())),
                Err(e) => Some(e.to_string()),
            };
            let Some(why) = failure else {
                me.auto_rejoins
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&addr);
                info!(cluster = %cluster, instance = %addr, "automatic rejoin succeeded");
                return;
            };
            warn!(cluster = %cluster, instance = %addr, attempt, error = %why, "automatic rejoin failed");
            if attempt < max && !errant {
                return;
            }
            if let Some(e) = me
                .auto_rejoins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&addr)
            {
                e.0 = max;
            }
            let msg = format!(
                "automatic rejoin of {addr} to {cluster} failed {attempt} times, last: {why}; it stays read-only and out until `dbfleet rejoin {cluster} {addr}`"
            );
            let _ = me
                .store
                .append_event(
                    &NewEvent::new(
                        now_ms(),
                        kinds::AUTO_REJOIN_FAILED,
                        EventLevel::Critical,
                        msg,
                    )
                    .with_cluster(&cluster)
                    .with_instance(addr.clone())
                    .with_data(serde_json::json!({ "attempts": attempt, "error": why })),
                )
                .await;
        });
    }

    /// On becoming leader: judge operations left `running` by a crash.
    pub async fn resume_interrupted(self: Arc<Self>) {
        let ops = match self
            .store
            .operations(&OperationQuery {
                states: vec![OperationState::Running],
                ..Default::default()
            })
            .await
        {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot list interrupted operations");
                return;
            }
        };
        for op in ops {
            if !self.clusters.contains_key(&op.cluster) {
                continue;
            }
            if self.running_lock().contains(&op.cluster) {
                continue;
            }
            info!(operation = op.id, cluster = %op.cluster, kind = %op.kind, step = %op.step, "resuming an interrupted operation");
            let me = self.clone();
            self.spawn(async move {
                if let Err(e) = registry::resume(me, op).await {
                    warn!(error = %e, "interrupted operation");
                }
            });
        }
    }
}
