//! The MySQL dialect, tested from fixtures of MySQL's documented output: Debian ships no
//! MySQL server, so these stand in for a live one.

use model::gtid::MysqlGtidSet;
use model::{Flavor, GtidState, InstanceAddr, IoThreadState};
use probe::parse::{self, RowMap, Vars};

fn rows(fixture: &str) -> Vec<RowMap> {
    parse::parse_vertical(fixture)
}

fn vars(fixture: &str) -> Vars {
    rows(fixture)
        .into_iter()
        .map(|r| {
            (
                r["Variable_name"].clone().unwrap().to_ascii_lowercase(),
                r["Value"].clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn mysql80_replica_status_uses_source_columns() {
    let rows = rows(include_str!("fixtures/mysql80_show_replica_status.txt"));
    assert_eq!(rows.len(), 1);
    let r = parse::replication_status(&rows[0])
        .unwrap()
        .expect("a replica");
    assert_eq!(r.source, InstanceAddr::new("127.0.0.1", 13000));
    assert_eq!(r.io_thread, IoThreadState::Yes);
    assert!(r.sql_running);
    assert_eq!(r.seconds_behind_source, Some(0));
    assert!(r.using_gtid, "Auto_Position: 1");
    assert_eq!(r.received_gtid, "73f86016-978b-11ee-ade5-8d2a2a562feb:1-3");
    assert_eq!(r.last_io_errno, 0);
    assert!(r.is_healthy());
}

#[test]
fn mysql57_slave_status_with_io_error() {
    let rows = rows(include_str!(
        "fixtures/mysql57_show_slave_status_io_error.txt"
    ));
    let r = parse::replication_status(&rows[0])
        .unwrap()
        .expect("a replica");
    assert_eq!(r.source, InstanceAddr::new("10.0.0.5", 3306));
    assert_eq!(r.io_thread, IoThreadState::Connecting);
    assert_eq!(
        r.seconds_behind_source, None,
        "NULL lag is unknown, not zero"
    );
    assert_eq!(r.last_io_errno, 2003);
    assert!(r.last_io_error.contains("error connecting to master"));
    assert_eq!(r.sql_delay_s, 3600);
    assert!(!r.is_healthy());
    // A GTID set printed over two lines is joined back.
    let executed = rows[0]["Executed_Gtid_Set"].clone().unwrap();
    let set: MysqlGtidSet = executed.parse().unwrap();
    assert_eq!(set.count(), 7);
}

#[test]
fn mysql80_server_state_from_variables() {
    let v = vars(include_str!("fixtures/mysql80_variables.txt"));
    let status: Vars = [
        ("uptime", "3600"),
        ("threads_connected", "7"),
        ("threads_running", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let repl = rows(include_str!("fixtures/mysql80_show_replica_status.txt"));
    let flavor = Flavor::from_version(&v["version"]);
    assert_eq!(flavor, Flavor::Mysql);
    assert_eq!(
        parse::replica_status_sql(flavor, &v["version"]),
        "SHOW REPLICA STATUS"
    );
    let s = parse::server_state(flavor, &v, &status, repl.first()).unwrap();
    assert_eq!(s.server_id, 2);
    assert!(s.read_only);
    assert!(
        s.log_replica_updates,
        "log_replica_updates is read on 8.0.26+"
    );
    assert!(s.semi_sync.replica_enabled, "rpl_semi_sync_replica_enabled");
    assert!(
        !s.semi_sync.source_enabled,
        "no source plugin variable means off"
    );
    assert_eq!(s.uptime_s, 3600);
    assert_eq!(s.threads_connected, 7);
    match s.gtid {
        GtidState::Mysql {
            enabled,
            executed,
            purged,
        } => {
            assert!(enabled);
            assert_eq!(
                executed.to_string(),
                "73f86016-978b-11ee-ade5-8d2a2a562feb:1-3"
            );
            assert!(purged.is_empty());
        }
        other => panic!("expected MySQL GTIDs, got {other:?}"),
    }
    assert_eq!(s.replication.unwrap().source.port, 13000);
}

#[test]
fn mysql_bad_gtid_executed_is_an_error() {
    let mut v = vars(include_str!("fixtures/mysql80_variables.txt"));
    v.insert("gtid_executed".into(), "not-a-uuid:1-3".into());
    let err = parse::server_state(Flavor::Mysql, &v, &Vars::new(), None).unwrap_err();
    assert!(err.contains("gtid_executed"), "{err}");
}

#[test]
fn mysql80_source_semi_sync_settings_and_stream_positions() {
    let mut v = vars(include_str!("fixtures/mysql80_variables.txt"));
    v.extend(vars(include_str!(
        "fixtures/mysql80_source_semisync_variables.txt"
    )));
    let status: Vars = [
        ("rpl_semi_sync_source_status", "ON"),
        ("rpl_semi_sync_source_clients", "0"),
        ("rpl_semi_sync_source_wait_sessions", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let repl = rows(include_str!("fixtures/mysql80_show_replica_status.txt"));
    let s = parse::server_state(Flavor::Mysql, &v, &status, repl.first()).unwrap();
    let ss = &s.semi_sync;
    assert!(ss.source_enabled && ss.source_active);
    assert_eq!(ss.source_timeout_ms, Some(10_000));
    assert_eq!(ss.source_wait_no_replica, Some(false));
    assert_eq!(ss.source_wait_sessions, 3);
    assert!(
        ss.can_fall_back(),
        "10 s and wait_no_replica=OFF both fall back"
    );
    let stream = &s.replication.unwrap().stream;
    assert_eq!(stream.source_log_file, "master-bin.000001");
    assert_eq!(stream.read_source_log_pos, Some(927));
    assert_eq!(
        stream.received_heartbeats, None,
        "MySQL has no heartbeat counter in its status: unknown, so no stall is judged"
    );
    assert_eq!(
        stream.stalled_ms, None,
        "the probe alone never says stalled"
    );
}
