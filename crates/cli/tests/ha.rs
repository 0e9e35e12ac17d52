//! High availability through the real daemon: automatic failover, a control plane cut from
//! the primary, crashes of the daemon at failpoints, switchover and recoveries through the
//! CLI, automatic rejoin, and leader loss on etcd. Sandboxes use ports 31600..31800 and 32000..32220, APIs
//! 31800..31880, etcd 32450..32460.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{set_failover_key, test_config, Daemon, StartOpts};
use common::{dbfleet, ok, TestSandbox};
use serde_json::Value;

const TOKEN: &str = "ha-test-token-0123456789";

/// A sandbox and a daemon config for it with a tokens file and failover `mode`.
fn setup(name: &str, base: u16, api: u16, semi_sync: bool, extra: &str) -> (TestSandbox, PathBuf) {
    let args: &[&str] = if semi_sync { &["--semi-sync"] } else { &[] };
    let sb = TestSandbox::up(name, base, args);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let extra = extra.to_string();
    let cfg = test_config(&sb, api, move |t| {
        let t = t.replace(
            &format!("listen = \"127.0.0.1:{api}\""),
            &format!(
                "listen = \"127.0.0.1:{api}\"\ntokens_file = {:?}",
                tokens.display().to_string()
            ),
        );
        if extra.is_empty() {
            t
        } else {
            format!("{t}\n{extra}\n")
        }
    });
    (sb, cfg)
}

/// Reachable members that take writes (`read_only=OFF`).
fn writable(sb: &TestSandbox) -> Vec<String> {
    ["m1", "m2", "m3"]
        .iter()
        .filter(|m| sb.probe(m).state().is_some_and(|s| !s.read_only))
        .map(|m| m.to_string())
        .collect()
}

fn member_of(sb: &TestSandbox, addr: &str) -> String {
    ["m1", "m2", "m3"]
        .iter()
        .find(|m| sb.addr(m).to_string() == addr)
        .unwrap_or_else(|| panic!("{addr} is no member"))
        .to_string()
}

#[tokio::test]
async fn the_daemon_fails_over_a_killed_primary_by_itself() {
    let (sb, cfg) = setup("ha-auto", 31600, 31800, true, "");
    let d = Daemon::start(&cfg, 31800).await;
    let killed = Instant::now();
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    eprintln!("kill -> failover finished: {:?}", killed.elapsed());
    let op = &ops[0];
    assert_eq!(op["state"], "succeeded", "{op:#}\n{}", d.log_text());
    assert_eq!(op["trigger"], "auto");
    let new = member_of(&sb, op["data"]["candidate"].as_str().unwrap());
    assert_eq!(
        writable(&sb),
        vec![new.clone()],
        "exactly one writable primary"
    );
    let other = if new == "m2" { "m3" } else { "m2" };
    let r = sb.probe(other);
    let rep = r.state().unwrap().replication.clone().unwrap();
    assert_eq!(rep.source, sb.addr(&new));
    assert!(rep.is_healthy(), "{rep:?}");
    let det = op["data"]["detected_ms"].as_u64().unwrap();
    let wr = op["data"]["writable_ms"].as_u64().unwrap();
    eprintln!("detection -> writable: {} ms", wr.saturating_sub(det));
    // The topology now names the new primary, and the writer endpoint moved.
    let c = d.get(&format!("/api/v1/clusters/{}", sb.name)).await;
    assert_eq!(c["writer"], sb.addr(&new).to_string(), "{c:#}");
    // The finished operation made the daemon probe the cluster again at once: the topology
    // shows the other replica repointed, from a probe made after the operation ended.
    let finished_ms = op["finished_ms"].as_u64().expect("finished_ms");
    let deadline = Instant::now() + Duration::from_secs(5);
    let shown = loop {
        let t = d
            .get(&format!("/api/v1/clusters/{}/topology", sb.name))
            .await;
        let node = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["addr"] == sb.addr(other).to_string())
            .cloned()
            .unwrap();
        if t["primary"] == sb.addr(&new).to_string()
            && node["source"] == sb.addr(&new).to_string()
            && node["observed_at_ms"].as_u64() >= Some(finished_ms)
        {
            break monitor::now_ms();
        }
        assert!(Instant::now() < deadline, "stale topology: {t:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "operation finished -> topology current: {} ms",
        shown.saturating_sub(finished_ms)
    );
    let status = d.get("/api/v1/status").await;
    assert!(
        status["stats"]["refresh_rounds"].as_u64() >= Some(1),
        "{status:#}"
    );
    // Automation took care of the death: nobody was paged for it.
    let fired = d.get("/api/v1/events?kind=alert_fired").await;
    assert!(
        !fired.to_string().contains("page_worthy_problem"),
        "{fired:#}"
    );
}

/// Policy `rejoin = "auto"`: the killed primary, started again after the failover, comes
/// back read-only and with no errant GTIDs (it boots as a replica), and the daemon rejoins
/// it as a replica of the new primary without a human; `recoveries status` shows the policy.
#[tokio::test]
async fn a_returning_old_primary_rejoins_by_itself_with_rejoin_auto() {
    let (sb, cfg) = setup("ha-rejoin", 31630, 31802, true, "");
    set_failover_key(&cfg, "rejoin = \"auto\"");
    let tokens = sb.root().join("tokens.txt").display().to_string();
    let d = Daemon::start(&cfg, 31802).await;
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    assert_eq!(ops[0]["kind"], "failover");
    assert_eq!(ops[0]["state"], "succeeded", "{:#}", ops[0]);
    let new = member_of(&sb, ops[0]["data"]["candidate"].as_str().unwrap());

    let out = sb.member_cmd("start", "m1");
    assert!(out.contains("started read-only"), "{out}");
    let ops = d
        .wait_operations(&sb.name, 2, Duration::from_secs(20))
        .await;
    let rejoin = &ops[0];
    assert_eq!(rejoin["kind"], "rejoin", "{ops:#?}");
    assert_eq!(rejoin["trigger"], "auto");
    assert_eq!(rejoin["state"], "succeeded", "{rejoin:#}\n{}", d.log_text());
    let r = sb.probe("m1").state().unwrap().replication.clone().unwrap();
    assert_eq!(r.source, sb.addr(&new));
    assert!(r.is_healthy(), "{r:?}");
    assert_eq!(writable(&sb), vec![new], "exactly one writable primary");
    let status = ok(cli(&d, &["recoveries", "status"], &tokens));
    assert!(
        status.contains("REJOIN") && status.contains("auto"),
        "{status}"
    );
    let v: Value =
        serde_json::from_str(&ok(cli(&d, &["recoveries", "status", "--json"], &tokens))).unwrap();
    assert_eq!(v["clusters"][0]["fenced"].as_array().map(Vec::len), Some(0));
    let ev = d.get("/api/v1/events?limit=200").await.to_string();
    assert!(ev.contains("rejoining it to"), "{ev}");
}

/// An automatic operation that fails pages: the automatic rejoin fails once (failpoint
/// `rejoin.check.before=error_once`), `operation_failed/CLUSTER/rejoin` fires with severity
/// error, and the rejoin a human then runs resolves it.
#[tokio::test]
async fn a_failed_automatic_rejoin_pages_until_a_rejoin_succeeds() {
    let (sb, cfg) = setup("ha-rjfail", 31640, 31803, false, "");
    set_failover_key(&cfg, "rejoin = \"auto\"");
    let tokens = sb.root().join("tokens.txt").display().to_string();
    let d = Daemon::start_with(
        &cfg,
        31803,
        StartOpts {
            env: vec![(
                "DBFLEET_FAILPOINTS".into(),
                "rejoin.check.before=error_once".into(),
            )],
            ..Default::default()
        },
    )
    .await;
    // Without semi-sync, a kill during the daemon's schema creation would leave m1 a DDL the
    // replicas lack: an errant GTID that rightly stops the rejoin this test is about.
    sb.wait_heartbeat_row(&["m2", "m3"], Duration::from_secs(20))
        .await;
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    assert_eq!(ops[0]["state"], "succeeded", "{:#}", ops[0]);
    assert!(sb.member_cmd("start", "m1").contains("started read-only"));
    let ops = d
        .wait_operations(&sb.name, 2, Duration::from_secs(20))
        .await;
    assert_eq!(ops[0]["kind"], "rejoin");
    assert_eq!(ops[0]["trigger"], "auto");
    assert_eq!(ops[0]["state"], "failed", "{:#}", ops[0]);

    let key = format!("operation_failed/{}/rejoin", sb.name);
    let page = d.wait_firing(&key, Duration::from_secs(10)).await;
    assert_eq!(page["severity"], "error", "{page:#}");
    assert_eq!(page["labels"]["trigger"], "auto", "{page:#}");
    assert!(
        page["summary"].as_str().unwrap().contains("failpoint"),
        "{page:#}"
    );

    let m1 = sb.addr("m1").to_string();
    let out = ok(cli(&d, &["rejoin", &sb.name, &m1], &tokens));
    assert!(out.contains("succeeded"), "{out}");
    d.wait_alert_gone(&key, Duration::from_secs(10)).await;
    let ev = d.get("/api/v1/events?limit=200").await.to_string();
    assert!(ev.contains("alert_resolved") && ev.contains(&key), "{ev}");
}

/// A failover that must stop for a human pages, critical: m3 may never be promoted and m2
/// holds an errant write, so nobody is safe; `operation_failed/CLUSTER/failover` fires with
/// state `needs_human`, and nobody is promoted.
#[tokio::test]
async fn a_failover_left_for_a_human_pages_critical() {
    let (sb, cfg) = setup("ha-human", 31650, 31804, false, "");
    let m3 = sb.addr("m3").to_string();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let rule = |r: &str| format!("addr = \"{m3}\"\npromotion = \"{r}\"");
    assert!(text.contains(&rule("neutral")), "{text}");
    std::fs::write(&cfg, text.replace(&rule("neutral"), &rule("must_not"))).unwrap();
    let mut m1 = sb.session("m1").await;
    m1.exec(
        "write",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await
    .unwrap();
    m1.close().await;
    let mut m2 = sb.session("m2").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m2
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.t")
        .await
        .map_or(true, |r| r[0]["n"].as_deref() != Some("1"))
    {
        assert!(Instant::now() < deadline, "m2 never got the table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m2.exec("errant write", "INSERT INTO app.t VALUES (100)")
        .await
        .unwrap();
    m2.close().await;

    let d = Daemon::start(&cfg, 31804).await;
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    assert_eq!(ops[0]["state"], "needs_human", "{:#}", ops[0]);
    let key = format!("operation_failed/{}/failover", sb.name);
    let page = d.wait_firing(&key, Duration::from_secs(10)).await;
    assert_eq!(page["severity"], "critical", "{page:#}");
    assert_eq!(page["labels"]["state"], "needs_human", "{page:#}");
    assert!(
        page["summary"]
            .as_str()
            .unwrap()
            .contains("no safe candidate"),
        "{page:#}"
    );
    assert!(writable(&sb).is_empty(), "nobody was promoted");
}

#[tokio::test]
async fn kill_9_under_semi_sync_load_loses_no_acknowledged_write() {
    let (sb, cfg) = setup("ha-load", 31720, 31813, true, "");
    let d = Daemon::start(&cfg, 31813).await;
    let creds = sb.open().credentials().unwrap();
    let admin = creds.admin.credentials();
    let members: Vec<model::InstanceAddr> = ["m1", "m2", "m3"].iter().map(|m| sb.addr(m)).collect();
    let table: drt::load::TableName = "app.ha_ledger".parse().unwrap();
    drt::load::prepare(&admin, &members[0], &table)
        .await
        .unwrap();
    let mut opts = drt::load::LoadOptions::new(members.clone(), creds.app.credentials());
    opts.table = table;
    opts.writers = 4;
    opts.rate_per_s = 400;
    opts.duration = Duration::from_secs(5);
    let load = tokio::spawn(drt::load::run(
        opts,
        tokio_util::sync::CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    sb.open().kill("m1").unwrap();
    let ledger = load.await.unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    let op = &ops[0];
    assert_eq!(op["state"], "succeeded", "{op:#}");
    let new = member_of(&sb, op["data"]["candidate"].as_str().unwrap());
    let other = if new == "m2" { "m3" } else { "m2" };
    assert_eq!(writable(&sb), vec![new.clone()], "one writable primary");
    let r = sb
        .probe(other)
        .state()
        .unwrap()
        .replication
        .clone()
        .unwrap();
    assert!(
        r.is_healthy() && r.source == sb.addr(&new),
        "the other replica replicates: {r:?}"
    );
    // Let the other replica apply everything, then check every acknowledged write.
    let pos = sb.probe(&new).state().unwrap().gtid.clone();
    if let model::GtidState::Mariadb { binlog_pos, .. } = pos {
        assert!(sb
            .session(other)
            .await
            .wait_for_gtid(&binlog_pos.to_string(), Duration::from_secs(10))
            .await
            .unwrap());
    }
    let v = drt::load::verify(
        &ledger,
        &sb.addr(&new),
        &[sb.addr(other)],
        &admin,
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(
        ledger.acked.len() > 100,
        "the load ran: {} acked",
        ledger.acked.len()
    );
    assert!(
        ledger.acked.iter().any(|a| a.server == sb.addr(&new)),
        "writes went on on the new primary"
    );
    assert!(v.lost.is_empty(), "acknowledged writes lost: {:?}", v.lost);
    assert!(v.all_present(), "{:?}", v.per_instance);
    eprintln!(
        "acked {} writes, in doubt {}, longest client outage {:?}, lost 0",
        ledger.acked.len(),
        ledger.in_doubt.len(),
        ledger.max_outage()
    );
    // The old primary is fenced.
    let rec = d.get("/api/v1/recoveries").await;
    assert!(
        rec.to_string().contains(&sb.addr("m1").to_string()),
        "m1 fenced: {rec}"
    );
}

/// A firewall rule that drops the daemon's traffic (by its group id) to one port; removed
/// on drop, even when the test fails.
struct Cut {
    args: Vec<String>,
}

impl Cut {
    fn new(port: u16, gid: u32) -> Self {
        let args: Vec<String> = [
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port.to_string(),
            "-m",
            "owner",
            "--gid-owner",
            &gid.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let st = Command::new("iptables")
            .arg("-A")
            .args(&args)
            .status()
            .expect("run iptables");
        assert!(st.success(), "iptables -A failed");
        Self { args }
    }

    fn present(&self) -> bool {
        Command::new("iptables")
            .arg("-C")
            .args(&self.args)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        while self.present() {
            let _ = Command::new("iptables").arg("-D").args(&self.args).status();
        }
    }
}

#[tokio::test]
async fn a_control_plane_cut_from_the_primary_is_only_unreachable_primary() {
    let (sb, cfg) = setup("ha-cut", 31610, 31801, false, "");
    let gid = 47_311;
    let d = Daemon::start_with(
        &cfg,
        31801,
        StartOpts {
            gid: Some(gid),
            ..Default::default()
        },
    )
    .await;
    let m1 = sb.addr("m1").to_string();
    let cut = Cut::new(sb.addr("m1").port, gid);
    d.wait_problem(&sb.name, "UnreachablePrimary", &m1, Duration::from_secs(10))
        .await;
    // The replicas still replicate: writes on m1 arrive, and for several seconds nothing
    // but UnreachablePrimary happens.
    let mut s = sb.session("m1").await;
    s.exec(
        "write",
        "CREATE TABLE app.cut (id INT PRIMARY KEY); INSERT INTO app.cut VALUES (1)",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kinds: Vec<String> = d
        .problems(&sb.name)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!kinds.iter().any(|k| k == "DeadPrimary"), "{kinds:?}");
    assert!(
        d.operations(&sb.name).await.is_empty(),
        "no operation may start"
    );
    assert_eq!(writable(&sb), vec!["m1".to_string()]);
    let r = sb.probe("m2").state().unwrap().replication.clone().unwrap();
    assert!(r.is_healthy() && r.source == sb.addr("m1"), "{r:?}");
    drop(cut);
    d.wait_cleared(&sb.name, "UnreachablePrimary", &m1, Duration::from_secs(10))
        .await;
}

/// Crash the daemon at `failpoint` during an automatic failover, restart it, and check the
/// cluster ends with one writable primary and the operation resumed or `needs_human`. The
/// cluster has a pre and a post hook, so their steps exist too.
async fn crash_at(failpoint: &str, base: u16, api: u16) {
    let name = format!("ha-fp{}", (base - 32000) / 10);
    let sb = TestSandbox::up(&name, base, &["--semi-sync"]);
    let cfg = test_config(&sb, api, |t| {
        t.replace(
            "block_window = \"10m\"",
            "block_window = \"10m\"\npre_failover = [\"true\"]\npost_failover = [\"true\"]",
        )
    });
    let mut d = Daemon::start_with(
        &cfg,
        api,
        StartOpts {
            env: vec![("DBFLEET_FAILPOINTS".into(), format!("{failpoint}=abort"))],
            ..Default::default()
        },
    )
    .await;
    sb.open().kill("m1").unwrap();
    assert!(
        d.wait_exit(Duration::from_secs(20)),
        "the daemon did not reach {failpoint}:\n{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains(&format!("failpoint {failpoint}")),
        "{}",
        d.log_text()
    );
    drop(d);
    let d = Daemon::start_with(
        &cfg,
        api,
        StartOpts {
            append_log: true,
            ..Default::default()
        },
    )
    .await;
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(30))
        .await;
    let op = ops
        .iter()
        .find(|o| o["kind"] == "failover")
        .expect("a failover");
    let state = op["state"].as_str().unwrap();
    assert!(
        state == "succeeded" || state == "needs_human",
        "after a crash at {failpoint}: {op:#}\n{}",
        d.log_text()
    );
    let w = writable(&sb);
    if state == "succeeded" {
        assert_eq!(w.len(), 1, "one writable primary after {failpoint}: {w:?}");
        assert!(
            op["data"]["resumed"].as_u64().unwrap_or(0) >= 1 || ops.len() > 1,
            "{op:#}"
        );
        let new = member_of(&sb, op["data"]["candidate"].as_str().unwrap());
        let other = if new == "m2" { "m3" } else { "m2" };
        let r = sb
            .probe(other)
            .state()
            .unwrap()
            .replication
            .clone()
            .unwrap();
        assert_eq!(
            r.source,
            sb.addr(&new),
            "after {failpoint} the other replica follows the new primary"
        );
    } else {
        assert!(w.len() <= 1, "never two writable primaries: {w:?}");
        // Left for a human: it pages, critical.
        let key = format!("operation_failed/{}/failover", sb.name);
        let alerts = d.get("/api/v1/alerts").await;
        let page = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key.as_str())
            .unwrap_or_else(|| panic!("no {key}: {alerts:#}"))
            .clone();
        assert_eq!(page["severity"], "critical", "{page:#}");
        assert_eq!(page["labels"]["state"], "needs_human", "{page:#}");
    }
    eprintln!("crash at {failpoint}: {state}, writable {w:?}");
}

macro_rules! crash_tests {
    ($($name:ident: $fp:expr, $base:expr, $api:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_at($fp, $base, $api).await;
        }
    )*};
}

// Every failpoint of the failover but `catch_up`, which only runs when a preferred replica
// is behind (see the engine's unit tests of the choice).
crash_tests! {
    crash_before_confirm: "failover.confirm.before", 32000, 31850;
    crash_after_confirm: "failover.confirm.after", 32010, 31851;
    crash_before_stop_io: "failover.stop_io.before", 32020, 31852;
    crash_after_stop_io: "failover.stop_io.after", 32030, 31853;
    crash_before_apply_relay: "failover.apply_relay.before", 32040, 31854;
    crash_after_apply_relay: "failover.apply_relay.after", 32050, 31855;
    crash_before_choose: "failover.choose.before", 32060, 31856;
    crash_after_choose: "failover.choose.after", 32070, 31857;
    crash_before_pre_hooks: "failover.pre_hooks.before", 32080, 31858;
    crash_after_pre_hooks: "failover.pre_hooks.after", 32090, 31859;
    crash_before_promote: "failover.promote.before", 32100, 31860;
    crash_after_promote: "failover.promote.after", 32110, 31861;
    crash_before_repoint: "failover.repoint.before", 32120, 31862;
    crash_after_repoint: "failover.repoint.after", 32130, 31863;
    crash_before_open_writes: "failover.open_writes.before", 32140, 31864;
    crash_after_open_writes: "failover.open_writes.after", 32150, 31865;
    crash_before_verify_replicas: "failover.verify_replicas.before", 32160, 31866;
    crash_after_verify_replicas: "failover.verify_replicas.after", 32170, 31867;
    crash_before_fence: "failover.fence_old.before", 32180, 31868;
    crash_after_fence: "failover.fence_old.after", 32190, 31869;
    crash_before_post_hooks: "failover.post_hooks.before", 32200, 31870;
    crash_after_post_hooks: "failover.post_hooks.after", 32210, 31871;
}

fn cli(d: &Daemon, args: &[&str], token_file: &str) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--api", d.api.as_str(), "--token-file", token_file]);
    dbfleet(&all)
}

#[tokio::test]
async fn switchover_recoveries_and_rejoin_through_the_cli() {
    let (sb, cfg) = setup("ha-cli", 31700, 31810, true, "");
    let tokens = sb.root().join("tokens.txt").display().to_string();
    let d = Daemon::start(&cfg, 31810).await;
    let m2 = sb.addr("m2").to_string();

    // Switchover to m2.
    let out = ok(cli(&d, &["switchover", &sb.name, "--to", &m2], &tokens));
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("write block (ms)"), "{out}");
    assert_eq!(writable(&sb), vec!["m2".to_string()]);
    let m1 = sb.probe("m1").state().unwrap().replication.clone().unwrap();
    assert_eq!(
        m1.source,
        sb.addr("m2"),
        "the old primary replicates from the new one"
    );

    // Without a token, mutating calls are refused.
    let denied = dbfleet(&["failover", &sb.name, "--api", &d.api]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("token"),
        "{denied:?}"
    );
    // A live primary is not failed over.
    let refused = cli(&d, &["failover", &sb.name], &tokens);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("switchover"),
        "{refused:?}"
    );

    // Recoveries off: a dead primary is only alerted.
    ok(cli(&d, &["recoveries", "disable"], &tokens));
    sb.open().kill("m2").unwrap();
    d.wait_problem(&sb.name, "DeadPrimary", &m2, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ops = d.operations(&sb.name).await;
    assert_eq!(ops.len(), 1, "only the switchover: {ops:?}");
    let ev = d.get("/api/v1/events?limit=200").await;
    assert!(
        ev.to_string().contains("failover_blocked"),
        "a blocked failover pages"
    );
    // Automation may not act, so the dead primary pages.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .get("/api/v1/events?kind=alert_fired")
        .await
        .to_string()
        .contains("page_worthy_problem")
    {
        assert!(Instant::now() < deadline, "the dead primary did not page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Enabled again: the daemon fails over at once.
    ok(cli(&d, &["recoveries", "enable"], &tokens));
    let ops = d
        .wait_operations(&sb.name, 2, Duration::from_secs(20))
        .await;
    assert_eq!(ops[0]["state"], "succeeded", "{:#}", ops[0]);
    let status = ok(cli(&d, &["recoveries", "status"], &tokens));
    assert!(
        status.contains(&sb.name) && status.contains("blocked by operation"),
        "{status}"
    );
    let list = ok(cli(&d, &["operations"], &tokens));
    assert!(
        list.contains("switchover") && list.contains("failover"),
        "{list}"
    );

    // The dead old primary comes back: kept out, then rejoined by hand.
    let out = sb.member_cmd("start", "m2");
    assert!(out.contains("m2"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.probe("m2").state().is_none_or(|s| !s.read_only) {
        assert!(Instant::now() < deadline, "the returning m2 was not fenced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // read_only is set halfway through the fence guard's work: it kills the clients that
    // connected meanwhile right after, a rejoin's connections among them. Wait for its end.
    while !d
        .get("/api/v1/events?kind=fenced_on_return")
        .await
        .to_string()
        .contains(&m2)
    {
        assert!(
            Instant::now() < deadline,
            "no fenced_on_return event for m2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = ok(cli(&d, &["rejoin", &sb.name, &m2], &tokens));
    assert!(out.contains("succeeded"), "{out}");
    let new = ops[0]["data"]["candidate"].as_str().unwrap().to_string();
    let r = sb.probe("m2").state().unwrap().replication.clone().unwrap();
    assert_eq!(r.source.to_string(), new);
    let json = ok(cli(&d, &["operations", "--json"], &tokens));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["operations"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_second_daemon_on_etcd_takes_over_and_fails_over() {
    let etcd = store::etcd::testing::EtcdGuard::start(32450, 32451);
    let (sb, cfg_a) = setup("ha-etcd", 31710, 31811, true, "");
    let base = std::fs::read_to_string(&cfg_a).unwrap();
    let with = |node: &str, api: u16| {
        base.replace(
            "[store]",
            &format!(
                "[store]\nbackend = \"etcd\"\netcd_endpoints = [{:?}]\netcd_prefix = \"/ha-etcd/\"",
                etcd.endpoint()
            ),
        )
        .replace("127.0.0.1:31811", &format!("127.0.0.1:{api}"))
            + &format!("\n[node]\nid = \"{node}\"\nlease_ttl = \"2s\"\n")
    };
    // [node] must come before [[cluster]] tables in TOML; put it right after [store].
    let fix = |t: String| {
        let (head, node) = t.split_at(t.find("\n[node]").unwrap());
        head.replacen("[api]", &format!("{}\n\n[api]", node.trim()), 1)
    };
    let cfg_b = cfg_a.with_file_name("node-b.toml");
    std::fs::write(&cfg_a, fix(with("node-a", 31811))).unwrap();
    std::fs::write(&cfg_b, fix(with("node-b", 31812))).unwrap();
    let mut a = Daemon::start(&cfg_a, 31811).await;
    let b = Daemon::start(&cfg_b, 31812).await;
    let la = a.get("/api/v1/leader").await;
    let lb = b.get("/api/v1/leader").await;
    assert_eq!(la["is_leader"], true, "the first node leads: {la}");
    assert_eq!(lb["is_leader"], false, "{lb}");
    assert_eq!(lb["leader"], "node-a");
    // A follower refuses to act.
    let (code, body) = b
        .post(
            &format!("/api/v1/clusters/{}/switchover", sb.name),
            TOKEN,
            Value::Null,
        )
        .await;
    assert_eq!(code, 503, "{body}");

    // The leader dies; the primary dies.
    a.kill();
    let t0 = Instant::now();
    sb.open().kill("m1").unwrap();
    let ops = b
        .wait_operations(&sb.name, 1, Duration::from_secs(30))
        .await;
    eprintln!(
        "leader and primary killed -> failover by node-b: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        ops[0]["state"],
        "succeeded",
        "{:#}\n{}",
        ops[0],
        b.log_text()
    );
    assert_eq!(ops[0]["owner"], "node-b");
    assert_eq!(b.get("/api/v1/leader").await["is_leader"], true);
    assert_eq!(writable(&sb).len(), 1);
    drop(etcd);
}

#[test]
fn the_failover_benchmark_runs_and_loses_nothing() {
    // A small run, so the benchmark cannot rot; the recorded figures come from --runs 10.
    let out = ok(dbfleet(&[
        "bench",
        "failover",
        "--runs",
        "1",
        "--switchovers",
        "1",
        "--base-port",
        "31760",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failovers"].as_array().unwrap().len(), 1);
    assert_eq!(v["switchovers"].as_array().unwrap().len(), 1);
    assert_eq!(v["lost_total"], 0, "{v:#}");
    assert!(v["acked_total"].as_u64().unwrap() > 0);
    assert!(v["writable_max_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_daemon_never_promotes_an_errant_replica_and_runs_hooks() {
    let sb = TestSandbox::up("ha-errant", 31730, &[]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let trace = sb.root().join("hooks.log");
    let t = trace.display().to_string();
    let cfg = test_config(&sb, 31814, move |text| {
        text.replace(
            "block_window = \"10m\"",
            &format!(
                "block_window = \"10m\"\npre_failover = [\"echo $DBFLEET_PHASE $DBFLEET_OPERATION $DBFLEET_OLD_PRIMARY $DBFLEET_NEW_PRIMARY >> {t}\"]\npost_failover = [\"echo $DBFLEET_PHASE $DBFLEET_OPERATION_ID >> {t}\"]"
            ),
        )
    });
    let d = Daemon::start(&cfg, 31814).await;
    // A root write on m2: an errant transaction, and m2 becomes the "most advanced". It is
    // made in a GTID domain of its own: in domain 0, `gtid_strict_mode` would stop m2's SQL
    // thread at the primary's next heartbeat write (a lower sequence number than m2's own),
    // and m2 would be passed over for its stopped replication before its errant GTID.
    let mut s = sb.session("m2").await;
    s.exec(
        "errant",
        "SET SESSION gtid_domain_id = 9; \
         CREATE TABLE app.errant (id INT PRIMARY KEY); INSERT INTO app.errant VALUES (1)",
    )
    .await
    .unwrap();
    let m2 = sb.addr("m2").to_string();
    d.wait_problem(&sb.name, "ErrantGtid", &m2, Duration::from_secs(10))
        .await;
    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    let op = &ops[0];
    assert_eq!(op["state"], "succeeded", "{op:#}");
    assert_eq!(
        op["data"]["candidate"],
        sb.addr("m3").to_string(),
        "never the errant m2: {op:#}"
    );
    let passed = op["data"]["choice"]["passed_over"].to_string();
    assert!(passed.contains("errant"), "{passed}");
    assert!(
        op["data"]["warnings"].to_string().contains("errant"),
        "m2 is left stopped: {op:#}"
    );
    let log = std::fs::read_to_string(&trace).expect("the hooks ran");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        format!("pre failover {} {}", sb.addr("m1"), sb.addr("m3")),
        "{log}"
    );
    assert_eq!(lines[1], format!("post {}", op["id"]), "{log}");
}
