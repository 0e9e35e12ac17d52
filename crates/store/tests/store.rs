//! The SQLite store against a real file in a temporary data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::gtid::{MariadbBinlogState, MariadbGtidList};
use model::{
    ClusterSpec, Evidence, Flavor, GtidState, InstanceAddr, InstanceSpec, IoThreadState,
    Observation, ProbeFailure, ProbeFailureKind, Problem, ProblemKind, PromotionRule, Reachability,
    ReplicationStatus, SemiSyncState, ServerState, Severity,
};
use store::{
    kinds, EventLevel, EventQuery, InstanceRecord, NewEvent, Origin, SqliteStore, Store,
    StoreError, DB_FILE_NAME, SCHEMA_VERSION,
};

fn addr(i: u32) -> InstanceAddr {
    InstanceAddr::new(format!("10.0.{}.{}", i / 250, i % 250 + 1), 3306)
}

fn spec(name: &str) -> ClusterSpec {
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
    }
}

fn unreachable(a: &InstanceAddr, at: u64) -> Observation {
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 1_500,
        reachability: Reachability::Unreachable(ProbeFailure {
            kind: ProbeFailureKind::Refused,
            message: "connection refused".into(),
        }),
    }
}

fn replica(a: &InstanceAddr, source: &InstanceAddr, at: u64, lag: u64) -> Observation {
    let pos: MariadbGtidList = "0-1-100".parse().unwrap();
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 900,
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
            metrics: None,
        })),
    }
}

fn problem(cluster: &str, kind: ProblemKind, instance: Option<InstanceAddr>, s: &str) -> Problem {
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

fn user_version(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE_NAME)).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn migrations_run_on_open_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let s = SqliteStore::open(&data).unwrap();
    assert_eq!(s.path(), Some(data.join(DB_FILE_NAME).as_path()));
    const { assert!(SCHEMA_VERSION >= 1) };
    s.upsert_cluster(&spec("c1"), 10).await.unwrap();
    drop(s);
    assert_eq!(user_version(&data), SCHEMA_VERSION);

    let s = SqliteStore::open(&data).unwrap();
    assert_eq!(user_version(&data), SCHEMA_VERSION);
    assert_eq!(s.clusters().await.unwrap().len(), 1);
    {
        let conn = rusqlite::Connection::open(data.join(DB_FILE_NAME)).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    s.flush().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SqliteStore::open(dir.path()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, known, .. } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*known, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("newer dbfleet"), "{msg}");
    assert!(msg.contains(DB_FILE_NAME), "{msg}");
    // Refusing did not touch the file.
    assert_eq!(user_version(dir.path()), SCHEMA_VERSION + 1);
}

#[tokio::test]
async fn clusters_upsert_keeps_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let rec = s.upsert_cluster(&spec("c1"), 10).await.unwrap();
    assert_eq!(rec.name, "c1");
    assert_eq!(rec.writer, None);
    assert_eq!(rec.updated_ms, 10);

    s.set_writer("c1", Some(addr(0)), 20).await.unwrap();
    let mut changed = spec("c1");
    changed.expected_replicas = 3;
    let rec = s.upsert_cluster(&changed, 30).await.unwrap();
    assert_eq!(rec.spec, changed);
    assert_eq!(rec.writer, Some(addr(0)));
    assert_eq!(rec.updated_ms, 30);

    s.upsert_cluster(&spec("a0"), 40).await.unwrap();
    let names: Vec<String> = s
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a0", "c1"]);
    assert_eq!(s.cluster("c1").await.unwrap().unwrap(), rec);
    assert!(s.cluster("nope").await.unwrap().is_none());

    s.set_writer("c1", None, 50).await.unwrap();
    assert_eq!(s.cluster("c1").await.unwrap().unwrap().writer, None);
    assert!(matches!(
        s.set_writer("nope", None, 50).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn instances_keep_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let rec = |a: InstanceAddr, origin, first, last| InstanceRecord {
        cluster: "c1".into(),
        addr: a,
        origin,
        first_seen_ms: first,
        last_seen_ms: last,
    };
    assert!(s
        .upsert_instance(&rec(addr(1), Origin::Discovered, 100, 100))
        .await
        .unwrap());
    assert!(!s
        .upsert_instance(&rec(addr(1), Origin::Config, 200, 200))
        .await
        .unwrap());
    assert!(s
        .upsert_instance(&rec(addr(0), Origin::Config, 150, 150))
        .await
        .unwrap());
    let other = InstanceRecord {
        cluster: "c2".into(),
        ..rec(addr(7), Origin::Config, 1, 1)
    };
    s.upsert_instance(&other).await.unwrap();

    let got = s.instances(Some("c1")).await.unwrap();
    assert_eq!(
        got,
        [
            rec(addr(0), Origin::Config, 150, 150),
            rec(addr(1), Origin::Config, 100, 200),
        ]
    );
    assert_eq!(s.instances(None).await.unwrap().len(), 3);

    s.save_observations(&[("c1".into(), unreachable(&addr(1), 300))])
        .await
        .unwrap();
    assert!(s.remove_instance("c1", &addr(1)).await.unwrap());
    assert!(!s.remove_instance("c1", &addr(1)).await.unwrap());
    assert_eq!(s.instances(Some("c1")).await.unwrap().len(), 1);
    assert!(s.last_observation(&addr(1)).await.unwrap().is_none());
}

#[tokio::test]
async fn observations_round_trip_and_a_second_save_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let (p, r) = (addr(0), addr(1));
    let first = vec![
        ("c1".to_string(), unreachable(&p, 1_000)),
        ("c1".to_string(), replica(&r, &p, 1_000, 0)),
        ("c2".to_string(), unreachable(&addr(9), 1_000)),
    ];
    s.save_observations(&first).await.unwrap();
    assert_eq!(
        s.last_observation(&r).await.unwrap().as_ref(),
        Some(&first[1].1)
    );
    assert_eq!(s.last_observations(Some("c1")).await.unwrap(), first[..2]);
    assert_eq!(s.last_observations(None).await.unwrap(), first);

    let second = vec![("c1".to_string(), replica(&r, &p, 2_000, 42))];
    s.save_observations(&second).await.unwrap();
    assert_eq!(
        s.last_observation(&r).await.unwrap().as_ref(),
        Some(&second[0].1)
    );
    let all = s.last_observations(Some("c1")).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], second[0]);
    assert!(s.last_observation(&addr(99)).await.unwrap().is_none());
    s.save_observations(&[]).await.unwrap();
}

#[tokio::test]
async fn five_thousand_observations_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let source = addr(0);
    let round: Vec<(String, Observation)> = (0..5_000u32)
        .map(|i| {
            let a = InstanceAddr::new(format!("db-{i:05}.example"), 3306);
            let o = if i % 2 == 0 {
                replica(&a, &source, 5_000, u64::from(i))
            } else {
                unreachable(&a, 5_000)
            };
            (format!("shard-{:03}", i / 5), o)
        })
        .collect();
    s.save_observations(&round).await.unwrap();
    let got = s.last_observations(None).await.unwrap();
    assert_eq!(got.len(), 5_000);
    assert_eq!(got, round);
    assert_eq!(
        s.last_observations(Some("shard-007")).await.unwrap().len(),
        5
    );
}

#[tokio::test]
async fn problems_open_stay_and_clear_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let lag = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 40 s");
    let ro = problem(
        "c1",
        ProblemKind::PrimaryReadOnly,
        Some(addr(0)),
        "read_only=1",
    );
    let other = problem("c2", ProblemKind::NoPrimary, None, "no primary");

    // Round 1: both open.
    let ch = s
        .sync_problems("c1", &[lag.clone(), ro.clone()], 1_000)
        .await
        .unwrap();
    assert_eq!(ch.opened.len(), 2);
    assert!(ch.cleared.is_empty());
    assert_eq!(ch.opened[0].key, lag.key());
    assert_eq!(ch.opened[0].first_seen_ms, 1_000);
    assert_eq!(ch.opened[0].last_seen_ms, 1_000);
    s.sync_problems("c2", std::slice::from_ref(&other), 1_000)
        .await
        .unwrap();

    // Round 2: lag stays with new evidence, read-only clears.
    let lag2 = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 90 s");
    let ch = s
        .sync_problems("c1", std::slice::from_ref(&lag2), 2_000)
        .await
        .unwrap();
    assert!(ch.opened.is_empty());
    assert_eq!(ch.cleared.len(), 1);
    let cleared = &ch.cleared[0];
    assert_eq!(cleared.key, ro.key());
    assert_eq!(
        (cleared.first_seen_ms, cleared.last_seen_ms),
        (1_000, 1_000)
    );
    assert_eq!(cleared.cleared_ms, Some(2_000));

    let open = s.open_problems(Some("c1")).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].problem, lag2);
    assert_eq!(
        (open[0].first_seen_ms, open[0].last_seen_ms),
        (1_000, 2_000)
    );
    assert_eq!(open[0].cleared_ms, None);
    // c2's problem was untouched by c1's rounds.
    assert_eq!(s.open_problems(None).await.unwrap().len(), 2);

    // Round 3: read-only comes back as a new opening; lag clears.
    let ch = s
        .sync_problems("c1", std::slice::from_ref(&ro), 3_000)
        .await
        .unwrap();
    assert_eq!(ch.opened.len(), 1);
    assert_ne!(ch.opened[0].id, cleared.id);
    assert_eq!(ch.cleared.len(), 1);
    assert_eq!(ch.cleared[0].key, lag.key());
    assert_eq!(
        (ch.cleared[0].first_seen_ms, ch.cleared[0].last_seen_ms),
        (1_000, 2_000)
    );

    let history = s.problem_history(Some("c1"), 10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
    assert!(history[0].is_open());
    assert_eq!(s.problem_history(None, 2).await.unwrap().len(), 2);

    // Every opening and clearing is in the event log, in order.
    let ev = s
        .events(&EventQuery {
            cluster: Some("c1".into()),
            kinds: vec![kinds::PROBLEM_OPENED.into(), kinds::PROBLEM_CLEARED.into()],
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let got: Vec<(&str, u64, Option<&InstanceAddr>)> = ev
        .iter()
        .map(|e| (e.kind.as_str(), e.at_ms, e.instance.as_ref()))
        .collect();
    assert_eq!(
        got,
        [
            (kinds::PROBLEM_OPENED, 1_000, Some(&addr(1))),
            (kinds::PROBLEM_OPENED, 1_000, Some(&addr(0))),
            (kinds::PROBLEM_CLEARED, 2_000, Some(&addr(0))),
            (kinds::PROBLEM_OPENED, 3_000, Some(&addr(0))),
            (kinds::PROBLEM_CLEARED, 3_000, Some(&addr(1))),
        ]
    );
    assert_eq!(ev[0].level, EventLevel::Error);
    assert_eq!(ev[2].level, EventLevel::Info);
    assert_eq!(ev[0].data["key"], lag.key());
    assert_eq!(ev[2].data["problem_id"], cleared.id);

    // A problem of another cluster is refused.
    assert!(matches!(
        s.sync_problems("c1", &[other], 4_000).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn events_page_by_after_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let mut ev = NewEvent::new(
            i,
            if i % 5 == 0 {
                kinds::DAEMON_STARTED
            } else {
                kinds::INSTANCE_DISCOVERED
            },
            EventLevel::Info,
            format!("event {i}"),
        )
        .with_data(serde_json::json!({ "i": i }));
        if i % 2 == 0 {
            ev = ev.with_cluster("even").with_instance(addr(i as u32));
        }
        let rec = s.append_event(&ev).await.unwrap();
        assert_eq!(rec.message, ev.message);
        ids.push(rec.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    // Page forward 10 at a time.
    let mut seen = Vec::new();
    let mut after = Some(0);
    loop {
        let page = s
            .events(&EventQuery {
                after_id: after,
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|e| e.id);
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids);

    // Without a cursor: the newest, still ascending.
    let newest = s
        .events(&EventQuery {
            limit: 3,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[22..].to_vec()
    );
    assert_eq!(newest[2].data["i"], 24);

    // Filters.
    let even = s
        .events(&EventQuery {
            cluster: Some("even".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 13);
    assert_eq!(even[1].instance, Some(addr(2)));
    let started = s
        .events(&EventQuery {
            cluster: Some("even".into()),
            after_id: Some(ids[0]),
            kinds: vec![kinds::DAEMON_STARTED.into()],
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        started.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        [10, 20]
    );
    let none = s
        .events(&EventQuery {
            limit: 0,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn the_event_log_refuses_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    s.append_event(&NewEvent::new(
        1,
        kinds::DAEMON_STARTED,
        EventLevel::Info,
        "up",
    ))
    .await
    .unwrap();
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    assert!(conn.execute("UPDATE events SET message = 'x'", []).is_err());
    assert!(conn.execute("DELETE FROM events", []).is_err());
}

#[tokio::test]
async fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let obs = replica(&addr(1), &addr(0), 7_000, 3);
    let ev_id;
    {
        let s: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        s.upsert_cluster(&spec("c1"), 1).await.unwrap();
        s.set_writer("c1", Some(addr(0)), 2).await.unwrap();
        s.upsert_instance(&InstanceRecord {
            cluster: "c1".into(),
            addr: addr(1),
            origin: Origin::Config,
            first_seen_ms: 3,
            last_seen_ms: 3,
        })
        .await
        .unwrap();
        s.save_observations(&[("c1".into(), obs.clone())])
            .await
            .unwrap();
        s.sync_problems(
            "c1",
            &[problem("c1", ProblemKind::ReplicaMissing, None, "1 of 2")],
            4,
        )
        .await
        .unwrap();
        ev_id = s
            .append_event(&NewEvent::new(
                5,
                kinds::DAEMON_STOPPED,
                EventLevel::Info,
                "bye",
            ))
            .await
            .unwrap()
            .id;
        s.flush().await.unwrap();
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let c = s.cluster("c1").await.unwrap().unwrap();
    assert_eq!(c.spec, spec("c1"));
    assert_eq!(c.writer, Some(addr(0)));
    assert_eq!(s.instances(None).await.unwrap()[0].first_seen_ms, 3);
    assert_eq!(s.last_observation(&addr(1)).await.unwrap(), Some(obs));
    let open = s.open_problems(Some("c1")).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, "ReplicaMissing");
    let ev = s.events(&EventQuery::default()).await.unwrap();
    assert_eq!(ev.last().unwrap().id, ev_id);
    assert_eq!(ev.len(), 2);
}

#[tokio::test]
async fn in_memory_store_works() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert!(s.path().is_none());
    s.upsert_cluster(&spec("m"), 1).await.unwrap();
    assert_eq!(s.clusters().await.unwrap().len(), 1);
    s.flush().await.unwrap();
}

#[tokio::test]
async fn a_key_given_twice_opens_once_and_the_last_wins() {
    let s = SqliteStore::open_in_memory().unwrap();
    let a = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 40 s");
    let b = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 50 s");
    let ch = s.sync_problems("c1", &[a, b.clone()], 10).await.unwrap();
    assert_eq!(ch.opened.len(), 1);
    assert_eq!(ch.opened[0].problem, b);
    let open = s.open_problems(None).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].problem, b);
    let ev = s.events(&EventQuery::default()).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].message.contains("lag 50 s"), "{}", ev[0].message);
    // An empty round clears everything; a second empty round changes nothing.
    assert_eq!(
        s.sync_problems("c1", &[], 20).await.unwrap().cleared.len(),
        1
    );
    assert!(s.sync_problems("c1", &[], 30).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_coordination_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store::contract::coordination(&store).await;
}

#[tokio::test]
async fn a_lapsed_lock_and_lease_pass_to_another_node() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert!(store.try_lock_cluster("c", "a", 1_000, 0).await.unwrap());
    assert!(!store.try_lock_cluster("c", "b", 1_000, 999).await.unwrap());
    assert!(
        store
            .try_lock_cluster("c", "b", 1_000, 1_000)
            .await
            .unwrap(),
        "lapsed at ttl"
    );
    let a = store.campaign("a", 1_000, 0).await.unwrap();
    assert!(!store.campaign("b", 1_000, 500).await.unwrap().is_leader);
    let b = store.campaign("b", 1_000, 1_000).await.unwrap();
    assert!(b.is_leader && b.term == a.term + 1);
}
