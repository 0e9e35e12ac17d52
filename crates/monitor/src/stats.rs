//! `Stats`: counters the daemon exposes about itself (rounds, probes, errors).

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Stats {
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
        }
    }
}
