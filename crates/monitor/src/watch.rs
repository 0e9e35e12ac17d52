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
//!
//! # At scale
//!
//! - The probe budget grows with the fleet: the semaphore holds
//!   `max(concurrency, instances / 2)` permits ([`probe_permits`]), raised when discovery
//!   adds instances, so a fleet of thousands is not capped by queueing latency and by the
//!   permits that probes of hanging servers hold until their timeout.
//! - The tick runs on a thread of its own with a single-threaded runtime (`spawn_ticks`):
//!   it never queues behind thousands of ready probe tasks, and a long round never delays
//!   the main loop's handling of a suspect (the fast path) or of a discovered instance.
//!   The fast path's analyses stay on the daemon's runtime; the cluster's analysis lock
//!   orders them with the tick's. Between a sign of the primary's death and the fast
//!   path's first analysis, the tick leaves that cluster alone, so the first round after
//!   the sign is the fast path's, from fresh probes (as when the tick ran on the main loop).
//! - A cluster's problems are synced to the store only when they differ from what this loop
//!   last synced for it, or at least every [`PROBLEM_REFRESH`] (spread over the clusters),
//!   which keeps `last_seen_ms` fresh and brings back in line what another control-plane
//!   node wrote. An opening or a clearing is therefore recorded in the round that sees it,
//!   while thousands of healthy clusters cost no store call per tick.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
use crate::{fast, heartbeat, sentinel, Stats};
use model::{ClusterRound, RoundTrigger};

/// Timing and concurrency of the watch loop.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// How often each instance is probed and each cluster analysed.
    pub interval: Duration,
    /// How often each source is asked for its registered replicas.
    pub discovery_interval: Duration,
    /// Connect and query timeouts of every probe.
    pub probe: ProbeOptions,
    /// How many probes may run at once, at least (the fast path has its own budget of as
    /// many): the loop allows `max(concurrency, instances / 2)`, see [`probe_permits`].
    pub concurrency: usize,
    /// The suspect fast path and the primary's liveness connection.
    pub fast_path: FastPathOptions,
    /// How long an observation whose shape ([`Observation::shape_key`]) is unchanged may go
    /// without being written to the store again. A change of shape is written at the round
    /// that sees it; zero writes every observation every round. The API serves the watch
    /// loop's own latest observations, so this bounds only how stale the store's copy (a
    /// restart, another node) may be.
    pub persist_every: Duration,
}

/// The default of [`WatchOptions::persist_every`].
pub const PERSIST_EVERY: Duration = Duration::from_secs(10);

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
    /// When the primary's fresh probe timed out (frozen, or its packets dropped), its
    /// replicas' IO threads say `Yes` for up to `slave_net_timeout`, and only their silent
    /// streams can confirm the death (the cluster's `stall_confirm`): the fast path then
    /// re-probes the replicas alone this often, and the primary is left to its own probe
    /// task, so that no attempt waits on its timeouts.
    pub stall_recheck_every: Duration,
    /// ...and keeps at it until the cluster's `stall_confirm` plus this much has passed
    /// since the fast path started (the stream went silent before the primary's probe
    /// failed, so this covers one heartbeat period and the probe that noticed).
    pub stall_slack: Duration,
}

impl Default for FastPathOptions {
    /// On, with the liveness connection, re-checking every 50 ms for up to 500 ms: on
    /// loopback, replicas notice a killed primary within about 40 ms. A primary whose probe
    /// times out: the replicas every 100 ms for up to `stall_confirm` + 1.5 s.
    fn default() -> Self {
        Self {
            enabled: true,
            sentinel: true,
            recheck_every: Duration::from_millis(50),
            confirm_within: Duration::from_millis(500),
            stall_recheck_every: Duration::from_millis(100),
            stall_slack: Duration::from_millis(1500),
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
    /// When notified, every member is probed again at once and the cluster analysed, as
    /// the fast path does, without waiting for the next tick: the daemon notifies it when
    /// an operation on the cluster finishes, so the topology shows its result at once.
    pub refresh: Option<Arc<tokio::sync::Notify>>,
    /// A discovered (undeclared) instance unreachable this long is forgotten: no longer
    /// probed, removed from the store, with an `instance_forgotten` event. `None`: never.
    /// Counted from the first failed probe of this run.
    pub forget_unreachable_after: Option<Duration>,
}

/// The default of [`ClusterWatch::forget_unreachable_after`]: a day.
pub const FORGET_UNREACHABLE_AFTER: Duration = Duration::from_secs(24 * 3600);

impl ClusterWatch {
    /// A cluster to watch, with no refresh trigger.
    pub fn new(spec: ClusterSpec, credentials: Credentials) -> Self {
        Self {
            spec,
            credentials,
            refresh: None,
            forget_unreachable_after: Some(FORGET_UNREACHABLE_AFTER),
        }
    }

    /// Forget a discovered instance unreachable for `after` (`None`: never).
    pub fn with_forget_unreachable_after(mut self, after: Option<Duration>) -> Self {
        self.forget_unreachable_after = after;
        self
    }

    /// Probe and analyse the cluster at once whenever `refresh` is notified.
    pub fn with_refresh(mut self, refresh: Arc<tokio::sync::Notify>) -> Self {
        self.refresh = Some(refresh);
        self
    }
}

pub use model::clock::now_ms;

/// Each instance's free space (`information_schema.DISKS`) is read every this many probes,
/// and at every probe while its heartbeat writes are in trouble.
pub const DISK_READ_EVERY: u32 = 10;

/// How long a cluster's problems may go unsynced to the store while they do not change.
pub const PROBLEM_REFRESH: Duration = Duration::from_secs(10);

/// The probe budget for a fleet of `instances`: the configured `concurrency`, or half the
/// fleet when that is more. Every probe starts at the tick, and a hanging server holds its
/// permit for the whole timeout: at 10,000 servers 256 permits capped the loop near 6,000
/// probes/s, and with 5 % hanging and heartbeats on a quarter of the fleet (2,500) still
/// left healthy servers queued past an interval (docs/BENCHMARKS.md).
pub fn probe_permits(concurrency: usize, instances: usize) -> usize {
    concurrency.max(instances / 2).max(1)
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
    ever_reached: Mutex<HashSet<InstanceAddr>>,
    permits: Semaphore,
    /// Liveness connections being opened at once (`sentinel::CONNECTS_AT_ONCE`).
    pub(crate) sentinel_connects: Semaphore,
    /// The fast path's own probe budget, so that it never queues behind the ticks' probes.
    pub(crate) fast_permits: Semaphore,
    /// How many permits each of the two semaphores holds now ([`probe_permits`]).
    permits_total: std::sync::atomic::AtomicUsize,
    found: mpsc::UnboundedSender<Found>,
    /// Instances whose probe task forgot them (cluster, address), for the main loop to
    /// drop, so that discovery may find them again.
    forgotten: mpsc::UnboundedSender<(String, InstanceAddr)>,
    pub(crate) suspects: mpsc::UnboundedSender<Suspect>,
    rounds: Option<mpsc::Sender<ClusterRound>>,
    /// Heartbeat writes on primaries and reads in every probe.
    pub(crate) heartbeat: HeartbeatOptions,
    /// The heartbeat writes on each server dbfleet writes on now.
    writes: Mutex<HashMap<InstanceAddr, heartbeat::WriteState>>,
    /// The last free-space reading of each server's datadir (`disks` plugin).
    disks: Mutex<HashMap<InstanceAddr, model::DiskSpace>>,
}

impl Ctx {
    /// Grow both probe budgets to [`probe_permits`] for a fleet of `instances` (they never
    /// shrink: the loop never drops an instance).
    fn size_permits(&self, instances: usize) {
        let want = probe_permits(self.opts.concurrency, instances);
        let had = self.permits_total.fetch_max(want, Ordering::AcqRel);
        if want > had {
            self.permits.add_permits(want - had);
            self.fast_permits.add_permits(want - had);
            self.stats
                .probe_permits
                .store(want as u64, Ordering::Relaxed);
        }
    }

    /// Whether the latest observation of `addr` shows a writable server with no source.
    pub(crate) fn observed_writable_primary(&self, addr: &InstanceAddr) -> bool {
        self.stats.latest.with(|latest| {
            latest
                .get(addr)
                .and_then(Observation::state)
                .is_some_and(|s| !s.read_only && s.replication.is_none())
        })
    }

    /// Note how long its replication stream has not moved (`Stats::streams`), attach the
    /// heartbeat writes' history and the last free-space reading of the server, then record
    /// an observation unless a newer one of the same instance is there already (the fast
    /// path and the probe tasks both write).
    pub(crate) fn record(&self, mut obs: Observation) {
        self.attach(&mut obs, Instant::now());
        self.stats.streams.note(&mut obs);
        self.stats.latest.record(obs);
    }

    /// Attach what the probe itself does not read: the heartbeat writes' history as of
    /// `now` (`Observation::write`) and the last free-space reading (`ServerState::disk`).
    pub(crate) fn attach(&self, obs: &mut Observation, now: Instant) {
        obs.write = self.writes_lock().get_mut(&obs.addr).map(|w| {
            // A read that hangs on a connection the server just accepted is no cut link:
            // the server runs and something inside it blocks (a frozen disk can hold what
            // the probe's reads need), so its writes' fate stays evidence.
            w.note_reads(crate::heartbeat::ReadOutcome::of(obs), now);
            w.snapshot(now)
        });
        if let Reachability::Reachable(s) = &mut obs.reachability {
            if s.disk.is_none() {
                s.disk = self
                    .disks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&obs.addr)
                    .cloned();
            }
        }
    }

    pub(crate) fn writes_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<InstanceAddr, heartbeat::WriteState>> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the heartbeat write state of `addr`, if dbfleet writes there.
    pub(crate) fn with_write<T>(
        &self,
        addr: &InstanceAddr,
        f: impl FnOnce(&mut heartbeat::WriteState) -> T,
    ) -> Option<T> {
        self.writes_lock().get_mut(addr).map(f)
    }

    /// Read the heartbeat write state of `addr`; the default when there is none.
    pub(crate) fn write_state<T: Default>(
        &self,
        addr: Option<&InstanceAddr>,
        f: impl FnOnce(&heartbeat::WriteState) -> T,
    ) -> T {
        addr.and_then(|a| self.writes_lock().get(a).map(f))
            .unwrap_or_default()
    }

    /// Whether writes on `addr` are failing or hung now, per the heartbeat writer.
    pub(crate) fn writes_in_trouble(&self, addr: &InstanceAddr) -> bool {
        self.writes_lock()
            .get(addr)
            .is_some_and(|w| w.snapshot(Instant::now()).stalled_ms().is_some())
    }

    /// Keep the last free-space reading of `addr`.
    pub(crate) fn note_disk(&self, addr: &InstanceAddr, disk: Option<model::DiskSpace>) {
        let mut disks = self.disks.lock().unwrap_or_else(PoisonError::into_inner);
        match disk {
            Some(d) => disks.insert(addr.clone(), d),
            None => disks.remove(addr),
        };
    }

    /// Whether the heartbeat writer may write on `addr`: its latest observation shows a
    /// writable server with no source, or its read probe timed out while the writer was
    /// already writing there (a primary that stalls keeps its write history).
    pub(crate) fn may_write_heartbeat(&self, addr: &InstanceAddr) -> bool {
        if self.observed_writable_primary(addr) {
            return true;
        }
        let timed_out = self.stats.latest.with(|latest| {
            latest
                .get(addr)
                .and_then(Observation::failure)
                .is_some_and(|f| f.kind == ProbeFailureKind::Timeout)
        });
        timed_out && self.writes_lock().contains_key(addr)
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
    /// A sign of the primary's death was sent to the main loop and its fast path has not
    /// analysed the cluster yet: the tick leaves the cluster alone meanwhile, so the fast
    /// path's fresh probes, not the tick, give the first round after the sign.
    suspect_pending: AtomicBool,
    /// The problems this loop last synced to the store for the cluster, and when they are
    /// due again unchanged; `None` before the first sync and after a failed one.
    synced: Mutex<Option<Synced>>,
    /// When the first unchanged re-sync is due after the first sync: the clusters' offsets
    /// spread those re-syncs over [`PROBLEM_REFRESH`].
    first_refresh: Duration,
}

/// What [`ClusterCell::synced`] remembers.
struct Synced {
    problems: Vec<Problem>,
    refresh_at: Instant,
}

impl ClusterCell {
    /// Hand the main loop a sign that the primary died (see `suspect_pending`).
    pub(crate) fn suspect(&self, ctx: &Ctx, instance: &InstanceAddr, reason: String) {
        self.suspect_pending.store(true, Ordering::Release);
        let sent = ctx.suspects.send(Suspect {
            cluster: self.name.clone(),
            instance: instance.clone(),
            reason,
        });
        if sent.is_err() {
            self.suspect_pending.store(false, Ordering::Release);
        }
    }

    /// The fast path analysed the cluster, or the sign was dropped: the ticks resume.
    pub(crate) fn suspect_handled(&self) {
        self.suspect_pending.store(false, Ordering::Release);
    }

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
        self.0.suspect_pending.store(false, Ordering::Release);
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
    // Our own child token, so that the loop can stop its tasks when the analysis thread dies.
    let cancel = cancel.child_token();
    let (found_tx, mut found_rx) = mpsc::unbounded_channel();
    let (suspect_tx, mut suspect_rx) = mpsc::unbounded_channel();
    let (forgotten_tx, mut forgotten_rx) = mpsc::unbounded_channel::<(String, InstanceAddr)>();
    let ctx = Arc::new(Ctx {
        opts,
        store: store.clone(),
        stats: stats.clone(),
        ever_reached: Mutex::default(),
        permits: Semaphore::new(opts.concurrency.max(1)),
        fast_permits: Semaphore::new(opts.concurrency.max(1)),
        permits_total: opts.concurrency.max(1).into(),
        sentinel_connects: Semaphore::new(sentinel::CONNECTS_AT_ONCE),
        found: found_tx,
        forgotten: forgotten_tx,
        suspects: suspect_tx,
        rounds,
        heartbeat,
        writes: Mutex::default(),
        disks: Mutex::default(),
    });
    let mut tasks = JoinSet::new();
    let mut fast_paths = JoinSet::new();
    let mut owner: HashMap<InstanceAddr, String> = HashMap::new();
    let mut cells: BTreeMap<String, Arc<ClusterCell>> = BTreeMap::new();
    stats
        .probe_permits
        .store(opts.concurrency.max(1) as u64, Ordering::Relaxed);

    let n_clusters = clusters.len().max(1) as u32;
    for (i, c) in clusters.into_iter().enumerate() {
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
        // The config is the source of truth for declared instances: one declared in an
        // earlier run and no longer in the config is forgotten (its problems clear with the
        // first round). Instances discovered in earlier runs are probed again.
        for rec in store.instances(Some(&name)).await? {
            if rec.origin == Origin::Config && !members.contains(&rec.addr) {
                forget_undeclared(&*store, &name, &rec.addr).await?;
                continue;
            }
            members.insert(rec.addr);
        }
        let cell = Arc::new(ClusterCell {
            name: name.clone(),
            watch: c,
            members: Mutex::new(members.clone()),
            analysis: tokio::sync::Mutex::new(()),
            primary: tokio::sync::watch::Sender::new(PrimaryView::default()),
            fast_running: AtomicBool::new(false),
            suspect_pending: AtomicBool::new(false),
            synced: Mutex::new(None),
            first_refresh: PROBLEM_REFRESH * (i as u32 + 1) / n_clusters,
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
        if let Some(refresh) = cell.watch.refresh.clone() {
            tasks.spawn(fast::refresh(
                ctx.clone(),
                cell.clone(),
                refresh,
                cancel.clone(),
            ));
        }
        cells.insert(name, cell);
    }
    stats.instances.store(owner.len() as u64, Ordering::Relaxed);
    ctx.size_permits(owner.len());
    let cells = Arc::new(cells);
    let (ticks_alive, mut ticks_ended) = tokio::sync::oneshot::channel::<()>();
    let ticks = spawn_ticks(ctx.clone(), cells.clone(), cancel.clone(), ticks_alive)?;
    let mut ticks_failed = false;

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = &mut ticks_ended => {
                // The thread dropped its sender without being cancelled: it panicked.
                ticks_failed = !cancel.is_cancelled();
                cancel.cancel();
                break;
            }
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
                    ctx.size_permits(owner.len());
                }
            }
            Some((cluster, addr)) = forgotten_rx.recv() => {
                if owner.get(&addr) == Some(&cluster) {
                    owner.remove(&addr);
                    stats.instances.store(owner.len() as u64, Ordering::Relaxed);
                }
            }
            Some(suspect) = suspect_rx.recv() => {
                let Some(cell) = cells.get(&suspect.cluster) else { continue };
                let view = cell.primary.borrow().clone();
                if view.addr.as_ref() != Some(&suspect.instance) || view.dead {
                    // Not the primary any more, or already confirmed dead.
                    if !cell.fast_running.load(Ordering::Acquire) {
                        cell.suspect_handled();
                    }
                    continue;
                }
                if cell.fast_running.swap(true, Ordering::AcqRel) {
                    // The running fast path clears the pending sign when it ends.
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
        }
    }
    drop(found_rx);
    drop(forgotten_rx);
    drop(suspect_rx);
    while fast_paths.join_next().await.is_some() {}
    while tasks.join_next().await.is_some() {}
    match tokio::task::spawn_blocking(move || ticks.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => ticks_failed = true,
        Err(e) => warn!(error = %e, "join the analysis thread"),
    }
    anyhow::ensure!(!ticks_failed, "the analysis thread panicked");
    Ok(())
}

/// The event kind of an instance the daemon stopped watching (`data.reason` says why).
pub const INSTANCE_FORGOTTEN: &str = "instance_forgotten";

/// Forget `addr`, declared in `cluster` by an earlier config but not by this one: remove it
/// from the store, with an `instance_forgotten` event.
async fn forget_undeclared(
    store: &dyn Store,
    cluster: &str,
    addr: &InstanceAddr,
) -> anyhow::Result<()> {
    if !store.remove_instance(cluster, addr).await? {
        return Ok(());
    }
    info!(cluster, instance = %addr, "instance no longer in the config: forgotten");
    store
        .append_event(
            &NewEvent::new(
                now_ms(),
                INSTANCE_FORGOTTEN,
                EventLevel::Info,
                format!("{addr} is no longer declared in the config: no longer watched"),
            )
            .with_cluster(cluster)
            .with_instance(addr.clone())
            .with_data(serde_json::json!({ "reason": "removed_from_config" })),
        )
        .await?;
    Ok(())
}

/// Why a probe task forgets its discovered instance.
#[derive(Clone, Copy, Debug)]
enum Forget {
    /// Unreachable for this long.
    Unreachable(Duration),
    /// An operator asked (`dbfleet forget`).
    Operator,
}

/// Forget `addr`, a discovered instance of `cell`: stop analysing it, remove it from the
/// store with an `instance_forgotten` event, and tell the main loop, so that discovery may
/// find it again.
async fn forget(ctx: &Ctx, cell: &ClusterCell, addr: &InstanceAddr, why: Forget) {
    cell.members
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(addr);
    let _ = ctx.forgotten.send((cell.name.clone(), addr.clone()));
    info!(cluster = %cell.name, instance = %addr, why = ?why, "discovered instance forgotten");
    let (message, data) = match why {
        Forget::Unreachable(d) => (
            format!(
                "{addr} (discovered) unreachable for {} s: no longer watched",
                d.as_secs()
            ),
            serde_json::json!({ "reason": "unreachable", "unreachable_for_s": d.as_secs() }),
        ),
        Forget::Operator => (
            format!("{addr} (discovered) forgotten on request: no longer watched"),
            serde_json::json!({ "reason": "operator" }),
        ),
    };
    let result = async {
        ctx.store.remove_instance(&cell.name, addr).await?;
        ctx.store
            .append_event(
                &NewEvent::new(now_ms(), INSTANCE_FORGOTTEN, EventLevel::Info, message)
                    .with_cluster(&cell.name)
                    .with_instance(addr.clone())
                    .with_data(data),
            )
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        warn!(cluster = %cell.name, instance = %addr, error = %e, "forget an unreachable instance");
    }
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

/// Start the periodic rounds on a thread of their own, with its own single-threaded
/// runtime: with thousands of probe tasks ready on the daemon's runtime, a round that
/// yields (tokio's cooperative budget, a store call) waited a whole pass of that run queue
/// each time, and 3,334 clusters took 2–6 s per round. On its own thread the round competes
/// with the probes only for the CPU, and the main loop still reacts to suspects during it.
fn spawn_ticks(
    ctx: Arc<Ctx>,
    cells: Arc<BTreeMap<String, Arc<ClusterCell>>>,
    cancel: CancellationToken,
    alive: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("dbfleet-analysis")
        .build()
        .context("start the analysis runtime")?;
    std::thread::Builder::new()
        .name("dbfleet-analysis".into())
        .spawn(move || {
            // Dropped when the thread ends, by cancel or by a panic: the main loop watches.
            let _alive = alive;
            rt.block_on(tick_loop(ctx, cells, cancel))
        })
        .context("start the analysis thread")
}

/// The periodic rounds, one per interval until cancelled.
async fn tick_loop(
    ctx: Arc<Ctx>,
    cells: Arc<BTreeMap<String, Arc<ClusterCell>>>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(ctx.opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut persisted = Persisted::default();
    loop {
        let scheduled = tokio::select! {
            _ = cancel.cancelled() => break,
            t = ticker.tick() => t,
        };
        let missed = missed_intervals(scheduled, ctx.opts.interval);
        if missed > 0 {
            ctx.stats
                .round_missed_intervals
                .fetch_add(missed, Ordering::Relaxed);
        }
        if let Err(e) = tick(&ctx, &cells, &mut persisted).await {
            warn!(error = %e, "analysis round failed");
        }
    }
}

/// What the rounds last wrote to the store, per instance: its shape and when it is due
/// again.
#[derive(Default)]
struct Persisted(HashMap<InstanceAddr, (u64, u64)>);

impl Persisted {
    /// Whether `o` should be written now: never written, another shape, or due.
    fn wants(&self, o: &Observation, shape: u64, now: u64) -> bool {
        self.0
            .get(&o.addr)
            .is_none_or(|&(had, due)| had != shape || now >= due)
    }

    /// `o` was written now. The first write of an instance is due again after a share of
    /// `every` taken from its shape, so that a fleet that starts together does not come due
    /// together.
    fn written(&mut self, o: &Observation, shape: u64, now: u64, every: Duration) {
        let every_ms = every.as_millis() as u64;
        let next = match self.0.get(&o.addr) {
            None if every_ms > 0 => now + shape % every_ms,
            _ => now + every_ms,
        };
        self.0.insert(o.addr.clone(), (shape, next));
    }
}

/// The periodic round: every cluster in turn, then the observations whose shape changed or
/// whose stored copy is due, in one batch.
async fn tick(
    ctx: &Ctx,
    cells: &BTreeMap<String, Arc<ClusterCell>>,
    persisted: &mut Persisted,
) -> anyhow::Result<()> {
    let mut batch = Vec::new();
    let mut shapes = Vec::new();
    let now = now_ms();
    let mut skipped = 0u64;
    for (name, cell) in cells {
        if cell.suspect_pending.load(Ordering::Acquire) {
            // Its fast path is about to analyse it with fresh probes.
            continue;
        }
        let round = analyse(ctx, cell, RoundTrigger::Tick).await?;
        for o in round.observations {
            let shape = o.shape_key();
            if persisted.wants(&o, shape, now) {
                shapes.push(shape);
                batch.push((name.clone(), o));
            } else {
                skipped += 1;
            }
        }
    }
    ctx.store.save_observations(&batch).await?;
    for ((_, o), shape) in batch.iter().zip(shapes) {
        persisted.written(o, shape, now, ctx.opts.persist_every);
    }
    ctx.stats
        .observations_persisted
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    ctx.stats
        .observations_persist_skipped
        .fetch_add(skipped, Ordering::Relaxed);
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
    let mut observations: Vec<Observation> = ctx.stats.latest.with(|latest| {
        members
            .iter()
            .filter_map(|a| latest.get(a).cloned())
            .collect()
    });
    // The heartbeat writes as of now, not as of each probe: a write that passed its
    // deadline since is evidence at once.
    let fresh = Instant::now();
    for obs in &mut observations {
        ctx.attach(obs, fresh);
    }
    // An observation older than this means the probe task is stuck past its timeouts.
    let stale_after =
        ctx.opts.interval * 3 + ctx.opts.probe.connect_timeout + ctx.opts.probe.query_timeout;
    for obs in &mut observations {
        let age = now.saturating_sub(obs.at_unix_ms);
        if age > stale_after.as_millis() as u64 {
            obs.reachability = Reachability::Unreachable(ProbeFailure::new(
                ProbeFailureKind::Timeout,
                format!("no probe result for {:.1}s", age as f64 / 1000.0),
            ));
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
    sync_problems(ctx, cell, &problems, now).await?;
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

/// Sync the cluster's problems to the store, unless they are what this loop last synced and
/// no refresh is due (see the module docs). Called under the cluster's analysis lock.
async fn sync_problems(
    ctx: &Ctx,
    cell: &ClusterCell,
    problems: &[Problem],
    now: u64,
) -> anyhow::Result<()> {
    let name = &cell.name;
    let first_refresh = {
        let synced = cell.synced.lock().unwrap_or_else(PoisonError::into_inner);
        match &*synced {
            Some(s) if s.problems == problems && Instant::now() < s.refresh_at => {
                ctx.stats
                    .problem_syncs_skipped
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(_) => false,
            None => true,
        }
    };
    // Forget the last sync first: if this one fails, the next round syncs whatever it sees.
    *cell.synced.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let changes = ctx.store.sync_problems(name, problems, now).await?;
    ctx.stats.problem_syncs.fetch_add(1, Ordering::Relaxed);
    let refresh_after = if first_refresh {
        cell.first_refresh
    } else {
        PROBLEM_REFRESH
    };
    *cell.synced.lock().unwrap_or_else(PoisonError::into_inner) = Some(Synced {
        problems: problems.to_vec(),
        refresh_at: Instant::now() + refresh_after,
    });
    for p in &changes.opened {
        info!(cluster = %name, problem = %p.key, summary = %p.problem.summary, "problem opened");
    }
    for p in &changes.cleared {
        info!(cluster = %name, problem = %p.key, "problem cleared");
    }
    Ok(())
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
    let declared = cell.watch.spec.instances.iter().any(|i| i.addr == addr);
    let mut unreachable_since: Option<Instant> = None;
    // Read the free space at the first probe.
    let mut since_disk_read = DISK_READ_EVERY;
    loop {
        let scheduled = tokio::select! {
            _ = cancel.cancelled() => break,
            t = ticker.tick() => t,
        };
        // A declared instance is the config's to drop; the API refuses to ask.
        if ctx.stats.take_forget_request(&cell.name, &addr) && !declared {
            forget(&ctx, &cell, &addr, Forget::Operator).await;
            break;
        }
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
            r = probe_once(&mut session, &addr, &cell.watch.credentials, ctx.opts.probe, ObserveOptions { heartbeat: ctx.heartbeat.enabled, lazy_replica_status: true }) => r,
        };
        let mut result = result;
        if let (Ok(state), Some(s)) = (result.as_mut(), session.as_mut()) {
            // Free space changes slowly: read every few probes, and at every probe while
            // the server's writes are in trouble (a full disk names `PrimaryDiskFull`).
            if since_disk_read + 1 >= DISK_READ_EVERY || ctx.writes_in_trouble(&addr) {
                since_disk_read = 0;
                match s.disk_space().await {
                    Ok(disk) => {
                        ctx.note_disk(&addr, disk.clone());
                        state.disk = disk;
                    }
                    Err(e) => {
                        debug!(cluster = %cell.name, instance = %addr, error = %e, "read free space")
                    }
                }
            } else {
                since_disk_read += 1;
            }
        }
        let reachability = match result {
            Ok(state) => Reachability::Reachable(Box::new(state)),
            Err((e, fresh)) => {
                ctx.stats.probe_errors.fetch_add(1, Ordering::Relaxed);
                debug!(cluster = %cell.name, instance = %addr, error = %e, fresh, "probe failed");
                if let Some(s) = session.take() {
                    drop(s);
                }
                let mut f = e.to_failure();
                f.fresh_connection = fresh;
                Reachability::Unreachable(f)
            }
        };
        let reachable = matches!(reachability, Reachability::Reachable(_));
        if let (true, Some(f)) = (was_reachable, reachability_failure(&reachability)) {
            if ctx.opts.fast_path.enabled && cell.is_primary(&addr) {
                ctx.stats.probe_suspects.fetch_add(1, Ordering::Relaxed);
                cell.suspect(
                    &ctx,
                    &addr,
                    format!("probe failed: {}: {}", f.kind, f.message),
                );
            }
        }
        was_reachable = reachable;
        if reachable {
            unreachable_since = None;
        } else if !declared {
            let since = *unreachable_since.get_or_insert_with(Instant::now);
            if let Some(after) = cell.watch.forget_unreachable_after {
                if since.elapsed() >= after {
                    forget(&ctx, &cell, &addr, Forget::Unreachable(since.elapsed())).await;
                    break;
                }
            }
        }
        let obs = Observation {
            addr: addr.clone(),
            at_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            write: None,
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

/// One probe on the kept session (or a fresh one); the error, when it fails, also says
/// whether the failing call ran on a connection opened for this probe
/// ([`ProbeFailure::fresh_connection`]).
async fn probe_once(
    session: &mut Option<Session>,
    addr: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
    observe: ObserveOptions,
) -> Result<model::ServerState, (probe::ProbeError, bool)> {
    let reused = session.as_ref().is_some_and(|s| !s.is_broken());
    if !reused {
        *session = Some(
            Session::connect(addr, creds, opts)
                .await
                .map_err(|e| (e, false))?,
        );
    }
    let first = match session.as_mut() {
        Some(s) => s.observe_with(observe).await,
        None => return Err((probe::ProbeError::Other("no session".into()), false)),
    };
    match first {
        // A kept connection that the server closed (a `KILL CONNECTION` by an operator or
        // by fencing, a `wait_timeout`) says nothing about the server: try once more on a
        // fresh one. A dead server refuses that connect, which is the truer answer.
        Err(probe::ProbeError::Other(_)) if reused => {
            *session = Some(
                Session::connect(addr, creds, opts)
                    .await
                    .map_err(|e| (e, false))?,
            );
            match session.as_mut() {
                Some(s) => s.observe_with(observe).await.map_err(|e| (e, true)),
                None => Err((probe::ProbeError::Other("no session".into()), false)),
            }
        }
        r => r.map_err(|e| (e, !reused)),
    }
}

#[cfg(test)]
mod tests {
    use super::probe_permits;

    #[test]
    fn probe_permits_grow_with_the_fleet() {
        assert_eq!(probe_permits(256, 0), 256);
        assert_eq!(probe_permits(256, 400), 256);
        assert_eq!(probe_permits(256, 1_000), 500);
        assert_eq!(probe_permits(256, 10_002), 5_001);
        assert_eq!(probe_permits(8_192, 10_002), 8_192);
        assert_eq!(probe_permits(0, 0), 1);
    }
}
