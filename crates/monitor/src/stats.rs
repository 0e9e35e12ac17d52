//! `Stats`: counters the daemon exposes about itself (rounds, probes, errors, the fast path,
//! missed intervals, heartbeats), and the fleet's metrics the watch loop records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use model::{InstanceAddr, Observation};
use serde::Serialize;

/// Live counters of the watch loop, shared with the API.
#[derive(Debug, Default)]
pub struct Stats {
    /// When the daemon started, ms since the Unix epoch.
    pub started_ms: AtomicU64,
    /// Analysis rounds completed.
    pub rounds: AtomicU64,
    /// When the last round finished, ms since the Unix epoch.
    pub last_round_ms: AtomicU64,
    /// Probes completed, successful or not.
    pub probes: AtomicU64,
    /// Probes that failed.
    pub probe_errors: AtomicU64,
    /// Instances being probed now.
    pub instances: AtomicU64,
    /// Fast paths started: a first sign that a cluster's primary died was acted on.
    pub fast_paths: AtomicU64,
    /// Analyses run by the fast path (one per attempt), besides `rounds`.
    pub fast_path_rounds: AtomicU64,
    /// Analyses asked for through a cluster's refresh trigger, besides `rounds`.
    pub refresh_rounds: AtomicU64,
    /// Probe failures right after a success on a cluster's primary, reported as suspects.
    pub probe_suspects: AtomicU64,
    /// Liveness connections on primaries that were lost, reported as suspects.
    pub sentinel_signals: AtomicU64,
    /// Liveness connections up now.
    pub sentinels_armed: AtomicU64,
    /// Cluster rounds not published because the consumer's channel was full or closed.
    pub rounds_dropped: AtomicU64,
    /// Whole probe intervals missed: a probe that started that many intervals late.
    pub probe_missed_intervals: AtomicU64,
    /// Whole analysis intervals missed: a round that started that many intervals late.
    pub round_missed_intervals: AtomicU64,
    /// Heartbeat rows written on primaries.
    pub heartbeat_writes: AtomicU64,
    /// Heartbeat writes that failed (connect, read-only check or write).
    pub heartbeat_write_errors: AtomicU64,
    /// Probes that may run at once now: `max(probe.concurrency, instances / 2)`.
    pub probe_permits: AtomicU64,
    /// Analyses whose problems were synced to the store.
    pub problem_syncs: AtomicU64,
    /// Analyses whose problems were unchanged since the last sync, not synced again.
    pub problem_syncs_skipped: AtomicU64,
    /// Observations written to the store by the analysis rounds.
    pub observations_persisted: AtomicU64,
    /// Observations the rounds did not write because their shape was unchanged and their
    /// stored copy younger than `monitor.persist_every`.
    pub observations_persist_skipped: AtomicU64,
    /// Every instance's latest probe and recent history, and the probe latency histogram,
    /// for `/metrics` and the history API. The watch loop records every probe here.
    pub fleet: metrics::FleetMetrics,
    /// Every instance's latest observation, which the watch loop analyses and the API
    /// prefers to the store's copy when it is newer.
    pub latest: LatestObservations,
    /// How long each replica's received stream has not moved: every probe is noted here
    /// before it is recorded (`ReplicationStatus::stream.stalled_ms`). The daemon hands the
    /// same tracker to the engine, so that its fresh probes before a failover see the
    /// history the monitor saw.
    pub streams: std::sync::Arc<model::SharedStreams>,
    /// Discovered instances an operator asked to forget (`dbfleet forget`), by cluster;
    /// each one's probe task forgets it at its next tick.
    pub forget_requests: Mutex<std::collections::HashSet<(String, InstanceAddr)>>,
}

/// Each instance's latest observation, shared by the probe tasks, the analysis and the API.
#[derive(Debug, Default)]
pub struct LatestObservations(Mutex<HashMap<InstanceAddr, Observation>>);

impl LatestObservations {
    /// Keep `obs` unless a newer observation of the same instance is there already (the
    /// fast path and the probe tasks both write).
    pub fn record(&self, obs: Observation) {
        let mut latest = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match latest.get(&obs.addr) {
            Some(prev) if prev.at_unix_ms > obs.at_unix_ms => {}
            _ => {
                latest.insert(obs.addr.clone(), obs);
            }
        }
    }

    /// Run `f` on the map, under its lock; keep `f` short.
    pub fn with<T>(&self, f: impl FnOnce(&HashMap<InstanceAddr, Observation>) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replace each observation in `rows` by the one held here when that is newer.
    pub fn refresh<K>(&self, rows: &mut [(K, Observation)]) {
        self.with(|latest| {
            for (_, o) in rows.iter_mut() {
                if let Some(newer) = latest.get(&o.addr).filter(|n| n.at_unix_ms > o.at_unix_ms) {
                    *o = newer.clone();
                }
            }
        });
    }
}

/// A copy of the counters at one moment, for JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// When the daemon started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Analysis rounds completed.
    pub rounds: u64,
    /// When the last round finished, ms since the Unix epoch.
    pub last_round_ms: u64,
    /// Probes completed.
    pub probes: u64,
    /// Probes that failed.
    pub probe_errors: u64,
    /// Instances being probed now.
    pub instances: u64,
    /// Fast paths started.
    pub fast_paths: u64,
    /// Analyses run by the fast path.
    pub fast_path_rounds: u64,
    /// Analyses asked for through a refresh trigger.
    pub refresh_rounds: u64,
    /// Probe failures on primaries reported as suspects.
    pub probe_suspects: u64,
    /// Lost liveness connections reported as suspects.
    pub sentinel_signals: u64,
    /// Liveness connections up now.
    pub sentinels_armed: u64,
    /// Cluster rounds not published: the consumer's channel was full or closed.
    pub rounds_dropped: u64,
    /// Whole probe intervals missed.
    pub probe_missed_intervals: u64,
    /// Whole analysis intervals missed.
    pub round_missed_intervals: u64,
    /// Heartbeat rows written on primaries.
    pub heartbeat_writes: u64,
    /// Heartbeat writes that failed.
    pub heartbeat_write_errors: u64,
    /// Probes that may run at once now.
    pub probe_permits: u64,
    /// Analyses whose problems were synced to the store.
    pub problem_syncs: u64,
    /// Analyses whose unchanged problems were not synced again.
    pub problem_syncs_skipped: u64,
    /// Observations written to the store.
    pub observations_persisted: u64,
    /// Observations not written: same shape, stored copy not yet due.
    pub observations_persist_skipped: u64,
}

impl Stats {
    /// Ask the probe task of `addr` in `cluster` to forget it at its next tick (an
    /// operator's `dbfleet forget`).
    pub fn request_forget(&self, cluster: &str, addr: &InstanceAddr) {
        self.forget_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((cluster.to_string(), addr.clone()));
    }

    /// Whether an operator asked to forget `addr` in `cluster`; the request is taken.
    pub(crate) fn take_forget_request(&self, cluster: &str, addr: &InstanceAddr) -> bool {
        self.forget_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(cluster.to_string(), addr.clone()))
    }

    /// Read every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            started_ms: r(&self.started_ms),
            rounds: r(&self.rounds),
            last_round_ms: r(&self.last_round_ms),
            probes: r(&self.probes),
            probe_errors: r(&self.probe_errors),
            instances: r(&self.instances),
            fast_paths: r(&self.fast_paths),
            fast_path_rounds: r(&self.fast_path_rounds),
            refresh_rounds: r(&self.refresh_rounds),
            probe_suspects: r(&self.probe_suspects),
            sentinel_signals: r(&self.sentinel_signals),
            sentinels_armed: r(&self.sentinels_armed),
            rounds_dropped: r(&self.rounds_dropped),
            probe_missed_intervals: r(&self.probe_missed_intervals),
            round_missed_intervals: r(&self.round_missed_intervals),
            heartbeat_writes: r(&self.heartbeat_writes),
            heartbeat_write_errors: r(&self.heartbeat_write_errors),
            probe_permits: r(&self.probe_permits),
            problem_syncs: r(&self.problem_syncs),
            problem_syncs_skipped: r(&self.problem_syncs_skipped),
            observations_persisted: r(&self.observations_persisted),
            observations_persist_skipped: r(&self.observations_persist_skipped),
        }
    }

    /// The daemon's own counters for the Prometheus exposition.
    pub fn health(&self) -> metrics::DaemonHealth {
        let s = self.snapshot();
        metrics::DaemonHealth {
            probes: s.probes,
            probe_errors: s.probe_errors,
            probe_missed_intervals: s.probe_missed_intervals,
            rounds: s.rounds,
            round_missed_intervals: s.round_missed_intervals,
            rounds_dropped: s.rounds_dropped,
            instances: s.instances,
            heartbeat_writes: s.heartbeat_writes,
            heartbeat_write_errors: s.heartbeat_write_errors,
            fast_paths: s.fast_paths,
            started_ms: s.started_ms,
        }
    }
}
