//! A replica of the primary that dies with it, holding acknowledged transactions in its
//! relay log that it had not applied, against real MariaDB sandboxes: the failover pages
//! (the survivor lacks them), and once a human starts the replica again as docs/HA.md says
//! (`skip_slave_start`), the retried failover applies its relay log with the SQL thread
//! alone and promotes it, losing nothing. Ports 27100..27120.

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

/// Promote nothing, then, once `m2` (which holds 11..15 in its relay log only) is back as
/// recommended, fail over to it: 15 rows.
async fn page_then_salvage(e: &Env, first: &store::OperationRecord) {
    assert_eq!(
        first.state,
        OperationState::NeedsHuman,
        "m3 lacks 11..15, which only m2 received: {first:?}"
    );
    assert!(e.read_only("m3").await, "nothing promoted");
    // The human starts m2 with skip_slave_start; its source is dead, so replication stays
    // stopped and its relay log is kept.
    let resumed =
        e.sb.start_replica_as_recommended("m2")
            .await
            .expect("start m2")
            .expect("m2 was down");
    assert!(resumed.is_err(), "m1 is dead: {resumed:?}");
    assert_eq!(e.count("m2").await, 10, "m2 had applied 1..10 only");
    let rec = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(rec.state, OperationState::Succeeded, "{:?}", rec.error);
    assert_eq!(
        e.member_of(&candidate(&rec)),
        "m2",
        "{:?}",
        rec.data["choice"]
    );
    assert_eq!(e.count("m2").await, 15, "nothing lost");
    assert!(!e.read_only("m2").await);
    let salvaged = rec.data["salvaged"].as_array().cloned().unwrap_or_default();
    assert_eq!(salvaged.len(), 1, "{salvaged:?}");
    assert_eq!(salvaged[0]["transactions"], 5, "{salvaged:?}");
    assert_eq!(salvaged[0]["kept"], true, "{salvaged:?}");
    // m3 replicates from m2 and gets 11..15 too.
    e.wait_rows("m3", 15).await;
}

#[tokio::test]
async fn a_returned_replica_applies_its_relay_log_and_is_promoted() {
    let e = env("rs-bounded", 27100).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    // m3 receives nothing more; m2 receives (and acknowledges) 11..15 but does not apply
    // them. A probe sees m2 with them received.
    e.write("m3", "STOP SLAVE IO_THREAD").await;
    e.write("m2", "STOP SLAVE SQL_THREAD").await;
    e.insert(11, 15).await;
    assert!(e.probe("m2").await.state().is_some());
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    e.write("m3", "START SLAVE IO_THREAD").await;
    e.wait_io_lost("m3").await;
    let first = ended(e.engine.failover(&e.cluster).await);
    page_then_salvage(&e, &first).await;
}

#[tokio::test]
async fn a_returned_replica_covers_an_open_ended_loss_once_its_relay_log_is_applied() {
    let e = env("rs-open", 27110).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    // m3's stream drops every packet (no probe sees m2 after this): m2 alone receives and
    // acknowledges 11..15, and does not apply them. The page is open-ended ("maybe more").
    e.write("m2", "STOP SLAVE SQL_THREAD").await;
    let cut = drt::faults::stall_replication_stream(&e.sb, "m3")
        .await
        .expect("stall m3's stream (iptables)");
    let since = Instant::now();
    e.probe("m3").await;
    e.insert(11, 15).await;
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    let confirm = model::DEFAULT_STALL_CONFIRM + sandbox::HEARTBEAT_PERIOD;
    while since.elapsed() < confirm + Duration::from_millis(300) {
        e.probe("m3").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = ended(e.engine.failover(&e.cluster).await);
    let msg = first.error.clone().unwrap_or_default();
    assert!(
        msg.contains("maybe more"),
        "an open-ended loss on m2: {msg}"
    );
    cut.heal().await.unwrap();
    e.wait_io_lost("m3").await;
    page_then_salvage(&e, &first).await;
}

/// A live replica whose SQL thread was stopped holds 11..15 in its relay log only, and the
/// primary dies: the failover's catch-up starts its SQL thread without deleting that relay
/// log (a plain `START SLAVE SQL_THREAD` with the IO thread stopped would, in GTID mode),
/// and promotes it with nothing lost.
#[tokio::test]
async fn a_candidate_with_a_stopped_sql_thread_keeps_its_relay_log() {
    let e = env("rs-sql", 27120).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    e.write("m3", "STOP SLAVE IO_THREAD").await;
    e.write("m2", "STOP SLAVE SQL_THREAD").await;
    e.insert(11, 15).await;
    e.sb.kill("m1").unwrap();
    e.write("m3", "START SLAVE IO_THREAD").await;
    e.wait_io_lost("m2").await;
    e.wait_io_lost("m3").await;
    assert_eq!(e.count("m2").await, 10, "m2 had applied 1..10 only");
    let rec = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(rec.state, OperationState::Succeeded, "{:?}", rec.error);
    assert_eq!(
        e.member_of(&candidate(&rec)),
        "m2",
        "{:?}",
        rec.data["choice"]
    );
    assert_eq!(e.count("m2").await, 15, "nothing lost");
    e.wait_rows("m3", 15).await;
}

/// The relay log of the returned replica ends in a torn event (its last transaction's
/// commit event cut short, as a power loss could leave it): the salvage applies the
/// complete transactions before it, and the failover, still missing the last one the
/// replica was named with, pages again instead of promoting.
#[tokio::test]
async fn a_torn_relay_log_is_applied_up_to_its_last_complete_transaction() {
    let e = env("rs-torn", 27130).await;
    e.insert(1, 10).await;
    e.wait_rows("m2", 10).await;
    e.wait_rows("m3", 10).await;
    e.round().await;
    e.write("m3", "STOP SLAVE IO_THREAD").await;
    e.write("m2", "STOP SLAVE SQL_THREAD").await;
    e.insert(11, 15).await;
    assert!(e.probe("m2").await.state().is_some());
    e.sb.kill("m2").unwrap();
    e.sb.kill("m1").unwrap();
    // Cut the last 10 bytes of m2's newest relay log: its last Xid event is torn.
    let data = e.sb.member("m2").unwrap().datadir(e.sb.dir());
    let newest = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("relay.0"))
        })
        .max()
        .expect("a relay log");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    e.write("m3", "START SLAVE IO_THREAD").await;
    e.wait_io_lost("m3").await;
    let first = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(first.state, OperationState::NeedsHuman, "{first:?}");
    e.sb.start_replica_as_recommended("m2")
        .await
        .expect("start m2")
        .expect("m2 was down")
        .expect_err("m1 is dead");
    let again = ended(e.engine.failover(&e.cluster).await);
    assert_eq!(again.state, OperationState::NeedsHuman, "{again:?}");
    let salvaged = again.data["salvaged"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(salvaged.len(), 1, "{salvaged:?}");
    assert_eq!(salvaged[0]["transactions"], 4, "{salvaged:?}");
    assert_eq!(salvaged[0]["torn"], true, "{salvaged:?}");
    assert_eq!(e.count("m2").await, 14, "11..14 applied from the relay log");
    let msg = again.error.clone().unwrap_or_default();
    assert!(msg.contains("answers again but holds up to"), "{msg}");
    assert!(
        e.read_only("m2").await && e.read_only("m3").await,
        "nothing promoted"
    );
}
