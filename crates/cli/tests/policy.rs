//! The failover policy through the real daemon: an automatic failover that fails before
//! promotion pages `failover_refused` and the dead primary at once, is retried after its
//! backoff, and the retry's success resolves the page. Sandboxes use ports 27100..27200,
//! APIs 27280..27290.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{set_failover_key, test_config, Daemon, StartOpts};
use common::TestSandbox;

/// The first automatic failover fails at its first step (failpoint
/// `failover.confirm.before=error_once`, in the daemon's process). The daemon pages
/// `failover_refused` (critical) and, the death being unhandled meanwhile, the dead primary
/// itself; it does not page `operation_failed` for an attempt it retries. After the 2 s
/// backoff the retry succeeds and `failover_refused` resolves.
#[tokio::test]
async fn a_failed_automatic_failover_pages_and_is_retried() {
    let sb = TestSandbox::up("pol-dretry", 27100, &["--semi-sync"]);
    let cfg = test_config(&sb, 27280, |t| t);
    set_failover_key(&cfg, "retry_backoff = \"2s\"");
    let d = Daemon::start_with(
        &cfg,
        27280,
        StartOpts {
            env: vec![(
                "DBFLEET_FAILPOINTS".into(),
                "failover.confirm.before=error_once".into(),
            )],
            ..Default::default()
        },
    )
    .await;
    let killed = Instant::now();
    sb.open().kill("m1").unwrap();
    let key = format!("failover_refused/{}", sb.name);
    let page = d.wait_firing(&key, Duration::from_secs(20)).await;
    eprintln!("kill -> failover_refused firing: {:?}", killed.elapsed());
    assert_eq!(page["severity"], "critical", "{page:#}");
    assert_eq!(page["labels"]["attempt"], "1", "{page:#}");
    assert!(
        page["summary"]
            .as_str()
            .unwrap()
            .contains("failpoint failover.confirm.before"),
        "{page:#}"
    );
    let ops = d
        .wait_operations(&sb.name, 2, Duration::from_secs(30))
        .await;
    eprintln!("kill -> retried failover finished: {:?}", killed.elapsed());
    assert_eq!(ops[0]["state"], "succeeded", "{:#}", ops[0]);
    assert_eq!(ops[1]["state"], "failed", "{:#}", ops[1]);
    assert!(ops.iter().all(|o| o["trigger"] == "auto"), "{ops:#?}");
    let gap = ops[0]["created_ms"].as_u64().unwrap() - ops[1]["created_ms"].as_u64().unwrap();
    assert!(gap >= 2000, "the retry waited its backoff: {gap} ms");
    d.wait_alert_gone(&key, Duration::from_secs(10)).await;

    // While it waited, the dead primary paged: it was not handled by automation.
    let fired = d.get("/api/v1/events?kind=alert_fired").await;
    let text = fired.to_string();
    assert!(text.contains("page_worthy_problem"), "{fired:#}");
    assert!(
        text.contains("alert page_worthy_problem firing") && text.contains("is dead: unreachable"),
        "the dead primary paged: {fired:#}"
    );
    assert!(
        !text.contains("operation_failed"),
        "a retried attempt pages as failover_refused only: {fired:#}"
    );
    let refused = d.get("/api/v1/events?kind=failover_refused").await;
    assert_eq!(
        refused["events"].as_array().map(Vec::len),
        Some(1),
        "{refused:#}"
    );
}

/// A failover that leaves the new primary fewer semi-sync replicas than
/// `min_semi_sync_replicas` succeeds (policy `page`: writes open and wait for what acks
/// there is) and pages `operation_warning/CLUSTER/semi_sync_shortfall`, critical, with the
/// engine's event text. Without the page, nobody would learn that the cluster now runs
/// with fewer copies than it asked for.
#[tokio::test]
async fn a_semi_sync_shortfall_after_a_failover_pages() {
    let sb = TestSandbox::up("pol-short", 27110, &["--semi-sync"]);
    let cfg = test_config(&sb, 27281, |t| t);
    set_failover_key(&cfg, "min_semi_sync_replicas = 2");
    let d = Daemon::start(&cfg, 27281).await;
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(30))
        .await;
    assert_eq!(ops[0]["state"], "succeeded", "{:#}", ops[0]);
    let key = format!("operation_warning/{}/semi_sync_shortfall", sb.name);
    let page = d.wait_firing(&key, Duration::from_secs(10)).await;
    assert_eq!(page["severity"], "critical", "{page:#}");
    assert_eq!(
        page["labels"]["operation_id"],
        ops[0]["id"].to_string(),
        "{page:#}"
    );
    let summary = page["summary"].as_str().unwrap();
    assert!(
        summary.contains("semi-sync") && summary.contains(&sb.name),
        "{page:#}"
    );
}
