//! Unit tests of recording, history and the exposition.

use model::metrics::{HeartbeatReading, InstanceMetrics};
use model::*;

use super::*;

fn obs(at_ms: u64, queries: u64, replica: bool, hb_lag_us: Option<u64>) -> Observation {
    let metrics = InstanceMetrics {
        queries: Some(queries),
        max_connections: Some(100),
        threads_connected: Some(10),
        innodb_page_size: Some(16384),
        innodb_buffer_pool_pages_total: Some(100),
        innodb_buffer_pool_pages_free: Some(25),
        heartbeat: hb_lag_us.map(|lag| HeartbeatReading {
            ts_us: at_ms * 1000 - lag,
            read_at_us: at_ms * 1000,
        }),
        ..Default::default()
    };
    Observation {
        addr: InstanceAddr::new("127.0.0.1", 33001),
        at_unix_ms: at_ms,
        duration_us: 800,
        write: None,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB".into(),
            server_id: 2,
            read_only: replica,
            log_bin: true,
            log_replica_updates: true,
            replication: replica.then(|| ReplicationStatus {
                source: InstanceAddr::new("127.0.0.1", 33000),
                io_thread: IoThreadState::Yes,
                sql_running: false,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind_source: None,
                sql_delay_s: 0,
                using_gtid: true,
                received_gtid: String::new(),
                stream: Default::default(),
            }),
            gtid: GtidState::Mysql {
                enabled: true,
                executed: Default::default(),
                purged: Default::default(),
            },
            semi_sync: SemiSyncState::default(),
            uptime_s: at_ms / 1000,
            threads_connected: 10,
            threads_running: 2,
            disk: None,
            metrics: Some(metrics),
        })),
    }
}

fn down(at_ms: u64) -> Observation {
    Observation {
        write: None,
        reachability: Reachability::Unreachable(ProbeFailure::new(
            ProbeFailureKind::Refused,
            "refused",
        )),
        ..obs(at_ms, 0, false, None)
    }
}

#[test]
fn history_keeps_the_last_samples_with_rates_and_lag() {
    let m = FleetMetrics::default();
    m.set_history_samples(3);
    let addr = InstanceAddr::new("127.0.0.1", 33001);
    m.record("c", &obs(1_000_000, 100, true, Some(1_500)));
    m.record("c", &obs(1_001_000, 300, true, Some(2_500_000)));
    m.record("c", &obs(1_000_500, 999, true, None)); // older: ignored
    m.record("c", &down(1_002_000));
    m.record("c", &obs(1_003_000, 700, true, Some(0)));
    let h = m.history(&addr, 0).unwrap();
    assert_eq!(h.cluster, "c");
    assert_eq!(h.role, Some(Role::Replica));
    let at: Vec<u64> = h.points.iter().map(|p| p.at_ms).collect();
    assert_eq!(
        at,
        [1_001_000, 1_002_000, 1_003_000],
        "three kept, oldest first"
    );
    let p = &h.points[0];
    assert!(p.up);
    assert_eq!(p.queries_per_second, Some(200.0));
    assert_eq!(p.lag_seconds, Some((2.5, LagSource::Heartbeat)));
    assert_eq!(p.replication_io_running, Some(true));
    assert_eq!(p.replication_sql_running, Some(false));
    assert_eq!(p.connections_used_ratio, Some(0.1));
    assert_eq!(p.semi_sync_primary_on, None);
    assert!(!h.points[1].up);
    assert_eq!(h.points[1].threads_running, None);
    assert_eq!(
        h.points[2].queries_per_second, None,
        "no rate across a failed probe"
    );
    assert_eq!(m.history(&addr, 1_002_500).unwrap().points.len(), 1);
    assert!(m.history(&InstanceAddr::new("127.0.0.1", 1), 0).is_none());
    assert!(m.history_bytes() <= 16 * 16);
}

#[test]
fn alert_values_name_the_documented_keys() {
    let m = FleetMetrics::default();
    let addr = InstanceAddr::new("127.0.0.1", 33001);
    m.record("c", &obs(1_000_000, 100, true, Some(1_500_000)));
    m.record("c", &obs(1_002_000, 300, true, Some(1_500_000)));
    let v = m.alert_values(&addr).unwrap();
    assert_eq!(v["up"], 1.0);
    assert_eq!(v["replication_io_running"], 1.0);
    assert_eq!(v["replication_sql_running"], 0.0);
    assert_eq!(v["heartbeat_lag_seconds"], 1.5);
    assert_eq!(v["connections_used_ratio"], 0.1);
    assert_eq!(v["threads_running"], 2.0);
    assert_eq!(v["queries_per_second"], 100.0);
    assert!(
        !v.contains_key("replication_lag_seconds"),
        "NULL is absent, not 0"
    );
    m.record("c", &down(1_003_000));
    let v = m.alert_values(&addr).unwrap();
    assert_eq!(v.get("up"), Some(&0.0));
    assert_eq!(v.len(), 1);
}

#[test]
fn exposition_has_labelled_series_and_daemon_health() {
    let m = FleetMetrics::default();
    m.record("c", &obs(1_000_000, 100, true, Some(1_500)));
    let health = DaemonHealth {
        probes: 5,
        probe_missed_intervals: 1,
        instances: 1,
        ..Default::default()
    };
    let text = m.encode(&health, Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"));
    let classic = m.encode(&health, Format::PrometheusText);
    assert!(classic.contains("# TYPE dbfleet_mysql_queries_total counter\n"));
    assert!(classic.contains("# HELP dbfleet_probes_total Probes completed"));
    assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    for want in [
        "dbfleet_mysql_up{cluster=\"c\",instance=\"127.0.0.1:33001\",role=\"replica\"} 1",
        "# TYPE dbfleet_mysql_queries counter",
        "dbfleet_mysql_queries_total{cluster=\"c\",instance=\"127.0.0.1:33001\",role=\"replica\"} 100",
        "dbfleet_mysql_innodb_buffer_pool_size_bytes{",
        "dbfleet_mysql_heartbeat_lag_seconds{",
        "dbfleet_probe_duration_seconds_bucket{le=\"0.001\"} 1",
        "dbfleet_probes_total 5",
        "dbfleet_missed_intervals_total{loop=\"probe\"} 1",
        "dbfleet_instances_watched 1",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn exposition_counts_notifications_by_notifier_and_outcome() {
    let m = FleetMetrics::default();
    let notifiers = [NotifierCounts {
        notifier: "ops-webhook".into(),
        sent: 3,
        failed: 1,
        dropped: 0,
    }];
    let text = m.encode_with(&DaemonHealth::default(), &notifiers, Format::OpenMetrics);
    for want in [
        "# TYPE dbfleet_notifications counter",
        "dbfleet_notifications_total{notifier=\"ops-webhook\",outcome=\"sent\"} 3",
        "dbfleet_notifications_total{notifier=\"ops-webhook\",outcome=\"failed\"} 1",
        "dbfleet_notifications_total{notifier=\"ops-webhook\",outcome=\"dropped\"} 0",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let classic = m.encode_with(&DaemonHealth::default(), &notifiers, Format::PrometheusText);
    assert!(classic.contains("# TYPE dbfleet_notifications_total counter\n"));
    // Without notifiers the family is there, empty.
    let none = m.encode(&DaemonHealth::default(), Format::PrometheusText);
    assert!(!none.contains("dbfleet_notifications_total{"));
}
