//! The engine's policy around failover against real MariaDB sandboxes: an automatic
//! failover that is refused is retried (and `recoveries ack` retries it at once), the dead
//! primary is not "handled" while no failover runs, and a frozen old primary is fenced the
//! moment it answers again. Ports 27000..27100.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{FailoverConfig, FailoverMode};
use engine::{AutoFailoverNotice, ClusterSetup, Engine, EngineOptions};
use model::{ClusterRound, ClusterSpec, InstanceAddr, InstanceSpec, IoThreadState, PromotionRule};
use probe::{Credentials, ProbeError, ProbeOptions, Session};
use sandbox::testing::SandboxGuard;
use sandbox::{Sandbox, UpOptions};
use store::{OperationQuery, OperationState, SqliteStore, Store};

struct Env {
    sb: Sandbox,
    store: Arc<SqliteStore>,
    engine: Arc<Engine>,
    admin: Credentials,
    app: Credentials,
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

async fn env(name: &str, base_port: u16, semi_sync: bool, failover: FailoverConfig) -> Env {
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
            .map(|m| InstanceSpec {
                addr: m.addr(),
                promotion: PromotionRule::Neutral,
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
        app: creds.app.credentials(),
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

    /// Wait until every running replica has lost `m` (its IO thread is not `Yes`).
    async fn wait_lost(&self, m: &str, within: Duration) {
        let dead = self.addr(m);
        let deadline = Instant::now() + within;
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
                    "{} never noticed {m} is gone",
                    other.name
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn pid(&self, m: &str) -> i32 {
        self.sb
            .status()
            .into_iter()
            .find(|s| s.name == m)
            .and_then(|s| s.pid)
            .unwrap_or_else(|| panic!("{m} does not run"))
    }

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

    async fn ops(&self) -> Vec<store::OperationRecord> {
        self.store
            .operations(&OperationQuery::default())
            .await
            .unwrap()
    }
}

fn signal(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Resumes a SIGSTOPped server whatever happens to the test, so its guard can stop it.
struct Cont(i32);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

async fn next_notice(
    rx: &mut tokio::sync::broadcast::Receiver<AutoFailoverNotice>,
    within: Duration,
) -> AutoFailoverNotice {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a notice in time")
        .expect("the notice channel is open")
}

/// The first automatic attempt is refused: another node holds the cluster's lock (as
/// after a crash of that node, until its lock lapses). The refusal is a critical
/// `failover_refused` event and notice, the death is not handled meanwhile (it pages), no
/// block window starts, and once the lock is gone `recoveries ack` makes the pending retry
/// run at once, long before its 30 s backoff; it succeeds, and the death is handled.
#[tokio::test]
async fn a_refused_automatic_failover_is_retried_and_pages_meanwhile() {
    let failover = FailoverConfig {
        mode: FailoverMode::Auto,
        block_window: Duration::from_secs(600),
        retry_backoff: Duration::from_secs(30),
        retry_backoff_max: Duration::from_secs(60),
        ..Default::default()
    };
    let e = env("pol-retry", 27000, false, failover).await;
    e.observe_into_store().await;
    e.sb.kill("m1").unwrap();
    e.wait_lost("m1", Duration::from_secs(10)).await;
    let dead = e.addr("m1");
    assert!(
        e.store
            .try_lock_cluster(&e.cluster, "other-node", 600_000, engine::now_ms())
            .await
            .unwrap(),
        "the other node takes the lock"
    );
    let mut notices = e.engine.auto_failover_notices();
    e.engine
        .on_round(&ClusterRound {
            cluster: e.cluster.clone(),
            problems: vec![e.dead_primary(&dead)],
            at_ms: engine::now_ms(),
            ..Default::default()
        })
        .await;
    let n = next_notice(&mut notices, Duration::from_secs(20)).await;
    let AutoFailoverNotice::Refused {
        attempt,
        reason,
        operation_id,
        next_attempt_ms,
        ..
    } = &n
    else {
        panic!("expected a refusal: {n:?}");
    };
    assert_eq!(*attempt, 1);
    assert!(reason.contains("other-node"), "{reason}");
    assert_eq!(*operation_id, None, "refused before any operation");
    assert!(*next_attempt_ms > engine::now_ms() + 20_000, "{n:?}");
    assert!(
        !e.engine
            .automation_handles_dead_primary(&e.cluster, &dead)
            .await,
        "a refused failover does not handle the death: it pages"
    );
    let ev = e
        .store
        .events(&store::EventQuery {
            kinds: vec![store::kinds::FAILOVER_REFUSED.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].level, store::EventLevel::Critical);
    assert!(e.ops().await.is_empty(), "no operation started");
    let status = e.engine.recoveries().await.unwrap();
    assert_eq!(
        status.clusters[0].blocked_by, None,
        "a refusal starts no block window"
    );
    // More rounds do not start a second attempt behind the backoff's back.
    for _ in 0..3 {
        e.engine
            .on_round(&ClusterRound {
                cluster: e.cluster.clone(),
                problems: vec![e.dead_primary(&dead)],
                at_ms: engine::now_ms(),
                ..Default::default()
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(e.ops().await.is_empty());

    // What the monitor saw before the failover.
    let mut before = Vec::new();
    for m in &e.sb.manifest().members {
        before.push(probe::observe(&m.addr(), &e.admin, opts()).await);
    }
    // The other node's lock goes; a human acknowledges: the retry runs now.
    e.store
        .unlock_cluster(&e.cluster, "other-node")
        .await
        .unwrap();
    let acked = Instant::now();
    e.engine.ack_recoveries(&e.cluster, "test").await.unwrap();
    let n = next_notice(&mut notices, Duration::from_secs(20)).await;
    eprintln!("ack -> retried failover settled in {:?}", acked.elapsed());
    assert!(
        matches!(&n, AutoFailoverNotice::Settled { why, .. } if why.contains("attempt 2")),
        "{n:?}"
    );
    let ops = e.ops().await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(
        ops[0].state,
        OperationState::Succeeded,
        "{:?}",
        ops[0].error
    );
    assert_eq!(ops[0].trigger, "auto");
    assert!(
        e.engine
            .automation_handles_dead_primary(&e.cluster, &dead)
            .await,
        "after a successful failover the death is handled"
    );

    // The misleading page: a round that mixes the new primary's fresh probe with the other
    // replica's probe from before it was repointed names no primary, while the store names
    // the new writer. Such a round straddles the operation, and the alerting knows it.
    let new: InstanceAddr = ops[0].data["candidate"].as_str().unwrap().parse().unwrap();
    let spec = e.sb.cluster_spec();
    let mut mixed: Vec<model::Observation> =
        before.iter().filter(|o| o.addr != new).cloned().collect();
    mixed.push(probe::observe(&new, &e.admin, opts()).await);
    let a = model::analysis::analyze(&model::analysis::ClusterView {
        spec: &spec,
        observations: &mixed,
    });
    assert!(
        a.problems
            .iter()
            .any(|p| p.kind == model::ProblemKind::NoPrimary),
        "{a:?}"
    );
    let writer = e.store.cluster(&e.cluster).await.unwrap().unwrap().writer;
    assert_eq!(writer, Some(new.clone()));
    assert!(e.engine.operation_overlaps(&e.cluster, &mixed));
    // A round probed after the failover names the new primary and overlaps nothing.
    let mut fresh = Vec::new();
    for m in &e.sb.manifest().members {
        fresh.push(probe::observe(&m.addr(), &e.admin, opts()).await);
    }
    let a = model::analysis::analyze(&model::analysis::ClusterView {
        spec: &spec,
        observations: &fresh,
    });
    assert_eq!(a.primary, Some(new), "{a:?}");
    assert!(!e.engine.operation_overlaps(&e.cluster, &fresh));
}

/// The primary freezes (SIGSTOP) and is failed over. A client of the application account
/// stays connected to it. The moment it runs again (SIGCONT), the fence guard kills its
/// clients and makes it read-only: the stale client's write right after SIGCONT is not
/// acknowledged, nor is one on a new connection.
#[tokio::test]
async fn a_frozen_old_primary_is_fenced_the_moment_it_answers() {
    let failover = FailoverConfig {
        mode: FailoverMode::Auto,
        block_window: Duration::from_secs(600),
        ..Default::default()
    };
    let e = env("pol-fence", 27010, true, failover).await;
    // Lossless semi-sync on the primary: a commit never falls back to async.
    e.session("m1")
        .await
        .exec(
            "lossless",
            "SET GLOBAL rpl_semi_sync_master_timeout=3600000, rpl_semi_sync_master_wait_no_slave=ON",
        )
        .await
        .unwrap();
    // A client that waits long for its commits: without a fence its write would hang on
    // the semi-sync wait until this timeout, which the test tells from a refusal.
    let app_opts = ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(20),
    };
    let mut app = Session::connect(&e.addr("m1"), &e.app, app_opts)
        .await
        .unwrap();
    app.exec(
        "create",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.observe_into_store().await;

    let pid = e.pid("m1");
    signal(pid, "-STOP");
    let cont = Cont(pid);
    let frozen = Instant::now();
    e.wait_lost("m1", Duration::from_secs(20)).await;
    eprintln!("frozen -> replicas lost it: {:?}", frozen.elapsed());
    let rec = e.engine.failover(&e.cluster).await.expect("failover");
    assert_eq!(rec.state, OperationState::Succeeded);
    eprintln!(
        "frozen -> failover done: {:?} (fenced: {})",
        frozen.elapsed(),
        rec.data["fenced"]
    );
    let new: InstanceAddr = rec.data["candidate"].as_str().unwrap().parse().unwrap();
    assert!(
        e.engine
            .fence_guards()
            .iter()
            .any(|(c, a)| *c == e.cluster && *a == e.addr("m1")),
        "the frozen old primary is guarded: {:?}",
        e.engine.fence_guards()
    );

    // SIGCONT, and the stale client writes at once.
    signal(pid, "-CONT");
    let resumed = Instant::now();
    drop(cont);
    let stale = app
        .exec("stale write", "INSERT INTO app.t VALUES (1000)")
        .await;
    let stale_took = resumed.elapsed();
    // A new connection of the application account, right after.
    let fresh = async {
        let mut s = Session::connect(&e.addr("m1"), &e.app, app_opts).await?;
        s.exec("fresh write", "INSERT INTO app.t VALUES (1001)")
            .await
    }
    .await;
    eprintln!("stale write: {stale:?} after {stale_took:?}; fresh write: {fresh:?}");
    match &stale {
        Ok(()) => panic!("the stale client's write was acknowledged by the old primary"),
        Err(ProbeError::Timeout { .. }) => {
            panic!("the stale client's write hung: the old primary was never fenced")
        }
        Err(_) => {}
    }
    match &fresh {
        Ok(()) => panic!("a new client's write was acknowledged by the old primary"),
        Err(ProbeError::Timeout { .. }) => {
            panic!("a new client's write hung: the old primary was never fenced")
        }
        Err(_) => {}
    }
    // It is read-only now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = probe::observe(&e.addr("m1"), &e.admin, opts()).await;
        if o.state().is_some_and(|s| s.read_only) {
            break;
        }
        assert!(Instant::now() < deadline, "m1 never became read-only");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = resumed.elapsed();
    let ev = loop {
        let ev = e
            .store
            .events(&store::EventQuery {
                kinds: vec![store::kinds::FENCED_ON_RETURN.into()],
                ..Default::default()
            })
            .await
            .unwrap();
        if !ev.is_empty() {
            break ev;
        }
        assert!(Instant::now() < deadline, "no fenced_on_return event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "SIGCONT -> read-only seen by the test: {seen:?}; answered -> fenced (guard): {} ms; killed {}",
        ev[0].data["answered_to_fenced_ms"], ev[0].data["killed"]
    );
    assert!(e.engine.fence_guards().is_empty(), "the guard ended");
    // Neither write is on the new primary.
    let mut n = Session::connect(&new, &e.admin, opts()).await.unwrap();
    let rows = n
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.t WHERE id >= 1000")
        .await
        .unwrap();
    assert_eq!(rows[0]["n"].as_deref(), Some("0"));
}
