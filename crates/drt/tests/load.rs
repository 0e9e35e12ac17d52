//! The write load against real sandboxes: a healthy set, a killed primary with a failover by
//! hand under semi-sync, a checker that finds deleted rows, a checker whose connections are
//! killed mid-read and retries, a `read_only` fence with a split brain, and a stale client
//! pinned to the old primary. Each test has its own ports (31400..31440, 29000..29009,
//! 26030..26031) and directory.

use std::time::Duration;

use drt::load::{self, Ledger, LoadOptions, TableName, VerifyOptions};
use drt::DrtError;
use model::gtid::MariadbGtidList;
use model::InstanceAddr;
use probe::{Credentials, ProbeError, ProbeOptions, Session};
use sandbox::testing::TestSandbox;
use sandbox::CredentialSet;
use tokio_util::sync::CancellationToken;

const ADMIN_TIMEOUTS: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

/// A test sandbox ([`TestSandbox`]) and its accounts.
struct Set {
    sb: TestSandbox,
    creds: CredentialSet,
}

impl Set {
    async fn up(name: &str, base_port: u16, replicas: usize, semi_sync: bool) -> Self {
        let sb = TestSandbox::up_with(name, replicas, base_port, semi_sync).await;
        let creds = sb.credentials().expect("credentials");
        Self { sb, creds }
    }

    fn addr(&self, member: &str) -> InstanceAddr {
        self.sb.addr(member)
    }

    fn admin(&self) -> Credentials {
        self.creds.admin.credentials()
    }

    fn app(&self) -> Credentials {
        self.creds.app.credentials()
    }

    async fn session(&self, addr: &InstanceAddr) -> Session {
        Session::connect(addr, &self.admin(), ADMIN_TIMEOUTS)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    async fn exec(&self, addr: &InstanceAddr, sql: &str) {
        let mut s = self.session(addr).await;
        s.exec("test statement", sql)
            .await
            .unwrap_or_else(|e| panic!("{addr}: {sql}: {e}"));
        s.close().await;
    }

    /// The first column of the first row.
    async fn value(&self, addr: &InstanceAddr, sql: &str) -> String {
        let mut s = self.session(addr).await;
        let rows = s
            .query_rows("test query", sql)
            .await
            .unwrap_or_else(|e| panic!("{addr}: {sql}: {e}"));
        s.close().await;
        let row = rows.into_iter().next().expect("a row");
        row.get("v").cloned().flatten().unwrap_or_default()
    }

    /// Half a second of load (2 writers, 400 writes/s) on `primary`, with `replica` then
    /// caught up: a ledger of more than 10 acknowledged writes on both.
    async fn short_load(&self, primary: &InstanceAddr, replica: &InstanceAddr) -> Ledger {
        load::prepare(&self.admin(), primary, &table())
            .await
            .unwrap();
        let mut opts = LoadOptions::new(vec![primary.clone(), replica.clone()], self.app());
        opts.writers = 2;
        opts.rate_per_s = 400;
        opts.duration = Duration::from_millis(500);
        let ledger = load::run(opts, CancellationToken::new()).await;
        assert!(ledger.acked.len() > 10, "{}", ledger.acked.len());
        self.catch_up(primary, std::slice::from_ref(replica)).await;
        ledger
    }

    /// Wait until every replica has applied everything `primary` has binlogged.
    async fn catch_up(&self, primary: &InstanceAddr, replicas: &[InstanceAddr]) {
        let pos = self.value(primary, "SELECT @@gtid_binlog_pos AS v").await;
        for r in replicas {
            let mut s = self.session(r).await;
            let done = s
                .wait_for_gtid(&pos, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{r}: wait for {pos}: {e}"));
            assert!(done, "{r} did not reach {pos}");
            s.close().await;
        }
    }

    /// Promote by hand the replica that received the most from the dead primary: wait until
    /// it has applied what it received, detach it and open it for writes. Returns it.
    async fn promote_most_advanced(&self, replicas: &[InstanceAddr]) -> InstanceAddr {
        let mut best: Option<(InstanceAddr, String, MariadbGtidList)> = None;
        for r in replicas {
            let mut s = self.session(r).await;
            let rows = s
                .query_rows("slave status", "SHOW SLAVE STATUS")
                .await
                .unwrap();
            s.close().await;
            let io = rows[0]
                .get("Gtid_IO_Pos")
                .cloned()
                .flatten()
                .unwrap_or_default();
            let pos: MariadbGtidList = io.parse().unwrap();
            if best.as_ref().is_none_or(|(_, _, b)| !b.includes(&pos)) {
                best = Some((r.clone(), io, pos));
            }
        }
        let (addr, io, _) = best.expect("a replica");
        let mut s = self.session(&addr).await;
        assert!(
            s.wait_for_gtid(&io, Duration::from_secs(5)).await.unwrap(),
            "{addr} did not apply its relay log up to {io}"
        );
        s.exec(
            "promote",
            "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0",
        )
        .await
        .unwrap();
        s.close().await;
        addr
    }
}

use model::clock::now_ms;

fn table() -> TableName {
    "app.drt_ledger".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_set_acks_every_write_everywhere() {
    let set = Set::up("drt-healthy", 31400, 2, false).await;
    let (m1, m2, m3) = (set.addr("m1"), set.addr("m2"), set.addr("m3"));
    load::prepare(&set.admin(), &m1, &table()).await.unwrap();
    // A second prepare leaves the table alone.
    load::prepare(&set.admin(), &m1, &table()).await.unwrap();

    let mut opts = LoadOptions::new(vec![m2.clone(), m1.clone(), m3.clone()], set.app());
    opts.writers = 4;
    opts.rate_per_s = 0;
    opts.duration = Duration::from_millis(1500);
    let ledger = load::run(opts, CancellationToken::new()).await;

    eprintln!(
        "healthy: {} acked in {:?} = {:.0} writes/s, {} in doubt, {} failed",
        ledger.acked.len(),
        ledger.elapsed(),
        ledger.acked_per_s(),
        ledger.in_doubt.len(),
        ledger.failed_attempts
    );
    assert!(ledger.acked.len() > 50, "{} acked", ledger.acked.len());
    assert_eq!(ledger.failed_attempts, 0, "{:?}", ledger.failure_reasons);
    assert!(ledger.in_doubt.is_empty(), "{:?}", ledger.in_doubt);
    assert!(ledger.outages.is_empty(), "{:?}", ledger.outages);
    assert!(ledger.split_brain.is_empty());
    assert_eq!(ledger.max_outage(), Duration::ZERO);
    assert_eq!(ledger.total_writes(), ledger.acked.len() as u64);
    let mut ids: Vec<u64> = ledger.acked.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), ledger.acked.len(), "ids are unique");
    for a in &ledger.acked {
        assert_eq!(a.server, m1, "only the primary is writable");
        assert!(ledger.id_range().contains(&a.id));
        let gtid = a.gtid.as_deref().expect("a gtid");
        assert!(gtid.starts_with("0-1-"), "{gtid}");
    }
    let round: load::Ledger =
        serde_json::from_str(&serde_json::to_string(&ledger).unwrap()).unwrap();
    assert_eq!(round, ledger);

    set.catch_up(&m1, &[m2.clone(), m3.clone()]).await;
    let v = load::verify(
        &ledger,
        &m1,
        &[m2.clone(), m3.clone()],
        &set.admin(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert!(v.all_present(), "{v:?}");
    assert_eq!(v.per_instance.len(), 3);
    for c in &v.per_instance {
        assert!(c.reachable, "{c:?}");
        assert_eq!(c.rows, ledger.acked.len(), "{}", c.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_then_promotion_by_hand_loses_no_acked_write_under_semi_sync() {
    let set = Set::up("drt-failover", 31410, 2, true).await;
    let (m1, m2, m3) = (set.addr("m1"), set.addr("m2"), set.addr("m3"));
    load::prepare(&set.admin(), &m1, &table()).await.unwrap();
    let obs = probe::observe(&m1, &set.admin(), ADMIN_TIMEOUTS).await;
    let ss = &obs.state().expect("m1 reachable").semi_sync;
    assert!(ss.source_active && ss.source_clients == 2, "{ss:?}");

    let mut opts = LoadOptions::new(vec![m1.clone(), m2.clone(), m3.clone()], set.app());
    opts.writers = 4;
    opts.rate_per_s = 1000;
    opts.duration = Duration::from_millis(2500);
    let load = tokio::spawn(load::run(opts, CancellationToken::new()));

    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every commit so far was acknowledged by a replica: semi-sync never fell back.
    let no_tx = set
        .value(&m1, "SELECT VARIABLE_VALUE AS v FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='RPL_SEMI_SYNC_MASTER_NO_TX'")
        .await;
    assert_eq!(no_tx, "0", "semi-sync fell back to async");
    let kill_start = now_ms();
    let sb = set.sb.clone();
    assert!(tokio::task::spawn_blocking(move || sb.kill("m1"))
        .await
        .unwrap()
        .unwrap());
    let kill_done = now_ms();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let promote_start = now_ms();
    let new = set.promote_most_advanced(&[m2.clone(), m3.clone()]).await;
    let promoted = now_ms();
    let ledger = load.await.unwrap();

    assert_eq!(ledger.outages.len(), 1, "{:#?}", ledger.outages);
    let o = &ledger.outages[0];
    let recovered = o.recovered_ms.expect("writes recovered");
    eprintln!(
        "failover: kill at +{} ms (took {} ms), promotion of {new} at +{} ms (took {} ms); \
         outage +{}..+{} ms = {:?}; {} acked ({:.0}/s), {} in doubt, {} failed {:?}",
        kill_start - ledger.started_ms,
        kill_done - kill_start,
        promote_start - ledger.started_ms,
        promoted - promote_start,
        o.first_failure_ms - ledger.started_ms,
        recovered - ledger.started_ms,
        ledger.max_outage(),
        ledger.acked.len(),
        ledger.acked_per_s(),
        ledger.in_doubt.len(),
        ledger.failed_attempts,
        ledger.failure_reasons,
    );
    // The window covers the gap: it opens around the kill and closes after the promotion.
    assert!(o.first_failure_ms + 1000 >= kill_start, "{o:?}");
    assert!(
        o.first_failure_ms <= kill_done + 500,
        "{o:?} kill done {kill_done}"
    );
    assert!(
        recovered + 5 >= promote_start,
        "{o:?} promoted at {promote_start}"
    );
    assert_eq!(o.from.as_ref(), Some(&m1));
    assert_eq!(o.to.as_ref(), Some(&new));
    assert_eq!(o.writers, vec![0, 1, 2, 3]);
    assert_eq!(
        ledger.writer_outages.len(),
        4,
        "{:#?}",
        ledger.writer_outages
    );
    assert!(ledger.max_outage() >= Duration::from_millis(300));
    assert!(ledger.split_brain.is_empty(), "{:?}", ledger.split_brain);
    assert!(ledger.failure_reasons.contains_key("no writable primary"));
    assert!(ledger.in_doubt.iter().all(|d| d.server == m1));
    // The writers moved to the new primary. (A writer's last acks on m1 may come after
    // another writer's first failure: the merged window opens at the earliest one.)
    for a in &ledger.acked {
        if a.server == m1 {
            assert!(a.at_ms <= kill_done + 5, "{a:?} after the kill");
        } else {
            assert_eq!(a.server, new, "{a:?}");
            assert!(a.at_ms + 5 >= promote_start, "{a:?} before the promotion");
        }
    }
    assert!(ledger.acked.iter().any(|a| a.server == new));

    let other = if new == m2 { m3.clone() } else { m2.clone() };
    let v = load::verify(
        &ledger,
        &new,
        std::slice::from_ref(&other),
        &set.admin(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    let writer_check = v.check(&new).unwrap();
    let other_check = v.check(&other).unwrap();
    let acked_on_m1: std::collections::HashSet<u64> = ledger
        .acked
        .iter()
        .filter(|a| a.server == m1)
        .map(|a| a.id)
        .collect();
    eprintln!(
        "verify: {} lost; {new}: {} rows, {} in-doubt present; {other} (still on the dead \
         primary): {} missing, {} of them acked by m1",
        v.lost.len(),
        writer_check.rows,
        writer_check.present_in_doubt,
        other_check.missing.len(),
        other_check
            .missing
            .iter()
            .filter(|id| acked_on_m1.contains(id))
            .count()
    );
    assert!(v.lost.is_empty(), "lost: {:?}", v.lost);
    assert!(writer_check.missing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_deleted_rows_and_unreachable_servers() {
    let set = Set::up("drt-missing", 31420, 1, false).await;
    let (m1, m2) = (set.addr("m1"), set.addr("m2"));
    let nobody = InstanceAddr::new("127.0.0.1", 31429);
    let ledger = set.short_load(&m1, &m2).await;

    // One row disappears from the primary only, another from the replica only.
    let gone_on_primary = ledger.acked[0].id;
    let gone_on_replica = ledger.acked[ledger.acked.len() - 1].id;
    let delete = |id: u64| {
        format!("SET sql_log_bin=0; DELETE FROM app.drt_ledger WHERE id={id}; SET sql_log_bin=1")
    };
    set.exec(&m1, &delete(gone_on_primary)).await;
    set.exec(&m2, &delete(gone_on_replica)).await;

    let v = load::verify(
        &ledger,
        &m1,
        &[m2.clone(), nobody.clone()],
        &set.admin(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert!(!v.all_present());
    assert_eq!(v.lost, vec![ledger.acked[0].clone()]);
    assert_eq!(v.check(&m1).unwrap().missing, vec![gone_on_primary]);
    assert_eq!(v.check(&m2).unwrap().missing, vec![gone_on_replica]);
    let n = v.check(&nobody).unwrap();
    assert!(!n.reachable && n.error.is_some(), "{n:?}");

    // The writer must be readable, or loss cannot be judged.
    // It is tried twice, 500 ms apart, and the error says so.
    let started = std::time::Instant::now();
    let err = load::verify(
        &ledger,
        &nobody,
        &[],
        &set.admin(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "no pause before the retry"
    );
    assert!(
        matches!(&err, DrtError::Retried { last, .. }
            if matches!(&**last, DrtError::Sql { error: ProbeError::Refused, addr, .. } if *addr == nobody)),
        "{err}"
    );
    assert!(
        matches!(err.probe_error(), Some(ProbeError::Refused)),
        "{err}"
    );
    assert!(err.to_string().contains("retried after 500 ms"), "{err}");
    // An unreachable other server was tried twice too.
    assert!(n.retried.is_some(), "{n:?}");
}

/// Wait until `addr` runs the verifier's `SELECT` of the ledger (blocked behind a table
/// lock), then kill that connection from the server side. Returns the killed id.
async fn kill_verifier(set: &Set, addr: &InstanceAddr) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let id = set
            .value(
                addr,
                "SELECT COALESCE(MAX(ID), '') AS v FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'SELECT id FROM `app`.`drt_ledger`%'",
            )
            .await;
        if !id.is_empty() {
            set.exec(addr, &format!("KILL CONNECTION {id}")).await;
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verifier never read {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_retries_a_server_whose_connection_was_killed() {
    let set = Set::up("drt-verify-retry", 29000, 1, false).await;
    let (m1, m2) = (set.addr("m1"), set.addr("m2"));
    let ledger = set.short_load(&m1, &m2).await;

    // Hold the ledger table on both servers, so the verifier's reads wait where the test
    // can find and kill them, as a fencing of the old primary would.
    let mut locks = Vec::new();
    for addr in [&m1, &m2] {
        let mut s = set.session(addr).await;
        s.exec("lock ledger", "LOCK TABLES app.drt_ledger WRITE")
            .await
            .unwrap_or_else(|e| panic!("{addr}: lock: {e}"));
        locks.push(s);
    }
    let verifying = {
        let (ledger, m1, m2, admin) = (ledger.clone(), m1.clone(), m2.clone(), set.admin());
        tokio::spawn(async move {
            load::verify(&ledger, &m1, &[m2], &admin, &VerifyOptions::default()).await
        })
    };
    for (addr, mut lock) in [&m1, &m2].into_iter().zip(locks) {
        let id = kill_verifier(&set, addr).await;
        eprintln!("killed the verifier's connection {id} on {addr}");
        lock.exec("unlock ledger", "UNLOCK TABLES").await.unwrap();
        lock.close().await;
    }
    let v = tokio::time::timeout(Duration::from_secs(30), verifying)
        .await
        .expect("verify ends")
        .unwrap()
        .unwrap_or_else(|e| panic!("verify after a killed connection: {e}"));
    assert!(v.all_present(), "{v:?}");
    for addr in [&m1, &m2] {
        let c = v.check(addr).unwrap();
        assert!(c.reachable && c.error.is_none(), "{c:?}");
        assert_eq!(c.rows, ledger.acked.len(), "{addr}");
        let first = c
            .retried
            .as_deref()
            .unwrap_or_else(|| panic!("{addr} not retried: {c:?}"));
        assert!(first.contains("read ledger ids"), "{first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_fence_is_a_clean_refusal_and_two_writables_a_split_brain() {
    let set = Set::up("drt-fence", 31430, 1, false).await;
    let (m1, m2) = (set.addr("m1"), set.addr("m2"));
    load::prepare(&set.admin(), &m1, &table()).await.unwrap();
    set.catch_up(&m1, std::slice::from_ref(&m2)).await;
    // Both writable when the writers first probe.
    set.exec(&m2, "SET GLOBAL read_only=0").await;

    let mut opts = LoadOptions::new(vec![m1.clone(), m2.clone()], set.app());
    opts.writers = 2;
    opts.rate_per_s = 400;
    opts.duration = Duration::from_millis(1500);
    let load = tokio::spawn(load::run(opts, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    set.exec(&m2, "SET GLOBAL read_only=1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fenced = now_ms();
    set.exec(&m1, "SET GLOBAL read_only=1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opened = now_ms();
    set.exec(&m1, "SET GLOBAL read_only=0").await;
    let ledger = load.await.unwrap();

    eprintln!(
        "fence: {} acked, {} failed {:?}, outages {:?}",
        ledger.acked.len(),
        ledger.failed_attempts,
        ledger.failure_reasons,
        ledger
            .outages
            .iter()
            .map(|o| o.length(ledger.ended_ms))
            .collect::<Vec<_>>()
    );
    assert_eq!(ledger.split_brain.len(), 2, "{:?}", ledger.split_brain);
    for s in &ledger.split_brain {
        assert_eq!(s.writable, vec![m1.clone(), m2.clone()]);
    }
    // A read_only refusal is certain: nothing is in doubt.
    assert!(ledger.in_doubt.is_empty(), "{:?}", ledger.in_doubt);
    assert!(ledger.failure_reasons["server error 1290 (read_only)"] >= 1);
    assert!(ledger.failure_reasons["no writable primary"] >= 1);
    assert_eq!(ledger.outages.len(), 1, "{:?}", ledger.outages);
    let o = &ledger.outages[0];
    assert!(o.first_failure_ms + 50 >= fenced && o.recovered_ms.unwrap() + 5 >= opened);
    assert_eq!((o.from.as_ref(), o.to.as_ref()), (Some(&m1), Some(&m1)));
    assert!(ledger.acked.iter().all(|a| a.server == m1));

    let v = load::verify(&ledger, &m1, &[], &set.admin(), &VerifyOptions::default())
        .await
        .unwrap();
    assert!(v.all_present(), "{v:?}");
}

/// The stale client (port 26030): one writer pinned to the first primary's address. A manual
/// failover at 1 s moves the other writers to m2; the pinned writer is refused by the fenced
/// m1 (the application account cannot pass `read_only`); at 2 s m1 is opened again, as an old
/// primary that was never fenced, and what it acknowledges then is counted as stale, by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_client_stays_on_the_old_primary_and_its_late_acks_are_counted() {
    let set = Set::up("drtstale", 26030, 1, false).await;
    let (m1, m2) = (set.addr("m1"), set.addr("m2"));
    load::prepare(&set.admin(), &m1, &table()).await.unwrap();
    let mut opts = LoadOptions::new(vec![m1.clone(), m2.clone()], set.app());
    opts.writers = 2;
    opts.rate_per_s = 200;
    opts.duration = Duration::from_millis(4000);
    opts.pinned = Some(m1.clone());
    let cancel = CancellationToken::new();
    let load = tokio::spawn(load::run(opts, cancel.clone()));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A failover by hand: fence m1, open m2.
    set.exec(&m1, "SET GLOBAL read_only=1").await;
    set.exec(&m2, "STOP SLAVE; SET GLOBAL read_only=0").await;
    let opened_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The old primary comes back unfenced for a second.
    let unfenced_ms = now_ms();
    set.exec(&m1, "SET GLOBAL read_only=0").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    set.exec(&m1, "SET GLOBAL read_only=1").await;
    let refenced_ms = now_ms();
    let ledger = load.await.unwrap();

    let pinned = ledger
        .pinned
        .clone()
        .expect("the ledger names the stale client");
    assert_eq!((pinned.writer, &pinned.addr), (2, &m1));
    assert_eq!(ledger.writers, 3);
    // The stale client never moved, and opened no outage.
    assert!(ledger
        .acked
        .iter()
        .filter(|a| a.writer == 2)
        .all(|a| a.server == m1));
    assert!(ledger
        .writer_outages
        .iter()
        .all(|o| !o.writers.contains(&2)));
    let refused = ledger
        .failure_reasons
        .get("stale client: server error 1290 (read_only)")
        .copied()
        .unwrap_or(0);
    assert!(refused > 10, "refusals: {:?}", ledger.failure_reasons);
    // The other writers moved to m2.
    assert!(ledger.acked.iter().any(|a| a.writer < 2 && a.server == m2));

    let scenario = drt::scenario::Scenario::builtin("kill-primary").unwrap();
    let started = ledger.started_ms;
    let events = vec![drt::report::TimelineEvent::from_epoch(
        started,
        opened_ms - 50,
        drt::report::EventKind::FaultInjected,
        "failover by hand",
    )];
    let verification = load::verify(&ledger, &m2, &[], &set.admin(), &VerifyOptions::default())
        .await
        .unwrap();
    let r = drt::report::RunResult::build(drt::report::RunParts {
        scenario: &scenario,
        cluster: "drtstale".into(),
        ledger: &ledger,
        verification: Ok(&verification),
        events,
        ended_ms: now_ms(),
        aborted: None,
        guard_split_brain: Vec::new(),
        guard_mute: Vec::new(),
    });
    let st = &r.stale;
    eprintln!("stale: {st:?}");
    assert_eq!(st.old_primary.as_ref(), Some(&m1));
    assert_eq!(st.new_primary.as_ref(), Some(&m2));
    let opened = st.opened_ms.expect("the clients saw m2 open") + started;
    assert!(
        opened >= opened_ms.saturating_sub(100),
        "{opened} < {opened_ms}"
    );
    // Exactly the acks of m1 after the opening: those of the unfenced second.
    let want: Vec<u64> = ledger
        .acked
        .iter()
        .filter(|a| a.server == m1 && a.at_ms > opened)
        .map(|a| a.id)
        .collect();
    assert!(!want.is_empty(), "the unfenced m1 acknowledged nothing");
    assert_eq!(st.acked_after_open, want.len() as u64);
    assert_eq!(st.ids, want.iter().take(10).copied().collect::<Vec<_>>());
    for a in ledger.acked.iter().filter(|a| want.contains(&a.id)) {
        assert_eq!(a.writer, 2, "only the stale client stays on m1");
        assert!(
            a.at_ms >= unfenced_ms && a.at_ms <= refenced_ms + 100,
            "{} outside the unfenced second",
            a.at_ms
        );
    }
    // They never reached m2 (replication was stopped): acknowledged, and lost.
    let lost: Vec<u64> = r.lost.iter().map(|l| l.id).collect();
    assert!(
        want.iter().all(|id| lost.contains(id)),
        "{want:?} not all in {lost:?}"
    );
    let verdicts = drt::report::judge(&scenario, &r);
    let v = verdicts
        .iter()
        .find(|v| v.expectation.contains("acknowledged by the old primary"))
        .unwrap();
    assert!(!v.pass, "{v:?}");
}
