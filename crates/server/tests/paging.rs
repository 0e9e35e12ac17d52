//! Long lists page alike over real TCP and a real SQLite store: problem history,
//! operations and instances take a capped `limit` and a keyset cursor, and a full page
//! carries `next`, the path of the page after it. Following `next` from the first page
//! returns every record exactly once, in the list's order; a bad cursor is a JSON 400.

mod common;

use std::sync::Arc;

use common::{get, Server};
use model::{InstanceAddr, ProblemKind};
use serde_json::{json, Value};
use server::ServeOptions;
use store::contract::fixtures::{problem, unreachable};
use store::{InstanceRecord, NewOperation, OperationState, Origin, Store};

fn body(a: &common::Answer) -> Value {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"));
    serde_json::from_slice(&a.body).unwrap()
}

/// Every page from `first` on, following `next`; each `next` must start with `prefix`.
async fn walk(s: &Server, first: &str, list: &str, prefix: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut target = Some(first.to_string());
    while let Some(t) = target {
        assert!(pages.len() < 100, "paging does not end");
        let v = body(&s.raw(&get(&t, "")).await);
        pages.push(v[list].as_array().unwrap().clone());
        target = v["next"].as_str().map(str::to_string);
        if let Some(next) = &target {
            assert!(next.starts_with(prefix), "{next}");
        }
    }
    pages
}

/// Asserts a JSON 400 whose message names `param`.
async fn refused(s: &Server, target: &str, param: &str) {
    let a = s.raw(&get(target, "")).await;
    assert_eq!(a.status, 400, "{target}: {a:?}");
    let message = a.json_error();
    assert!(message.contains(param), "{target}: {message}");
}

/// 31 problem openings in `main` (each round opens one and clears the one before) and 9 in
/// `other`.
async fn seed_problems(store: &Arc<dyn Store>) {
    store
        .upsert_cluster(
            &model::ClusterSpec {
                name: "other".into(),
                ..common::spec()
            },
            1,
        )
        .await
        .unwrap();
    for round in 0..31u32 {
        for cluster in ["main", "other"] {
            if cluster == "other" && round >= 9 {
                continue;
            }
            let a = InstanceAddr::new(format!("10.1.0.{}", round + 1), 3306);
            let p = problem(cluster, ProblemKind::ReplicaLagging, Some(a), "lag");
            store
                .sync_problems(cluster, &[p], 1_000 + u64::from(round))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn problem_history_pages_with_next_and_every_row_comes_once() {
    let s = Server::start(ServeOptions::default()).await;
    seed_problems(&s.store).await;
    let all: Vec<i64> = s
        .store
        .problem_history(None, None, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(all.len(), 40);

    let pages = walk(
        &s,
        "/api/v1/problems?history=true&limit=7",
        "problems",
        "/api/v1/problems?history=true&before_id=",
    )
    .await;
    let ids: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, all, "every opening once, newest first");
    assert_eq!(pages.len(), 6, "5 full pages of 7, then 5");

    // One cluster's: the filter is kept in `next`.
    let pages = walk(
        &s,
        "/api/v1/problems?history=true&limit=4&cluster=other",
        "problems",
        "/api/v1/problems?history=true&before_id=",
    )
    .await;
    let other: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(other.len(), 9);
    assert!(other.iter().all(|p| p["cluster"] == "other"));

    // A page exactly full has a `next`, whose page is empty and has none.
    let v = body(
        &s.raw(&get("/api/v1/problems?history=true&limit=40", ""))
            .await,
    );
    let next = v["next"]
        .as_str()
        .expect("a full page has a next")
        .to_string();
    let v = body(&s.raw(&get(&next, "")).await);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert!(v.get("next").is_none(), "{v}");
    // Open problems are one list: no `next`.
    let v = body(&s.raw(&get("/api/v1/problems", "")).await);
    assert!(v.get("next").is_none(), "{v}");

    // `limit` is capped; cursors are checked.
    let v = body(
        &s.raw(&get("/api/v1/problems?history=true&limit=1000", ""))
            .await,
    );
    assert_eq!(v["problems"].as_array().unwrap().len(), 40);
    refused(&s, "/api/v1/problems?history=true&limit=1001", "`limit`").await;
    for bad in ["abc", "-1", "1.5", "99999999999999999999"] {
        let target = format!("/api/v1/problems?history=true&before_id={bad}");
        refused(&s, &target, "`before_id`").await;
    }
    refused(&s, "/api/v1/problems?before_id=5", "`before_id`").await;
    s.stop().await;
}

#[tokio::test]
async fn operations_page_with_next_and_keep_their_filters() {
    let s = Server::start(ServeOptions::default()).await;
    let mut made = Vec::new();
    for i in 0..25u64 {
        let op = s
            .store
            .create_operation(&NewOperation {
                cluster: if i % 5 == 0 { "other" } else { "main" }.into(),
                kind: if i % 2 == 0 { "failover" } else { "switchover" }.into(),
                trigger: "manual".into(),
                state: OperationState::Running,
                step: "start".into(),
                data: json!({ "i": i }),
                owner: "node-a".into(),
                created_ms: 1_000 + i,
            })
            .await
            .unwrap();
        made.push((op.id, i));
    }
    made.reverse();

    let pages = walk(
        &s,
        "/api/v1/operations?limit=4",
        "operations",
        "/api/v1/operations?before_id=",
    )
    .await;
    let ids: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, made.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    assert_eq!(pages.len(), 7);

    let pages = walk(
        &s,
        "/api/v1/operations?limit=3&cluster=main&kind=failover&state=running",
        "operations",
        "/api/v1/operations?before_id=",
    )
    .await;
    let ids: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = made
        .iter()
        .filter(|(_, i)| i % 5 != 0 && i % 2 == 0)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids, want);

    // `limit=0` is the cap (1,000): one page, no `next`.
    let v = body(&s.raw(&get("/api/v1/operations?limit=0", "")).await);
    assert_eq!(v["operations"].as_array().unwrap().len(), 25);
    assert!(v.get("next").is_none(), "{v}");
    refused(&s, "/api/v1/operations?limit=1001", "`limit`").await;
    for bad in ["x", "-3", "1e3"] {
        refused(
            &s,
            &format!("/api/v1/operations?before_id={bad}"),
            "`before_id`",
        )
        .await;
    }
    s.stop().await;
}

#[tokio::test]
async fn instances_page_with_next_and_carry_their_observations() {
    let s = Server::start(ServeOptions::default()).await;
    s.store
        .upsert_cluster(
            &model::ClusterSpec {
                name: "main-2".into(),
                ..common::spec()
            },
            1,
        )
        .await
        .unwrap();
    let mut want = Vec::new();
    for cluster in ["main", "main-2"] {
        for i in 0..23u16 {
            // Ports whose text order is not their numeric one.
            let addr = InstanceAddr::new("127.0.0.1", 9990 + i);
            s.store
                .upsert_instance(&InstanceRecord {
                    cluster: cluster.into(),
                    addr: addr.clone(),
                    origin: Origin::Config,
                    first_seen_ms: 1,
                    last_seen_ms: 1,
                })
                .await
                .unwrap();
            want.push((cluster.to_string(), addr.to_string()));
        }
    }
    want.sort();
    let observed: Vec<(String, model::Observation)> = (0..23u16)
        .step_by(2)
        .map(|i| {
            let a = InstanceAddr::new("127.0.0.1", 9990 + i);
            ("main".to_string(), unreachable(&a, 5_000))
        })
        .collect();
    s.store.save_observations(&observed).await.unwrap();

    let pages = walk(
        &s,
        "/api/v1/instances?limit=5",
        "instances",
        "/api/v1/instances?after=",
    )
    .await;
    let got: Vec<(String, String)> = pages
        .iter()
        .flatten()
        .map(|i| {
            (
                i["cluster"].as_str().unwrap().to_string(),
                i["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want, "every instance once, by cluster then address");
    assert_eq!(pages.len(), 10);
    for i in pages.iter().flatten().filter(|i| i["cluster"] == "main") {
        let port: u16 = i["addr"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            i["observation"].is_null(),
            (port - 9990) % 2 == 1,
            "the observation of {i}"
        );
    }

    let pages = walk(
        &s,
        "/api/v1/instances?limit=6&cluster=main-2",
        "instances",
        "/api/v1/instances?after=main-2%2F",
    )
    .await;
    let got: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(got.len(), 23);
    assert!(got.iter().all(|i| i["cluster"] == "main-2"));

    // The default page is 100, the cap 1,000.
    let v = body(&s.raw(&get("/api/v1/instances", "")).await);
    assert_eq!(v["instances"].as_array().unwrap().len(), 46);
    assert!(v.get("next").is_none(), "{v}");
    refused(&s, "/api/v1/instances?limit=1001", "`limit`").await;
    for bad in [
        "main",
        "main%2F",
        "%2F127.0.0.1:1",
        "main%2F127.0.0.1:99999",
        "main%2Fx",
    ] {
        refused(&s, &format!("/api/v1/instances?after={bad}"), "`after`").await;
    }
    s.stop().await;
}
