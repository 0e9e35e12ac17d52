//! `dbfleet sandbox` and `dbfleet probe` against real `mariadbd` servers.

mod common;

use std::time::{Duration, Instant};

use common::{dbfleet, dbfleet_env, ok, TestSandbox};
use model::gtid::MariadbGtidList;
use model::{GtidState, IoThreadState, Observation, ProbeFailureKind};

fn current_pos(obs: &Observation) -> MariadbGtidList {
    match &obs.state().expect("reachable").gtid {
        GtidState::Mariadb { current_pos, .. } => current_pos.clone(),
        other => panic!("expected MariaDB GTIDs, got {other:?}"),
    }
}

#[test]
fn up_makes_a_replicating_set_that_status_probe_and_down_see() {
    let sb = TestSandbox::up("basic", 31100, &[]);
    let dir = sb.dir_arg();

    let status: serde_json::Value = serde_json::from_str(&ok(dbfleet(&[
        "sandbox", "status", "--name", "basic", "--dir", &dir, "--json",
    ])))
    .unwrap();
    let members = status.as_array().unwrap();
    assert_eq!(members.len(), 3, "a primary and two replicas by default");
    assert!(members.iter().all(|m| m["running"] == true));
    let pids: Vec<i64> = members.iter().map(|m| m["pid"].as_i64().unwrap()).collect();

    let primary = sb.probe("m1");
    let p = primary.state().expect("primary reachable");
    assert!(!p.read_only);
    assert!(p.replication.is_none());
    assert!(p.log_bin && p.log_replica_updates);
    for m in ["m2", "m3"] {
        let obs = sb.probe(m);
        let s = obs.state().expect("replica reachable");
        assert!(s.read_only, "{m} is read-only");
        let r = s.replication.as_ref().expect("replicates");
        assert_eq!(r.source, sb.addr("m1"));
        assert_eq!(r.io_thread, IoThreadState::Yes);
        assert!(r.sql_running && r.using_gtid);
        assert_eq!(current_pos(&obs), current_pos(&primary), "{m} caught up");
        match &s.gtid {
            GtidState::Mariadb { strict_mode, .. } => assert!(strict_mode),
            _ => unreachable!(),
        }
    }

    let out = ok(dbfleet(&[
        "sandbox", "down", "--name", "basic", "--dir", &dir,
    ]));
    assert!(out.contains("removed"), "{out}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true),
            "mariadbd {pid} still runs after down"
        );
    }
    assert!(
        !sb.root().join("basic").exists(),
        "down removes the directory"
    );
    let out = dbfleet(&["sandbox", "status", "--name", "basic", "--dir", &dir]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sandbox named"));
}

#[test]
fn up_twice_keeps_the_first_and_a_port_clash_is_a_clear_error() {
    let sb = TestSandbox::up("twice", 31110, &["--replicas", "1"]);
    let dir = sb.dir_arg();
    let before = sb.open().status();

    let again = ok(dbfleet(&[
        "sandbox",
        "up",
        "--name",
        "twice",
        "--replicas",
        "1",
        "--base-port",
        "31110",
        "--dir",
        &dir,
    ]));
    assert!(again.contains("already running"), "{again}");
    let after = sb.open().status();
    assert_eq!(
        before.iter().map(|m| m.pid).collect::<Vec<_>>(),
        after.iter().map(|m| m.pid).collect::<Vec<_>>(),
        "a second up does not restart anything"
    );

    // Another sandbox on the same ports must refuse, and leave the first one alone.
    let other = tempfile::tempdir().unwrap();
    let out = dbfleet(&[
        "sandbox",
        "up",
        "--name",
        "clash",
        "--base-port",
        "31110",
        "--dir",
        &other.path().display().to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("port 31110") && err.contains("in use"),
        "{err}"
    );
    assert!(
        !other.path().join("clash").exists(),
        "nothing half made is left"
    );
    assert!(
        sb.probe("m1").state().is_some(),
        "the first sandbox still serves"
    );
    assert_eq!(
        sb.probe("m2")
            .state()
            .unwrap()
            .replication
            .as_ref()
            .unwrap()
            .io_thread,
        IoThreadState::Yes
    );
}

#[test]
fn down_of_a_missing_sandbox_is_a_no_op() {
    let root = tempfile::tempdir().unwrap();
    let out = ok(dbfleet(&[
        "sandbox",
        "down",
        "--name",
        "never-made",
        "--dir",
        &root.path().display().to_string(),
    ]));
    assert!(out.contains("nothing to do"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_catches_up_after_start() {
    let sb = TestSandbox::up("killstart", 31120, &[]);
    let out = sb.member_cmd("kill", "m2");
    assert!(out.contains("killed"), "{out}");
    let status = sb.open().status();
    assert!(!status.iter().find(|m| m.name == "m2").unwrap().running);
    assert_eq!(
        sb.probe("m2").failure().map(|f| f.kind),
        Some(ProbeFailureKind::Refused)
    );

    // Writes the replica misses while it is down.
    let mut primary = sb.session("m1").await;
    primary
        .exec(
            "write",
            "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1),(2),(3)",
        )
        .await
        .unwrap();
    primary.close().await;
    let want = current_pos(&sb.probe("m1"));

    let out = sb.member_cmd("start", "m2");
    assert!(out.contains("started read-only"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let obs = sb.probe("m2");
        if let Some(s) = obs.state() {
            let r = s
                .replication
                .as_ref()
                .expect("still a replica after restart");
            if r.is_healthy() && current_pos(&obs) == want {
                break;
            }
        }
        assert!(Instant::now() < deadline, "m2 did not catch up: {obs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut replica = sb.session("m2").await;
    let rows = replica
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.t")
        .await
        .unwrap();
    assert_eq!(rows[0]["n"].as_deref(), Some("3"));
    replica.close().await;

    // Stop (SIGTERM) and start again: a clean restart also resumes.
    assert!(sb.member_cmd("stop", "m3").contains("stopped"));
    assert!(sb.member_cmd("start", "m3").contains("started"));
    assert!(sb.member_cmd("start", "m3").contains("already running"));
}

/// `sandbox start` never makes a second writable primary: the first primary, started
/// while another member is writable (as after a failover), comes back read-only and says
/// why; started when every other member is read-only, it is the writable primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_primary_starts_read_only_while_another_member_is_writable() {
    let sb = TestSandbox::up("startro", 31170, &["--replicas", "1"]);
    let read_only = |m: &'static str| {
        let obs = sb.probe(m);
        obs.state().expect("reachable").read_only
    };
    assert!(sb.member_cmd("kill", "m1").contains("killed"));
    // What a failover leaves: the replica promoted, writable.
    let mut m2 = sb.session("m2").await;
    m2.exec("promote", "STOP SLAVE; SET GLOBAL read_only = 0")
        .await
        .unwrap();

    let out = sb.member_cmd("start", "m1");
    assert!(
        out.contains("started read-only") && out.contains("m2 is writable"),
        "{out}"
    );
    assert!(read_only("m1"), "a second writable primary");
    assert!(!read_only("m2"));

    // Put the set back as `up` made it: the first primary returns writable.
    assert!(sb.member_cmd("stop", "m1").contains("stopped"));
    m2.exec("demote", "SET GLOBAL read_only = 1").await.unwrap();
    m2.close().await;
    let out = sb.member_cmd("start", "m1");
    assert!(out.contains("started writable"), "{out}");
    assert!(!read_only("m1"));

    // A replica is read-only whatever the others are.
    assert!(sb.member_cmd("stop", "m2").contains("stopped"));
    assert!(sb.member_cmd("start", "m2").contains("started read-only"));
    assert!(read_only("m2"));
}

/// A semi-sync primary killed while a write waits for its ack holds that write in its
/// binlog, prepared but not committed. Started again after a replica took over, it boots as
/// a replica (`--init-rpl-role=SLAVE`): crash recovery rolls the write back and cuts it from
/// the binlog, so the old primary has no errant transaction and may rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_primary_drops_the_write_it_never_acknowledged() {
    let sb = TestSandbox::up("unacked", 31180, &["--replicas", "1", "--semi-sync"]);
    let mut m1 = sb.session("m1").await;
    m1.exec(
        "acked write",
        "CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
    )
    .await
    .unwrap();
    m1.close().await;
    let acked = current_pos(&sb.probe("m1"));

    // No ack can come: the only replica stops receiving.
    let mut m2 = sb.session("m2").await;
    m2.exec("stop io", "STOP SLAVE IO_THREAD").await.unwrap();
    let mut waiting = sb.session("m1").await;
    let write = tokio::spawn(async move {
        waiting
            .exec("unacknowledged write", "INSERT INTO app.t VALUES (2)")
            .await
    });
    // The write is in m1's binlog, waiting for the ack (forever: the sandbox's semi-sync is
    // lossless, with no timeout to fall back on): watched and killed in-process.
    let mut watch = sb.session("m1").await;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let rows = watch
            .query_rows("position", "SELECT @@gtid_binlog_pos AS pos")
            .await
            .unwrap();
        if rows[0]["pos"].as_deref() != Some(acked.to_string().as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write never reached the binlog"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sb.open().kill("m1").unwrap(), "m1 was running");
    drop(watch);
    assert!(
        write.await.unwrap().is_err(),
        "the client was told of a write no replica has"
    );

    // The replica takes over, as a failover would.
    m2.exec(
        "promote",
        "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0",
    )
    .await
    .unwrap();
    m2.close().await;
    let out = sb.member_cmd("start", "m1");
    assert!(
        out.contains("started read-only") && out.contains("m2 is writable"),
        "{out}"
    );
    assert_eq!(
        current_pos(&sb.probe("m1")),
        acked,
        "the unacknowledged write is still in m1's binlog"
    );
    let mut m1 = sb.session("m1").await;
    let rows = m1
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.t")
        .await
        .unwrap();
    assert_eq!(rows[0]["n"].as_deref(), Some("1"));
    m1.close().await;
}

#[test]
fn semi_sync_sandbox_acks() {
    let sb = TestSandbox::up("semisync", 31130, &["--replicas", "1", "--semi-sync"]);
    let p = sb.probe("m1");
    let ss = &p.state().unwrap().semi_sync;
    assert!(ss.source_enabled && ss.source_active, "{ss:?}");
    assert_eq!(ss.source_clients, 1);
    // Lossless: never falls back to async, and waits even with no replica connected.
    assert_eq!(
        ss.source_timeout_ms,
        Some(model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS)
    );
    assert_eq!(ss.source_wait_no_replica, Some(true));
    let r = sb.probe("m2");
    assert!(r.state().unwrap().semi_sync.replica_active);
}

#[test]
fn probe_of_a_dead_port_is_a_typed_refusal() {
    let creds = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(creds.path(), "user = \"x\"\npassword = \"y\"\n").unwrap();
    let path = creds.path().display().to_string();
    let started = Instant::now();
    let out = dbfleet(&["probe", "127.0.0.1:31199", "--credentials", &path, "--json"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let obs: Observation = serde_json::from_slice(&out.stdout).unwrap();
    let f = obs.failure().expect("a failure");
    assert_eq!(f.kind, ProbeFailureKind::Refused);
    // A refusal must not wait for the connect timeout (1 s by default).
    assert!(obs.duration_us < 1_000_000, "{}", obs.duration_us);
    eprintln!("dead-port probe took {took:?} (whole process)");
}

#[test]
fn probe_with_bad_credentials_is_auth_and_never_prints_the_password() {
    let sb = TestSandbox::up("auth", 31140, &["--replicas", "0"]);
    let addr = sb.addr("m1").to_string();
    let out = dbfleet_env(
        &["probe", &addr, "--user", "dbfleet", "--json"],
        &[("DBFLEET_PASSWORD", "wrong-password-123")],
    );
    assert_eq!(out.status.code(), Some(1));
    let obs: Observation = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(obs.failure().unwrap().kind, ProbeFailureKind::Auth);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("wrong-password-123"));
}

#[test]
fn probe_of_a_stopped_process_times_out() {
    let sb = TestSandbox::up("sigstop", 31150, &["--replicas", "0"]);
    let pid = sb.open().status()[0].pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGSTOP).unwrap();
    let addr = sb.addr("m1").to_string();
    let creds = sb.credentials_file().display().to_string();
    let out = dbfleet(&[
        "probe",
        &addr,
        "--credentials",
        &creds,
        "--connect-timeout",
        "300ms",
        "--json",
    ]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGCONT).unwrap();
    let obs: Observation = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(obs.failure().unwrap().kind, ProbeFailureKind::Timeout);
    assert!(
        sb.probe("m1").state().is_some(),
        "answers again after SIGCONT"
    );
}

#[test]
fn missing_mariadbd_names_the_debian_package() {
    let empty = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = dbfleet_env(
        &[
            "sandbox",
            "up",
            "--name",
            "nobin",
            "--base-port",
            "31160",
            "--dir",
            &root.path().display().to_string(),
        ],
        &[(
            "DBFLEET_MARIADB_BINDIR",
            &empty.path().display().to_string(),
        )],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mariadbd not found") && err.contains("mariadb-server"),
        "{err}"
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().display().to_string();
    let out = dbfleet(&["sandbox", "up", "--name", "bad name!", "--dir", &dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    let out = dbfleet(&["probe", "no-port", "--user", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no port"));
}
