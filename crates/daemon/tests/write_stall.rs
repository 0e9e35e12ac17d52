//! A primary that answers reads but cannot write, on real MariaDB sandboxes with the real
//! watch loop and engine: `FLUSH TABLES WITH READ LOCK` held on a connection of the primary
//! stands in for a frozen disk without root (reads go on, every write hangs). The stall is
//! named `PrimaryWritesStalled`, never `UnreachablePrimary`; a stall shorter than
//! `write_stall_failover_after` only pages; a longer one fails over with no acknowledged
//! write lost; `on_write_stall = "page"` never fails over. A primary whose datadir filesystem
//! is full (a loop filesystem filled with `fallocate`, root and a loop device needed) is
//! named `PrimaryDiskFull`. With `mode = "approve"` a lasting stall proposes the failover,
//! which `dbfleet failover` (the engine's manual failover) then runs. Ports 25000..25038.
//!
//! Each test prints the measured fault → named (and fault → writable) figures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::{FailoverConfig, FailoverMode, WriteStallPolicy};
use drt::load::{self, LoadOptions, VerifyOptions};
use model::{InstanceAddr, ProblemKind};
use probe::{ProbeOptions, Session};
use sandbox::loopfs::{LoopFs, DEFAULT_SIZE};
use sandbox::testing::{disk_faults_available, TestSandbox};
use store::{OperationQuery, OperationState, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

/// What the rounds said about the primary, in order: (round time, problem kinds on it).
type Seen = Arc<Mutex<Vec<(u64, Vec<ProblemKind>)>>>;

struct Env {
    /// Members' datadirs on loop filesystems of their own, in the order asked for: dropped
    /// (freed, thawed) before the sandbox's servers are killed.
    fs: Vec<LoopFs>,
    sb: TestSandbox,
    store: Arc<SqliteStore>,
    engine: Arc<engine::Engine>,
    seen: Seen,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const NAME: &str = "stall";

async fn env(name: &str, base_port: u16, failover: FailoverConfig) -> Env {
    env_on(name, base_port, failover, &[]).await
}

/// [`env`], with the datadirs of `loops` (member names) on loop filesystems of their own.
async fn env_on(name: &str, base_port: u16, failover: FailoverConfig, loops: &[&str]) -> Env {
    let sb = TestSandbox::up_with(name, 2, base_port, true).await;
    let mut fs = Vec::new();
    for m in loops {
        fs.push(
            LoopFs::mount_member(&sb, m, DEFAULT_SIZE)
                .await
                .unwrap_or_else(|e| panic!("{m} on a loop filesystem: {e}")),
        );
    }
    let mut spec = sb.cluster_spec();
    spec.name = NAME.into();
    let creds = sb.credentials().unwrap();
    let admin = creds.admin.credentials();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_cluster(&spec, 1).await.unwrap();
    store
        .set_writer(NAME, Some(sb.initial_primary().addr()), 1)
        .await
        .unwrap();
    let engine = engine::Engine::new(
        store.clone(),
        engine::EngineOptions {
            node_id: "test".into(),
            lease_ttl: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(30),
            probe: ProbeOptions {
                connect_timeout: Duration::from_millis(500),
                query_timeout: Duration::from_secs(5),
            },
        },
        vec![engine::ClusterSetup {
            haproxy: None,
            spec: spec.clone(),
            admin: admin.clone(),
            repl: Some(creds.repl.credentials()),
            failover,
        }],
    );
    assert!(engine.campaign_once().await, "a lone node leads");
    let (tap, mut rounds) = tokio::sync::mpsc::channel::<model::ClusterRound>(1024);
    let (tx, consumer) = daemon::round_consumer_with(engine.clone(), Some(tap));
    let seen: Seen = Arc::default();
    let primary = sb.initial_primary().addr();
    let log = seen.clone();
    let collector = tokio::spawn(async move {
        while let Some(r) = rounds.recv().await {
            let kinds = r
                .problems
                .iter()
                .filter(|p| p.instance.as_ref() == Some(&primary))
                .map(|p| p.kind)
                .collect();
            log.lock().unwrap().push((r.at_ms, kinds));
        }
    });
    let cancel = CancellationToken::new();
    let watch = tokio::spawn({
        let (store, cancel) = (store.clone(), cancel.clone());
        async move {
            let _ = monitor::run_with(
                monitor::WatchOptions {
                    interval: Duration::from_secs(1),
                    discovery_interval: Duration::from_secs(10),
                    probe: ProbeOptions {
                        connect_timeout: Duration::from_millis(500),
                        query_timeout: Duration::from_millis(500),
                    },
                    concurrency: 16,
                    fast_path: monitor::FastPathOptions::default(),
                    persist_every: monitor::watch::PERSIST_EVERY,
                },
                monitor::HeartbeatOptions {
                    enabled: true,
                    ..Default::default()
                },
                vec![monitor::ClusterWatch::new(spec, admin)],
                store,
                Arc::new(monitor::Stats::default()),
                Some(tx),
                cancel,
            )
            .await;
        }
    });
    let env = Env {
        fs,
        sb,
        store,
        engine,
        seen,
        cancel,
        tasks: vec![watch, consumer, collector],
    };
    env.wait_healthy().await;
    env
}

impl Env {
    fn addr(&self, m: &str) -> InstanceAddr {
        self.sb.addr(m)
    }

    /// Until a round names m1 the primary with no problem on it, after the heartbeat row
    /// was written (so the writer runs there).
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut admin = Session::connect(&self.addr("m2"), &self.sb.admin(), opts())
            .await
            .unwrap();
        loop {
            let row = admin
                .query_rows("heartbeat", "SELECT ts_us FROM dbfleet.heartbeat")
                .await
                .map(|r| !r.is_empty())
                .unwrap_or(false);
            let clean = self
                .seen
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(_, k)| k.is_empty());
            if row && clean {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox never got healthy: heartbeat row on m2: {row}; last round on m1: {:?}",
                self.seen.lock().unwrap().last()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The first round at or after `since_ms` that names `kind` on m1, if any, and every
    /// kind seen on m1 since.
    fn named_since(&self, since_ms: u64, kind: ProblemKind) -> (Option<u64>, Vec<ProblemKind>) {
        let seen = self.seen.lock().unwrap();
        let after: Vec<_> = seen.iter().filter(|(at, _)| *at >= since_ms).collect();
        let first = after
            .iter()
            .find(|(_, k)| k.contains(&kind))
            .map(|(at, _)| *at);
        let mut all: Vec<ProblemKind> = after.iter().flat_map(|(_, k)| k.clone()).collect();
        all.sort();
        all.dedup();
        (first, all)
    }

    async fn failovers(&self) -> Vec<store::OperationRecord> {
        self.store
            .operations(&OperationQuery {
                cluster: Some(NAME.into()),
                kind: Some("failover".into()),
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn opts() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(5),
    }
}

fn now_ms() -> u64 {
    engine::now_ms()
}

/// Hold a global read lock on m1 (reads go on, writes hang) until the session is closed or
/// killed.
async fn stall(env: &Env) -> Session {
    let mut s = Session::connect(&env.addr("m1"), &env.sb.admin(), opts())
        .await
        .unwrap();
    s.exec("stall writes", "FLUSH TABLES WITH READ LOCK")
        .await
        .unwrap();
    s
}

fn failover_config(policy: WriteStallPolicy) -> FailoverConfig {
    FailoverConfig {
        mode: FailoverMode::Auto,
        on_write_stall: policy,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_pages_and_a_long_one_fails_over_losing_no_acknowledged_write() {
    let env = env(
        "stall-fo",
        25000,
        failover_config(WriteStallPolicy::Failover),
    )
    .await;
    let members: Vec<InstanceAddr> = ["m1", "m2", "m3"].iter().map(|m| env.addr(m)).collect();
    let creds = env.sb.credentials().unwrap();
    let mut lopts = LoadOptions::new(members.clone(), creds.app.credentials());
    lopts.writers = 4;
    lopts.rate_per_s = 200;
    lopts.duration = Duration::from_secs(30);
    load::prepare(&env.sb.admin(), &members[0], &lopts.table)
        .await
        .unwrap();
    let load_cancel = CancellationToken::new();
    let load = tokio::spawn(load::run(lopts, load_cancel.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A short stall, under write_stall_failover_after (5 s): named, paged, not failed over.
    let t0 = now_ms();
    let lock = stall(&env).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    lock.close().await;
    let (named, kinds) = env.named_since(t0, ProblemKind::PrimaryWritesStalled);
    let named = named.unwrap_or_else(|| panic!("a 2.5 s stall was not named; saw {kinds:?}"));
    println!(
        "short stall: fault -> PrimaryWritesStalled named in {} ms",
        named - t0
    );
    assert!(
        !kinds.contains(&ProblemKind::UnreachablePrimary)
            && !kinds.contains(&ProblemKind::DeadPrimary),
        "a stalled primary that answers reads is not unreachable: {kinds:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        env.failovers().await.is_empty(),
        "a short stall failed over"
    );
    env.wait_healthy().await;

    // A long stall: failed over once it lasts 5 s.
    let t1 = now_ms();
    let lock = stall(&env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = loop {
        let ops = env.failovers().await;
        if let Some(op) = ops
            .iter()
            .find(|o| o.state != OperationState::Running && o.state != OperationState::Proposed)
        {
            break op.clone();
        }
        assert!(Instant::now() < deadline, "no failover 30 s into a stall");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (named, kinds) = env.named_since(t1, ProblemKind::PrimaryWritesStalled);
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(op.trigger, "write_stall");
    let named = named.expect("the long stall was named");
    let writable = op.data["writable_ms"].as_u64().expect("writable_ms");
    println!(
        "long stall: fault -> named {} ms, fault -> writable new primary {} ms; fenced: {}",
        named - t1,
        writable - t1,
        op.data["stall_fenced"]
    );
    assert!(
        !kinds.contains(&ProblemKind::UnreachablePrimary),
        "a stalled primary is not unreachable: {kinds:?}"
    );
    drop(lock);
    load_cancel.cancel();
    let ledger = load.await.unwrap();
    assert!(!ledger.acked.is_empty());
    let new: InstanceAddr = op.data["candidate"].as_str().unwrap().parse().unwrap();
    assert_ne!(new, members[0]);
    // Every acknowledged write is on the new primary.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = load::verify(
        &ledger,
        &new,
        &[],
        &env.sb.admin(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    println!(
        "long stall: {} acknowledged writes, {} lost, {} in doubt",
        ledger.acked.len(),
        v.lost.len(),
        ledger.in_doubt.len()
    );
    assert!(v.lost.is_empty(), "acknowledged writes lost: {:?}", v.lost);
    // The old primary was left read-only, with semi-sync still on.
    let mut old = Session::connect(&members[0], &env.sb.admin(), opts())
        .await
        .unwrap();
    let rows = old
        .query_rows(
            "old primary",
            "SELECT @@read_only AS ro, @@rpl_semi_sync_master_enabled AS ss",
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["ro"].as_deref(), Some("1"), "old primary writable");
    assert_eq!(
        rows[0]["ss"].as_deref(),
        Some("1"),
        "semi-sync relaxed on the old primary"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_write_stall_page_names_the_stall_and_never_fails_over() {
    let env = env("stall-pg", 25010, failover_config(WriteStallPolicy::Page)).await;
    let t0 = now_ms();
    let lock = stall(&env).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (named, kinds) = env.named_since(t0, ProblemKind::PrimaryWritesStalled);
    let named = named.unwrap_or_else(|| panic!("the stall was not named; saw {kinds:?}"));
    println!(
        "page policy: fault -> PrimaryWritesStalled named in {} ms",
        named - t0
    );
    assert!(
        !kinds.contains(&ProblemKind::UnreachablePrimary),
        "{kinds:?}"
    );
    // Critical: the default page_worthy_problem rule pages it at once.
    let open = env.store.open_problems(Some(NAME)).await.unwrap();
    let p = open
        .iter()
        .find(|p| p.problem.kind == ProblemKind::PrimaryWritesStalled)
        .expect("open while the stall lasts");
    assert_eq!(p.problem.severity, model::Severity::Critical);
    assert!(
        env.failovers().await.is_empty(),
        "on_write_stall = page failed over"
    );
    lock.close().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_full_primary_disk_is_named_primary_disk_full() {
    if !disk_faults_available("disk_fault_full_primary_disk_is_named_primary_disk_full") {
        return;
    }
    let env = env_on(
        "stall-full",
        25020,
        failover_config(WriteStallPolicy::Page),
        &["m1"],
    )
    .await;
    let fs = &env.fs[0];
    let t0 = now_ms();
    let filled = fs.fill().expect("fill m1's filesystem");
    let deadline = Instant::now() + Duration::from_secs(20);
    let named = loop {
        if let (Some(at), _) = env.named_since(t0, ProblemKind::PrimaryDiskFull) {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "a full disk was not named in 20 s; saw {:?}",
            env.named_since(t0, ProblemKind::PrimaryDiskFull).1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, kinds) = env.named_since(t0, ProblemKind::PrimaryDiskFull);
    println!(
        "disk full: {filled} bytes allocated; fault -> PrimaryDiskFull named in {} ms; kinds seen {kinds:?}",
        named - t0
    );
    assert!(
        !kinds.contains(&ProblemKind::UnreachablePrimary),
        "{kinds:?}"
    );
    let open = env.store.open_problems(Some(NAME)).await.unwrap();
    let p = open
        .iter()
        .find(|p| p.problem.kind == ProblemKind::PrimaryDiskFull)
        .expect("open while the disk is full");
    assert!(
        p.problem
            .evidence
            .iter()
            .any(|e| e.fact.contains(&fs.device().to_string())
                || e.fact.contains("Disk full")
                || e.fact.contains("28")),
        "the evidence names the disk: {:?}",
        p.problem.evidence
    );
    assert!(
        env.failovers().await.is_empty(),
        "on_write_stall = page failed over"
    );
    fs.free().expect("free m1's filesystem");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_mode_proposes_the_failover_of_a_stalled_primary_and_a_human_runs_it() {
    let mut policy = failover_config(WriteStallPolicy::Failover);
    policy.mode = FailoverMode::Approve;
    policy.write_stall_failover_after = Duration::from_secs(2);
    let env = env("stall-ap", 25030, policy).await;
    let t0 = now_ms();
    let lock = stall(&env).await;
    // Proposed once the stall lasts write_stall_failover_after; nothing runs on its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    let proposal = loop {
        let ops = env.failovers().await;
        assert!(
            ops.iter().all(|o| o.state == OperationState::Proposed),
            "approve mode ran a failover on its own: {ops:?}"
        );
        if let Some(p) = ops.into_iter().next() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no failover proposed 20 s into a stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "approve: fault -> failover proposed in {} ms",
        proposal.created_ms - t0
    );
    assert_eq!(proposal.data["old_primary"], env.addr("m1").to_string());
    assert!(
        proposal.data["stalled"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "the proposal says why: {:?}",
        proposal.data
    );
    let events = env
        .store
        .events(&store::EventQuery {
            cluster: Some(NAME.into()),
            kinds: vec![store::kinds::FAILOVER_PROPOSED.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let e = events.first().expect("a failover_proposed event");
    assert_eq!(e.level, store::EventLevel::Critical);
    assert!(
        e.message.contains("dbfleet failover stall") && e.message.contains("stalled"),
        "{}",
        e.message
    );
    // Still proposed, never run, a few rounds later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ops = env.failovers().await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].state, OperationState::Proposed);

    // The human approves: `dbfleet failover` runs the lossless failover of the stall.
    let rec = env.engine.failover(NAME).await.expect("manual failover");
    assert_eq!(rec.state, OperationState::Succeeded, "{:?}", rec.error);
    assert_eq!(rec.trigger, "manual");
    assert!(rec.data["stalled"].is_string(), "{:?}", rec.data);
    let new: InstanceAddr = rec.data["candidate"].as_str().unwrap().parse().unwrap();
    assert_ne!(new, env.addr("m1"));
    let mut s = Session::connect(&new, &env.sb.admin(), opts())
        .await
        .unwrap();
    let rows = s
        .query_rows("new primary", "SELECT @@read_only AS ro")
        .await
        .unwrap();
    assert_eq!(
        rows[0]["ro"].as_deref(),
        Some("0"),
        "the new primary is writable"
    );
    let settled = env
        .store
        .operation(proposal.id)
        .await
        .unwrap()
        .expect("the proposal");
    assert_eq!(settled.state, OperationState::Succeeded);
    assert_eq!(settled.step, "superseded");
    drop(lock);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_proposal_is_withdrawn_when_writes_complete_again() {
    let mut policy = failover_config(WriteStallPolicy::Failover);
    policy.mode = FailoverMode::Approve;
    policy.write_stall_failover_after = Duration::from_secs(2);
    let env = env("stall-wd", 25033, policy).await;
    let lock = stall(&env).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let proposal = loop {
        if let Some(p) = env.failovers().await.into_iter().next() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no failover proposed 20 s into a stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    lock.close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = env
            .store
            .operation(proposal.id)
            .await
            .unwrap()
            .expect("the proposal");
        if p.state != OperationState::Proposed {
            assert_eq!(p.state, OperationState::RolledBack);
            assert_eq!(p.step, "withdrawn");
            assert!(
                p.error
                    .as_deref()
                    .is_some_and(|e| e.contains("writes complete again")),
                "{:?}",
                p.error
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proposal was not withdrawn 20 s after the stall ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.stop().await;
}

/// A primary whose disk fills while every replica's disk is full too: named, and the
/// failover that `on_write_stall` starts ends `needs_human` (which pages) saying each
/// replica's disk is full, having fenced and promoted nothing: the primary keeps its place
/// for when space comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_full_primary_with_no_healthy_replica_pages_and_fences_nothing() {
    if !disk_faults_available(
        "disk_fault_full_primary_with_no_healthy_replica_pages_and_fences_nothing",
    ) {
        return;
    }
    let mut policy = failover_config(WriteStallPolicy::Failover);
    policy.write_stall_failover_after = Duration::from_secs(3);
    let env = env_on("stall-nocand", 25036, policy, &["m1", "m2", "m3"]).await;
    let t0 = now_ms();
    for fs in &env.fs {
        fs.fill().expect("fill a member's filesystem");
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let op = loop {
        let ops = env.failovers().await;
        if let Some(op) = ops
            .iter()
            .find(|o| !matches!(o.state, OperationState::Running | OperationState::Proposed))
        {
            break op.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no failover ended 40 s after every disk filled; saw {:?}",
            env.named_since(t0, ProblemKind::PrimaryDiskFull).1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (named, kinds) = env.named_since(t0, ProblemKind::PrimaryDiskFull);
    println!(
        "every disk full: fault -> PrimaryDiskFull named in {:?} ms, failover ended {} ms after the fault: {:?}; kinds seen {kinds:?}",
        named.map(|n| n - t0),
        op.updated_ms.saturating_sub(t0),
        op.error
    );
    assert!(named.is_some(), "PrimaryDiskFull never named: {kinds:?}");
    assert_eq!(op.state, OperationState::NeedsHuman, "{op:?}");
    let err = op.error.clone().unwrap_or_default();
    assert!(
        err.contains("no replica can take over") && err.contains("disk is full"),
        "{err}"
    );
    assert!(
        op.data["candidate"].is_null(),
        "nothing was promoted: {:?}",
        op.data
    );
    // m1 was not fenced: still writable, and no other member is.
    for (m, ro) in [("m1", "0"), ("m2", "1"), ("m3", "1")] {
        let mut s = Session::connect(&env.addr(m), &env.sb.admin(), opts())
            .await
            .unwrap();
        let rows = s
            .query_rows("read_only", "SELECT @@read_only AS ro")
            .await
            .unwrap();
        assert_eq!(rows[0]["ro"].as_deref(), Some(ro), "{m} read_only");
    }
    for fs in &env.fs {
        fs.free().expect("free a member's filesystem");
    }
    env.stop().await;
}
