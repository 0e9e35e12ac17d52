//! The route checks over real HTTP and a real SQLite store: they need no token (also when
//! reads do), answer from the table the rounds and the refresher keep, follow the writer
//! and the fenced marks the store records, answer 404 JSON to anything unknown or junk and
//! 429 JSON past the rate limit. Rounds are made here; the same path with real `mariadbd`
//! and a real daemon is `crates/cli/tests/routing.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{get, Server};
use model::gtid::MariadbGtidList;
use model::{
    ClusterRound, Flavor, GtidState, InstanceAddr, IoThreadState, Observation, Reachability,
    ReplicationStatus, SemiSyncState, ServerState,
};
use server::routing::{RouteOptions, RouteTable};
use server::{Auth, ServeOptions};
use store::settings::{FencedMark, Settings as _};
use tokio_util::sync::CancellationToken;

const PRIMARY: &str = "127.0.0.1:9";
const REPLICA: &str = "127.0.0.1:10";

fn addr(s: &str) -> InstanceAddr {
    s.parse().unwrap()
}

fn observation(a: &str, replica_lag: Option<u64>) -> Observation {
    Observation {
        addr: addr(a),
        at_unix_ms: monitor::now_ms(),
        duration_us: 500,
        write: None,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB".into(),
            server_id: 1,
            read_only: replica_lag.is_some(),
            log_bin: true,
            log_replica_updates: true,
            replication: replica_lag.map(|lag| ReplicationStatus {
                source: addr(PRIMARY),
                io_thread: IoThreadState::Yes,
                sql_running: true,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind_source: Some(lag),
                sql_delay_s: 0,
                using_gtid: true,
                received_gtid: String::new(),
                stream: Default::default(),
            }),
            gtid: GtidState::Mariadb {
                current_pos: MariadbGtidList::new(),
                binlog_pos: MariadbGtidList::new(),
                slave_pos: MariadbGtidList::new(),
                binlog_state: Default::default(),
                strict_mode: true,
            },
            semi_sync: SemiSyncState::default(),
            uptime_s: 1,
            threads_connected: 1,
            threads_running: 1,
            disk: None,
            metrics: None,
        })),
    }
}

fn round(replica_lag: u64) -> ClusterRound {
    ClusterRound {
        cluster: "main".into(),
        at_ms: monitor::now_ms(),
        observations: vec![
            observation(PRIMARY, None),
            observation(REPLICA, Some(replica_lag)),
        ],
        primary: Some(addr(PRIMARY)),
        ..Default::default()
    }
}

/// GET `path` with no token; the status and the JSON body.
async fn check(s: &Server, path: &str) -> (u16, serde_json::Value) {
    let a = s.raw(&get(path, "")).await;
    let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&a.body)
        )
    });
    (a.status, body)
}

/// Poll until `path` answers `status` (the refresher reads the store on its own task).
async fn wait_status(s: &Server, path: &str, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = check(s, path).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got} {body}, waiting for {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn route_checks_follow_the_recorded_writer_and_need_no_token() {
    let table = RouteTable::default();
    let t = table.clone();
    // Reads need a token: the route checks still do not.
    let s = Server::start_with(ServeOptions::default(), move |mut st| {
        st.auth = Auth::new(config::ApiTokens::new([common::TOKEN.to_string()]), true);
        st.routing = t;
        st
    })
    .await;
    assert_eq!(s.raw(&get("/api/v1/clusters", "")).await.status, 401);
    let cancel = CancellationToken::new();
    let refresher = table.spawn_refresher(s.store.clone(), None, cancel.clone());

    let w = |a: &str| format!("/api/v1/route/main/{a}/writer");
    let r = |a: &str| format!("/api/v1/route/main/{a}/reader");
    // A listed instance before any round: not a writer yet, and not a 404.
    let body = wait_status(&s, &w(PRIMARY), 503).await;
    assert_eq!(body, serde_json::json!({"role": "writer", "ok": false}));

    // A round, but the store records no writer: nobody is the writer.
    table.on_round(&round(0));
    let body = wait_status(&s, &r(REPLICA), 200).await;
    assert_eq!(body, serde_json::json!({"role": "reader", "ok": true}));
    assert_eq!(check(&s, &w(PRIMARY)).await.0, 503);

    // The store records the writer: the next round has it read.
    s.store
        .set_writer("main", Some(addr(PRIMARY)), monitor::now_ms())
        .await
        .unwrap();
    table.on_round(&round(0));
    let body = wait_status(&s, &w(PRIMARY), 200).await;
    assert_eq!(body, serde_json::json!({"role": "writer", "ok": true}));
    assert_eq!(
        check(&s, &w(REPLICA)).await.0,
        503,
        "a replica is not the writer"
    );
    assert_eq!(
        check(&s, &r(PRIMARY)).await.0,
        503,
        "the writer is not a reader"
    );

    // A replica past max_lag (10 s for `main`) is no reader; back within it, it is.
    table.on_round(&round(11));
    assert_eq!(check(&s, &r(REPLICA)).await.0, 503);
    table.on_round(&round(10));
    assert_eq!(check(&s, &r(REPLICA)).await.0, 200);

    // The writer fenced in the store (a failover's fence_old): no longer the writer, as
    // soon as the refresher reads the mark (an operation's end or the periodic read).
    s.store
        .mark_fenced("main", &addr(PRIMARY), &FencedMark::default())
        .await
        .unwrap();
    table.mark("main");
    wait_status(&s, &w(PRIMARY), 503).await;

    cancel.cancel();
    refresher.await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn bad_route_checks_get_404_json_never_5xx() {
    let table = RouteTable::default();
    let t = table.clone();
    let s = Server::start_with(ServeOptions::default(), move |mut st| {
        st.routing = t;
        st
    })
    .await;
    let cancel = CancellationToken::new();
    let refresher = table.spawn_refresher(s.store.clone(), None, cancel.clone());
    table.on_round(&round(0));
    wait_status(&s, &format!("/api/v1/route/main/{REPLICA}/reader"), 200).await;
    for path in [
        "/api/v1/route/nosuch/127.0.0.1:9/writer",
        "/api/v1/route/main/127.0.0.1:11/writer",
        "/api/v1/route/main/127.0.0.1:9/primary",
        "/api/v1/route/main/127.0.0.1:9/writer/x",
        "/api/v1/route/main/not-an-address/writer",
        "/api/v1/route/main/127.0.0.1:0/reader",
        "/api/v1/route/main/127.0.0.1:99999/reader",
        "/api/v1/route/main/%ff%fe/writer",
        "/api/v1/route/main//writer",
        "/api/v1/route/main/127.0.0.1:9",
        "/api/v1/route/main",
        "/api/v1/route/",
        "/api/v1/route/..%2f..%2fetc/127.0.0.1:9/writer",
        "/api/v1/route/main/%00/reader",
    ] {
        let a = s.raw(&get(path, "")).await;
        assert_eq!(a.status, 404, "{path}: {a:?}");
        let msg = a.json_error();
        assert!(!msg.is_empty(), "{path}");
    }
    // Only GET.
    let a = s
        .raw(&common::post(
            "/api/v1/route/main/127.0.0.1:9/writer",
            b"{}",
        ))
        .await;
    assert_eq!(a.status, 405, "{a:?}");
    a.json_error();
    cancel.cancel();
    refresher.await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn route_checks_past_the_rate_limit_get_429_json() {
    // Three checks in the bucket and almost no refill: the fourth is refused, whatever the
    // machine's speed.
    let table = RouteTable::new(RouteOptions {
        checks_per_second: 0.001,
        burst: 3.0,
        ..Default::default()
    });
    table.on_round(&round(0));
    let t = table.clone();
    let s = Server::start_with(ServeOptions::default(), move |mut st| {
        st.routing = t;
        st
    })
    .await;
    let path = format!("/api/v1/route/main/{REPLICA}/reader");
    for _ in 0..3 {
        assert_ne!(s.raw(&get(&path, "")).await.status, 429);
    }
    let a = s.raw(&get(&path, "")).await;
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.json_error().contains("too many route checks"));
    // The rest of the API is not limited by it.
    assert_eq!(s.raw(&get("/healthz", "")).await.status, 200);
    s.stop().await;
}
