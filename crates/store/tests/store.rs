//! The SQLite store against a real file in a temporary data directory.

use std::path::Path;
use std::sync::Arc;

use model::ProblemKind;
use store::contract::data;
use store::contract::fixtures::{addr, problem, replica, spec};
use store::{
    kinds, EventLevel, EventQuery, InstanceRecord, NewEvent, Origin, SqliteStore, Store,
    StoreError, DB_FILE_NAME, SCHEMA_VERSION,
};

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
    data::clusters_upsert_keeps_the_writer(&SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn instances_keep_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    data::instances_keep_first_seen(&SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn observations_round_trip_and_a_second_save_replaces() {
    let dir = tempfile::tempdir().unwrap();
    data::observations_round_trip_and_a_second_save_replaces(
        &SqliteStore::open(dir.path()).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn five_thousand_observations_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    data::five_thousand_observations_in_one_call(&SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn problems_open_stay_and_clear_with_events() {
    let dir = tempfile::tempdir().unwrap();
    data::problems_open_stay_and_clear_with_events(&SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn events_page_by_after_id() {
    let dir = tempfile::tempdir().unwrap();
    data::events_page_by_after_id(&SqliteStore::open(dir.path()).unwrap()).await;
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
    let dir = tempfile::tempdir().unwrap();
    data::a_key_given_twice_opens_once_and_the_last_wins(&SqliteStore::open(dir.path()).unwrap())
        .await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_coordination_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store::contract::coordination(&store).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_paging_contract() {
    let dir = tempfile::tempdir().unwrap();
    store::contract::paging(&SqliteStore::open(dir.path()).unwrap()).await;
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

/// A read never returns more than the hard maximum, whatever `limit` asks: 1,000 records.
#[tokio::test]
async fn reads_are_capped_at_one_thousand_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    for i in 0..1100u64 {
        s.append_event(&NewEvent {
            at_ms: i,
            cluster: Some("c1".into()),
            instance: None,
            kind: kinds::OPERATOR_NOTE.into(),
            level: EventLevel::Info,
            message: format!("note {i}"),
            data: serde_json::json!({}),
        })
        .await
        .unwrap();
    }
    let newest = s
        .events(&EventQuery {
            limit: 10_000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 1000);
    assert_eq!(store::MAX_EVENT_LIMIT, 1000);
    // The rest is there page by page.
    let last = newest.last().unwrap().id;
    let older = s
        .events(&EventQuery {
            after_id: Some(0),
            limit: 10_000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 1000);
    assert!(older.last().unwrap().id < last);
}
