//! Lossless semi-sync on real sandboxes: the sandbox sets an effectively infinite
//! `rpl_semi_sync_master_timeout` and `rpl_semi_sync_master_wait_no_slave=ON`, the probe
//! reads them, a write with no replica to ack it waits (it is never acknowledged alone) and
//! the analysis names `LockedSemiSyncPrimary`; a sandbox with a short timeout is
//! `SemiSyncCanFallBack`.
//!
//! Ports 25050–25099.

use std::time::Duration;

use model::analysis::{analyze, Analysis, ClusterView};
use model::{Observation, ProblemKind};
use probe::{ProbeOptions, Session};
use sandbox::testing::TestSandbox;
use sandbox::Tuning;

fn opts() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
    }
}

async fn observe_all(sb: &TestSandbox) -> Vec<Observation> {
    let mut out = Vec::new();
    for m in ["m1", "m2", "m3"] {
        if sb.member(m).is_ok() {
            out.push(probe::observe(&sb.addr(m), &sb.admin(), opts()).await);
        }
    }
    out
}

async fn analysis(sb: &TestSandbox) -> Analysis {
    let obs = observe_all(sb).await;
    analyze(&ClusterView {
        spec: &sb.cluster_spec(),
        observations: &obs,
    })
}

async fn exec(sb: &TestSandbox, member: &str, sql: &str) {
    let mut s = Session::connect(&sb.addr(member), &sb.admin(), opts())
        .await
        .unwrap();
    s.exec("test statement", sql)
        .await
        .unwrap_or_else(|e| panic!("{member}: {sql}: {e}"));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semi_sync_primary_with_no_replica_never_acknowledges_alone() {
    let sb = TestSandbox::up_with("lossless", 2, 25050, true).await;
    let p = probe::observe(&sb.addr("m1"), &sb.admin(), opts()).await;
    let ss = &p.state().expect("m1 answers").semi_sync;
    assert_eq!(
        ss.source_timeout_ms,
        Some(model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS)
    );
    assert_eq!(ss.source_wait_no_replica, Some(true));
    assert!(!ss.can_fall_back());
    let a = analysis(&sb).await;
    assert!(a.problems.is_empty(), "{:#?}", a.problems);

    exec(&sb, "m1", "CREATE TABLE app.t (id INT PRIMARY KEY)").await;
    for r in ["m2", "m3"] {
        exec(&sb, r, "STOP SLAVE").await;
    }
    // The commit goes to the binlog and waits for an ack no replica can send.
    let mut writer = Session::connect(
        &sb.addr("m1"),
        &sb.admin(),
        ProbeOptions {
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let write =
        tokio::spawn(async move { writer.exec("write", "INSERT INTO app.t VALUES (1)").await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !write.is_finished(),
        "the write was acknowledged with no replica: {:?}",
        write.await
    );
    let mut locked = None;
    for _ in 0..50 {
        let a = analysis(&sb).await;
        if let Some(p) = a
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::LockedSemiSyncPrimary)
        {
            locked = Some(p.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let locked = locked.expect("LockedSemiSyncPrimary while the write waits");
    eprintln!("{}", locked.summary);
    assert_eq!(locked.instance.as_ref(), Some(&sb.addr("m1")));
    assert!(locked.summary.contains("START SLAVE"), "{}", locked.summary);
    assert!(
        locked.evidence[0]
            .fact
            .contains("Rpl_semi_sync_master_wait_sessions=1"),
        "{:?}",
        locked.evidence
    );
    assert!(!write.is_finished(), "still waiting after the analysis");

    // The remedy: a semi-sync replica comes back and acks.
    exec(&sb, "m2", "START SLAVE").await;
    let done = tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .expect("the write completes once a replica acks")
        .unwrap();
    done.expect("the write succeeds");
    let mut cleared = false;
    for _ in 0..50 {
        let a = analysis(&sb).await;
        if !a
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::LockedSemiSyncPrimary)
        {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cleared,
        "LockedSemiSyncPrimary cleared once the replica acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semi_sync_primary_with_a_short_timeout_can_fall_back() {
    let tuning = Tuning {
        semi_sync_timeout_ms: 3000,
        ..Tuning::default()
    };
    let sb = TestSandbox::up_tuned("fallback", 1, 25060, true, tuning).await;
    let a = analysis(&sb).await;
    let p = a
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::SemiSyncCanFallBack)
        .unwrap_or_else(|| panic!("SemiSyncCanFallBack: {:#?}", a.problems));
    assert_eq!(p.instance.as_ref(), Some(&sb.addr("m1")));
    assert!(
        p.evidence[0]
            .fact
            .starts_with("rpl_semi_sync_master_timeout=3000"),
        "{:?}",
        p.evidence
    );
    // The remedy the summary names clears it.
    exec(
        &sb,
        "m1",
        &format!(
            "SET GLOBAL rpl_semi_sync_master_timeout={}, rpl_semi_sync_master_wait_no_slave=ON",
            model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS
        ),
    )
    .await;
    assert!(p.summary.contains("rpl_semi_sync_master_wait_no_slave=ON"));
    let a = analysis(&sb).await;
    assert!(a.problems.is_empty(), "{:#?}", a.problems);
}
