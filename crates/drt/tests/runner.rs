//! The runner can fail: with semi-sync off, acknowledged rows deleted on the primary behind
//! the load's back (a lost write planted on purpose) make the lost-write guardrail abort the
//! run and the report FAIL, naming the lost ids. Port 32570.

use std::time::Duration;

use drt::report::Report;
use drt::runner::{run_once, RunTarget};
use drt::scenario::{Overrides, Scenario};
use probe::{ProbeOptions, Session};
use sandbox::testing::SandboxGuard;
use sandbox::{Sandbox, UpOptions};
use tokio_util::sync::CancellationToken;

const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

#[tokio::test]
async fn a_planted_lost_write_fails_the_run_with_its_ids() {
    let root = tempfile::Builder::new()
        .prefix("dbfleet-drt-runner-")
        .tempdir()
        .unwrap();
    let _guard = SandboxGuard::new(root.path(), "drtlost");
    let (sb, _) = Sandbox::up(&UpOptions {
        name: "drtlost".into(),
        replicas: 2,
        semi_sync: false,
        base_port: 32570,
        root: root.path().to_path_buf(),
        tuning: Default::default(),
    })
    .await
    .expect("sandbox up");
    let creds = sb.credentials().unwrap();
    let admin = creds.admin.credentials();
    let target = RunTarget {
        members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
        admin: admin.clone(),
        app: creds.app.credentials(),
        api: None,
        control_plane_gid: None,
        token: None,
        sandbox: sb.clone(),
    };
    let scenario = Scenario::builtin("stop-replica-sql")
        .unwrap()
        .with_overrides(&Overrides {
            duration: Some(Duration::from_secs(6)),
            ..Default::default()
        })
        .unwrap();

    // 2.5 s into the load, delete five acknowledged rows on the primary, binlogged, so they
    // are gone everywhere: acknowledged writes the cluster no longer has.
    let primary = sb.member("m1").unwrap().addr();
    let planter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut s = Session::connect(&primary, &admin, ADMIN).await.unwrap();
        let rows = s
            .query_rows("pick", "SELECT id FROM app.drt_ledger ORDER BY id LIMIT 5")
            .await
            .unwrap();
        let ids: Vec<u64> = rows
            .iter()
            .filter_map(|r| r.get("id").cloned().flatten())
            .map(|v| v.parse().unwrap())
            .collect();
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        s.exec(
            "plant",
            &format!(
                "DELETE FROM app.drt_ledger WHERE id IN ({})",
                list.join(",")
            ),
        )
        .await
        .unwrap();
        s.close().await;
        ids
    });
    let run = run_once(&scenario, &target, CancellationToken::new())
        .await
        .expect("the run ran");
    let deleted = planter.await.unwrap();
    assert_eq!(deleted.len(), 5);
    let report = Report::new(scenario, vec![run]);
    let run = &report.runs[0];
    eprintln!("aborted: {:?}", run.aborted);
    eprintln!(
        "lost: {:?}",
        run.lost.iter().map(|l| l.id).collect::<Vec<_>>()
    );
    assert!(!report.pass, "the report must FAIL");
    let lost: Vec<u64> = run.lost.iter().map(|l| l.id).collect();
    for id in &deleted {
        assert!(lost.contains(id), "lost ids {lost:?} lack the deleted {id}");
    }
    let reason = run.aborted.as_deref().unwrap_or("");
    assert!(
        reason.contains("guardrail") && reason.contains("missing"),
        "the lost-write guardrail should have aborted the run: {reason:?}"
    );
    let lost_verdict = report.verdicts[0]
        .iter()
        .find(|v| !v.pass)
        .expect("a failed verdict");
    eprintln!("failed verdict: {lost_verdict:?}");
    assert!(report.text().contains("FAIL"));
    // The stopped SQL thread was healed despite the abort.
    let o = probe::observe(&sb.member("m2").unwrap().addr(), &target.admin, ADMIN).await;
    assert!(o.state().unwrap().replication.as_ref().unwrap().sql_running);
    let o = probe::observe(&sb.member("m3").unwrap().addr(), &target.admin, ADMIN).await;
    assert!(o.state().unwrap().replication.as_ref().unwrap().sql_running);
}

/// `lose-primary-and-best-replica` without a control plane (semi-sync on, port 26040): the
/// stall hits one replica, `best_replica` then resolves to the other one (it received more),
/// which is killed before the primary; every fault is healed, the killed members run again,
/// and the stale client's writes are in the report. No failover happens (nobody does one),
/// and `needs_human` is not measured without the control plane's events: that verdict fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lose_primary_and_best_replica_kills_the_replica_that_was_not_stalled() {
    let root = tempfile::Builder::new()
        .prefix("dbfleet-drt-lose-")
        .tempdir()
        .unwrap();
    let _guard = SandboxGuard::new(root.path(), "drtlose");
    let (sb, _) = Sandbox::up(&UpOptions {
        name: "drtlose".into(),
        replicas: 2,
        semi_sync: true,
        base_port: 26040,
        root: root.path().to_path_buf(),
        tuning: Default::default(),
    })
    .await
    .expect("sandbox up");
    let creds = sb.credentials().unwrap();
    let target = RunTarget {
        members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
        admin: creds.admin.credentials(),
        app: creds.app.credentials(),
        api: None,
        control_plane_gid: None,
        token: None,
        sandbox: sb.clone(),
    };
    let scenario = Scenario::builtin("lose-primary-and-best-replica").unwrap();
    let run = run_once(&scenario, &target, CancellationToken::new())
        .await
        .expect("the run ran");
    for e in &run.timeline {
        eprintln!("{:>6} {:?} {}", e.at_ms, e.kind, e.label);
    }
    let injected: Vec<&str> = run
        .timeline
        .iter()
        .filter(|e| e.kind == drt::report::EventKind::FaultInjected)
        .map(|e| e.label.as_str())
        .collect();
    let stalled = injected
        .iter()
        .find(|l| l.starts_with("stall_replica_stream"))
        .expect("a stall");
    let killed = injected
        .iter()
        .find(|l| l.starts_with("kill_replica"))
        .expect("a replica kill");
    let member = |label: &str| label.split_whitespace().nth(1).unwrap().to_string();
    assert_ne!(member(stalled), member(killed), "{stalled} / {killed}");
    assert!(injected.iter().any(|l| l.starts_with("kill_primary m1")));
    // Killed in that order: the best replica first.
    let at = |prefix: &str| {
        run.timeline
            .iter()
            .find(|e| {
                e.kind == drt::report::EventKind::FaultInjected && e.label.starts_with(prefix)
            })
            .unwrap()
            .at_ms
    };
    assert!(at("kill_replica") <= at("kill_primary"));
    assert_eq!(
        run.timeline
            .iter()
            .filter(|e| e.kind == drt::report::EventKind::FaultHealed)
            .count(),
        3,
        "every fault healed"
    );
    assert_eq!(run.stale.pinned_writer, Some(4));
    assert!(run.stale.pinned_acked > 0);
    assert_eq!(run.figures.failovers, 0);
    // Nothing was promoted, so nothing is lost: the old primary holds every write.
    assert!(run.lost.is_empty(), "{:?}", run.lost);
    let report = Report::new(scenario, vec![run]);
    let human = report.verdicts[0]
        .iter()
        .find(|v| v.expectation == "the control plane hands the failover to a human")
        .unwrap();
    assert!(!human.pass && human.detail.contains("--api"), "{human:?}");
    for m in sb.status() {
        assert!(m.running, "{} not running after the heal", m.name);
    }
}
