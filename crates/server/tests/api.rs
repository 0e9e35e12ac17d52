//! The API through real HTTP: a server on a loopback port of its own, over a SQLite store in
//! a temporary directory seeded with a MariaDB cluster (a primary, a healthy replica, a
//! replica whose SQL thread stopped on a duplicate key, and an unreachable discovered
//! instance), its problems as analysis finds them, and events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use config::ApiTokens;
use model::analysis::{analyze, ClusterView};
use model::gtid::{MariadbBinlogState, MariadbGtidList};
use model::{
    ClusterSpec, Evidence, Flavor, GtidState, InstanceAddr, InstanceSpec, IoThreadState,
    Observation, ProbeFailure, ProbeFailureKind, Problem, ProblemKind, PromotionRule, Reachability,
    ReplicationStatus, SemiSyncState, ServerState, Severity,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server::{AppState, Auth};
use store::{kinds, EventLevel, InstanceRecord, NewEvent, Origin, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0ken-for-tests-only";
const PRIMARY: &str = "127.0.0.1:23306";
const HEALTHY: &str = "127.0.0.1:23307";
const BROKEN: &str = "127.0.0.1:23308";
const GONE: &str = "127.0.0.1:23309";
/// When the seeded rounds ran.
const T0: u64 = 1_700_000_000_000;
const T1: u64 = T0 + 5_000;
const SQL_ERROR: &str = "Could not execute Write_rows_v1 event on table app.orders; \
                         Duplicate entry '42' for key 'PRIMARY', Error_code: 1062";

fn addr(s: &str) -> InstanceAddr {
    s.parse().unwrap()
}

fn spec() -> ClusterSpec {
    let i = |a: &str, promotion| InstanceSpec {
        addr: addr(a),
        promotion,
        site: None,
    };
    ClusterSpec {
        name: "main".into(),
        instances: vec![
            i(PRIMARY, PromotionRule::Prefer),
            i(HEALTHY, PromotionRule::Neutral),
            i(BROKEN, PromotionRule::MustNot),
        ],
        expected_replicas: 2,
        semi_sync: false,
        max_lag: Duration::from_secs(10),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    }
}

/// A reachable MariaDB 10.11 server whose binlog state is `binlog_state`.
fn mariadb(a: &str, server_id: u32, binlog_state: &str) -> Observation {
    let state: MariadbBinlogState = binlog_state.parse().unwrap();
    let pos = MariadbGtidList::from_binlog_state(&state);
    Observation {
        addr: addr(a),
        at_unix_ms: T1,
        duration_us: 850,
        write: None,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB-0+deb12u1-log".into(),
            server_id,
            read_only: true,
            log_bin: true,
            log_replica_updates: true,
            replication: None,
            gtid: GtidState::Mariadb {
                current_pos: pos.clone(),
                binlog_pos: pos.clone(),
                slave_pos: pos,
                binlog_state: state,
                strict_mode: true,
            },
            semi_sync: SemiSyncState::default(),
            uptime_s: 3_600,
            threads_connected: 4,
            threads_running: 1,
            disk: None,
            metrics: None,
        })),
    }
}

fn replicating(mut o: Observation, source: &str) -> Observation {
    if let Reachability::Reachable(s) = &mut o.reachability {
        s.replication = Some(ReplicationStatus {
            source: addr(source),
            io_thread: IoThreadState::Yes,
            sql_running: true,
            last_io_errno: 0,
            last_io_error: String::new(),
            last_sql_errno: 0,
            last_sql_error: String::new(),
            seconds_behind_source: Some(0),
            sql_delay_s: 0,
            using_gtid: true,
            received_gtid: "0-1-5".into(),
            stream: Default::default(),
        });
    }
    o
}

fn observations() -> Vec<Observation> {
    let mut primary = mariadb(PRIMARY, 1, "0-1-5");
    if let Reachability::Reachable(s) = &mut primary.reachability {
        s.read_only = false;
    }
    let healthy = replicating(mariadb(HEALTHY, 2, "0-1-5"), PRIMARY);
    let mut broken = replicating(mariadb(BROKEN, 3, "0-1-4"), PRIMARY);
    if let Reachability::Reachable(s) = &mut broken.reachability {
        let r = s.replication.as_mut().unwrap();
        r.sql_running = false;
        r.last_sql_errno = 1062;
        r.last_sql_error = SQL_ERROR.into();
        r.seconds_behind_source = None;
    }
    let gone = Observation {
        addr: addr(GONE),
        at_unix_ms: T1,
        duration_us: 1_200,
        write: None,
        reachability: Reachability::Unreachable(ProbeFailure::new(
            ProbeFailureKind::Refused,
            "connection refused",
        )),
    };
    vec![primary, healthy, broken, gone]
}

/// Seeds the store as two rounds of the daemon would leave it.
async fn seed(store: &SqliteStore) {
    store.upsert_cluster(&spec(), T0).await.unwrap();
    let mut other = spec();
    other.name = "other".into();
    other.instances.clear();
    other.expected_replicas = 0;
    store.upsert_cluster(&other, T0).await.unwrap();
    store
        .set_writer("main", Some(addr(PRIMARY)), T0)
        .await
        .unwrap();
    for a in [PRIMARY, HEALTHY, BROKEN] {
        let rec = InstanceRecord {
            cluster: "main".into(),
            addr: addr(a),
            origin: Origin::Config,
            first_seen_ms: T0,
            last_seen_ms: T1,
        };
        store.upsert_instance(&rec).await.unwrap();
    }
    let discovered = InstanceRecord {
        cluster: "main".into(),
        addr: addr(GONE),
        origin: Origin::Discovered,
        first_seen_ms: T0,
        last_seen_ms: T0,
    };
    store.upsert_instance(&discovered).await.unwrap();
    store
        .append_event(&NewEvent::new(
            T0,
            kinds::DAEMON_STARTED,
            EventLevel::Info,
            "dbfleet 0.1.0 started",
        ))
        .await
        .unwrap();
    store
        .append_event(
            &NewEvent::new(
                T0,
                kinds::INSTANCE_DISCOVERED,
                EventLevel::Info,
                format!("discovered {GONE} replicating from {PRIMARY}"),
            )
            .with_cluster("main")
            .with_instance(addr(GONE)),
        )
        .await
        .unwrap();
    // Round 0: the healthy replica lagged.
    let lagging = Problem {
        kind: ProblemKind::ReplicaLagging,
        cluster: "main".into(),
        instance: Some(addr(HEALTHY)),
        severity: Severity::Warning,
        summary: format!("{HEALTHY} is 42 s behind"),
        evidence: vec![Evidence::new(
            &addr(HEALTHY),
            "seconds_behind_source=42 > max_lag=10s",
        )],
    };
    store.sync_problems("main", &[lagging], T0).await.unwrap();
    // Round 1: what analysis finds in the observations; the lag cleared.
    let obs = observations();
    let saved: Vec<(String, Observation)> = obs
        .iter()
        .map(|o| ("main".to_string(), o.clone()))
        .collect();
    store.save_observations(&saved).await.unwrap();
    let spec = spec();
    let analysis = analyze(&ClusterView {
        spec: &spec,
        observations: &obs,
    });
    assert_eq!(analysis.primary, Some(addr(PRIMARY)));
    store
        .sync_problems("main", &analysis.problems, T1)
        .await
        .unwrap();
}

/// A server on its own port and data directory.
struct TestServer {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    stats: Arc<monitor::Stats>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(auth: Auth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        seed(&store).await;
        let stats = Arc::new(monitor::Stats::default());
        stats.started_ms.store(T0, Ordering::Relaxed);
        stats.rounds.store(2, Ordering::Relaxed);
        stats.last_round_ms.store(T1, Ordering::Relaxed);
        stats.probes.store(8, Ordering::Relaxed);
        stats.probe_errors.store(1, Ordering::Relaxed);
        stats.instances.store(4, Ordering::Relaxed);
        let state = AppState {
            store: Arc::new(store),
            stats: stats.clone(),
            auth,
            version: "9.9.9-test",
            engine: None,
            drt: Default::default(),
            alerts: None,
            answers: Default::default(),
            routing: Default::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, state, shutdown.clone()));
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            shutdown,
            task,
            stats,
            _dir: dir,
        }
    }

    async fn open() -> Self {
        Self::start(Auth::new(ApiTokens::new([TOKEN.to_string()]), false)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        Self::read(response).await
    }

    async fn read(response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "every answer is JSON ({status})"
        );
        (status, response.json().await.unwrap())
    }

    async fn post_note(&self, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/api/v1/events", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        Self::read(request.json(&body).send().await.unwrap()).await
    }

    /// Cancels the server and checks it stops cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops within 10 s")
            .unwrap();
        result.expect("serve returns Ok on shutdown");
    }
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

fn error_of(v: &Value) -> &str {
    assert_eq!(keys(v), ["error"]);
    v["error"].as_str().unwrap()
}

#[tokio::test]
async fn healthz_and_status() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(keys(&body), ["leader", "status", "store", "version"]);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], "9.9.9-test");
    assert_eq!(body["store"]["ok"], true);
    assert_eq!(body["leader"], Value::Null, "no engine here");

    let (code, body) = s.get("/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(keys(&body), ["now_ms", "stats", "version"]);
    assert_eq!(body["version"], "9.9.9-test");
    assert_eq!(
        body["stats"],
        json!({
            "started_ms": T0, "rounds": 2, "last_round_ms": T1,
            "probes": 8, "probe_errors": 1, "instances": 4,
            "fast_paths": 0, "fast_path_rounds": 0, "refresh_rounds": 0, "sentinel_signals": 0,
            "sentinels_armed": 0, "rounds_dropped": 0,
            "observations_persisted": 0, "observations_persist_skipped": 0,
        })
    );
    assert!(body["now_ms"].as_u64().unwrap() > T1);
    s.stop().await;
}

#[tokio::test]
async fn cluster_list_and_detail() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/clusters").await;
    assert_eq!(code, StatusCode::OK);
    let clusters = body["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(
        clusters[0],
        json!({
            "name": "main",
            "primary": PRIMARY,
            "writer": PRIMARY,
            "instance_count": 4,
            "reachable_count": 3,
            "open_problem_count": 3,
            "worst_severity": "error",
        })
    );
    assert_eq!(
        clusters[1],
        json!({
            "name": "other", "primary": null, "writer": null, "instance_count": 0,
            "reachable_count": 0, "open_problem_count": 0, "worst_severity": null,
        })
    );

    let (code, body) = s.get("/api/v1/clusters/main").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        keys(&body),
        [
            "instance_count",
            "name",
            "open_problem_count",
            "primary",
            "reachable_count",
            "spec",
            "updated_ms",
            "worst_severity",
            "writer"
        ]
    );
    assert_eq!(body["primary"], PRIMARY);
    assert_eq!(body["updated_ms"], T0);
    assert_eq!(
        body["spec"],
        json!({
            "expected_replicas": 2,
            "semi_sync": false,
            "max_lag": "10s",
            "instances": [
                {"addr": PRIMARY, "promotion": "prefer"},
                {"addr": HEALTHY, "promotion": "neutral"},
                {"addr": BROKEN, "promotion": "must_not"},
            ],
        })
    );

    let (code, body) = s.get("/api/v1/clusters/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("\"nope\""));
    let (code, body) = s.get("/api/v1/clusters/nope/topology").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("\"nope\""));
    s.stop().await;
}

/// The watch loop writes an unchanged observation to the store only now and then; the API
/// serves the loop's own copy when it is newer, and never an older one.
#[tokio::test]
async fn api_prefers_the_watch_loops_newer_observations() {
    let s = TestServer::open().await;
    let mut obs = observations();
    for o in &mut obs {
        if o.addr == addr(HEALTHY) {
            o.at_unix_ms = T1 + 500;
            if let Reachability::Reachable(st) = &mut o.reachability {
                st.replication.as_mut().unwrap().seconds_behind_source = Some(7);
            }
        } else if o.addr == addr(PRIMARY) {
            // Older than the stored copy: ignored.
            o.at_unix_ms = T0;
            if let Reachability::Reachable(st) = &mut o.reachability {
                st.read_only = true;
            }
        }
        s.stats.latest.record(o.clone());
    }
    let (code, body) = s.get("/api/v1/clusters/main/topology").await;
    assert_eq!(code, StatusCode::OK);
    let node = |a: &str| {
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["addr"] == a)
            .unwrap()
            .clone()
    };
    assert_eq!(node(HEALTHY)["observed_at_ms"], T1 + 500);
    assert_eq!(node(HEALTHY)["seconds_behind_source"], 7);
    assert_eq!(node(PRIMARY)["observed_at_ms"], T1);
    assert_eq!(node(PRIMARY)["read_only"], false);
    let (_, list) = s.get("/api/v1/instances?cluster=main").await;
    let healthy = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["addr"] == HEALTHY)
        .unwrap()
        .clone();
    assert_eq!(healthy["observation"]["at_unix_ms"], T1 + 500, "{healthy}");
}

#[tokio::test]
async fn topology_is_a_depth_first_tree_then_orphans() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/clusters/main/topology").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["cluster"], "main");
    assert_eq!(body["primary"], PRIMARY);
    let nodes = body["nodes"].as_array().unwrap();
    let order: Vec<(&str, &str, u64, bool)> = nodes
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap(),
                n["role"].as_str().unwrap(),
                n["depth"].as_u64().unwrap(),
                n["orphan"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (PRIMARY, "primary", 0, false),
            (HEALTHY, "replica", 1, false),
            (BROKEN, "replica", 1, false),
            (GONE, "unreachable", 0, true),
        ]
    );
    assert_eq!(
        keys(&nodes[0]),
        [
            "addr",
            "depth",
            "failure",
            "flavor",
            "gtid",
            "io_thread",
            "last_io_errno",
            "last_io_error",
            "last_sql_errno",
            "last_sql_error",
            "observed_at_ms",
            "origin",
            "orphan",
            "reachable",
            "read_only",
            "role",
            "seconds_behind_source",
            "server_id",
            "source",
            "sql_delay_s",
            "sql_running",
            "version"
        ]
    );
    let primary = &nodes[0];
    assert_eq!(primary["read_only"], false);
    assert_eq!(primary["gtid"], "0-1-5");
    assert_eq!(primary["source"], Value::Null);
    assert_eq!(primary["io_thread"], Value::Null);
    assert_eq!(primary["server_id"], 1);
    assert_eq!(primary["origin"], "config");
    assert_eq!(primary["version"], "10.11.6-MariaDB-0+deb12u1-log");
    assert_eq!(primary["observed_at_ms"], T1);

    let healthy = &nodes[1];
    assert_eq!(healthy["source"], PRIMARY);
    assert_eq!(healthy["io_thread"], "yes");
    assert_eq!(healthy["sql_running"], true);
    assert_eq!(healthy["seconds_behind_source"], 0);
    assert_eq!(healthy["last_sql_error"], Value::Null);

    let broken = &nodes[2];
    assert_eq!(broken["sql_running"], false);
    assert_eq!(broken["seconds_behind_source"], Value::Null);
    assert_eq!(broken["last_sql_errno"], 1062);
    assert_eq!(broken["last_sql_error"], SQL_ERROR);
    assert_eq!(broken["gtid"], "0-1-4");
    assert_eq!(broken["sql_delay_s"], 0);

    let gone = &nodes[3];
    assert_eq!(gone["reachable"], false);
    assert_eq!(gone["origin"], "discovered");
    assert_eq!(
        gone["failure"],
        json!({"kind": "refused", "message": "connection refused"})
    );
    assert_eq!(gone["gtid"], Value::Null);
    s.stop().await;
}

#[tokio::test]
async fn instances_list_and_one() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/instances?cluster=main").await;
    assert_eq!(code, StatusCode::OK);
    let list = body["instances"].as_array().unwrap();
    let addrs: Vec<&str> = list.iter().map(|i| i["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, [PRIMARY, HEALTHY, BROKEN, GONE]);
    assert_eq!(
        keys(&list[0]),
        [
            "addr",
            "cluster",
            "first_seen_ms",
            "last_seen_ms",
            "observation",
            "origin"
        ]
    );
    assert_eq!(list[3]["origin"], "discovered");
    // The observation is model::Observation as serialized.
    let obs: Observation = serde_json::from_value(list[2]["observation"].clone()).unwrap();
    assert_eq!(obs, observations()[2]);
    assert_eq!(list[3]["observation"]["reachable"], "no");

    let (code, all) = s.get("/api/v1/instances").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(all, body, "cluster `other` has no instance");

    let (code, one) = s.get("/api/v1/instances/127.0.0.1:23308").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(one, list[2]);
    let (code, encoded) = s.get("/api/v1/instances/127.0.0.1%3A23308").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(encoded, one);

    let (code, body) = s.get("/api/v1/instances/127.0.0.1:3999").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("127.0.0.1:3999"));
    let (code, body) = s.get("/api/v1/instances/no-port").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("`addr`"));
    let (code, body) = s.get("/api/v1/instances?cluster=nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("\"nope\""));
    s.stop().await;
}

#[tokio::test]
async fn open_problems_and_history() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/problems?cluster=main").await;
    assert_eq!(code, StatusCode::OK);
    let problems = body["problems"].as_array().unwrap();
    let found: Vec<(&str, &str, &str)> = problems
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap(),
                p["instance"].as_str().unwrap_or("-"),
                p["severity"].as_str().unwrap(),
            )
        })
        .collect();
    let mut sorted = found.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            ("ReplicaMissing", "-", "warning"),
            ("ReplicaNotReplicating", BROKEN, "error"),
            ("UnreachableReplica", GONE, "warning"),
        ]
    );
    let broken = problems
        .iter()
        .find(|p| p["kind"] == "ReplicaNotReplicating")
        .unwrap();
    assert_eq!(
        keys(broken),
        [
            "cleared_ms",
            "cluster",
            "evidence",
            "first_seen_ms",
            "id",
            "instance",
            "key",
            "kind",
            "last_seen_ms",
            "severity",
            "summary"
        ]
    );
    assert_eq!(broken["cluster"], "main");
    assert_eq!(broken["key"], format!("ReplicaNotReplicating/{BROKEN}"));
    assert_eq!(broken["first_seen_ms"], T1);
    assert_eq!(broken["cleared_ms"], Value::Null);
    let evidence = broken["evidence"].as_array().unwrap();
    assert_eq!(keys(&evidence[0]), ["fact", "instance"]);
    assert_eq!(evidence[0]["instance"], BROKEN);
    assert!(evidence[0]["fact"].as_str().unwrap().contains("1062"));

    let (_, all) = s.get("/api/v1/problems").await;
    assert_eq!(all, body);

    let (code, body) = s.get("/api/v1/problems?history=true&limit=10").await;
    assert_eq!(code, StatusCode::OK);
    let history = body["problems"].as_array().unwrap();
    assert_eq!(history.len(), 4, "three open and one cleared");
    let cleared = history.last().unwrap();
    assert_eq!(cleared["kind"], "ReplicaLagging");
    assert_eq!(cleared["first_seen_ms"], T0);
    assert_eq!(cleared["cleared_ms"], T1);
    let (_, body) = s.get("/api/v1/problems?history=true&limit=1").await;
    assert_eq!(body["problems"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn events_ascending_with_filters() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/events").await;
    assert_eq!(code, StatusCode::OK);
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "daemon_started",
            "instance_discovered",
            "problem_opened",
            "problem_opened",
            "problem_opened",
            "problem_opened",
            "problem_cleared"
        ]
    );
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ascending ids: {ids:?}"
    );
    assert_eq!(
        keys(&events[1]),
        ["at_ms", "cluster", "data", "id", "instance", "kind", "level", "message"]
    );
    assert_eq!(events[1]["instance"], GONE);
    assert_eq!(events[1]["cluster"], "main");
    assert_eq!(events[1]["level"], "info");
    assert_eq!(events[1]["data"], Value::Null);
    assert_eq!(events[0]["cluster"], Value::Null);

    let (_, body) = s
        .get("/api/v1/events?cluster=main&kind=problem_cleared")
        .await;
    let only: Vec<&Value> = body["events"].as_array().unwrap().iter().collect();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["data"]["key"], format!("ReplicaLagging/{HEALTHY}"));

    let after = ids[4];
    let (_, body) = s
        .get(&format!("/api/v1/events?after_id={after}&limit=1"))
        .await;
    let page = body["events"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["id"], ids[5]);

    let (_, body) = s.get("/api/v1/events?limit=2").await;
    let newest: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(newest, ids[5..], "without after_id: the newest, ascending");

    let (_, body) = s
        .get("/api/v1/events?kind=daemon_started,instance_discovered")
        .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let s = TestServer::open().await;
    for (path, named) in [
        ("/api/v1/events?limit=ten", "`limit`"),
        ("/api/v1/events?limit=10001", "`limit`"),
        ("/api/v1/events?after_id=-3", "`after_id`"),
        ("/api/v1/events?cluster=", "`cluster`"),
        ("/api/v1/events?kind=a,,b", "`kind`"),
        ("/api/v1/events?colour=red", "`colour`"),
        ("/api/v1/problems?history=yes", "`history`"),
        ("/api/v1/problems?limit=5", "`limit`"),
        ("/api/v1/instances?cluster=a&cluster=b", "`cluster`"),
        ("/api/v1/clusters?verbose=1", "`verbose`"),
    ] {
        let (code, body) = s.get(path).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
        let error = error_of(&body);
        assert!(error.contains(named), "{path}: {error}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let s = TestServer::open().await;
    let (code, body) = s.get("/api/v1/nothing").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("/api/v1/nothing"));
    let (code, body) = s.get("/").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    error_of(&body);
    let response = s
        .http
        .delete(format!("{}/api/v1/clusters", s.base))
        .send()
        .await
        .unwrap();
    let (code, body) = TestServer::read(response).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(&body).contains("DELETE"));
    s.stop().await;
}

#[tokio::test]
async fn reads_need_a_token_only_when_configured() {
    let s = TestServer::start(Auth::new(ApiTokens::new([TOKEN.to_string()]), true)).await;
    let (code, _) = s.get("/healthz").await;
    assert_eq!(code, StatusCode::OK, "healthz never needs a token");

    let response = s
        .http
        .get(format!("{}/api/v1/clusters", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"dbfleet\""
    );
    let (code, body) = TestServer::read(response).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(error_of(&body).contains("Bearer"));

    let wrong = s
        .http
        .get(format!("{}/api/v1/clusters", s.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    let (code, body) = TestServer::read(wrong).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(!error_of(&body).contains("not-the-token"), "never echoed");

    let basic = s
        .http
        .get(format!("{}/api/v1/clusters", s.base))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    for path in [
        "/api/v1/status",
        "/api/v1/clusters",
        "/api/v1/clusters/main",
        "/api/v1/clusters/main/topology",
        "/api/v1/instances",
        "/api/v1/instances/127.0.0.1:23306",
        "/api/v1/problems",
        "/api/v1/events",
    ] {
        let ok = s
            .http
            .get(format!("{}{path}", s.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{path}");
        let no = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(no.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    s.stop().await;

    let open = TestServer::open().await;
    let (code, _) = open.get("/api/v1/clusters").await;
    assert_eq!(code, StatusCode::OK, "reads need no token by default");
    open.stop().await;
}

#[tokio::test]
async fn operator_notes_need_a_token() {
    let s = TestServer::open().await;
    let note = json!({"message": "switching main over for kernel upgrades", "cluster": "main"});

    let (code, body) = s.post_note(note.clone(), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    error_of(&body);
    let (code, body) = s.post_note(note.clone(), Some("wrong")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body), "the API token is not accepted");

    let (code, body) = s.post_note(note.clone(), Some(TOKEN)).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body["kind"], "operator_note");
    assert_eq!(body["level"], "info");
    assert_eq!(body["cluster"], "main");
    assert_eq!(body["message"], "switching main over for kernel upgrades");
    let id = body["id"].as_i64().unwrap();

    let (_, listed) = s.get("/api/v1/events?kind=operator_note").await;
    let listed = listed["events"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);

    let (code, body) = s
        .post_note(json!({"message": "no cluster"}), Some(TOKEN))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body["cluster"], Value::Null);

    for (bad, named) in [
        (json!({"message": "  "}), "`message`"),
        (json!({"cluster": "main"}), "message"),
        (json!({"message": "x", "extra": 1}), "extra"),
        (json!("just a string"), "body"),
    ] {
        let (code, body) = s.post_note(bad.clone(), Some(TOKEN)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
        assert!(error_of(&body).contains(named), "{bad}: {body}");
    }
    let (code, body) = s
        .post_note(json!({"message": "x", "cluster": "nope"}), Some(TOKEN))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("\"nope\""));
    s.stop().await;
}

#[tokio::test]
async fn without_tokens_mutating_calls_are_refused() {
    let s = TestServer::start(Auth::default()).await;
    let (code, body) = s
        .post_note(json!({"message": "hello"}), Some("anything"))
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(error_of(&body).contains("api.tokens_file"));
    let (code, _) = s.post_note(json!({"message": "hello"}), None).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (_, events) = s.get("/api/v1/events?kind=operator_note").await;
    assert_eq!(events["events"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_with_a_kept_alive_connection_open() {
    let s = TestServer::open().await;
    // A pooled keep-alive connection stays open after this call.
    let (code, _) = s.get("/api/v1/clusters").await;
    assert_eq!(code, StatusCode::OK);
    let base = s.base.clone();
    s.stop().await;
    let after = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(after.is_err(), "nothing listens after shutdown");
}
