//! The watch loop: one probe task per instance, discovery, the analysis round, and the
//! dispatch of the suspect fast path.
//!
//! Probe tasks write each instance's latest observation into a shared map; they never wait
//! on each other, so a hanging server delays only its own task, and every call is under the
//! probe timeouts. Once per interval the round reads the map, analyses every cluster, and
//! records problems, events and observations in the store. Between ticks, a first sign that a
//! cluster's primary died (its probe failed after it answered, or its liveness connection
//! closed) starts that cluster's fast path at once; see the crate docs.
//!
//! Every analysis of a cluster, tick or fast path, goes through one function ([`analyse`])
//! under the cluster's own lock, so the store and the published [`ClusterRound`]s see the
//! cluster's rounds one at a time and in order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::analysis::{analyze, severity, ClusterView};
use model::{
    ClusterSpec, Evidence, InstanceAddr, Observation, ProbeFailure, ProbeFailureKind, Problem,
    ProblemKind, Reachability,
};
use probe::{Credentials, ObserveOptions, ProbeOptions, Session};
use store::{kinds, EventLevel, InstanceRecord, NewEvent, Origin, Store};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::heartbeat::HeartbeatOptions;
use crate::round::{ClusterRound, RoundTrigger};
use crate::{fast, heartbeat, sentinel, Stats};

/// Timing and concurrency of the watch loop.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// How often each instance is probed and each cluster analysed.
    pub interval: Duration,
    /// How often each source is asked for its registered replicas.
    pub discovery_interval: Duration,
    /// Connect and query timeouts of every probe.
    pub probe: ProbeOptions,
    /// How many probes may run at once (the fast path has its own budget of as many).
    pub concurrency: usize,
    /// The suspect fast path and the primary's liveness connection.
    pub fast_path: FastPathOptions,
}

/// How the watch loop reacts between ticks to a first sign that a cluster's primary died.
#[derive(Clone, Copy, Debug)]
pub struct FastPathOptions {
    /// React at once to a failed probe of a cluster's primary (after it answered) or to the
    /// loss of its liveness connection: probe every member of the cluster again and analyse
    /// it, without waiting for the tick. Off, a dead primary is seen at the ticks only.
    pub enabled: bool,
    /// Keep one liveness connection on each cluster's primary (a `SELECT SLEEP` reissued in
    /// a loop), so that a primary that dies between probes is noticed when the connection
    /// closes. Only with `enabled`.
    pub sentinel: bool,
    /// While the replicas still say their IO thread runs (the analysis says
    /// `UnreachablePrimary`), probe and analyse again after this long.
    pub recheck_every: Duration,
    /// Stop re-checking this long after the fast path started; the ticks take over. One
    /// round of probes may still be running then, itself bounded by the probe timeouts.
    pub confirm_within: Duration,
}

impl Default for FastPathOptions {
    /// On, with the liveness connection, re-checking every 50 ms for up to 500 ms: on
    /// loopback, replicas notice a killed primary within about 40 ms.
    fn default() -> Self {
        Self {
            enabled: true,
            sentinel: true,
            recheck_every: Duration::from_millis(50),
            confirm_within: Duration::from_millis(500),
        }
    }
}

/// One cluster to watch: its spec and the credentials to log in with.
#[derive(Clone, Debug)]
pub struct ClusterWatch {
    /// The declared spec; its instances are the seeds.
    pub spec: ClusterSpec,
    /// The account used on every instance of the cluster.
    pub credentials: Credentials,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a probe task reports besides its observation: replicas a source says it has.
struct Found {
    cluster: String,
    by: InstanceAddr,
    addrs: Vec<InstanceAddr>,
}

/// A first sign that a cluster's primary died, sent to the main loop.
pub(crate) struct Suspect {
    pub(crate) cluster: String,
    pub(crate) instance: InstanceAddr,
    pub(crate) reason: String,
}

/// What every task of the loop shares.
pub(crate) struct Ctx {
    pub(crate) opts: WatchOptions,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) stats: Arc<Stats>,
    latest: Mutex<HashMap<InstanceAddr, Observation>>,
    ever_reached: Mutex<HashSet<InstanceAddr>>,
    permits: Semaphore,
    /// The fast path's own probe budget, so that it never queues behind the ticks' probes.
    pub(crate) fast_permits: Semaphore,
    found: mpsc::UnboundedSender<Found>,
    pub(crate) suspects: mpsc::UnboundedSender<Suspect>,
    rounds: Option<mpsc::Sender<ClusterRound>>,
    /// Heartbeat writes on primaries and reads in every probe.
    pub(crate) heartbeat: HeartbeatOptions,
}

impl Ctx {
    /// Whether the latest observation of `addr` shows a writable server with no source.
    pub(crate) fn observed_writable_primary(&self, addr: &InstanceAddr) -> bool {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .get(addr)
            .and_then(Observation::state)
            .is_some_and(|s| !s.read_only && s.replication.is_none())
    }

    /// Record an observation unless a newer one of the same instance is there already (the
    /// fast path and the probe tasks both write).
    pub(crate) fn record(&self, obs: Observation) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        match latest.get(&obs.addr) {
            Some(prev) if prev.at_unix_ms > obs.at_unix_ms => {}
            _ => {
                latest.insert(obs.addr.clone(), obs);
            }
        }
    }

    /// Hand a round to the caller without ever waiting: a full or closed channel drops it.
    fn publish(&self, round: &ClusterRound) {
        let Some(tx) = &self.rounds else { return };
        if let Err(e) = tx.try_send(round.clone()) {
            self.stats.rounds_dropped.fetch_add(1, Ordering::Relaxed);
            debug!(cluster = %round.cluster, error = %e, "round not published");
        }
    }
}

/// The primary as the last analysis of a cluster named it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrimaryView {
    /// The primary, reachable or not.
    pub(crate) addr: Option<InstanceAddr>,
    /// Whether that analysis found it dead (`DeadPrimary`).
    pub(crate) dead: bool,
}

/// One watched cluster, shared by the main loop, its probe tasks, its fast path and its
/// liveness connection.
pub(crate) struct ClusterCell {
    pub(crate) name: String,
    pub(crate) watch: ClusterWatch,
    members: Mutex<BTreeSet<InstanceAddr>>,
    /// Held from reading the observations to publishing the round.
    analysis: tokio::sync::Mutex<()>,
    /// Updated after every analysis; probe tasks and the liveness connection follow it.
    pub(crate) primary: tokio::sync::watch::Sender<PrimaryView>,
    /// Whether a fast path runs for this cluster now.
    fast_running: AtomicBool,
}

impl ClusterCell {
    pub(crate) fn members(&self) -> BTreeSet<InstanceAddr> {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `addr` is the primary the last analysis named.
    fn is_primary(&self, addr: &InstanceAddr) -> bool {
        self.primary.borrow().addr.as_ref() == Some(addr)
    }
}

/// Clears a cluster's fast-path flag when the fast path ends, however it ends.
pub(crate) struct FastRunning(pub(crate) Arc<ClusterCell>);

impl Drop for FastRunning {
    fn drop(&mut self) {
        self.0.fast_running.store(false, Ordering::Release);
    }
}

/// Run the watch loop until `cancel` fires. Returns after every task it started (probe
/// tasks, liveness connections, fast paths) has stopped.
///
/// After every analysis of a cluster, by the tick or by the fast path, a [`ClusterRound`]
/// is offered to `rounds` with `try_send`: a consumer that falls behind never slows the
/// loop; a round that finds the channel full (or closed) is dropped and counted in
/// [`Stats::rounds_dropped`]. `None` publishes nothing.
pub async fn run(
    opts: WatchOptions,
    clusters: Vec<ClusterWatch>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    rounds: Option<mpsc::Sender<ClusterRound>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_with(
        opts,
        HeartbeatOptions::default(),
        clusters,
        store,
        stats,
        rounds,
        cancel,
    )
    .await
}

/// [`run`], with heartbeats: when `heartbeat.enabled`, one more task per cluster stamps the
/// heartbeat row on its primary every interval (see [`crate::heartbeat`]) and every probe
/// reads the row back. `run` is this with heartbeats off.
pub async fn run_with(
    opts: WatchOptions,
    heartbeat: HeartbeatOptions,
    clusters: Vec<ClusterWatch>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    rounds: Option<mpsc::Sender<ClusterRound>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (found_tx, mut found_rx) = mpsc::unbounded_channel();
    let (suspect_tx, mut suspect_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        opts,
        store: store.clone(),
        stats: stats.clone(),
        latest: Mutex::default(),
        ever_reached: Mutex::default(),
        permits: Semaphore::new(opts.concurrency.max(1)),
        fast_permits: Semaphore::new(opts.concurrency.max(1)),
        found: found_tx,
        suspects: suspect_tx,
        rounds,
        heartbeat,
    });
    let mut tasks = JoinSet::new();
    let mut fast_paths = JoinSet::new();
    let mut owner: HashMap<InstanceAddr, String> = HashMap::new();
    let mut cells: BTreeMap<String, Arc<ClusterCell>> = BTreeMap::new();

    for c in clusters {
        let name = c.spec.name.clone();
        let mut members: BTreeSet<InstanceAddr> =
            c.spec.instances.iter().map(|i| i.addr.clone()).collect();
        let now = now_ms();
        store.upsert_cluster(&c.spec, now).await?;
        for addr in &members {
            store
                .upsert_instance(&InstanceRecord {
                    cluster: name.clone(),
                    addr: addr.clone(),
                    origin: Origin::Config,
                    first_seen_ms: now,
                    last_seen_ms: now,
                })
                .await?;
        }
        // Instances found in earlier runs are probed again from the start.
        for rec in store.instances(Some(&name)).await? {
            members.insert(rec.addr);
        }
        let cell = Arc::new(ClusterCell {
            name: name.clone(),
            watch: c,
            members: Mutex::new(members.clone()),
            analysis: tokio::sync::Mutex::new(()),
            primary: tokio::sync::watch::Sender::new(PrimaryView::default()),
            fast_running: AtomicBool::new(false),
        });
        for addr in members {
            owner.insert(addr.clone(), name.clone());
            tasks.spawn(probe_loop(ctx.clone(), cell.clone(), addr, cancel.clone()));
        }
        if opts.fast_path.enabled && opts.fast_path.sentinel {
            tasks.spawn(sentinel::run(ctx.clone(), cell.clone(), cancel.clone()));
        }
        if heartbeat.enabled {
            tasks.spawn(heartbeat::run(ctx.clone(), cell.clone(), cancel.clone()));
        }
        cells.insert(name, cell);
    }
    stats.instances.store(owner.len() as u64, Ordering::Relaxed);

    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(found) = found_rx.recv() => {
                for addr in found.addrs {
                    if owner.contains_key(&addr) {
                        continue;
                    }
                    let Some(cell) = cells.get(&found.cluster) else { continue };
                    if let Err(e) = add_discovered(&*store, &found.cluster, &found.by, &addr).await {
                        warn!(cluster = %found.cluster, instance = %addr, error = %e, "record discovered instance");
                    }
                    owner.insert(addr.clone(), found.cluster.clone());
                    cell.members
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(addr.clone());
                    tasks.spawn(probe_loop(ctx.clone(), cell.clone(), addr, cancel.clone()));
                    stats.instances.store(owner.len() as u64, Ordering::Relaxed);
                }
            }
            Some(suspect) = suspect_rx.recv() => {
                let Some(cell) = cells.get(&suspect.cluster) else { continue };
                let view = cell.primary.borrow().clone();
                if view.addr.as_ref() != Some(&suspect.instance) || view.dead {
                    // Not the primary any more, or already confirmed dead.
                    continue;
                }
                if cell.fast_running.swap(true, Ordering::AcqRel) {
                    debug!(cluster = %cell.name, instance = %suspect.instance, reason = %suspect.reason, "fast path already running");
                    continue;
                }
                info!(cluster = %cell.name, instance = %suspect.instance, reason = %suspect.reason, "primary suspected dead: probing the cluster now");
                stats.fast_paths.fetch_add(1, Ordering::Relaxed);
                let running = FastRunning(cell.clone());
                fast_paths.spawn(fast::run(ctx.clone(), running, suspect, cancel.clone()));
            }
            Some(done) = fast_paths.join_next(), if !fast_paths.is_empty() => {
                if let Err(e) = done {
                    warn!(error = %e, "fast path task failed");
                }
            }
            scheduled = ticker.tick() => {
                let missed = missed_intervals(scheduled, opts.interval);
                if missed > 0 {
                    stats.round_missed_intervals.fetch_add(missed, Ordering::Relaxed);
                }
                if let Err(e) = tick(&ctx, &cells).await {
                    warn!(error = %e, "analysis round failed");
                }
            }
        }
    }
    drop(found_rx);
    drop(suspect_rx);
    while fast_paths.join_next().await.is_some() {}
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn add_discovered(
    store: &dyn Store,
    cluster: &str,
    by: &InstanceAddr,
    addr: &InstanceAddr,
) -> anyhow::Result<()> {
    let now = now_ms();
    let new = store
        .upsert_instance(&InstanceRecord {
            cluster: cluster.to_string(),
            addr: addr.clone(),
            origin: Origin::Discovered,
            first_seen_ms: now,
            last_seen_ms: now,
        })
        .await?;
    if new {
        info!(cluster, instance = %addr, found_by = %by, "instance discovered");
        store
            .append_event(
                &NewEvent::new(
                    now,
                    kinds::INSTANCE_DISCOVERED,
                    EventLevel::Info,
                    format!("{addr} discovered through {by}"),
                )
                .with_cluster(cluster)
                .with_instance(addr.clone())
                .with_data(serde_json::json!({ "found_by": by.to_string() })),
            )
            .await?;
    }
    Ok(())
}

/// The periodic round: every cluster in turn, then the observations in one batch.
async fn tick(ctx: &Ctx, cells: &BTreeMap<String, Arc<ClusterCell>>) -> anyhow::Result<()> {
    let mut batch = Vec::new();
    for (name, cell) in cells {
        let round = analyse(ctx, cell, RoundTrigger::Tick).await?;
        batch.extend(round.observations.into_iter().map(|o| (name.clone(), o)));
    }
    ctx.store.save_observations(&batch).await?;
    ctx.stats.rounds.fetch_add(1, Ordering::Relaxed);
    ctx.stats.last_round_ms.store(now_ms(), Ordering::Relaxed);
    Ok(())
}

/// Analyse one cluster from the latest observations, sync its problems to the store, update
/// the primary its tasks follow, and publish the round. The caller saves the observations.
pub(crate) async fn analyse(
    ctx: &Ctx,
    cell: &ClusterCell,
    trigger: RoundTrigger,
) -> anyhow::Result<ClusterRound> {
    let _turn = cell.analysis.lock().await;
    let name = &cell.name;
    let spec = &cell.watch.spec;
    let now = now_ms();
    let members = cell.members();
    let mut observations: Vec<Observation> = {
        let latest = ctx.latest.lock().unwrap_or_else(PoisonError::into_inner);
        members
            .iter()
            .filter_map(|a| latest.get(a).cloned())
            .collect()
    };
    // An observation older than this means the probe task is stuck past its timeouts.
    let stale_after =
        ctx.opts.interval * 3 + ctx.opts.probe.connect_timeout + ctx.opts.probe.query_timeout;
    for obs in &mut observations {
        let age = now.saturating_sub(obs.at_unix_ms);
        if age > stale_after.as_millis() as u64 {
            obs.reachability = Reachability::Unreachable(ProbeFailure {
                kind: ProbeFailureKind::Timeout,
                message: format!("no probe result for {:.1}s", age as f64 / 1000.0),
            });
        }
    }
    let never_reached: HashSet<InstanceAddr> = {
        let mut ever = ctx
            .ever_reached
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for obs in observations.iter().filter(|o| o.state().is_some()) {
            ever.insert(obs.addr.clone());
        }
        observations
            .iter()
            .filter(|o| !ever.contains(&o.addr))
            .map(|o| o.addr.clone())
            .collect()
    };
    // A replica's source that nobody knows yet is discovered from the replica's side.
    for obs in &observations {
        let Some(r) = obs.state().and_then(|s| s.replication.as_ref()) else {
            continue;
        };
        if !members.contains(&r.source) {
            let _ = ctx.found.send(Found {
                cluster: name.clone(),
                by: obs.addr.clone(),
                addrs: vec![r.source.clone()],
            });
        }
    }
    let analysis = analyze(&ClusterView {
        spec,
        observations: &observations,
    });
    let mut problems = analysis.problems;
    for obs in &observations {
        let configured = spec.instance(&obs.addr).is_some();
        if let (true, Some(f)) = (configured, obs.failure()) {
            if never_reached.contains(&obs.addr) {
                problems.push(Problem {
                    kind: ProblemKind::UnreachableSeed,
                    cluster: name.clone(),
                    instance: Some(obs.addr.clone()),
                    severity: severity(ProblemKind::UnreachableSeed),
                    summary: format!(
                        "configured instance {} has not been reachable since the daemon started",
                        obs.addr
                    ),
                    evidence: vec![Evidence::new(
                        &obs.addr,
                        format!("unreachable: {}: {}", f.kind, f.message),
                    )],
                });
            }
        }
    }
    let changes = ctx.store.sync_problems(name, &problems, now).await?;
    for p in &changes.opened {
        info!(cluster = %name, problem = %p.key, summary = %p.problem.summary, "problem opened");
    }
    for p in &changes.cleared {
        info!(cluster = %name, problem = %p.key, "problem cleared");
    }
    let view = PrimaryView {
        dead: analysis.primary.is_some()
            && problems
                .iter()
                .any(|p| p.kind == ProblemKind::DeadPrimary && p.instance == analysis.primary),
        addr: analysis.primary,
    };
    cell.primary.send_if_modified(|v| {
        let changed = *v != view;
        if changed {
            *v = view.clone();
        }
        changed
    });
    let round = ClusterRound {
        cluster: name.clone(),
        at_ms: now,
        trigger,
        observations,
        primary: view.addr,
        problems,
    };
    ctx.publish(&round);
    Ok(round)
}

/// Probe one instance every interval until cancelled, keeping one connection open between
/// probes and opening a new one after any failure. A failure right after a success, on the
/// instance the last analysis named the primary, is reported to the main loop at once.
async fn probe_loop(
    ctx: Arc<Ctx>,
    cell: Arc<ClusterCell>,
    addr: InstanceAddr,
    cancel: CancellationToken,
) {
    let mut session: Option<Session> = None;
    let mut ticker = tokio::time::interval(ctx.opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_discovery = Instant::now();
    let mut was_reachable = false;
    loop {
        let scheduled = tokio::select! {
            _ = cancel.cancelled() => break,
            t = ticker.tick() => t,
        };
        let Ok(_permit) = ctx.permits.acquire().await else {
            break;
        };
        let missed = missed_intervals(scheduled, ctx.opts.interval);
        if missed > 0 {
            ctx.stats
                .probe_missed_intervals
                .fetch_add(missed, Ordering::Relaxed);
        }
        let at_unix_ms = now_ms();
        let started = Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = probe_once(&mut session, &addr, &cell.watch.credentials, ctx.opts.probe, ObserveOptions { heartbeat: ctx.heartbeat.enabled }) => r,
        };
        let reachability = match result {
            Ok(state) => Reachability::Reachable(Box::new(state)),
            Err(e) => {
                ctx.stats.probe_errors.fetch_add(1, Ordering::Relaxed);
                debug!(cluster = %cell.name, instance = %addr, error = %e, "probe failed");
                if let Some(s) = session.take() {
                    drop(s);
                }
                Reachability::Unreachable(e.to_failure())
            }
        };
        let reachable = matches!(reachability, Reachability::Reachable(_));
        if let (true, Some(f)) = (was_reachable, reachability_failure(&reachability)) {
            if ctx.opts.fast_path.enabled && cell.is_primary(&addr) {
                ctx.stats.probe_suspects.fetch_add(1, Ordering::Relaxed);
                let _ = ctx.suspects.send(Suspect {
                    cluster: cell.name.clone(),
                    instance: addr.clone(),
                    reason: format!("probe failed: {}: {}", f.kind, f.message),
                });
            }
        }
        was_reachable = reachable;
        let obs = Observation {
            addr: addr.clone(),
            at_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            reachability,
        };
        ctx.stats.fleet.record(&cell.name, &obs);
        ctx.record(obs);
        ctx.stats.probes.fetch_add(1, Ordering::Relaxed);
        if reachable && Instant::now() >= next_discovery {
            next_discovery = Instant::now() + ctx.opts.discovery_interval;
            if let Some(s) = session.as_mut() {
                match s.replica_hosts().await {
                    Ok(addrs) if !addrs.is_empty() => {
                        let _ = ctx.found.send(Found {
                            cluster: cell.name.clone(),
                            by: addr.clone(),
                            addrs,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => debug!(instance = %addr, error = %e, "list replica hosts"),
                }
            }
        }
    }
    if let Some(s) = session {
        s.close().await;
    }
}

/// How many whole intervals late a tick scheduled for `scheduled` is running now.
fn missed_intervals(scheduled: tokio::time::Instant, interval: Duration) -> u64 {
    let late = tokio::time::Instant::now().saturating_duration_since(scheduled);
    (late.as_nanos() / interval.as_nanos().max(1)) as u64
}

fn reachability_failure(r: &Reachability) -> Option<&ProbeFailure> {
    match r {
        Reachability::Reachable(_) => None,
        Reachability::Unreachable(f) => Some(f),
    }
}

async fn probe_once(
    session: &mut Option<Session>,
    addr: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
    observe: ObserveOptions,
) -> Result<model::ServerState, probe::ProbeError> {
    let reused = session.as_ref().is_some_and(|s| !s.is_broken());
    if !reused {
        *session = Some(Session::connect(addr, creds, opts).await?);
    }
    let first = match session.as_mut() {
        Some(s) => s.observe_with(observe).await,
        None => return Err(probe::ProbeError::Other("no session".into())),
    };
    match first {
        // A kept connection that the server closed (a `KILL CONNECTION` by an operator or
        // by fencing, a `wait_timeout`) says nothing about the server: try once more on a
        // fresh one. A dead server refuses that connect, which is the truer answer.
        Err(probe::ProbeError::Other(_)) if reused => {
            *session = Some(Session::connect(addr, creds, opts).await?);
            match session.as_mut() {
                Some(s) => s.observe_with(observe).await,
                None => Err(probe::ProbeError::Other("no session".into())),
            }
        }
        r => r,
    }
}
