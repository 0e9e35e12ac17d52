//! Fixtures of the store contract: addresses, a cluster spec, observations and problems
//! that every backend's tests build their cases from.

use std::time::Duration;

use model::gtid::{MariadbBinlogState, MariadbGtidList};
use model::{
    ClusterSpec, Evidence, Flavor, GtidState, InstanceAddr, InstanceSpec, IoThreadState,
    Observation, ProbeFailure, ProbeFailureKind, Problem, ProblemKind, PromotionRule, Reachability,
    ReplicationStatus, SemiSyncState, ServerState, Severity,
};

/// The `i`th test address, on port 3306.
pub fn addr(i: u32) -> InstanceAddr {
    InstanceAddr::new(format!("10.0.{}.{}", i / 250, i % 250 + 1), 3306)
}

/// A two-member semi-sync cluster named `name`.
pub fn spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        instances: vec![
            InstanceSpec {
                addr: addr(0),
                promotion: PromotionRule::Prefer,
                site: None,
            },
            InstanceSpec {
                addr: addr(1),
                promotion: PromotionRule::Neutral,
                site: None,
            },
        ],
        expected_replicas: 1,
        semi_sync: true,
        max_lag: Duration::from_secs(30),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    }
}

/// `a` refused the probe at `at`.
pub fn unreachable(a: &InstanceAddr, at: u64) -> Observation {
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 1_500,
        write: None,
        reachability: Reachability::Unreachable(ProbeFailure::new(
            ProbeFailureKind::Refused,
            "connection refused",
        )),
    }
}

/// `a` replicates from `source` at `at`, `lag` seconds behind.
pub fn replica(a: &InstanceAddr, source: &InstanceAddr, at: u64, lag: u64) -> Observation {
    let pos: MariadbGtidList = "0-1-100".parse().unwrap();
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 900,
        write: None,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB-0+deb12u1".into(),
            server_id: 2,
            read_only: true,
            log_bin: true,
            log_replica_updates: true,
            replication: Some(ReplicationStatus {
                source: source.clone(),
                io_thread: IoThreadState::Yes,
                sql_running: true,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind_source: Some(lag),
                sql_delay_s: 0,
                using_gtid: true,
                received_gtid: "0-1-100".into(),
                stream: Default::default(),
            }),
            gtid: GtidState::Mariadb {
                current_pos: pos.clone(),
                binlog_pos: pos.clone(),
                slave_pos: pos,
                binlog_state: "0-1-100".parse::<MariadbBinlogState>().unwrap(),
                strict_mode: true,
            },
            semi_sync: SemiSyncState {
                replica_enabled: true,
                replica_active: true,
                ..SemiSyncState::default()
            },
            uptime_s: 3_600,
            threads_connected: 4,
            threads_running: 1,
            disk: None,
            metrics: None,
        })),
    }
}

/// A problem of `kind` in `cluster`, with one fact per instance.
pub fn problem(
    cluster: &str,
    kind: ProblemKind,
    instance: Option<InstanceAddr>,
    s: &str,
) -> Problem {
    Problem {
        kind,
        cluster: cluster.into(),
        evidence: instance
            .iter()
            .map(|i| Evidence::new(i, format!("fact: {s}")))
            .collect(),
        instance,
        severity: Severity::Error,
        summary: s.into(),
    }
}

/// `n` lagging replicas of `cluster`: `n` problems with distinct keys.
pub fn lagging(cluster: &str, n: u32, s: &str) -> Vec<Problem> {
    (0..n)
        .map(|i| problem(cluster, ProblemKind::ReplicaLagging, Some(addr(i)), s))
        .collect()
}
