//! Heartbeat lag against a real sandbox: the watch loop stamps the primary, every probe
//! reads the row back; a replica whose SQL thread is stopped shows a heartbeat lag that
//! keeps growing while `Seconds_Behind_Master` is NULL, and the lag falls back near zero
//! once the thread runs again. The stamps come from the primary only, so no replica gets an
//! errant transaction.
//!
//! The sandboxes use ports 30050–30052, 30090–30091 and 30200–30201, in temporary directories. Waits poll with generous
//! deadlines; nothing asserts how fast anything happens.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::InstanceAddr;
use monitor::{ClusterWatch, HeartbeatOptions, Stats};
use probe::{ProbeOptions, Session};
use sandbox::testing::TestSandbox;
use tokio_util::sync::CancellationToken;

use common::watch_options;

const INTERVAL: Duration = Duration::from_millis(200);

/// Poll the alert values of `addr` until `ok` holds, or panic after `within` with the last
/// values seen.
async fn wait_values(
    stats: &Stats,
    addr: &InstanceAddr,
    within: Duration,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + within;
    loop {
        let v = stats.fleet.alert_values(addr).unwrap_or_default();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last values {v:?}");
        tokio::time::sleep(INTERVAL / 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_lag_grows_while_the_sql_thread_is_stopped() {
    let sb = TestSandbox::up("hb", 2, 30050).await;
    let creds = sb.admin();
    let (m1, m2, m3) = (sb.addr("m1"), sb.addr("m2"), sb.addr("m3"));
    let spec = sb.cluster_spec();
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let watch = tokio::spawn(monitor::run_with(
        watch_options(INTERVAL),
        HeartbeatOptions {
            enabled: true,
            ..Default::default()
        },
        vec![ClusterWatch::new(spec, creds.clone())],
        Arc::new(store::SqliteStore::open_in_memory().expect("store")),
        stats.clone(),
        None,
        cancel.clone(),
    ));

    // Both replicas read a fresh heartbeat once the primary is stamped.
    for r in [&m2, &m3] {
        wait_values(
            &stats,
            r,
            Duration::from_secs(30),
            "heartbeat lag near 0",
            |v| v.get("heartbeat_lag_seconds").is_some_and(|l| *l < 1.0),
        )
        .await;
    }
    let primary = stats.fleet.alert_values(&m1).expect("primary probed");
    assert_eq!(primary.get("up"), Some(&1.0));
    assert!(
        !primary.contains_key("heartbeat_lag_seconds"),
        "a primary has no replication lag: {primary:?}"
    );

    // Stop m2's SQL thread: heartbeat lag grows, Seconds_Behind_Master says nothing.
    let mut s2 = Session::connect(&m2, &creds, ProbeOptions::default())
        .await
        .expect("connect m2");
    s2.exec("stop sql thread", "STOP SLAVE SQL_THREAD")
        .await
        .expect("stop sql thread");
    let stopped = wait_values(&stats, &m2, Duration::from_secs(30), "lag grows", |v| {
        v.get("replication_sql_running") == Some(&0.0)
            && v.get("heartbeat_lag_seconds").is_some_and(|l| *l >= 1.5)
    })
    .await;
    assert_eq!(
        stopped.get("replication_lag_seconds"),
        None,
        "Seconds_Behind_Master is NULL with the SQL thread stopped: {stopped:?}"
    );
    let first = stopped["heartbeat_lag_seconds"];
    wait_values(
        &stats,
        &m2,
        Duration::from_secs(30),
        "lag keeps growing",
        |v| {
            v.get("heartbeat_lag_seconds")
                .is_some_and(|l| *l >= first + 1.0)
        },
    )
    .await;
    // m3 still replicates: its lag stays small.
    let v3 = stats.fleet.alert_values(&m3).expect("m3");
    assert!(v3["heartbeat_lag_seconds"] < first, "{v3:?}");
    // The history says the same, from the heartbeat.
    let h = stats.fleet.history(&m2, 0).expect("m2 history");
    let last = h.points.last().expect("points");
    assert_eq!(
        last.lag_seconds.map(|(_, s)| s),
        Some(metrics::LagSource::Heartbeat)
    );
    assert_eq!(last.replication_sql_running, Some(false));

    // Start it again: the lag falls back near 0.
    s2.exec("start sql thread", "START SLAVE SQL_THREAD")
        .await
        .expect("start sql thread");
    wait_values(&stats, &m2, Duration::from_secs(30), "lag recovers", |v| {
        v.get("replication_sql_running") == Some(&1.0)
            && v.get("heartbeat_lag_seconds").is_some_and(|l| *l < 1.0)
    })
    .await;

    // The row came from the primary, and no replica wrote a transaction of its own.
    let rows = s2
        .query_rows(
            "read heartbeat",
            "SELECT server_id, @@gtid_binlog_state AS state FROM dbfleet.heartbeat WHERE id = 1",
        )
        .await
        .expect("read heartbeat row");
    let m1_id = sb.member("m1").expect("m1").server_id;
    assert_eq!(
        rows[0]["server_id"].as_deref(),
        Some(m1_id.to_string().as_str())
    );
    let state = rows[0]["state"].clone().unwrap_or_default();
    for gtid in state.split(',').filter(|g| !g.is_empty()) {
        let server = gtid.split('-').nth(1).unwrap_or("");
        assert_eq!(server, m1_id.to_string(), "errant GTID on m2: {state}");
    }
    assert!(stats.heartbeat_writes.load(Ordering::Relaxed) > 0);
    s2.close().await;

    cancel.cancel();
    watch.await.expect("join").expect("watch loop");
}

/// The writer's conditional write: a stamp on the primary; on a read-only server nothing,
/// not even the schema, and so no transaction of its own; and nothing on a primary once it
/// was made read-only, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_never_writes_on_a_read_only_server() {
    use monitor::heartbeat::{HeartbeatWriter, WriteOutcome};
    let sb = TestSandbox::up("hbro", 1, 30090).await;
    let creds = sb.admin();
    let (m1, m2) = (sb.addr("m1"), sb.addr("m2"));
    let opts = ProbeOptions::default();
    let binlog_state = |addr: InstanceAddr| {
        let creds = creds.clone();
        async move {
            let mut s = Session::connect(&addr, &creds, opts)
                .await
                .expect("connect");
            let rows = s
                .query_rows("gtid", "SELECT @@gtid_binlog_state AS s")
                .await
                .expect("read gtid");
            s.close().await;
            rows[0]["s"].clone().unwrap_or_default()
        }
    };

    let before = binlog_state(m2.clone()).await;
    let mut w2 = HeartbeatWriter::connect(&m2, &creds, opts)
        .await
        .expect("connect m2");
    for _ in 0..3 {
        assert_eq!(w2.write().await.expect("write m2"), WriteOutcome::ReadOnly);
    }
    w2.close().await;
    assert_eq!(
        binlog_state(m2.clone()).await,
        before,
        "no transaction on the replica"
    );

    let mut w1 = HeartbeatWriter::connect(&m1, &creds, opts)
        .await
        .expect("connect m1");
    assert_eq!(w1.write().await.expect("write m1"), WriteOutcome::Written);
    let mut admin = Session::connect(&m1, &creds, opts).await.expect("admin m1");
    admin
        .exec("read only", "SET GLOBAL read_only = 1")
        .await
        .expect("set read_only");
    let stamped = binlog_state(m1.clone()).await;
    assert_eq!(w1.write().await.expect("write m1"), WriteOutcome::ReadOnly);
    assert_eq!(
        binlog_state(m1.clone()).await,
        stamped,
        "no stamp once read-only"
    );
    admin
        .exec("writable", "SET GLOBAL read_only = 0")
        .await
        .expect("clear read_only");
    assert_eq!(w1.write().await.expect("write m1"), WriteOutcome::Written);
    assert_ne!(binlog_state(m1.clone()).await, stamped);
    w1.close().await;
    admin.close().await;
}

/// A refresh (and the fast path, which probes the same way) reads the heartbeat row too:
/// its observations replace the regular probes' ones, so without it the heartbeat lag
/// vanished from the API and `/metrics` right after every operation. The interval is long,
/// so between the first probes and the next tick only the refresh probes the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_reads_the_heartbeat_row() {
    let sb = TestSandbox::up("hbrf", 1, 30200).await;
    let creds = sb.admin();
    let m2 = sb.addr("m2");
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let refresh = Arc::new(tokio::sync::Notify::new());
    let interval = Duration::from_secs(30);
    let watch = tokio::spawn(monitor::run_with(
        watch_options(interval),
        HeartbeatOptions {
            enabled: true,
            ..Default::default()
        },
        vec![ClusterWatch::new(sb.cluster_spec(), creds.clone()).with_refresh(refresh.clone())],
        Arc::new(store::SqliteStore::open_in_memory().expect("store")),
        stats.clone(),
        None,
        cancel.clone(),
    ));
    // A stamp as the writer makes it (its own ticks are 30 s apart) reaches the replica,
    // read directly: no probe is due for 30 s either.
    let rounds = |n: u64| {
        let stats = stats.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while stats.refresh_rounds.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "no refresh round {n}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut p = Session::connect(&sb.addr("m1"), &creds, ProbeOptions::default())
        .await
        .expect("connect m1");
    let stamp = format!(
        "CREATE DATABASE IF NOT EXISTS dbfleet; \
         CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
         ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL); \
         REPLACE INTO dbfleet.heartbeat VALUES (1, {}, @@server_id)",
        probe::now_us()
    );
    p.exec("stamp", &stamp).await.expect("stamp");
    p.close().await;
    let mut s = Session::connect(&m2, &creds, ProbeOptions::default())
        .await
        .expect("connect m2");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = s
            .query_rows(
                "heartbeat",
                "SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1",
            )
            .await;
        if rows.is_ok_and(|r| !r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat row on m2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.close().await;

    refresh.notify_one();
    rounds(1).await;
    let seen = stats
        .latest
        .with(|l| l.get(&m2).cloned())
        .expect("m2 observed");
    let heartbeat = seen
        .state()
        .expect("reachable")
        .metrics
        .as_ref()
        .and_then(|m| m.heartbeat);
    assert!(
        heartbeat.is_some(),
        "the refresh read no heartbeat: {seen:?}"
    );
    let v = stats.fleet.alert_values(&m2).expect("m2 values");
    assert!(v.contains_key("heartbeat_lag_seconds"), "{v:?}");
    cancel.cancel();
    watch.await.expect("join").expect("watch loop");
}
