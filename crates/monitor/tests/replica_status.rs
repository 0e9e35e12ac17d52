//! The probe's lazy replica-status read, against a real sandbox: a primary with no source
//! has `SHOW SLAVE STATUS` left out of nine probes in ten; a replica never does; and a source
//! configured on the primary by hand (`CHANGE MASTER`, started or not) shows in the very
//! next probe, because the status counters give it away.
//!
//! The sandbox uses ports 30080–30081, in a temporary directory.

use model::IoThreadState;
use probe::{ObserveOptions, ProbeOptions, Session, FULL_REPLICA_READ_EVERY};
use sandbox::testing::TestSandbox;

const LAZY: ObserveOptions = ObserveOptions {
    heartbeat: false,
    lazy_replica_status: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_status_is_skipped_only_while_the_server_has_no_replication() {
    let sb = TestSandbox::up("rs", 1, 30080).await;
    let creds = sb.admin();
    let (m1, m2) = (sb.addr("m1"), sb.addr("m2"));
    let opts = ProbeOptions::default();

    // The primary: one full read, then nine skipped, then a full one again.
    let mut p = Session::connect(&m1, &creds, opts)
        .await
        .expect("connect m1");
    let probes = FULL_REPLICA_READ_EVERY + 2;
    for i in 0..probes {
        let s = p.observe_with(LAZY).await.expect("observe m1");
        assert!(s.replication.is_none(), "probe {i}: {:?}", s.replication);
        assert!(!s.read_only);
    }
    assert_eq!(
        p.replica_reads_skipped(),
        u64::from(FULL_REPLICA_READ_EVERY),
        "{probes} probes: full, 9 skipped, full, skipped"
    );

    // The replica: never skipped.
    let mut r = Session::connect(&m2, &creds, opts)
        .await
        .expect("connect m2");
    for _ in 0..3 {
        let s = r.observe_with(LAZY).await.expect("observe m2");
        let repl = s.replication.expect("m2 replicates");
        assert_eq!(repl.source, m1);
        assert_eq!(repl.io_thread, IoThreadState::Yes);
    }
    assert_eq!(r.replica_reads_skipped(), 0);

    // A source configured by hand on the primary, not started: seen at the next probe,
    // though the session was skipping.
    let skipped = p.replica_reads_skipped();
    p.exec(
        "change master",
        &format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='nobody'",
            m2.host, m2.port
        ),
    )
    .await
    .expect("change master on m1");
    let s = p.observe_with(LAZY).await.expect("observe m1");
    let repl = s.replication.expect("the new source is seen at once");
    assert_eq!(repl.source, m2);
    assert_eq!(repl.io_thread, IoThreadState::No);
    assert!(!repl.sql_running);
    assert_eq!(p.replica_reads_skipped(), skipped, "that probe read it");
    for _ in 0..3 {
        let s = p.observe_with(LAZY).await.expect("observe m1");
        assert!(s.replication.is_some());
    }
    assert_eq!(
        p.replica_reads_skipped(),
        skipped,
        "a configured source is always read"
    );

    // Removed again: back to skipping after one full read.
    p.exec("reset slave", "RESET SLAVE ALL")
        .await
        .expect("reset slave all");
    for _ in 0..3 {
        let s = p.observe_with(LAZY).await.expect("observe m1");
        assert!(s.replication.is_none(), "{:?}", s.replication);
    }
    assert!(p.replica_reads_skipped() > skipped);

    // m1 had a source now, so its heartbeat period stays set: a new source whose SQL thread
    // starts is still seen at the next probe, through Slaves_running.
    let skipped = p.replica_reads_skipped();
    p.exec(
        "change master and start the SQL thread",
        &format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='nobody'; \
             START SLAVE SQL_THREAD",
            m2.host, m2.port
        ),
    )
    .await
    .expect("change master on m1");
    let s = p.observe_with(LAZY).await.expect("observe m1");
    let repl = s.replication.expect("the started source is seen at once");
    assert_eq!(repl.source, m2);
    assert!(repl.sql_running);
    assert_eq!(p.replica_reads_skipped(), skipped);
    p.exec("reset slave", "STOP SLAVE; RESET SLAVE ALL")
        .await
        .expect("stop and reset slave");
    p.close().await;
    r.close().await;
}
