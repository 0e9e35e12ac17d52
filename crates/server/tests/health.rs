//! `/healthz` reports the metadata store and the leader lease; `/readyz` answers 503 while
//! the store does not answer or the daemon has not finished its first round. The store that
//! goes away is a real etcd, killed.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{get, Server};
use serde_json::Value;
use server::ServeOptions;
use store::etcd::testing::EtcdGuard;
use store::EtcdStore;

fn json(a: &common::Answer) -> Value {
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    serde_json::from_slice(&a.body).unwrap()
}

#[tokio::test]
async fn readyz_waits_for_the_first_round() {
    let s = Server::start(ServeOptions::default()).await;
    let h = s.raw(&get("/healthz", "")).await;
    assert_eq!(h.status, 200);
    let h = json(&h);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"]["ok"], true, "{h}");
    assert_eq!(h["store"]["error"], Value::Null, "{h}");
    assert_eq!(h["leader"], Value::Null, "no engine, no lease: {h}");

    let r = s.raw(&get("/readyz", "")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.json_error().contains("starting"));

    s.stats.rounds.store(1, Ordering::Relaxed);
    let r = s.raw(&get("/readyz", "")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = json(&r);
    assert_eq!(r["ready"], true);
    assert_eq!(r["store"]["ok"], true);
    s.stop().await;
}

#[tokio::test]
async fn healthz_and_readyz_see_the_store_go_away() {
    let mut etcd = EtcdGuard::start(32477, 32478);
    let store = EtcdStore::connect(&[etcd.endpoint()], "/dbfleet/", EtcdGuard::options())
        .await
        .expect("connect to the test etcd");
    let s = Server::start_on(
        Arc::new(store),
        tempfile::tempdir().unwrap(),
        ServeOptions::default(),
        |s| s,
    )
    .await;
    s.stats.rounds.store(1, Ordering::Relaxed);
    assert_eq!(s.raw(&get("/readyz", "")).await.status, 200);

    etcd.kill();
    let h = s.raw(&get("/healthz", "")).await;
    assert_eq!(
        h.status, 200,
        "healthz answers while the daemon does: {h:?}"
    );
    let h = json(&h);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["store"]["ok"], false, "{h}");
    assert!(
        h["store"]["error"]
            .as_str()
            .unwrap()
            .contains("metadata store"),
        "{h}"
    );

    let r = s.raw(&get("/readyz", "")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.json_error().contains("metadata store"));
    s.stop().await;
}

#[tokio::test]
async fn healthz_reports_the_leader_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(dir.path()).unwrap());
    let e = common::engine(store.clone(), "node-a").await;
    let s = Server::start_on(store, dir, ServeOptions::default(), |mut state| {
        state.engine = Some(e.clone());
        state
    })
    .await;
    let h = json(&s.raw(&get("/healthz", "")).await);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["leader"]["node"], "node-a", "{h}");
    assert_eq!(h["leader"]["is_leader"], true, "{h}");
    assert_eq!(h["leader"]["leader"], "node-a", "{h}");
    assert!(h["leader"]["term"].as_u64().unwrap() >= 1, "{h}");
    s.stop().await;
    e.stop_tasks();
}
