//! Concurrent reads over real TCP and a real SQLite store: large answers are built a few at
//! a time, large event reads page with `next`, and the shared `GET /api/v1/clusters` answer
//! is never older than the request.

mod common;

use std::sync::Arc;

use common::{exchange, get, Server};
use serde_json::Value;
use server::answers::{AnswerGate, Answers};
use server::ServeOptions;
use store::{EventLevel, NewEvent, Store};
use tokio::net::TcpStream;

/// `n` events, every other one about the cluster `x y` (a name that needs encoding in a
/// query), the others about `main`.
async fn seed_events(store: &Arc<dyn Store>, n: usize) {
    for i in 0..n {
        let cluster = if i % 2 == 0 { "x y" } else { "main" };
        let event = NewEvent::new(
            1_700_000_000_000 + i as u64,
            "operator_note",
            EventLevel::Info,
            format!("event {i}: {}", "x".repeat(200)),
        )
        .with_cluster(cluster.to_string());
        store.append_event(&event).await.unwrap();
    }
}

fn body(a: &common::Answer) -> Value {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"));
    serde_json::from_slice(&a.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_reads_are_built_at_most_the_gates_limit_at_once() {
    let gate = AnswerGate::new(2);
    let s = Server::start_with(ServeOptions::default(), |mut state| {
        state.answers = Answers {
            large: gate.clone(),
            ..Answers::default()
        };
        state
    })
    .await;
    seed_events(&s.store, 1_000).await;

    let routes = [
        "/api/v1/events?limit=1000",
        "/api/v1/problems?history=true&limit=1000",
        "/api/v1/operations?limit=1000",
        "/api/v1/instances",
        "/api/v1/drt/runs",
        "/metrics",
    ];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (addr, route) = (s.addr, routes[i % routes.len()]);
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            (route, exchange(&mut c, &get(route, "")).await)
        }));
    }
    for t in tasks {
        let (route, answer) = t.await.unwrap();
        if route == "/metrics" {
            assert_eq!(answer.status, 200, "{answer:?}");
            assert!(String::from_utf8_lossy(&answer.body).contains("dbfleet_"));
            continue;
        }
        let v = body(&answer);
        if route.starts_with("/api/v1/events") {
            assert_eq!(v["events"].as_array().unwrap().len(), 1_000, "{route}");
        }
    }
    // Every one of them went through the gate, and never more than two at once. (A permit
    // comes back just after its answer's last byte went out: wait for the last ones.)
    for _ in 0..2_000 {
        if gate.alive() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(gate.alive(), 0);
    assert_eq!(gate.served(), 60);
    assert!(
        (1..=2).contains(&gate.peak()),
        "{} large answers were built at once, the limit is 2",
        gate.peak()
    );
    s.stop().await;
}

#[tokio::test]
async fn events_read_forward_page_with_next_until_the_last_page() {
    let s = Server::start(ServeOptions::default()).await;
    seed_events(&s.store, 450).await;

    // Forward from the start, 100 at a time, only the cluster `x y`: 225 events, 3 pages.
    let mut target = Some("/api/v1/events?after_id=0&limit=100&cluster=x%20y".to_string());
    let (mut ids, mut pages) = (Vec::new(), 0);
    while let Some(t) = target {
        let v = body(&s.raw(&get(&t, "")).await);
        pages += 1;
        for e in v["events"].as_array().unwrap() {
            assert_eq!(e["cluster"], "x y");
            ids.push(e["id"].as_i64().unwrap());
        }
        target = v["next"].as_str().map(str::to_string);
        if let Some(next) = &target {
            assert!(next.contains("&cluster=x%20y"), "{next}");
        }
        assert!(pages <= 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 225);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");

    // A page exactly full has a `next`, whose page is empty and has none.
    let v = body(&s.raw(&get("/api/v1/events?after_id=0&limit=450", "")).await);
    let next = v["next"]
        .as_str()
        .expect("a full page has a next")
        .to_string();
    let v = body(&s.raw(&get(&next, "")).await);
    assert_eq!(v["events"].as_array().unwrap().len(), 0);
    assert!(v.get("next").is_none(), "{v}");

    // The newest events have no next page.
    let v = body(&s.raw(&get("/api/v1/events?limit=100", "")).await);
    assert_eq!(v["events"].as_array().unwrap().len(), 100);
    assert!(v.get("next").is_none(), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn the_shared_cluster_list_is_never_older_than_the_request() {
    let s = Server::start(ServeOptions::default()).await;
    let names = |v: &Value| -> Vec<String> {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let v = body(&s.raw(&get("/api/v1/clusters", "")).await);
    assert_eq!(names(&v), ["main"]);
    let mut spec = common::spec();
    spec.name = "second".into();
    s.store.upsert_cluster(&spec, 1).await.unwrap();
    let v = body(&s.raw(&get("/api/v1/clusters", "")).await);
    assert_eq!(names(&v), ["main", "second"]);
    // Its parameters are still checked per request.
    let a = s.raw(&get("/api/v1/clusters?x=1", "")).await;
    assert_eq!(a.status, 400, "{a:?}");
    s.stop().await;
}
