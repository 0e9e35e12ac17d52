//! The engine's operations against real MariaDB sandboxes: failover, errant candidates,
//! switchover and its rollback, rejoin (by hand and by policy), anti-flapping, shutdown
//! with an operation running. Ports 31500..31600 and 28300.

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{FailoverConfig, FailoverMode, RejoinMode};
use engine::{ClusterSetup, Engine, EngineError, EngineOptions};
use model::{ClusterRound, ClusterSpec, InstanceAddr, InstanceSpec, IoThreadState, PromotionRule};
use probe::{Credentials, ProbeOptions, Session};
use sandbox::testing::SandboxGuard;
use sandbox::{Sandbox, UpOptions};
use store::{OperationQuery, OperationState, Settings, SqliteStore, Store};

struct Env {
    sb: Sandbox,
    store: Arc<SqliteStore>,
    engine: Arc<Engine>,
    admin: Credentials,
    cluster: String,
    _guard: SandboxGuard,
    _dir: tempfile::TempDir,
}

/// Failpoints are process-wide: a test that sets one holds this for as long, and a test
/// whose operation would hit it holds it around that operation.
static FAILPOINTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn opts() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(5),
    }
}

async fn env(name: &str, base_port: u16, semi_sync: bool, rules: &[PromotionRule]) -> Env {
    env_mode(name, base_port, semi_sync, rules, FailoverMode::Auto).await
}

async fn env_mode(
    name: &str,
    base_port: u16,
    semi_sync: bool,
    rules: &[PromotionRule],
    mode: FailoverMode,
) -> Env {
    let failover = FailoverConfig {
        mode,
        block_window: Duration::from_secs(600),
        ..Default::default()
    };
    env_failover(name, base_port, semi_sync, rules, failover).await
}

async fn env_failover(
    name: &str,
    base_port: u16,
    semi_sync: bool,
    rules: &[PromotionRule],
    failover: FailoverConfig,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let guard = SandboxGuard::new(dir.path(), name);
    let (sb, _) = Sandbox::up(&UpOptions {
        name: name.into(),
        replicas: 2,
        semi_sync,
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
            .enumerate()
            .map(|(i, m)| InstanceSpec {
                addr: m.addr(),
                promotion: rules.get(i).copied().unwrap_or(PromotionRule::Neutral),
                site: None,
            })
            .collect(),
        expected_replicas: 2,
        semi_sync,
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
    let engine = Engine::new(
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
            failover,
        }],
    );
    assert!(engine.campaign_once().await, "a lone node leads");
    Env {
        admin: creds.admin.credentials(),
        cluster: name.into(),
        sb,
        store,
        engine,
        _guard: guard,
        _dir: dir,
    }
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

    /// Record a round of observations, as the monitor would.
    async fn observe_into_store(&self) {
        let mut batch = Vec::new();
        for m in &self.sb.manifest().members {
            batch.push((
                self.cluster.clone(),
                probe::observe(&m.addr(), &self.admin, opts()).await,
            ));
        }
        self.store.save_observations(&batch).await.unwrap();
    }

    /// Kill a member and wait until every running replica has noticed.
    async fn kill_and_wait(&self, m: &str) {
        self.sb.kill(m).unwrap();
        let dead = self.addr(m);
        let deadline = Instant::now() + Duration::from_secs(10);
        for other in self.sb.manifest().members.iter().filter(|x| x.name != m) {
            loop {
                let o = probe::observe(&other.addr(), &self.admin, opts()).await;
                let lost = o
                    .state()
                    .and_then(|s| s.replication.as_ref())
                    .is_none_or(|r| r.source != dead || r.io_thread != IoThreadState::Yes);
                if lost {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never noticed {m} died",
                    other.name
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Create `app.t` with one row on m1, record a round, kill m1 and fail over by hand.
    /// Returns the promoted member and the other replica.
    async fn fail_over_m1(&self) -> (&'static str, &'static str) {
        self.write(
            "m1",
            "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.observe_into_store().await;
        self.kill_and_wait("m1").await;
        let rec = self.engine.failover(&self.cluster).await.expect("failover");
        assert_eq!(rec.state, OperationState::Succeeded);
        let cand: InstanceAddr = rec.data["candidate"].as_str().unwrap().parse().unwrap();
        if cand == self.addr("m2") {
            ("m2", "m3")
        } else {
            ("m3", "m2")
        }
    }

    /// The `DeadPrimary` problem a monitor round would carry for `addr`.
    fn dead_primary(&self, addr: &InstanceAddr) -> model::Problem {
        model::Problem {
            kind: model::ProblemKind::DeadPrimary,
            cluster: self.cluster.clone(),
            instance: Some(addr.clone()),
            severity: model::Severity::Critical,
            summary: "dead".into(),
            evidence: vec![],
        }
    }

    async fn write(&self, m: &str, sql: &str) {
        self.session(m).await.exec("write", sql).await.unwrap();
    }

    async fn read_only(&self, m: &str) -> bool {
        let o = probe::observe(&self.addr(m), &self.admin, opts()).await;
        o.state().expect("reachable").read_only
    }

    /// Wait until `m` answers read-only, and its fence guard has ended.
    async fn wait_read_only(&self, m: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = probe::observe(&self.addr(m), &self.admin, opts()).await;
            if o.state().is_some_and(|s| s.read_only) && self.engine.fence_guards().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{m} was not fenced on return");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn source_of(&self, m: &str) -> Option<(InstanceAddr, IoThreadState, bool)> {
        let o = probe::observe(&self.addr(m), &self.admin, opts()).await;
        o.state()
            .expect("reachable")
            .replication
            .as_ref()
            .map(|r| (r.source.clone(), r.io_thread, r.sql_running))
    }

    async fn count(&self, m: &str, table: &str) -> i64 {
        let rows = self
            .session(m)
            .await
            .query_rows("count", &format!("SELECT COUNT(*) AS n FROM {table}"))
            .await
            .unwrap();
        rows[0]["n"].clone().unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn failover_promotes_a_replica_repoints_the_other_and_fences_the_old_primary() {
    let e = env("fo-basic", 31500, true, &[]).await;
    e.write(
        "m1",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2), (3)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.observe_into_store().await;
    e.kill_and_wait("m1").await;

    let rec = e.engine.failover(&e.cluster).await.expect("failover");
    assert_eq!(rec.state, OperationState::Succeeded);
    let cand: InstanceAddr = rec.data["candidate"].as_str().unwrap().parse().unwrap();
    let (new, other) = if cand == e.addr("m2") {
        ("m2", "m3")
    } else {
        ("m3", "m2")
    };
    assert_eq!(cand, e.addr(new));
    assert!(!e.read_only(new).await, "the new primary is writable");
    assert_eq!(
        e.source_of(new).await,
        None,
        "the new primary replicates from nobody"
    );
    let src = e.source_of(other).await.expect("the other is a replica");
    assert_eq!(src.0, cand, "the other replica is repointed");
    assert!(
        src.1 == IoThreadState::Yes && src.2,
        "and replicates: {src:?}"
    );
    e.write(new, "INSERT INTO app.t VALUES (4)").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.count(other, "app.t").await,
        4,
        "writes on the new primary replicate"
    );

    let cluster = e.store.cluster(&e.cluster).await.unwrap().unwrap();
    assert_eq!(
        cluster.writer,
        Some(cand.clone()),
        "the writer endpoint moved"
    );
    let fenced = e.store.fenced(&e.cluster).await.unwrap();
    assert_eq!(
        fenced.len(),
        1,
        "the old primary is marked fenced: {fenced:?}"
    );
    assert_eq!(fenced[0].0, e.addr("m1"));

    // Every step is in the audit log with positions.
    let steps = e
        .store
        .events(&store::EventQuery {
            kinds: vec![store::kinds::OPERATION_STEP.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<String> = steps
        .iter()
        .map(|s| s.data["step"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in [
        "confirm",
        "stop_io",
        "apply_relay",
        "choose",
        "promote",
        "repoint",
        "open_writes",
        "verify_replicas",
        "fence_old",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "step {want} audited: {names:?}"
        );
    }
    let promote = steps.iter().find(|s| s.data["step"] == "promote").unwrap();
    assert!(promote.data["gtid_before"]
        .as_object()
        .is_some_and(|m| !m.is_empty()));

    // The old primary comes back writable (its command line says primary): its fence
    // guard, running since the failover, fences it the moment it answers.
    assert_eq!(
        e.engine.fence_guards(),
        vec![(e.cluster.clone(), e.addr("m1"))],
        "the unreachable old primary is guarded"
    );
    e.sb.start_as_configured("m1").await.unwrap();
    e.wait_read_only("m1").await;
    let obs = vec![probe::observe(&e.addr("m1"), &e.admin, opts()).await];
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            observations: obs.clone(),
            ..Default::default()
        })
        .await;
    assert!(
        e.read_only("m1").await,
        "the returning fenced primary was set read-only"
    );
    // It has no errant GTIDs, so it may rejoin.
    let failpoints = FAILPOINTS.lock().await;
    let rj = e
        .engine
        .rejoin(&e.cluster, &e.addr("m1"))
        .await
        .expect("rejoin");
    drop(failpoints);
    assert_eq!(rj.state, OperationState::Succeeded);
    let src = e.source_of("m1").await.unwrap();
    assert_eq!(src.0, cand);
    assert!(e.store.fenced(&e.cluster).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.count("m1", "app.t").await,
        4,
        "the rejoined primary caught up"
    );
}

#[tokio::test]
async fn an_errant_replica_is_passed_over_and_refused_when_alone() {
    let e = env("fo-errant", 31510, false, &[]).await;
    e.write(
        "m1",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A root write on m2 makes an errant GTID: m2 is "most advanced" in domain 0.
    e.write("m2", "INSERT INTO app.t VALUES (100)").await;
    e.observe_into_store().await;
    e.kill_and_wait("m1").await;
    let rec = e.engine.failover(&e.cluster).await.expect("failover");
    assert_eq!(
        rec.data["candidate"].as_str().unwrap(),
        e.addr("m3").to_string(),
        "m2 is errant"
    );
    let passed = rec.data["choice"]["passed_over"].to_string();
    assert!(passed.contains("errant"), "{passed}");
    assert!(!e.read_only("m3").await);

    // Alone with the errant one (m3 must_not): the failover refuses and pages.
    let e = env(
        "fo-errant2",
        31520,
        false,
        &[
            PromotionRule::Neutral,
            PromotionRule::Neutral,
            PromotionRule::MustNot,
        ],
    )
    .await;
    e.write(
        "m1",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.write("m2", "INSERT INTO app.t VALUES (100)").await;
    e.observe_into_store().await;
    e.kill_and_wait("m1").await;
    match e.engine.failover(&e.cluster).await {
        Err(EngineError::Ended { state, message, .. }) => {
            assert_eq!(state, OperationState::NeedsHuman);
            assert!(message.contains("no safe candidate"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        e.read_only("m2").await && e.read_only("m3").await,
        "nobody was promoted"
    );
    let critical = e
        .store
        .events(&store::EventQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.level == store::EventLevel::Critical)
        .count();
    assert!(critical >= 1, "the refusal is a page-worthy event");
}

#[tokio::test]
async fn a_live_primary_is_not_failed_over_and_switchover_moves_it() {
    let e = env("so-basic", 31530, true, &[]).await;
    match e.engine.failover(&e.cluster).await {
        Err(EngineError::Refused(m)) => assert!(m.contains("switchover"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    e.write(
        "m1",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await;
    let rec = e
        .engine
        .switchover(&e.cluster, Some(e.addr("m3")))
        .await
        .expect("switchover");
    let block = rec.data["write_block_ms"].as_u64().unwrap();
    eprintln!("switchover write block: {block} ms");
    assert!(!e.read_only("m3").await);
    assert!(e.read_only("m1").await);
    assert_eq!(
        e.source_of("m1").await.unwrap().0,
        e.addr("m3"),
        "the old primary replicates"
    );
    assert_eq!(e.source_of("m2").await.unwrap().0, e.addr("m3"));
    e.write("m3", "INSERT INTO app.t VALUES (2)").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.count("m1", "app.t").await, 2);
    assert_eq!(e.count("m2", "app.t").await, 2);
    assert_eq!(
        e.store.cluster(&e.cluster).await.unwrap().unwrap().writer,
        Some(e.addr("m3"))
    );
}

#[tokio::test]
async fn a_switchover_that_fails_before_promotion_rolls_back() {
    let e = env("so-rollback", 31540, false, &[]).await;
    let _failpoints = FAILPOINTS.lock().await;
    engine::failpoint::set(
        "switchover.catch_up.before",
        engine::failpoint::Action::Error,
    );
    match e.engine.switchover(&e.cluster, None).await {
        Err(EngineError::Ended { state, message, .. }) => {
            assert_eq!(state, OperationState::RolledBack, "{message}");
            assert!(message.contains("writable again"), "{message}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    engine::failpoint::clear();
    assert!(
        !e.read_only("m1").await,
        "the old primary takes writes again"
    );
    assert!(e.read_only("m2").await && e.read_only("m3").await);
    assert_eq!(e.source_of("m2").await.unwrap().0, e.addr("m1"));
    // The cluster is not locked by the failed run: a second switchover works.
    e.engine
        .switchover(&e.cluster, None)
        .await
        .expect("second switchover");
}

#[tokio::test]
async fn anti_flapping_blocks_a_second_automatic_failover_until_ack() {
    let e = env("fo-flap", 31550, false, &[]).await;
    e.observe_into_store().await;
    e.kill_and_wait("m1").await;
    // As the monitor would: a round with DeadPrimary.
    let dead = e.dead_primary(&e.addr("m1"));
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            problems: vec![dead.clone()],
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    let first = wait_op(&e, 1).await;
    assert_eq!(
        first[0].state,
        OperationState::Succeeded,
        "{:?}",
        first[0].error
    );
    assert_eq!(first[0].trigger, "auto");
    let new: InstanceAddr = first[0].data["candidate"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let new_name =
        e.sb.manifest()
            .members
            .iter()
            .find(|m| m.addr() == new)
            .unwrap()
            .name
            .clone();

    // The new primary dies too, inside the block window.
    e.observe_into_store().await;
    e.kill_and_wait(&new_name).await;
    let dead2 = e.dead_primary(&new);
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            problems: vec![dead2.clone()],
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ops = e
        .store
        .operations(&OperationQuery::default())
        .await
        .unwrap();
    assert_eq!(
        ops.len(),
        1,
        "no second automatic failover inside the window"
    );
    let blocked = e
        .store
        .events(&store::EventQuery {
            kinds: vec![store::kinds::FAILOVER_BLOCKED.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(blocked.len(), 1, "one page says why");
    let status = e.engine.recoveries().await.unwrap();
    assert_eq!(status.clusters[0].blocked_by, Some(first[0].id));

    // A human acknowledges: the next round fails over.
    e.engine.ack_recoveries(&e.cluster, "test").await.unwrap();
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            problems: vec![dead2],
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    let ops = wait_op(&e, 2).await;
    assert_eq!(
        ops[0].state,
        OperationState::Succeeded,
        "{:?}",
        ops[0].error
    );
}

async fn wait_op(e: &Env, n: usize) -> Vec<store::OperationRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ops = e
            .store
            .operations(&OperationQuery::default())
            .await
            .unwrap();
        if ops.len() >= n && ops[0].state.is_final() {
            return ops;
        }
        assert!(
            Instant::now() < deadline,
            "operation {n} did not finish: {ops:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn policy_approve_proposes_and_a_human_runs_it() {
    let e = env_mode("fo-approve", 31560, false, &[], FailoverMode::Approve).await;
    e.observe_into_store().await;
    e.kill_and_wait("m1").await;
    let dead = e.dead_primary(&e.addr("m1"));
    for _ in 0..3 {
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                problems: vec![dead.clone()],
                at_ms: engine::now_ms(),
                ..Default::default()
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops = e
        .store
        .operations(&OperationQuery::default())
        .await
        .unwrap();
    assert_eq!(ops.len(), 1, "one proposal, nothing run: {ops:?}");
    assert_eq!(ops[0].state, OperationState::Proposed);
    assert!(
        e.read_only("m2").await && e.read_only("m3").await,
        "nobody promoted"
    );
    let proposed = e
        .store
        .events(&store::EventQuery {
            kinds: vec![store::kinds::FAILOVER_PROPOSED.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(proposed.len(), 1, "one page");
    assert_eq!(proposed[0].level, store::EventLevel::Critical);

    let rec = e
        .engine
        .failover(&e.cluster)
        .await
        .expect("the human runs it");
    assert_eq!(rec.trigger, "manual");
    let proposal = e.store.operation(ops[0].id).await.unwrap().unwrap();
    assert!(
        proposal.state.is_final(),
        "the proposal is settled: {proposal:?}"
    );
}

/// Policy `rejoin = "auto"` never rejoins an old primary with errant GTIDs: it comes back
/// writable (as configured) and takes a write no replica has; the leader fences it, names
/// the errant GTID and starts no rejoin, round after round.
#[tokio::test]
async fn automatic_rejoin_leaves_an_errant_old_primary_out() {
    let failover = FailoverConfig {
        mode: FailoverMode::Auto,
        block_window: Duration::from_secs(600),
        rejoin: RejoinMode::Auto,
        ..Default::default()
    };
    let e = env_failover("rj-errant", 31570, false, &[], failover).await;
    e.fail_over_m1().await;

    e.sb.start_as_configured("m1").await.unwrap();
    // Its guard fences it at once; an account with SUPER still writes past read_only.
    e.wait_read_only("m1").await;
    e.write("m1", "INSERT INTO app.t VALUES (99)").await;
    for _ in 0..3 {
        let obs = vec![probe::observe(&e.addr("m1"), &e.admin, opts()).await];
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                observations: obs.clone(),
                ..Default::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(e.read_only("m1").await, "fenced");
    assert_eq!(e.source_of("m1").await, None, "not attached");
    let ops = e
        .store
        .operations(&OperationQuery {
            cluster: Some(e.cluster.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        ops.iter().all(|o| o.kind != "rejoin"),
        "no rejoin of an errant instance: {ops:?}"
    );
    let returned = e
        .store
        .events(&store::EventQuery {
            kinds: vec![store::kinds::FENCED_INSTANCE_RETURNED.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        returned
            .iter()
            .any(|ev| ev.message.contains("errant GTIDs") && ev.message.contains("must not rejoin")),
        "{returned:?}"
    );
}

/// Two failovers in a row: the second comes before any observation of the first's new
/// primary shows a write of its own. The remaining replica has that write (under the new
/// primary's server_id, which the dead primary's last observation has never seen): it is
/// not errant, and it is promoted.
#[tokio::test]
async fn a_second_failover_right_after_the_first_promotes_the_last_replica() {
    let e = env("fo-twice", 31580, false, &[]).await;
    let (new, other) = e.fail_over_m1().await;

    // The new primary's first own write reaches the other replica; nobody observes it.
    e.write(new, "INSERT INTO app.t VALUES (2)").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.count(other, "app.t").await < 2 {
        assert!(Instant::now() < deadline, "{other} never got the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.kill_and_wait(new).await;
    let rec = e
        .engine
        .failover(&e.cluster)
        .await
        .expect("second failover");
    assert_eq!(rec.state, OperationState::Succeeded);
    assert_eq!(
        rec.data["candidate"].as_str().unwrap(),
        e.addr(other).to_string()
    );
    assert!(!e.read_only(other).await, "the last replica is writable");
    assert_eq!(e.count(other, "app.t").await, 2, "no write lost");
}

/// An automatic rejoin that keeps failing (failpoint `rejoin.check.before@rj-giveup=error`) is tried
/// `rejoin_attempts` times, `rejoin_retry` apart, then left to a human with a critical
/// `auto_rejoin_failed` event; later rounds start no more.
#[tokio::test]
async fn automatic_rejoin_gives_up_after_its_attempts() {
    let failover = FailoverConfig {
        mode: FailoverMode::Auto,
        block_window: Duration::from_secs(600),
        rejoin: RejoinMode::Auto,
        rejoin_attempts: 2,
        rejoin_retry: Duration::from_millis(200),
        ..Default::default()
    };
    let e = env_failover("rj-giveup", 31590, false, &[], failover).await;
    e.fail_over_m1().await;
    assert!(e.sb.start("m1").await.unwrap().started());
    let _failpoints = FAILPOINTS.lock().await;
    // Scoped to this cluster: the other tests of this process rejoin too.
    engine::failpoint::set(
        "rejoin.check.before@rj-giveup",
        engine::failpoint::Action::Error,
    );

    let rejoins = || async {
        e.store
            .operations(&OperationQuery {
                cluster: Some(e.cluster.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|o| o.kind == "rejoin")
            .collect::<Vec<_>>()
    };
    let gave_up = || async {
        e.store
            .events(&store::EventQuery {
                kinds: vec![store::kinds::AUTO_REJOIN_FAILED.into()],
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while gave_up().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no auto_rejoin_failed: {:?}",
            rejoins().await
        );
        let obs = vec![probe::observe(&e.addr("m1"), &e.admin, opts()).await];
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                observations: obs.clone(),
                ..Default::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = gave_up().await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].level, store::EventLevel::Critical);
    assert!(
        ev[0].message.contains("failed 2 times"),
        "{}",
        ev[0].message
    );
    // No third attempt, however many rounds come.
    for _ in 0..5 {
        let obs = vec![probe::observe(&e.addr("m1"), &e.admin, opts()).await];
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                observations: obs.clone(),
                ..Default::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ops = rejoins().await;
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(ops
        .iter()
        .all(|o| o.trigger == "auto" && o.state == OperationState::Failed));
    assert!(e.read_only("m1").await, "left fenced");
    engine::failpoint::clear();
}

/// A frozen primary (SIGSTOP) whose replicas keep MariaDB's default `slave_net_timeout` of
/// 60 s: their IO threads say `Yes`, so only their silent streams can confirm the death.
/// The engine has no monitor history here (a tracker of its own), so its fresh look watches
/// the replicas' streams before it decides: the failover is not refused, and it promotes a
/// replica. Ports 25200–25202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_failed_over_once_its_replicas_fall_silent() {
    let e = env("fo-frozen", 25200, true, &[]).await;
    e.write(
        "m1",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await;
    for r in ["m2", "m3"] {
        // Takes effect when the IO thread connects again.
        e.write(
            r,
            "SET GLOBAL slave_net_timeout = 60; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    e.observe_into_store().await;
    let frozen = sandbox::testing::Frozen::freeze(&e.sb, "m1");
    let started = Instant::now();
    let rec = e.engine.failover(&e.cluster).await;
    let took = started.elapsed();
    drop(frozen);
    let rec = rec.expect("failover of a frozen primary, confirmed by its replicas' silence");
    eprintln!(
        "frozen primary: failover {:?} after {took:?}: {:?}",
        rec.state, rec.error
    );
    assert_eq!(rec.state, OperationState::Succeeded, "{:#}", rec.data);
    let cand = rec.data["candidate"].as_str().unwrap().to_string();
    assert!(
        cand == e.addr("m2").to_string() || cand == e.addr("m3").to_string(),
        "{cand}"
    );
}

/// Shutdown waits for an operation that runs (a switchover held in its pre hook until the
/// test lets it go) and lets no new one start meanwhile; when it returns, the operation
/// has ended and is recorded.
#[tokio::test]
async fn shutdown_waits_for_a_running_operation_and_starts_no_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let failover = FailoverConfig {
        pre_failover: vec![format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
            started.display(),
            release.display()
        )],
        hook_timeout: Duration::from_secs(300),
        ..Default::default()
    };
    let e = env_failover("so-shutdown", 28300, false, &[], failover).await;
    let switchover = {
        let (engine, cluster, to) = (e.engine.clone(), e.cluster.clone(), e.addr("m2"));
        tokio::spawn(async move { engine.switchover(&cluster, Some(to)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline && !switchover.is_finished(),
            "the switchover's pre hook never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let shutdown = {
        let engine = e.engine.clone();
        tokio::spawn(async move { engine.shutdown(Duration::from_secs(300)).await })
    };
    while !e.engine.is_stopping() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match e.engine.rejoin(&e.cluster, &e.addr("m3")).await {
        Err(EngineError::Refused(m)) => assert!(m.contains("shutting down"), "{m}"),
        other => panic!("a new operation started during shutdown: {other:?}"),
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown returned while the switchover was held in its hook"
    );
    let running = e
        .store
        .operations(&OperationQuery {
            states: vec![OperationState::Running],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1, "{running:#?}");
    assert_eq!(running[0].kind, "switchover");

    std::fs::write(&release, b"").unwrap();
    assert!(
        shutdown.await.unwrap(),
        "the operation ended within the deadline"
    );
    // Read before the switchover's caller sees its result: shutdown returned after the
    // operation ended and was recorded.
    let rec = e.store.operation(running[0].id).await.unwrap().unwrap();
    assert_eq!(rec.state, OperationState::Succeeded, "{rec:#?}");
    let rec = switchover.await.unwrap().expect("switchover");
    assert_eq!(rec.id, running[0].id);
    assert!(!e.read_only("m2").await, "the target is the primary");
    assert!(e.read_only("m1").await);
}
