//! The fleet's metrics as the probes see them: the latest observation of every instance,
//! an in-memory history of recent probes per instance, the probe latency histogram, and the
//! Prometheus exposition of all of it.
//!
//! The watch loop calls [`FleetMetrics::record`] after every probe; the API reads
//! [`FleetMetrics::history`], [`FleetMetrics::alert_values`] and [`FleetMetrics::encode`].
//! Nothing here does IO or knows HTTP: `encode` returns text, and the server sends it.
//!
//! Invariant: recording is a short critical section (a map lookup and a 12-byte push), so a
//! scrape or a history read never holds up the probes for long: both copy what they need
//! under the lock and format outside it.

mod expose;
mod history;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use model::{InstanceAddr, Observation, Rates, Role};
use prometheus_client::metrics::histogram::Histogram;

pub use expose::{DaemonHealth, Format, NotifierCounts};
pub use history::{HistoryPoint, LagSource, SAMPLE_BYTES as HISTORY_SAMPLE_BYTES};

/// Samples kept per instance by default: one hour at a 1 s interval.
pub const DEFAULT_HISTORY_SAMPLES: usize = 3600;

/// The upper bounds of the probe latency histogram's buckets, in seconds.
pub const PROBE_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every instance's latest observation and history, and the daemon's probe latency.
pub struct FleetMetrics {
    instances: Mutex<HashMap<InstanceAddr, Entry>>,
    history_samples: AtomicUsize,
    probe_duration: Histogram,
}

/// One instance.
struct Entry {
    cluster: String,
    /// The role its last answer showed; kept while it does not answer, so its `up` series
    /// keeps its labels.
    role: Option<Role>,
    prev: Option<Observation>,
    last: Observation,
    history: history::History,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        Self {
            instances: Mutex::default(),
            history_samples: AtomicUsize::new(DEFAULT_HISTORY_SAMPLES),
            probe_duration: Histogram::new(PROBE_DURATION_BUCKETS.iter().copied()),
        }
    }
}

impl fmt::Debug for FleetMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetMetrics")
            .field("instances", &self.lock().len())
            .field("history_samples", &self.history_samples())
            .finish()
    }
}

/// An instance's history, as [`FleetMetrics::history`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceHistory {
    /// The cluster the instance belongs to.
    pub cluster: String,
    /// The role its latest answer showed, if it ever answered.
    pub role: Option<Role>,
    /// How many samples are kept per instance.
    pub capacity: usize,
    /// The points at or after the requested time, oldest first.
    pub points: Vec<HistoryPoint>,
}

impl FleetMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceAddr, Entry>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep at most `samples` samples per instance from now on (at least 1).
    pub fn set_history_samples(&self, samples: usize) {
        self.history_samples
            .store(samples.max(1), Ordering::Relaxed);
    }

    /// How many samples are kept per instance.
    pub fn history_samples(&self) -> usize {
        self.history_samples.load(Ordering::Relaxed)
    }

    /// Record one probe of an instance of `cluster`: its latency, its latest observation,
    /// the rates since its previous probe and a history sample. An observation older than
    /// the latest recorded one is ignored.
    pub fn record(&self, cluster: &str, obs: &Observation) {
        self.probe_duration
            .observe(obs.duration_us as f64 / 1_000_000.0);
        let capacity = self.history_samples();
        let mut map = self.lock();
        let fresh = !map.contains_key(&obs.addr);
        let entry = map.entry(obs.addr.clone()).or_insert_with(|| Entry {
            cluster: cluster.to_string(),
            role: None,
            prev: None,
            last: obs.clone(),
            history: history::History::new(),
        });
        if !fresh {
            if obs.at_unix_ms <= entry.last.at_unix_ms {
                return;
            }
            entry.prev = Some(std::mem::replace(&mut entry.last, obs.clone()));
        }
        if entry.cluster != cluster {
            entry.cluster = cluster.to_string();
        }
        if let Some(s) = obs.state() {
            entry.role = Some(Role::of(s));
        }
        let rates = entry
            .prev
            .as_ref()
            .and_then(|p| Rates::between_observations(p, obs));
        entry.history.push(obs, rates.as_ref(), capacity);
    }

    /// The history of `addr` at or after `since_ms`; `None` when it was never probed.
    pub fn history(&self, addr: &InstanceAddr, since_ms: u64) -> Option<InstanceHistory> {
        let map = self.lock();
        let e = map.get(addr)?;
        Some(InstanceHistory {
            cluster: e.cluster.clone(),
            role: e.role,
            capacity: self.history_samples(),
            points: e.history.since(since_ms),
        })
    }

    /// The values alert rules read for `addr` (see [`model::alert_values`]), from its two
    /// latest probes; `None` when it was never probed.
    pub fn alert_values(&self, addr: &InstanceAddr) -> Option<BTreeMap<String, f64>> {
        let map = self.lock();
        let e = map.get(addr)?;
        Some(model::alert_values(e.prev.as_ref(), &e.last))
    }

    /// Every instance probed so far, with its cluster.
    pub fn instances(&self) -> Vec<(String, InstanceAddr)> {
        let map = self.lock();
        let mut out: Vec<_> = map
            .iter()
            .map(|(a, e)| (e.cluster.clone(), a.clone()))
            .collect();
        out.sort();
        out
    }

    /// How many instances have been recorded.
    pub fn instance_count(&self) -> usize {
        self.lock().len()
    }

    /// Bytes held by the history rings' buffers (not counting the latest observations).
    pub fn history_bytes(&self) -> usize {
        self.lock().values().map(|e| e.history.heap_bytes()).sum()
    }

    /// The whole exposition in `format`: every instance's series and the daemon's own,
    /// `health` included.
    pub fn encode(&self, health: &DaemonHealth, format: Format) -> String {
        self.encode_with(health, &[], format)
    }

    /// [`FleetMetrics::encode`], plus the alert notifiers' delivery counts as
    /// `dbfleet_notifications_total{notifier,outcome}`.
    pub fn encode_with(
        &self,
        health: &DaemonHealth,
        notifiers: &[NotifierCounts],
        format: Format,
    ) -> String {
        let snapshot: Vec<expose::InstanceSnapshot> = {
            let map = self.lock();
            map.iter()
                .map(|(addr, e)| expose::InstanceSnapshot {
                    cluster: e.cluster.clone(),
                    instance: addr.to_string(),
                    role: e.role,
                    last: e.last.clone(),
                })
                .collect()
        };
        let text = expose::encode(&snapshot, &self.probe_duration, health, notifiers);
        match format {
            Format::OpenMetrics => text,
            Format::PrometheusText => expose::to_prometheus_text(&text),
        }
    }
}

#[cfg(test)]
mod tests;
