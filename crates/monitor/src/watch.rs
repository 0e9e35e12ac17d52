//! The watch loop: one probe task per instance, discovery, and the analysis round.
//!
//! Probe tasks write each instance's latest observation into a shared map; they never wait
//! on each other, so a hanging server delays only its own task, and every call is under the
//! probe timeouts. Once per interval the round reads the map, analyses every cluster, and
//! records problems, events and observations in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::analysis::{analyze, severity, ClusterView};
use model::{
    ClusterSpec, Evidence, InstanceAddr, Observation, ProbeFailure, ProbeFailureKind, Problem,
    ProblemKind, Reachability,
};
use probe::{Credentials, ProbeOptions, Session};
use store::{kinds, EventLevel, InstanceRecord, NewEvent, Origin, Store};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Stats;

/// Timing and concurrency of the watch loop.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// How often each instance is probed and each cluster analysed.
    pub interval: Duration,
    /// How often each source is asked for its registered replicas.
    pub discovery_interval: Duration,
    /// Connect and query timeouts of every probe.
    pub probe: ProbeOptions,
    /// How many probes may run at once.
    pub concurrency: usize,
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

type Latest = Arc<Mutex<HashMap<InstanceAddr, Observation>>>;

/// What a probe task reports besides its observation: replicas a source says it has.
struct Found {
    cluster: String,
    by: InstanceAddr,
    addrs: Vec<InstanceAddr>,
}

struct ProbeCtx {
    opts: WatchOptions,
    latest: Latest,
    stats: Arc<Stats>,
    permits: Semaphore,
    found: mpsc::UnboundedSender<Found>,
}

struct ClusterState {
    watch: ClusterWatch,
    members: BTreeSet<InstanceAddr>,
}

/// Run the watch loop until `cancel` fires. Returns after every probe task has stopped.
pub async fn run(
    opts: WatchOptions,
    clusters: Vec<ClusterWatch>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (found_tx, mut found_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(ProbeCtx {
        opts,
        latest: Latest::default(),
        stats: stats.clone(),
        permits: Semaphore::new(opts.concurrency.max(1)),
        found: found_tx,
    });
    let mut tasks = JoinSet::new();
    let mut owner: HashMap<InstanceAddr, String> = HashMap::new();
    let mut states: BTreeMap<String, ClusterState> = BTreeMap::new();

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
        for addr in &members {
            owner.insert(addr.clone(), name.clone());
            tasks.spawn(probe_loop(
                ctx.clone(),
                name.clone(),
                addr.clone(),
                c.credentials.clone(),
                cancel.clone(),
            ));
        }
        states.insert(name, ClusterState { watch: c, members });
    }
    stats.instances.store(owner.len() as u64, Ordering::Relaxed);

    let mut ever_reached: HashSet<InstanceAddr> = HashSet::new();
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
                    let Some(state) = states.get_mut(&found.cluster) else { continue };
                    if let Err(e) = add_discovered(&*store, &found.cluster, &found.by, &addr).await {
                        warn!(cluster = %found.cluster, instance = %addr, error = %e, "record discovered instance");
                    }
                    owner.insert(addr.clone(), found.cluster.clone());
                    state.members.insert(addr.clone());
                    tasks.spawn(probe_loop(
                        ctx.clone(),
                        found.cluster.clone(),
                        addr,
                        state.watch.credentials.clone(),
                        cancel.clone(),
                    ));
                    stats.instances.store(owner.len() as u64, Ordering::Relaxed);
                }
            }
            _ = ticker.tick() => {
                if let Err(e) = round(&ctx, &*store, &states, &mut ever_reached).await {
                    warn!(error = %e, "analysis round failed");
                }
            }
        }
    }
    drop(found_rx);
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

/// One analysis round over every cluster.
async fn round(
    ctx: &ProbeCtx,
    store: &dyn Store,
    states: &BTreeMap<String, ClusterState>,
    ever_reached: &mut HashSet<InstanceAddr>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let snapshot: HashMap<InstanceAddr, Observation> = ctx
        .latest
        .lock()
        .map(|m| m.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    // An observation older than this means the probe task is stuck past its timeouts.
    let stale_after =
        ctx.opts.interval * 3 + ctx.opts.probe.connect_timeout + ctx.opts.probe.query_timeout;
    let mut batch = Vec::new();
    for (name, state) in states {
        let mut observations = Vec::new();
        for addr in &state.members {
            let Some(mut obs) = snapshot.get(addr).cloned() else {
                continue;
            };
            let age = now.saturating_sub(obs.at_unix_ms);
            if age > stale_after.as_millis() as u64 {
                obs.reachability = Reachability::Unreachable(ProbeFailure {
                    kind: ProbeFailureKind::Timeout,
                    message: format!("no probe result for {:.1}s", age as f64 / 1000.0),
                });
            }
            if obs.state().is_some() {
                ever_reached.insert(addr.clone());
            }
            observations.push(obs);
        }
        // A replica's source that nobody knows yet is discovered from the replica's side.
        let sources: Vec<(InstanceAddr, InstanceAddr)> = observations
            .iter()
            .filter_map(|o| {
                let r = o.state()?.replication.as_ref()?;
                (!state.members.contains(&r.source)).then(|| (o.addr.clone(), r.source.clone()))
            })
            .collect();
        for (by, source) in sources {
            let _ = ctx.found.send(Found {
                cluster: name.clone(),
                by,
                addrs: vec![source],
            });
        }
        let mut problems = analyze(&ClusterView {
            spec: &state.watch.spec,
            observations: &observations,
        })
        .problems;
        for obs in &observations {
            let configured = state.watch.spec.instance(&obs.addr).is_some();
            if let (true, Some(f)) = (configured, obs.failure()) {
                if !ever_reached.contains(&obs.addr) {
                    problems.push(Problem {
                        kind: ProblemKind::UnreachableSeed,
                        cluster: name.clone(),
                        instance: Some(obs.addr.clone()),
                        severity: severity(ProblemKind::UnreachableSeed),
                        summary: format!(
                            "configured instance {} has not been reachable since the daemon started",
                            obs.addr
                        ),
                        evidence: vec![Evidence::new(&obs.addr, format!("unreachable: {}: {}", f.kind, f.message))],
                    });
                }
            }
        }
        let changes = store.sync_problems(name, &problems, now).await?;
        for p in &changes.opened {
            info!(cluster = %name, problem = %p.key, summary = %p.problem.summary, "problem opened");
        }
        for p in &changes.cleared {
            info!(cluster = %name, problem = %p.key, "problem cleared");
        }
        batch.extend(observations.into_iter().map(|o| (name.clone(), o)));
    }
    store.save_observations(&batch).await?;
    ctx.stats.rounds.fetch_add(1, Ordering::Relaxed);
    ctx.stats.last_round_ms.store(now_ms(), Ordering::Relaxed);
    Ok(())
}

/// Probe one instance every interval until cancelled, keeping one connection open between
/// probes and opening a new one after any failure.
async fn probe_loop(
    ctx: Arc<ProbeCtx>,
    cluster: String,
    addr: InstanceAddr,
    creds: Credentials,
    cancel: CancellationToken,
) {
    let mut session: Option<Session> = None;
    let mut ticker = tokio::time::interval(ctx.opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_discovery = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Ok(_permit) = ctx.permits.acquire().await else {
            break;
        };
        let at_unix_ms = now_ms();
        let started = Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = probe_once(&mut session, &addr, &creds, ctx.opts.probe) => r,
        };
        let reachability = match result {
            Ok(state) => Reachability::Reachable(Box::new(state)),
            Err(e) => {
                ctx.stats.probe_errors.fetch_add(1, Ordering::Relaxed);
                debug!(cluster = %cluster, instance = %addr, error = %e, "probe failed");
                if let Some(s) = session.take() {
                    drop(s);
                }
                Reachability::Unreachable(e.to_failure())
            }
        };
        let reachable = matches!(reachability, Reachability::Reachable(_));
        let obs = Observation {
            addr: addr.clone(),
            at_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            reachability,
        };
        ctx.stats.probes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = ctx.latest.lock() {
            m.insert(addr.clone(), obs);
        }
        if reachable && Instant::now() >= next_discovery {
            next_discovery = Instant::now() + ctx.opts.discovery_interval;
            if let Some(s) = session.as_mut() {
                match s.replica_hosts().await {
                    Ok(addrs) if !addrs.is_empty() => {
                        let _ = ctx.found.send(Found {
                            cluster: cluster.clone(),
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

async fn probe_once(
    session: &mut Option<Session>,
    addr: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
) -> Result<model::ServerState, probe::ProbeError> {
    if session.as_ref().is_none_or(|s| s.is_broken()) {
        *session = Some(Session::connect(addr, creds, opts).await?);
    }
    match session.as_mut() {
        Some(s) => s.observe().await,
        None => Err(probe::ProbeError::Other("no session".into())),
    }
}
