//! `dbfleet serve` against real sandboxes: topology, every problem a sandbox can produce
//! (each appears within 3 probe rounds and clears when fixed), discovery, bad config and
//! graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{set_failover_key, test_config, Daemon, INTERVAL_MS};
use common::{dbfleet, dbfleet_env, ok, TestSandbox};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A problem must appear within 3 probe rounds; one more round may be in flight when the
/// fault is injected.
const MAX_ROUNDS: u64 = 4;
const WAIT: Duration = Duration::from_secs(20);

async fn exec(sb: &TestSandbox, member: &str, sql: &str) {
    let mut s = sb.session(member).await;
    s.exec("test statement", sql)
        .await
        .unwrap_or_else(|e| panic!("{member}: {sql}: {e}"));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_then_dead_primary_within_three_rounds() {
    let sb = TestSandbox::up("dead", 31200, &[]);
    // Detection only: this test checks that nothing is changed on the servers.
    let cfg = test_config(&sb, 31290, |t| {
        t.replace("mode = \"auto\"", "mode = \"off\"")
    });
    let d = Daemon::start(&cfg, 31290).await;

    // The healthy cluster: no problems, and the topology names the primary.
    let deadline = Instant::now() + WAIT;
    while !d.problems("dead").await.is_empty() {
        assert!(Instant::now() < deadline, "{:?}", d.problems("dead").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let topo = d.get("/api/v1/clusters/dead/topology").await;
    assert_eq!(topo["primary"], sb.addr("m1").to_string());
    assert_eq!(topo["nodes"].as_array().unwrap().len(), 3);
    let out = ok(dbfleet_env(
        &["topology", "dead"],
        &[("DBFLEET_API", &d.api)],
    ));
    assert!(
        out.contains(&sb.addr("m1").to_string()) && out.contains("primary"),
        "{out}"
    );
    let clusters = ok(dbfleet_env(
        &["clusters", "--json"],
        &[("DBFLEET_API", &d.api)],
    ));
    assert!(clusters.contains("\"dead\""), "{clusters}");

    let killed = Instant::now();
    sb.member_cmd("kill", "m1");
    let rounds = d
        .wait_problem("dead", "DeadPrimary", &sb.addr("m1").to_string(), WAIT)
        .await;
    eprintln!(
        "DeadPrimary detected {:?} after kill, {rounds} rounds of {INTERVAL_MS}ms",
        killed.elapsed()
    );
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    let out = ok(dbfleet_env(
        &["problems", "dead"],
        &[("DBFLEET_API", &d.api)],
    ));
    assert!(out.contains("DeadPrimary"), "{out}");
    // Nothing was changed on the servers: the replicas still point at the dead primary.
    let m2 = sb.probe("m2");
    let r = m2.state().unwrap().replication.clone().unwrap();
    assert_eq!(r.source, sb.addr("m1"));
    assert!(m2.state().unwrap().read_only);

    sb.member_cmd("start", "m1");
    d.wait_cleared("dead", "DeadPrimary", &sb.addr("m1").to_string(), WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_thread_read_only_and_writable_replica() {
    let sb = TestSandbox::up("threads", 31210, &[]);
    let cfg = test_config(&sb, 31291, |t| t);
    let d = Daemon::start(&cfg, 31291).await;
    let (m1, m2, m3) = (
        sb.addr("m1").to_string(),
        sb.addr("m2").to_string(),
        sb.addr("m3").to_string(),
    );

    exec(&sb, "m2", "STOP SLAVE SQL_THREAD").await;
    let rounds = d
        .wait_problem("threads", "ReplicaNotReplicating", &m2, WAIT)
        .await;
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    let ps = d.get("/api/v1/problems?cluster=threads").await;
    let text = ps.to_string();
    assert!(
        text.contains("sql_running=false") || text.contains("sql=No") || text.contains("SQL"),
        "evidence names the SQL thread: {text}"
    );
    exec(&sb, "m2", "START SLAVE SQL_THREAD").await;
    d.wait_cleared("threads", "ReplicaNotReplicating", &m2, WAIT)
        .await;

    exec(&sb, "m1", "SET GLOBAL read_only=1").await;
    let rounds = d
        .wait_problem("threads", "PrimaryReadOnly", &m1, WAIT)
        .await;
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    exec(&sb, "m1", "SET GLOBAL read_only=0").await;
    d.wait_cleared("threads", "PrimaryReadOnly", &m1, WAIT)
        .await;

    exec(&sb, "m3", "SET GLOBAL read_only=0").await;
    let rounds = d
        .wait_problem("threads", "WritableReplica", &m3, WAIT)
        .await;
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    exec(&sb, "m3", "SET GLOBAL read_only=1").await;
    d.wait_cleared("threads", "WritableReplica", &m3, WAIT)
        .await;

    // Every open and clear is in the event log.
    let events = d
        .get("/api/v1/events?cluster=threads&limit=1000")
        .await
        .to_string();
    assert!(events.contains("problem_opened") && events.contains("problem_cleared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errant_write_on_a_replica() {
    let sb = TestSandbox::up("errant", 31220, &[]);
    let cfg = test_config(&sb, 31292, |t| t);
    let d = Daemon::start(&cfg, 31292).await;
    let m2 = sb.addr("m2").to_string();

    // The admin account bypasses read_only, as root would: an errant transaction.
    exec(&sb, "m2", "CREATE DATABASE errant_db").await;
    let rounds = d.wait_problem("errant", "ErrantGtid", &m2, WAIT).await;
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    let text = d.get("/api/v1/problems?cluster=errant").await.to_string();
    assert!(
        text.contains("0-2-"),
        "evidence lists the errant GTID: {text}"
    );

    // The documented fix: undo without binlogging, forget the local binlog, resume.
    let mut p = sb.session("m1").await;
    let pos = p
        .query_rows("pos", "SELECT @@gtid_binlog_pos AS pos")
        .await
        .unwrap()[0]["pos"]
        .clone()
        .unwrap();
    p.close().await;
    exec(
        &sb,
        "m2",
        &format!(
            "STOP SLAVE; SET sql_log_bin=0; DROP DATABASE errant_db; SET sql_log_bin=1; \
             RESET MASTER; SET GLOBAL gtid_slave_pos='{pos}'; START SLAVE"
        ),
    )
    .await;
    d.wait_cleared("errant", "ErrantGtid", &m2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_from_master_delay() {
    let sb = TestSandbox::up("lag", 31230, &["--replicas", "1"]);
    let cfg = test_config(&sb, 31293, |t| t);
    let d = Daemon::start(&cfg, 31293).await;
    let m2 = sb.addr("m2").to_string();

    exec(
        &sb,
        "m2",
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=6; START SLAVE",
    )
    .await;
    exec(
        &sb,
        "m1",
        "CREATE TABLE app.lag (id INT PRIMARY KEY); INSERT INTO app.lag VALUES (1)",
    )
    .await;
    // Seconds_Behind_Master climbs with the delay; max_lag is 2 s in the test config.
    d.wait_problem("lag", "ReplicaLagging", &m2, WAIT).await;
    exec(
        &sb,
        "m2",
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE",
    )
    .await;
    d.wait_cleared("lag", "ReplicaLagging", &m2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_replica_then_back() {
    let sb = TestSandbox::up("missing", 31240, &[]);
    let cfg = test_config(&sb, 31294, |t| t);
    let d = Daemon::start(&cfg, 31294).await;
    let m3 = sb.addr("m3").to_string();

    sb.member_cmd("kill", "m3");
    let rounds = d.wait_problem("missing", "ReplicaMissing", "", WAIT).await;
    assert!(rounds <= MAX_ROUNDS, "took {rounds} rounds");
    d.wait_problem("missing", "UnreachableReplica", &m3, WAIT)
        .await;
    sb.member_cmd("start", "m3");
    d.wait_cleared("missing", "ReplicaMissing", "", WAIT).await;
    d.wait_cleared("missing", "UnreachableReplica", &m3, WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_primary_gives_timeouts_not_refusals() {
    let sb = TestSandbox::up("paused", 31250, &["--replicas", "1"]);
    let cfg = test_config(&sb, 31295, |t| t);
    let d = Daemon::start(&cfg, 31295).await;
    let m1 = sb.addr("m1").to_string();
    let pid = Pid::from_raw(sb.open().status()[0].pid.unwrap());

    kill(pid, Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + WAIT;
    let kind = loop {
        let ps = d.problems("paused").await;
        if let Some((k, _)) = ps
            .iter()
            .find(|(k, i)| (k == "UnreachablePrimary" || k == "DeadPrimary") && *i == m1)
        {
            break k.clone();
        }
        if Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGCONT);
            panic!("no primary problem while paused: {ps:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let inst = d.get(&format!("/api/v1/instances/{m1}")).await;
    let _ = kill(pid, Signal::SIGCONT);
    let text = inst.to_string();
    assert!(
        text.contains("\"timeout\""),
        "a paused server times out: {text}"
    );
    assert!(!text.contains("\"refused\""), "{text}");
    eprintln!("paused primary reported as {kind}");
    d.wait_cleared("paused", &kind, &m1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_an_undeclared_replica() {
    let sb = TestSandbox::up("discover", 31260, &["--replicas", "2"]);
    let m3 = sb.addr("m3").to_string();
    // Declare only m1 and m2: m3 must be found through SHOW SLAVE HOSTS.
    let cfg = test_config(&sb, 31296, |t| {
        let cut = t.find(&format!("addr = \"{m3}\"")).unwrap();
        let start = t[..cut].rfind("[[cluster.instance]]").unwrap();
        let mut t = format!("{}{}", &t[..start], &t[cut..].split_once('\n').unwrap().1);
        t = t.replace("promotion = \"neutral\"\n\n", "");
        t.replace("expected_replicas = 2", "expected_replicas = 1")
    });
    let d = Daemon::start(&cfg, 31296).await;
    d.wait_problem("discover", "UnknownInstance", &m3, WAIT)
        .await;
    let events = d.get("/api/v1/events?cluster=discover").await.to_string();
    assert!(events.contains("instance_discovered"), "{events}");
    let topo = d.get("/api/v1/clusters/discover/topology").await;
    assert_eq!(topo["nodes"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_seed_bad_config_and_graceful_shutdown() {
    let sb = TestSandbox::up("seed", 31270, &["--replicas", "1"]);
    let cfg = test_config(&sb, 31297, |t| {
        t + "\n[[cluster.instance]]\naddr = \"127.0.0.1:31279\"\npromotion = \"must_not\"\n"
    });
    let out = ok(dbfleet(&["config", "validate", &cfg.display().to_string()]));
    assert!(out.contains("valid"), "{out}");
    let mut d = Daemon::start(&cfg, 31297).await;
    d.wait_problem("seed", "UnreachableSeed", "127.0.0.1:31279", WAIT)
        .await;
    assert_eq!(
        d.get("/healthz").await["status"],
        "ok",
        "the daemon keeps running"
    );

    // SIGTERM: exit 0, and the store records the stop.
    assert_eq!(d.terminate(), Some(0), "{}", d.log_text());
    let store = store::SqliteStore::open(&d.data_dir).unwrap();
    let events = store::Store::events(&store, &store::EventQuery::default())
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.kind == "daemon_stopped"),
        "{events:?}"
    );

    // A bad config: exit code 2 and an error that names the field.
    let bad = cfg.with_file_name("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("interval = \"300ms\"", "interval = \"1ms\""),
    )
    .unwrap();
    for args in [vec!["serve", "--config"], vec!["config", "validate"]] {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.push(bad.display().to_string());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dbfleet(&argv);
        assert_eq!(out.status.code(), Some(2), "{argv:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("probe.interval"), "{err}");
    }
}

/// SIGHUP reloads the config: an invalid file is refused (event `config_reload_refused`)
/// and the daemon goes on as it was; a valid one with a change makes the same process start
/// again with it (the PID stays, `recoveries status` shows the change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_refuses_a_bad_one() {
    let sb = TestSandbox::up("reload", 31280, &["--replicas", "1"]);
    let cfg = test_config(&sb, 31298, |t| t);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let d = Daemon::start(&cfg, 31298).await;
    let pid = d.pid().expect("running");
    // The config as written, with `line` in [cluster.failover], then SIGHUP.
    let reload_with = |line: &str| {
        std::fs::write(&cfg, &good).unwrap();
        set_failover_key(&cfg, line);
        kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP");
    };
    let rejoin_of = |v: &serde_json::Value| v["clusters"][0]["rejoin"].as_str().map(String::from);
    assert_eq!(
        rejoin_of(&d.get("/api/v1/recoveries").await).as_deref(),
        Some("manual")
    );

    reload_with("rejoin = \"sometimes\"");
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let ev = d.get("/api/v1/events?kind=config_reload_refused").await;
        if let Some(e) = ev["events"].as_array().and_then(|a| a.first()).cloned() {
            break e;
        }
        assert!(Instant::now() < deadline, "no refusal:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let msg = refused["message"].as_str().unwrap();
    assert!(
        msg.contains("sometimes") && msg.contains("`manual` or `auto`"),
        "{msg}"
    );
    assert_eq!(d.pid(), Some(pid), "still running");
    assert_eq!(
        rejoin_of(&d.get("/api/v1/recoveries").await).as_deref(),
        Some("manual")
    );

    reload_with("rejoin = \"auto\"");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(v) = d.try_get("/api/v1/recoveries").await {
            if rejoin_of(&v).as_deref() == Some("auto") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not reloaded:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.pid(), Some(pid), "the same process runs the new config");
    let stopped = d.get("/api/v1/events?kind=daemon_stopped").await;
    assert_eq!(stopped["events"][0]["data"]["reload"], true, "{stopped:#}");
    // And it watches again.
    let rounds = |v: serde_json::Value| v["stats"]["rounds"].as_u64().unwrap_or(0);
    let before = rounds(d.get("/api/v1/status").await);
    let deadline = Instant::now() + WAIT;
    while rounds(d.get("/api/v1/status").await) < before + 2 {
        assert!(Instant::now() < deadline, "no rounds after the reload");
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
}
