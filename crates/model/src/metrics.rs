//! `InstanceMetrics`: the raw counters and gauges one probe read from one server, the rates
//! between two probes, and the flat `name → value` view alert rules read.
//!
//! Raw values only: a counter is stored as the server reports it (`Questions`, `Com_commit`),
//! and a rate exists only between two samples of the same server life (a counter that went
//! down means a restart, and gives no rate). A value the server did not report is `None`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::observation::{IoThreadState, Observation, ServerState};

/// Counters and gauges from the probe's `SHOW GLOBAL VARIABLES` / `SHOW GLOBAL STATUS`, and
/// the heartbeat row it read. Every field is `None` when the server did not report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMetrics {
    /// `@@max_connections`.
    pub max_connections: Option<u64>,
    /// `Questions`: statements sent by clients (counter).
    pub questions: Option<u64>,
    /// `Queries`: statements run, stored programs included (counter).
    pub queries: Option<u64>,
    /// `Com_commit` (counter).
    pub com_commit: Option<u64>,
    /// `Com_rollback` (counter).
    pub com_rollback: Option<u64>,
    /// `Threads_connected` (gauge).
    pub threads_connected: Option<u64>,
    /// `Threads_running` (gauge).
    pub threads_running: Option<u64>,
    /// `Connections`: connection attempts, successful or not (counter).
    pub connections: Option<u64>,
    /// `Aborted_connects`: failed connection attempts (counter).
    pub aborted_connects: Option<u64>,
    /// `Aborted_clients`: connections dropped without a proper close (counter).
    pub aborted_clients: Option<u64>,
    /// `Slow_queries` (counter).
    pub slow_queries: Option<u64>,
    /// `Bytes_received` (counter).
    pub bytes_received: Option<u64>,
    /// `Bytes_sent` (counter).
    pub bytes_sent: Option<u64>,
    /// `@@innodb_page_size`, bytes.
    pub innodb_page_size: Option<u64>,
    /// `Innodb_buffer_pool_pages_total` (gauge).
    pub innodb_buffer_pool_pages_total: Option<u64>,
    /// `Innodb_buffer_pool_pages_free` (gauge).
    pub innodb_buffer_pool_pages_free: Option<u64>,
    /// `Innodb_buffer_pool_pages_data` (gauge).
    pub innodb_buffer_pool_pages_data: Option<u64>,
    /// `Innodb_buffer_pool_pages_dirty` (gauge).
    pub innodb_buffer_pool_pages_dirty: Option<u64>,
    /// `Innodb_buffer_pool_read_requests`: logical reads (counter).
    pub innodb_buffer_pool_read_requests: Option<u64>,
    /// `Innodb_buffer_pool_reads`: reads that missed the pool and went to disk (counter).
    pub innodb_buffer_pool_reads: Option<u64>,
    /// `Innodb_row_lock_waits` (counter).
    pub innodb_row_lock_waits: Option<u64>,
    /// `Innodb_row_lock_time`: total time spent waiting for row locks, ms (counter).
    pub innodb_row_lock_time_ms: Option<u64>,
    /// `Innodb_log_waits`: waits for log buffer space (counter).
    pub innodb_log_waits: Option<u64>,
    /// The heartbeat row the probe read (`dbfleet.heartbeat`), when there is one.
    pub heartbeat: Option<HeartbeatReading>,
}

/// One read of the heartbeat row: when the primary's writer stamped it, and when the probe
/// read it, both on the daemon's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReading {
    /// `ts_us` of the row: the daemon's clock when it was written on the primary, µs since
    /// the Unix epoch.
    pub ts_us: u64,
    /// The daemon's clock when the probe got the row, µs since the Unix epoch.
    pub read_at_us: u64,
}

impl HeartbeatReading {
    /// The lag: how old the newest write this server has applied was when it was read.
    /// Never negative.
    pub fn lag_seconds(&self) -> f64 {
        self.read_at_us.saturating_sub(self.ts_us) as f64 / 1e6
    }
}

/// Per-second rates between two samples of one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// `Queries` per second (`Questions` when `Queries` is not reported).
    pub queries: Option<f64>,
    /// `Com_commit` per second.
    pub commits: Option<f64>,
    /// `Com_rollback` per second.
    pub rollbacks: Option<f64>,
    /// `Aborted_connects` per second.
    pub aborted_connects: Option<f64>,
    /// `Innodb_row_lock_waits` per second.
    pub row_lock_waits: Option<f64>,
    /// `Innodb_log_waits` per second.
    pub log_waits: Option<f64>,
}

impl Rates {
    /// Rates from `prev` to `cur`, taken `elapsed_ms` apart. A counter that went down (a
    /// restart, `FLUSH STATUS`) or a zero interval gives no rate.
    pub fn between(prev: &InstanceMetrics, cur: &InstanceMetrics, elapsed_ms: u64) -> Self {
        if elapsed_ms == 0 {
            return Self::default();
        }
        let secs = elapsed_ms as f64 / 1000.0;
        let rate = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / secs),
            _ => None,
        };
        Self {
            queries: rate(prev.queries, cur.queries)
                .or_else(|| rate(prev.questions, cur.questions)),
            commits: rate(prev.com_commit, cur.com_commit),
            rollbacks: rate(prev.com_rollback, cur.com_rollback),
            aborted_connects: rate(prev.aborted_connects, cur.aborted_connects),
            row_lock_waits: rate(prev.innodb_row_lock_waits, cur.innodb_row_lock_waits),
            log_waits: rate(prev.innodb_log_waits, cur.innodb_log_waits),
        }
    }

    /// Rates between two observations of one server: `None` unless both answered, with
    /// metrics, in that order, within the same server life (uptime did not go back).
    pub fn between_observations(prev: &Observation, cur: &Observation) -> Option<Self> {
        let (p, c) = (prev.state()?, cur.state()?);
        if c.uptime_s < p.uptime_s || cur.at_unix_ms <= prev.at_unix_ms {
            return None;
        }
        Some(Self::between(
            p.metrics.as_ref()?,
            c.metrics.as_ref()?,
            cur.at_unix_ms - prev.at_unix_ms,
        ))
    }
}

impl InstanceMetrics {
    /// `threads_connected / max_connections`, when both are known and the max is not 0.
    pub fn connections_used_ratio(&self) -> Option<f64> {
        match (self.threads_connected, self.max_connections) {
            (Some(t), Some(m)) if m > 0 => Some(t as f64 / m as f64),
            _ => None,
        }
    }

    /// The share of buffer pool pages that are not free, when known.
    pub fn buffer_pool_used_ratio(&self) -> Option<f64> {
        match (
            self.innodb_buffer_pool_pages_total,
            self.innodb_buffer_pool_pages_free,
        ) {
            (Some(t), Some(f)) if t > 0 => Some(t.saturating_sub(f) as f64 / t as f64),
            _ => None,
        }
    }
}

/// A server's role as its own state shows it: a replica has a source, a primary is
/// writable with none, anything else stands alone (read-only with no source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writable, no source.
    Primary,
    /// Replicates from a source.
    Replica,
    /// Read-only with no source (a fenced or spare server).
    Standalone,
}

impl Role {
    /// The role `state` shows.
    pub fn of(state: &ServerState) -> Self {
        if state.replication.is_some() {
            Self::Replica
        } else if !state.read_only {
            Self::Primary
        } else {
            Self::Standalone
        }
    }

    /// The label value: `primary`, `replica` or `standalone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::Standalone => "standalone",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys of [`alert_values`], which alert rules name.
pub mod keys {
    /// 1 when the probe got an answer, 0 otherwise.
    pub const UP: &str = "up";
    /// Replicas only: 1 when the IO thread is connected (`Yes`), 0 otherwise.
    pub const REPLICATION_IO_RUNNING: &str = "replication_io_running";
    /// Replicas only: 1 when the SQL thread runs, 0 otherwise.
    pub const REPLICATION_SQL_RUNNING: &str = "replication_sql_running";
    /// Replicas only, when not NULL: `Seconds_Behind_Master`.
    pub const REPLICATION_LAG_SECONDS: &str = "replication_lag_seconds";
    /// Replicas only, when the heartbeat row is there: daemon now − the row's `ts_us`.
    pub const HEARTBEAT_LAG_SECONDS: &str = "heartbeat_lag_seconds";
    /// `threads_connected / max_connections`.
    pub const CONNECTIONS_USED_RATIO: &str = "connections_used_ratio";
    /// `Threads_running`.
    pub const THREADS_RUNNING: &str = "threads_running";
    /// `Threads_connected`.
    pub const THREADS_CONNECTED: &str = "threads_connected";
    /// Queries per second since the previous probe.
    pub const QUERIES_PER_SECOND: &str = "queries_per_second";
    /// Commits per second since the previous probe.
    pub const COMMITS_PER_SECOND: &str = "commits_per_second";
    /// Rollbacks per second since the previous probe.
    pub const ROLLBACKS_PER_SECOND: &str = "rollbacks_per_second";
    /// Failed connection attempts per second since the previous probe.
    pub const ABORTED_CONNECTS_PER_SECOND: &str = "aborted_connects_per_second";
    /// The share of InnoDB buffer pool pages in use.
    pub const BUFFER_POOL_USED_RATIO: &str = "buffer_pool_used_ratio";
    /// Semi-sync primaries only (`rpl_semi_sync_master_enabled`): 1 while semi-sync is on,
    /// 0 when it fell back to async.
    pub const SEMI_SYNC_PRIMARY_ON: &str = "semi_sync_primary_on";
}

/// The flat values alert rules read for one instance: `cur` is its latest observation,
/// `prev` the one before (for rates; `None` gives no rate keys). A key is absent when it does
/// not apply or is unknown, never 0 for "unknown". See [`keys`] for every key.
pub fn alert_values(prev: Option<&Observation>, cur: &Observation) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: f64| {
        out.insert(k.to_string(), v);
    };
    let Some(state) = cur.state() else {
        put(keys::UP, 0.0);
        return out;
    };
    put(keys::UP, 1.0);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    if let Some(r) = &state.replication {
        put(
            keys::REPLICATION_IO_RUNNING,
            flag(r.io_thread == IoThreadState::Yes),
        );
        put(keys::REPLICATION_SQL_RUNNING, flag(r.sql_running));
        if let Some(s) = r.seconds_behind_source {
            put(keys::REPLICATION_LAG_SECONDS, s as f64);
        }
        if let Some(h) = state.metrics.as_ref().and_then(|m| m.heartbeat) {
            put(keys::HEARTBEAT_LAG_SECONDS, h.lag_seconds());
        }
    }
    if state.semi_sync.source_enabled {
        put(
            keys::SEMI_SYNC_PRIMARY_ON,
            flag(state.semi_sync.source_active),
        );
    }
    put(keys::THREADS_RUNNING, state.threads_running as f64);
    put(keys::THREADS_CONNECTED, state.threads_connected as f64);
    if let Some(m) = &state.metrics {
        if let Some(r) = m.connections_used_ratio() {
            put(keys::CONNECTIONS_USED_RATIO, r);
        }
        if let Some(r) = m.buffer_pool_used_ratio() {
            put(keys::BUFFER_POOL_USED_RATIO, r);
        }
    }
    if let Some(rates) = prev.and_then(|p| Rates::between_observations(p, cur)) {
        for (k, v) in [
            (keys::QUERIES_PER_SECOND, rates.queries),
            (keys::COMMITS_PER_SECOND, rates.commits),
            (keys::ROLLBACKS_PER_SECOND, rates.rollbacks),
            (keys::ABORTED_CONNECTS_PER_SECOND, rates.aborted_connects),
        ] {
            if let Some(v) = v {
                put(k, v);
            }
        }
    }
    out
}
