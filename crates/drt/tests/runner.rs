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
