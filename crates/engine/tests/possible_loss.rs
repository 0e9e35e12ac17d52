//! The primary and its most advanced replica lost together, against real MariaDB
//! sandboxes, with the engine sharing a stream tracker as the daemon's monitor does
//! (`Engine::with_streams`): a failover judges the dead replica by the last probe anyone
//! took of it, pages with the possibly lost GTIDs instead of promoting a survivor whose
//! stream was cut before the primary died, and once the dead replica is back, fails over to
//! it losing nothing when its last observation bounds what it may hold, and pages again
//! when it does not. Ports 25700..25720.

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{FailoverConfig, FailoverMode};
use engine::{ClusterSetup, Engine, EngineError, EngineOptions};
use model::{
    ClusterRound, ClusterSpec, InstanceAddr, InstanceSpec, IoThreadState, PromotionRule,
    SharedStreams,
};
use probe::{Credentials, ProbeOptions, Session};
use sandbox::testing::SandboxGuard;
use sandbox::{Sandbox, UpOptions};
use store::{OperationState, SqliteStore, Store};

struct Env {
    sb: Sandbox,
    _store: Arc<SqliteStore>,
    engine: Arc<Engine>,
    /// The tracker the engine shares; the test notes its own probes in it, as the
    /// monitor's probe tasks do.
    streams: Arc<SharedStreams>,
    admin: Credentials,
    cluster: String,
    _guard: SandboxGuard,
    _dir: tempfile::TempDir,
}

fn opts() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(5),
    }
}

async fn env(name: &str, base_port: u16) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let guard = SandboxGuard::new(dir.path(), name);
    let (sb, _) = Sandbox::up(&UpOptions {
        name: name.into(),
        replicas: 2,
        semi_sync: true,
        base_port,
        root: dir.path().to_path_buf(),
        tuning: Default::default(),
    })
    .await
    .expect("sandbox up");
    let creds = sb.credentials().unwrap();
    let spec = ClusterSpec {
        name: name.into(),
        instances: sb
            .manifest()
            .members
            .iter()
            .map(|m| InstanceSpec {
                addr: m.addr(),
                promotion: PromotionRule::Neutral,
                site: None,
            })
            .collect(),
        expected_replicas: 2,
        semi_sync: true,
        max_lag: Duration::from_secs(10),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    };
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_cluster(&spec, 1).await.unwrap();
    store
        .set_writer(name, Some(sb.initial_primary().addr()), 1)
        .await
        .unwrap();
    let streams = Arc::new(SharedStreams::default());
    let engine = Engine::with_streams(
        store.clone(),
        EngineOptions {
            node_id: "test-node".into(),
            lease_ttl: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(20),
            probe: opts(),
        },
        vec![ClusterSetup {
            haproxy: None,
            spec,
            admin: creds.admin.credentials(),
            repl: Some(creds.repl.credentials()),
            // The default policy: on_possible_loss = "page".
            failover: FailoverConfig {
                mode: FailoverMode::Auto,
                block_window: Duration::from_secs(600),
                ..Default::default()
            },
        }],
        streams.clone(),
    );
    assert!(engine.campaign_once().await, "a lone node leads");
    let e = Env {
        admin: creds.admin.credentials(),
        cluster: name.into(),
        sb,
        _store: store,
        engine,
        streams,
        _guard: guard,
        _dir: dir,
    };
    e.write("m1", "CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    e
}

impl Env {
    fn addr(&self, m: &str) -> InstanceAddr {
        self.sb.member(m).unwrap().addr()
    }

    async fn session(&self, m: &str) -> Session {
        Session::connect(&self.addr(m), &self.admin, opts())
            .await
            .unwrap()
    }

    async fn write(&self, m: &str, sql: &str) {
        self.session(m).await.exec("write", sql).await.unwrap();
    }

    async fn insert(&self, from: u32, to: u32) {
        for i in from..=to {
            self.write("m1", &format!("INSERT INTO app.t VALUES ({i})"))
                .await;
        }
    }

    async fn count(&self, m: &str) -> i64 {
        let rows = self
            .session(m)
            .await
            .query_rows("count", "SELECT COUNT(*) AS n FROM app.t")
            .await
            .unwrap();
        rows[0]["n"].clone().unwrap().parse().unwrap()
    }

    async fn wait_rows(&self, m: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count(m).await < n {
            assert!(Instant::now() < deadline, "{m} never reached {n} rows");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One monitor round: every member probed, noted in the shared tracker, handed to the
    /// engine.
    async fn round(&self) {
        let mut obs = Vec::new();
        for m in &self.sb.manifest().members {
            obs.push(probe::observe(&m.addr(), &self.admin, opts()).await);
        }
        self.streams.note_all(&mut obs);
        self.engine
            .on_round(&ClusterRound {
                cluster: self.cluster.clone(),
                primary: Some(self.addr("m1")),
                observations: obs.clone(),
                at_ms: engine::now_ms(),
                ..Default::default()
            })
            .await;
    }

    /// One probe of `m` by a monitor probe task: noted in the shared tracker, in no round.
    async fn probe(&self, m: &str) -> model::Observation {
        let mut o = probe::observe(&self.addr(m), &self.admin, opts()).await;
        self.streams.note(&mut o);
        o
    }

    /// Wait until `m`'s IO thread no longer says `Yes` (it lost the dead primary).
    async fn wait_io_lost(&self, m: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = self.probe(m).await;
            let r = o.state().and_then(|s| s.replication.clone()).unwrap();
            if r.io_thread != IoThreadState::Yes {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{m} never noticed its source was gone"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn read_only(&self, m: &str) -> bool {
        let o = probe::observe(&self.addr(m), &self.admin, opts()).await;
        o.state().expect("reachable").read_only
    }

    fn member_of(&self, addr: &InstanceAddr) -> &'static str {
        ["m1", "m2", "m3"]
            .into_iter()
            .find(|m| self.addr(m) == *addr)
            .unwrap()
    }
}

fn ended(r: Result<store::OperationRecord, EngineError>) -> store::OperationRecord {
    match r {
        Ok(rec) => rec,
        Err(EngineError::Ended { record, .. }) => *record,
        Err(e) => panic!("failover did not run: {e}"),
    }
}

fn candidate(rec: &store::OperationRecord) -> InstanceAddr {
    rec.data["candidate"].as_str().unwrap().parse().unwrap()
}

/// The human's part: bring the dead replica back and fail over again; it must be the
/// candidate and nothing acknowledged is lost.
async fn bring_back_and_fail_over(e: &Env, dead: &str, rows: i64) {
    e.sb.start(dead).await.unwrap();
    let rec = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(rec.state, OperationState::Succeeded, "{:?}", rec.error);
    let new = e.member_of(&candidate(&rec));
    assert_eq!(new, dead, "the replica that held the most is promoted");
    assert_eq!(e.count(new).await, rows, "nothing lost");
    assert!(!e.read_only(new).await);
}

#[tokio::test]
async fn a_replica_lost_with_the_primary_is_judged_by_its_last_probe_not_its_last_round() {
    let e = env("pl-probe", 25700).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    // The last round sees everyone level.
    e.round().await;
    // m3's stream stalls; m2 alone acknowledges 11..15. A probe task sees m2 ahead, and
    // the next round is never analysed with it: the primary and m2 die first.
    e.write("m3", "STOP SLAVE IO_THREAD").await;
    e.insert(11, 15).await;
    e.wait_rows("m2", 15).await;
    assert!(e.probe("m2").await.state().is_some());
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    e.write("m3", "START SLAVE IO_THREAD").await;
    e.wait_io_lost("m3").await;
    let rec = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(
        rec.state,
        OperationState::NeedsHuman,
        "m3 lacks 11..15, which only m2 held: {rec:?}"
    );
    let msg = rec.error.clone().unwrap_or_default();
    assert!(
        msg.contains("(5 transaction(s)) on") && msg.contains(&e.addr("m2").to_string()),
        "the page names the possibly lost GTIDs and their holder: {msg}"
    );
    assert!(e.read_only("m3").await, "nothing promoted");
    bring_back_and_fail_over(&e, "m2", 15).await;
}

#[tokio::test]
async fn a_survivor_whose_stream_was_cut_before_the_primary_died_is_not_promoted() {
    let e = env("pl-cut", 25710).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    // m3's connection to m1 drops every packet (a host losing power mid-send): its IO
    // thread keeps saying Yes. m2 alone acknowledges 11..15, and no probe sees it: the
    // last observation of m2 shows it level with m3.
    let cut = drt::faults::stall_replication_stream(&e.sb, "m3")
        .await
        .expect("stall m3's stream (iptables)");
    let since = Instant::now();
    e.probe("m3").await;
    e.insert(11, 15).await;
    e.wait_rows("m2", 15).await;
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    // The monitor watches m3's silent stream until it confirms the death (stall_confirm
    // plus one heartbeat period), well within slave_net_timeout.
    let confirm = model::DEFAULT_STALL_CONFIRM + sandbox::HEARTBEAT_PERIOD;
    while since.elapsed() < confirm + Duration::from_millis(300) {
        let o = e.probe("m3").await;
        let r = o.state().and_then(|s| s.replication.clone()).unwrap();
        assert_eq!(
            r.io_thread,
            IoThreadState::Yes,
            "m3 still thinks it receives"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rec = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(
        rec.state,
        OperationState::NeedsHuman,
        "m3's stream was cut before m1 died, m2 may hold acknowledged writes: {rec:?}"
    );
    let msg = rec.error.clone().unwrap_or_default();
    assert!(
        msg.contains(&e.addr("m2").to_string()) && msg.contains("maybe more"),
        "the page names everything after m3's position as possibly lost on m2: {msg}"
    );
    let cuts = rec.data["streams_cut"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(cuts.len(), 1, "{:?}", rec.data["streams_cut"]);
    assert!(e.read_only("m3").await, "nothing promoted");

    // The IO threads reconnect (the evidence is gone), m2 is still down: a second failover
    // still refuses, by the first one's record.
    cut.heal().await.unwrap();
    e.wait_io_lost("m3").await;
    let again = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(again.state, OperationState::NeedsHuman, "{again:?}");
    assert!(
        again
            .error
            .clone()
            .unwrap_or_default()
            .contains(&format!("named by failover {}", rec.id)),
        "{:?}",
        again.error
    );
    assert!(e.read_only("m3").await, "nothing promoted");
    // m2 comes back. It may have acknowledged writes after its last probe that it had
    // not applied, and a restarted replica discards its relay log: no one can say they are
    // on it. Still no promotion; the page says why. (The dead primary's binlog holds them.)
    e.sb.start("m2").await.unwrap();
    let back = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(back.state, OperationState::NeedsHuman, "{back:?}");
    let msg = back.error.clone().unwrap_or_default();
    assert!(msg.contains("answers again but holds up to"), "{msg}");
    assert!(
        e.read_only("m2").await && e.read_only("m3").await,
        "nothing promoted"
    );
}

/// Wait for the next operation this node finishes.
async fn next_finished(
    rx: &mut tokio::sync::broadcast::Receiver<store::OperationRecord>,
) -> store::OperationRecord {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an operation finished in time")
        .expect("the channel is open")
}

/// Policy `auto`: the automatic failover pages with the possible loss; the rounds go on
/// naming the primary dead, and nothing is tried again until the replica that holds the
/// loss answers. Then the failover is retried on its own and promotes it, losing nothing.
#[tokio::test]
async fn an_automatic_failover_paged_for_a_possible_loss_is_retried_when_its_holder_returns() {
    let e = env("pl-auto", 25720).await;
    let mut finished = e.engine.finished_operations();
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    e.write("m3", "STOP SLAVE IO_THREAD").await;
    e.insert(11, 15).await;
    e.wait_rows("m2", 15).await;
    e.probe("m2").await;
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    e.write("m3", "START SLAVE IO_THREAD").await;
    e.wait_io_lost("m3").await;
    let dead_round = |e: &Env| {
        let e_addr = e.addr("m1");
        let problem = model::Problem {
            kind: model::ProblemKind::DeadPrimary,
            cluster: e.cluster.clone(),
            instance: Some(e_addr.clone()),
            severity: model::Severity::Critical,
            summary: "dead".into(),
            evidence: vec![],
        };
        (e_addr, problem)
    };
    let observe_all = |e: &Env| {
        let members: Vec<InstanceAddr> = e.sb.manifest().members.iter().map(|m| m.addr()).collect();
        let admin = e.admin.clone();
        async move {
            let mut obs = Vec::new();
            for a in &members {
                obs.push(probe::observe(a, &admin, opts()).await);
            }
            obs
        }
    };
    let (m1, problem) = dead_round(&e);
    let obs = observe_all(&e).await;
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            primary: Some(m1.clone()),
            problems: vec![problem.clone()],
            observations: obs.clone(),
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    let first = next_finished(&mut finished).await;
    assert_eq!(first.state, OperationState::NeedsHuman, "{first:?}");
    // Rounds while m2 is down: no second attempt.
    for _ in 0..3 {
        let obs = observe_all(&e).await;
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                primary: Some(m1.clone()),
                problems: vec![problem.clone()],
                observations: obs.clone(),
                at_ms: engine::now_ms(),
                ..Default::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), finished.recv())
            .await
            .is_err(),
        "no retry while the holder is down"
    );
    assert!(e.read_only("m3").await, "nothing promoted");
    // The human starts m2 again: the next round retries, and m2 is promoted.
    e.sb.start("m2").await.unwrap();
    let obs = observe_all(&e).await;
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            primary: Some(m1.clone()),
            problems: vec![problem],
            observations: obs.clone(),
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    let second = next_finished(&mut finished).await;
    assert_eq!(
        second.state,
        OperationState::Succeeded,
        "{:?}",
        second.error
    );
    assert_eq!(e.member_of(&candidate(&second)), "m2");
    assert_eq!(e.count("m2").await, 15, "nothing lost");
}
