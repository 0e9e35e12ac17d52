//! The simulated fleet read by the real probe: what a primary and a replica report,
//! discovery, the heartbeat, the liveness statement, and each fault. Every test uses its own
//! /24 in 127.1.0.0/16, so tests run in parallel.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use model::{GtidState, InstanceAddr, IoThreadState, ProbeFailureKind, ServerState};
use probe::{Credentials, ObserveOptions, ProbeOptions, Session};
use sim::{Fleet, FleetOptions};

fn creds() -> Credentials {
    Credentials::new("dbfleet", "secret")
}

fn opts() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_millis(500),
    }
}

async fn fleet(third_octet: u8, clusters: usize) -> Fleet {
    Fleet::start(FleetOptions {
        clusters,
        replicas: 2,
        first_ip: Ipv4Addr::new(127, 1, third_octet, 1),
        port: 3306,
        semi_sync: true,
        seed: 7,
    })
    .await
    .expect("start the fleet")
}

async fn state(addr: &InstanceAddr) -> ServerState {
    let obs = probe::observe(addr, &creds(), opts()).await;
    match obs.state() {
        Some(s) => s.clone(),
        None => panic!("{addr} unreachable: {:?}", obs.failure()),
    }
}

fn mariadb_pos(s: &ServerState) -> String {
    match &s.gtid {
        GtidState::Mariadb { current_pos, .. } => current_pos.to_string(),
        other => panic!("not MariaDB: {other:?}"),
    }
}

fn seq(pos: &str) -> u64 {
    pos.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn probe_reads_a_primary_and_its_replicas() {
    let fleet = fleet(201, 2).await;
    let c = fleet.clusters()[1].clone();
    let p = state(&c.primary).await;
    assert!(p.version.contains("MariaDB"), "{}", p.version);
    assert!(!p.read_only);
    assert!(p.log_bin && p.log_replica_updates);
    assert!(p.replication.is_none(), "a primary replicates from no one");
    assert!(p.semi_sync.source_enabled && p.semi_sync.source_active);
    assert_eq!(p.semi_sync.source_clients, 2);
    assert!(p.uptime_s > 3600 && p.threads_connected > 0 && p.threads_running > 0);
    let m = p.metrics.as_ref().expect("metrics");
    assert!(m.max_connections.is_some() && m.questions.is_some() && m.com_commit.is_some());
    assert!(m.innodb_buffer_pool_pages_total.is_some() && m.innodb_log_waits.is_some());

    for r in &c.replicas {
        let s = state(r).await;
        assert!(s.read_only);
        assert_ne!(s.server_id, p.server_id);
        let rep = s.replication.as_ref().expect("a replica replicates");
        assert_eq!(rep.source, c.primary);
        assert_eq!(rep.io_thread, IoThreadState::Yes);
        assert!(rep.sql_running && rep.using_gtid);
        assert_eq!(rep.last_io_errno, 0);
        assert!(rep.seconds_behind_source.is_some());
        // A replica is at or a little behind the primary, in the primary's domain.
        let (ppos, rpos) = (mariadb_pos(&p), mariadb_pos(&s));
        assert_eq!(
            ppos.split('-').take(2).collect::<Vec<_>>(),
            rpos.split('-').take(2).collect::<Vec<_>>()
        );
        assert!(seq(&rpos) <= seq(&mariadb_pos(&state(&c.primary).await)));
    }
    // GTIDs and counters advance.
    let m1 = p.metrics.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let p2 = state(&c.primary).await;
    assert!(seq(&mariadb_pos(&p2)) > seq(&mariadb_pos(&p)));
    let m2 = p2.metrics.unwrap();
    assert!(m2.questions > m1.questions && m2.bytes_sent >= m1.bytes_sent);
    assert!(p2.uptime_s > p.uptime_s);
    assert_eq!(
        fleet.stats().unknown_statements,
        0,
        "{:?}",
        fleet.stats().unknown_recent
    );
}

#[tokio::test]
async fn discovery_and_heartbeat() {
    let fleet = fleet(202, 1).await;
    let c = fleet.clusters()[0].clone();
    let mut s = Session::connect(&c.primary, &creds(), opts())
        .await
        .unwrap();
    let mut hosts = s.replica_hosts().await.unwrap();
    hosts.sort();
    let mut want = c.replicas.clone();
    want.sort();
    assert_eq!(hosts, want);

    // No heartbeat row yet: the probe still succeeds, without a reading.
    let mut r = Session::connect(&c.replicas[0], &creds(), opts())
        .await
        .unwrap();
    let st = r
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(st.metrics.unwrap().heartbeat.is_none());

    s.exec("create schema", "CREATE DATABASE IF NOT EXISTS dbfleet")
        .await
        .unwrap();
    s.exec(
        "create table",
        "CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id INT PRIMARY KEY, ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL)",
    )
    .await
    .unwrap();
    let ts = probe::now_us();
    s.exec(
        "heartbeat",
        &format!(
            "REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) VALUES (1, {ts}, @@server_id)"
        ),
    )
    .await
    .unwrap();
    let st = r
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let beat = st.metrics.unwrap().heartbeat.expect("a heartbeat reading");
    assert!(
        beat.ts_us < ts && ts - beat.ts_us < 1_000_000,
        "replica lags {} us",
        ts - beat.ts_us
    );
    let st = s
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(st.metrics.unwrap().heartbeat.unwrap().ts_us, ts);

    // The daemon's conditional write: a row on the primary, none on a read-only replica.
    let write = probe::commands::heartbeat::write_heartbeat_sql(ts + 1);
    assert_eq!(s.exec_affected("heartbeat", &write).await.unwrap(), 2);
    assert_eq!(r.exec_affected("heartbeat", &write).await.unwrap(), 0);

    // Stopped replication: threads No, lag unknown, heartbeat frozen, no longer listed.
    fleet.stop_replication(&c.replicas[0]).unwrap();
    let frozen = r
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let rep = frozen.replication.clone().unwrap();
    assert_eq!(rep.io_thread, IoThreadState::No);
    assert!(!rep.sql_running && rep.seconds_behind_source.is_none());
    let ts2 = ts + 2_000_000;
    s.exec(
        "heartbeat",
        &format!(
            "REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) VALUES (1, {ts2}, @@server_id)"
        ),
    )
    .await
    .unwrap();
    let later = r
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        later.metrics.unwrap().heartbeat.unwrap().ts_us,
        frozen.metrics.unwrap().heartbeat.unwrap().ts_us
    );
    assert_eq!(
        s.replica_hosts().await.unwrap(),
        vec![c.replicas[1].clone()]
    );
    fleet.heal(&c.replicas[0]).unwrap();
    let healed = r
        .observe_with(ObserveOptions {
            heartbeat: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(healed.replication.unwrap().sql_running);
    assert!(healed.metrics.unwrap().heartbeat.unwrap().ts_us > ts);
    assert_eq!(
        fleet.stats().unknown_statements,
        0,
        "{:?}",
        fleet.stats().unknown_recent
    );
}

#[tokio::test]
async fn liveness_statement_sleeps() {
    let fleet = fleet(203, 1).await;
    let c = fleet.clusters()[0].clone();
    let slow = ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(3),
    };
    let mut s = Session::connect(&c.primary, &creds(), slow).await.unwrap();
    s.exec("setup", "SET SESSION max_statement_time = 0")
        .await
        .unwrap();
    let t = Instant::now();
    s.query_rows("liveness", "SELECT /* dbfleet liveness */ SLEEP(1.000)")
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t.elapsed()
    );
    // Unknown statements are errors, and counted.
    assert!(s.exec("nonsense", "DROP TABLE everything").await.is_err());
    assert_eq!(fleet.stats().unknown_statements, 1);
}

#[tokio::test]
async fn hang_times_out_refuse_fails_fast_heal_restores() {
    let fleet = fleet(204, 1).await;
    let c = fleet.clusters()[0].clone();
    let addr = c.replicas[1].clone();
    let mut kept = Session::connect(&addr, &creds(), opts()).await.unwrap();
    kept.observe().await.unwrap();

    fleet.hang(&addr).unwrap();
    let t = Instant::now();
    let obs = probe::observe(&addr, &creds(), opts()).await;
    assert_eq!(
        obs.failure().map(|f| f.kind),
        Some(ProbeFailureKind::Timeout),
        "{obs:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(450));
    // A connection open before the hang hangs too.
    let err = kept.observe().await.unwrap_err();
    assert!(matches!(err, probe::ProbeError::Timeout { .. }), "{err:?}");
    fleet.heal(&addr).unwrap();
    state(&addr).await;

    let mut kept = Session::connect(&addr, &creds(), opts()).await.unwrap();
    fleet.refuse(&addr).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let obs = probe::observe(&addr, &creds(), opts()).await;
    assert_eq!(
        obs.failure().map(|f| f.kind),
        Some(ProbeFailureKind::Refused),
        "{obs:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(kept.observe().await.is_err(), "an open connection is reset");
    fleet.heal(&addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let obs = probe::observe(&addr, &creds(), opts()).await;
        if obs.state().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "not healed: {obs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other members never noticed.
    state(&c.primary).await;
}

#[tokio::test]
async fn the_servers_count_missed_intervals() {
    let fleet = fleet(205, 1).await;
    let c = fleet.clusters()[0].clone();
    fleet.hang(&c.replicas[1]).unwrap();
    fleet.track_probes(Duration::from_millis(200));
    let mut s = Session::connect(&c.primary, &creds(), opts())
        .await
        .unwrap();
    for _ in 0..3 {
        s.observe().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = fleet.probe_report();
    assert_eq!((r.healthy, r.faulty, r.observes), (2, 1, 3), "{r:?}");
    // The first replica was never probed: its open gap (about 800 ms) is 3 missed intervals;
    // the primary's last gap (about 500 ms) is 2.
    assert!(
        r.missed_intervals >= 4 && r.servers_with_misses == 2,
        "{r:?}"
    );
    assert!(r.max_gap_ms >= 750, "{r:?}");
}
