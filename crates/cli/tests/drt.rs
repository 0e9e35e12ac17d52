//! `dbfleet drt`: the built-in list, and every built-in scenario run for real against a
//! sandbox (most with the daemon failing over), stored runs and `drt report`, the
//! `drt_allowed` refusal, an aborted run, and a scheduled game day. Every fault must be
//! healed afterwards: no firewall chain, no stopped or missing server, no replica left on a
//! proxy. Sandboxes use ports 32600..32620, 30700..30790 and 26100..26108, the APIs 32630,
//! 30791..30799 and 26190..26192.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{test_config, Daemon, StartOpts};
use common::{dbfleet, ok, TestSandbox};
use serde_json::Value;

/// No firewall chain of the run's process (`DBFLEET-DRT-<pid>-…`) is left; chains of other
/// processes on a shared machine are only reported.
fn no_drt_chain(pid: u32) {
    if let Ok(out) = Command::new("iptables").arg("-S").output() {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let ours = format!("DBFLEET-DRT-{pid}-");
            assert!(!text.contains(&ours), "leftover rules:\n{text}");
            if text.contains("DBFLEET-DRT") {
                eprintln!("note: DBFLEET-DRT chains of another process:\n{text}");
            }
        }
    }
}

fn run_json(args: &[&str]) -> (bool, Value, String, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args(args)
        .env_remove("DBFLEET_SANDBOX_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dbfleet");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for dbfleet");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}"));
    (out.status.success(), v, stderr, pid)
}

fn assert_all_pass(v: &Value, stderr: &str) {
    for verdicts in v["verdicts"].as_array().unwrap() {
        for vd in verdicts.as_array().unwrap() {
            assert_eq!(vd["pass"], true, "verdict failed: {vd:#}\n{stderr}");
        }
    }
}

#[test]
fn drt_list_names_the_builtins() {
    let out = dbfleet(&["drt", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kill-primary"), "{text}");
    let out = dbfleet(&["drt", "list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "kill-primary"));
}

/// Twice in a row (`--repeat 2`): between runs the block window is acknowledged and the
/// killed primary rejoined (after its unacknowledged write, if any, is removed), so the second
/// kill fails over too.
#[tokio::test]
async fn kill_primary_repeated_fails_over_each_time_with_no_lost_write() {
    let (sb, d, tokens) = with_daemon("drtkill", 32600, 32630, "", StartOpts::default()).await;
    let reports = sb.root().join("reports-kill-primary");
    let (ok, v, stderr, pid) = drt_run(
        &sb,
        Some((&d, &tokens)),
        "kill-primary",
        &["--duration", "5s", "--repeat", "2"],
    );
    eprintln!("{stderr}");
    assert!(ok, "exit status not 0: {v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["aggregate"]["runs"], 2);
    assert_eq!(v["aggregate"]["failovers_total"], 2);
    assert_eq!(v["aggregate"]["lost_total"], 0);
    for run in v["runs"].as_array().unwrap() {
        assert_eq!(run["lost"].as_array().unwrap().len(), 0);
    }
    // Two different primaries were killed: the rejoined one became a candidate again.
    let killed: Vec<String> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["figures"]["primaries"][0].to_string())
        .collect();
    assert_ne!(killed[0], killed[1], "{killed:?}");
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    assert!(reports.join("report.json").exists());
    healed(&sb, pid);
}

#[tokio::test]
async fn stop_replica_sql_heals_without_a_daemon() {
    let sb = TestSandbox::up("drtsql", 32610, &["--semi-sync"]);
    let reports = sb.root().join("reports-sql");
    let dir = sb.dir_arg();
    let (ok, v, stderr, pid) = run_json(&[
        "drt",
        "run",
        "stop-replica-sql",
        "--sandbox",
        &sb.name,
        "--dir",
        &dir,
        "--duration",
        "6s",
        "--json",
        "--report-dir",
        reports.to_str().unwrap(),
    ]);
    let run = &v["runs"][0];
    eprintln!(
        "stop-replica-sql: rto {} ms, acked {}, source {}",
        run["figures"]["rto_ms"], run["load"]["acked"], run["figures"]["source"]
    );
    assert_eq!(run["figures"]["source"], "client_only");
    assert!(ok, "exit status not 0: {v:#}\n{stderr}");
    assert_all_pass(&v, &stderr);
    let injected = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "fault_injected" || e["kind"] == "fault_healed")
        .count();
    assert_eq!(injected, 2, "{:#}", run["timeline"]);
    for m in ["m2", "m3"] {
        let o = sb.probe(m);
        let r = o.state().unwrap().replication.as_ref().unwrap();
        assert!(r.sql_running, "{m}'s SQL thread is not running again");
    }
    no_drt_chain(pid);
}

const TOKEN: &str = "drt-test-token-0123456789";

/// A sandbox (semi-sync), a daemon on `api` with a tokens file and `extra` config appended,
/// and the token file's path.
async fn with_daemon(
    name: &str,
    base: u16,
    api: u16,
    extra: &str,
    opts: StartOpts,
) -> (TestSandbox, Daemon, PathBuf) {
    let sb = TestSandbox::up(name, base, &["--semi-sync"]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let extra = extra.to_string();
    let tokens_text = tokens.display().to_string();
    let cfg = test_config(&sb, api, move |t| {
        let t = t.replace(
            &format!("listen = \"127.0.0.1:{api}\""),
            &format!("listen = \"127.0.0.1:{api}\"\ntokens_file = {tokens_text:?}"),
        );
        format!("{t}\n{extra}\n")
    });
    let d = Daemon::start_with(&cfg, api, opts).await;
    (sb, d, tokens)
}

/// `dbfleet drt run SCENARIO` on `sb` with the daemon's API and token, as JSON.
fn drt_run(
    sb: &TestSandbox,
    d: Option<(&Daemon, &PathBuf)>,
    scenario: &str,
    extra: &[&str],
) -> (bool, Value, String, u32) {
    let reports = sb.root().join(format!("reports-{scenario}"));
    let dir = sb.dir_arg();
    let mut args: Vec<String> = [
        "drt",
        "run",
        scenario,
        "--sandbox",
        &sb.name,
        "--dir",
        &dir,
        "--json",
        "--report-dir",
        reports.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((d, tokens)) = d {
        args.extend([
            "--api".to_string(),
            d.api.clone(),
            "--token-file".to_string(),
            tokens.display().to_string(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, v, stderr, pid) = run_json(&refs);
    let run = &v["runs"][0];
    eprintln!(
        "{scenario}: rto {} ms, detection {} ms, failovers {}, primary changes {}, acked {}, \
         lost {}, aborted {}",
        run["figures"]["rto_ms"],
        run["figures"]["detection_ms"],
        run["figures"]["failovers"],
        run["figures"]["primary_changes"],
        run["load"]["acked"],
        run["lost"].as_array().map(|l| l.len()).unwrap_or(99),
        run["aborted"]
    );
    for e in run["timeline"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:>6} ms  {:<16} {}",
            e["at_ms"],
            e["kind"].as_str().unwrap_or(""),
            e["label"]
        );
    }
    (ok, v, stderr, pid)
}

/// Every member runs (started again if a fault stopped it) and none is SIGSTOPped.
fn all_running_and_none_paused(sb: &TestSandbox) {
    for m in sb.open().status() {
        assert!(m.running, "{} is not running after the run", m.name);
        let pid = m.pid.unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert_ne!(state, "T", "{} (pid {pid}) is still stopped", m.name);
    }
}

/// Every reachable replica replicates from a member of the sandbox (not from a proxy).
fn replicas_on_members(sb: &TestSandbox) {
    let members: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| sb.addr(m).to_string())
        .collect();
    for m in ["m1", "m2", "m3"] {
        let o = sb.probe(m);
        if let Some(r) = o.state().and_then(|s| s.replication.as_ref()) {
            assert!(
                members.contains(&r.source.to_string()),
                "{m} replicates from {}, not a member",
                r.source
            );
        }
    }
}

fn healed(sb: &TestSandbox, pid: u32) {
    no_drt_chain(pid);
    all_running_and_none_paused(sb);
    replicas_on_members(sb);
}

#[tokio::test]
async fn pause_primary_never_leaves_two_writable_primaries() {
    let (sb, d, tokens) = with_daemon("drtpause", 30700, 30791, "", StartOpts::default()).await;
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "pause-primary", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["lost"].as_array().unwrap().len(), 0);
    assert!(v["runs"][0]["aborted"].is_null(), "{v:#}");
    healed(&sb, pid);
}

#[tokio::test]
async fn partition_primary_fails_over_and_heals_the_firewall() {
    let (sb, d, tokens) = with_daemon("drtpart", 30710, 30792, "", StartOpts::default()).await;
    // What a SIGKILLed run leaves: a chain named for a process that is gone, jumped to
    // from OUTPUT. It holds no rule, so it cuts nothing while it waits.
    let stale = stale_chain();
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "partition-primary", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["figures"]["failovers"], 1);
    healed(&sb, pid);
    let rules = iptables_s();
    assert!(!rules.contains(&stale), "{stale} left:\n{rules}\n{stderr}");
    if !stderr.contains(&stale) {
        eprintln!("note: {stale} was swept by another process first");
    }
}

/// `iptables -S`, or nothing when it cannot run.
fn iptables_s() -> String {
    Command::new("iptables")
        .arg("-S")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// An empty `DBFLEET-DRT-<dead pid>-1` chain with a jump from OUTPUT on `lo`.
fn stale_chain() -> String {
    let mut child = Command::new("true").spawn().expect("run true");
    let dead = child.id();
    child.wait().expect("wait");
    let name = format!("DBFLEET-DRT-{dead}-1");
    for args in [
        vec!["-N", &name],
        vec![
            "-I",
            "OUTPUT",
            "1",
            "-o",
            "lo",
            "-d",
            "127.0.0.0/8",
            "-j",
            &name,
        ],
    ] {
        let st = Command::new("iptables")
            .args(["-w", "5"])
            .args(&args)
            .status()
            .expect("run iptables");
        assert!(st.success(), "iptables {args:?}");
    }
    assert!(iptables_s().contains(&name));
    name
}

#[tokio::test]
async fn a_control_plane_partition_causes_no_failover() {
    let gid = 47_312;
    let (sb, d, tokens) = with_daemon(
        "drtcpcut",
        30720,
        30793,
        "",
        StartOpts {
            gid: Some(gid),
            ..Default::default()
        },
    )
    .await;
    let gid_s = gid.to_string();
    let (ok, v, stderr, pid) = drt_run(
        &sb,
        Some((&d, &tokens)),
        "partition-control-plane",
        &["--control-plane-gid", &gid_s],
    );
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["figures"]["failovers"], 0);
    assert_eq!(v["runs"][0]["figures"]["primary_changes"], 0);
    healed(&sb, pid);
}

#[tokio::test]
async fn kill_replica_restarts_it_and_never_fails_over() {
    let (sb, d, tokens) = with_daemon("drtkrep", 30730, 30794, "", StartOpts::default()).await;
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "kill-replica", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["figures"]["failovers"], 0);
    healed(&sb, pid);
}

#[tokio::test]
async fn slow_replica_goes_through_the_proxy_and_back() {
    let (sb, d, tokens) = with_daemon("drtslow", 30740, 30795, "", StartOpts::default()).await;
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "slow-replica", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    let timeline = v["runs"][0]["timeline"].as_array().unwrap();
    let healed_note = timeline
        .iter()
        .find(|e| e["kind"] == "fault_healed")
        .expect("the slow link was healed");
    let label = healed_note["label"].as_str().unwrap();
    assert!(
        label.contains("points at") && label.contains("proxy closed"),
        "{label}"
    );
    healed(&sb, pid);
}

#[tokio::test]
async fn switchover_under_load_moves_the_primary_once() {
    let (sb, d, tokens) = with_daemon("drtswitch", 30750, 30796, "", StartOpts::default()).await;
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "switchover-under-load", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["figures"]["primary_changes"], 1);
    assert_eq!(v["runs"][0]["figures"]["failovers"], 0);
    let ops = d.operations(&sb.name).await;
    assert!(
        ops.iter()
            .any(|o| o["kind"] == "switchover" && o["state"] == "succeeded"),
        "{ops:#?}"
    );
    healed(&sb, pid);
}

#[tokio::test]
async fn kill_primary_twice_fails_over_once() {
    let (sb, d, tokens) = with_daemon("drttwice", 30760, 30797, "", StartOpts::default()).await;
    let (ok, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "kill-primary-twice", &[]);
    assert!(ok, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(v["runs"][0]["figures"]["failovers"], 1);
    healed(&sb, pid);
}

/// Stored with the daemon's events, listed, and shown again by id.
#[tokio::test]
async fn a_run_is_stored_with_the_daemon_and_shown_by_id() {
    let (sb, d, tokens) = with_daemon("drtstore", 30770, 30798, "", StartOpts::default()).await;
    let (ok, v, stderr, _) = drt_run(
        &sb,
        Some((&d, &tokens)),
        "stop-replica-sql",
        &["--duration", "6s"],
    );
    assert!(ok, "{v:#}\n{stderr}");
    let id = v["id"].as_str().expect("the run was stored").to_string();
    assert!(id.ends_with("-stop-replica-sql"), "{id}");
    let runs = d.get("/api/v1/drt/runs").await;
    assert_eq!(runs["runs"][0]["id"], id.as_str(), "{runs:#}");
    assert_eq!(runs["runs"][0]["pass"], true);
    let events = d.get("/api/v1/events?kind=drt_finished").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events:#}");
    // `drt report ID` from the daemon, text and HTML.
    let html = sb.root().join("again.html");
    let out = dbfleet(&[
        "drt",
        "report",
        &id,
        "--api",
        &d.api,
        "--html",
        html.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&id) && text.contains("stop-replica-sql"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
    // `drt runs` lists it; an unknown id is a clear 404.
    let out = dbfleet(&["drt", "runs", "--api", &d.api]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = dbfleet(&["drt", "report", "19700101T000000Z-nothing", "--api", &d.api]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DRT run"));
}

/// A cluster whose config does not allow DRTs is refused before anything is touched; an
/// aborted run heals at once and says so in its report.
#[tokio::test]
async fn refused_without_drt_allowed_and_an_aborted_run_heals() {
    let sb = TestSandbox::up("drtabort", 30780, &[]);
    let own = sb.open().dir().join("dbfleet.toml");
    let denied = sb.root().join("denied.toml");
    std::fs::write(
        &denied,
        std::fs::read_to_string(&own)
            .unwrap()
            .replace("drt_allowed = true", "drt_allowed = false"),
    )
    .unwrap();
    let dir = sb.dir_arg();
    let out = dbfleet(&[
        "drt",
        "run",
        "partition-primary",
        "--sandbox",
        &sb.name,
        "--dir",
        &dir,
        "--config",
        denied.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not allow DRTs"), "{err}");

    // A partition with no daemon to fail over: the run would last 30 s; abort it after 3 s.
    let reports = sb.root().join("reports-abort");
    let child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args([
            "drt",
            "run",
            "partition-primary",
            "--sandbox",
            &sb.name,
            "--dir",
            &dir,
            "--duration",
            "30s",
            "--json",
            "--report-dir",
            reports.to_str().unwrap(),
        ])
        .env_remove("DBFLEET_SANDBOX_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    // Wait until the fault is in: the primary stops answering the test's probes.
    loop {
        let o = sb.probe("m1");
        if o.state().is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the partition never came"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = dbfleet(&["drt", "abort", "--sandbox", &sb.name, "--dir", &dir]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert!(!out.status.success(), "an aborted run does not pass");
    let reason = v["runs"][0]["aborted"].as_str().unwrap();
    assert!(reason.contains("aborted by the operator"), "{reason}");
    assert!(sb.probe("m1").state().is_some(), "m1 reachable again");
    healed(&sb, pid);
    assert!(!sb.open().dir().join("drt-run.json").exists());
}

/// The daemon runs a scheduled scenario by itself; one whose expectation fails is stored as
/// FAIL and raises an error event.
#[tokio::test]
async fn a_scheduled_drt_runs_and_its_failure_raises_an_alert() {
    let sb_name = "drtsched";
    // kill-replica, but expecting a failover that never comes: the run must FAIL.
    let scenario_dir = tempfile::tempdir().unwrap();
    let failing = scenario_dir.path().join("must-fail.toml");
    std::fs::write(
        &failing,
        r#"name = "must-fail"
description = "kill a replica but demand a failover: fails on purpose"
[load]
writers = 2
rate_per_s = 100
duration = "3s"
[[fault]]
kind = "kill_replica"
target = "replica"
at = "1s"
heal_after = "1s"
[expect]
failover = "must"
"#,
    )
    .unwrap();
    // The sandbox directory is only known after `up`; the schedule is appended by the edit.
    let extra = format!(
        r#"[[drt.schedule]]
scenario = {:?}
cluster = "{sb_name}"
every = "1h"
first_after = "1s"
sandbox = "{sb_name}"
sandbox_dir = "SANDBOX_DIR"
"#,
        failing.display().to_string()
    );
    let sb = TestSandbox::up(sb_name, 30785, &["--semi-sync"]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let tokens_text = tokens.display().to_string();
    let dir = sb.dir_arg();
    let cfg = test_config(&sb, 30799, move |t| {
        let t = t.replace(
            "listen = \"127.0.0.1:30799\"",
            &format!("listen = \"127.0.0.1:30799\"\ntokens_file = {tokens_text:?}"),
        );
        format!("{t}\n{}\n", extra.replace("SANDBOX_DIR", &dir))
    });
    let d = Daemon::start(&cfg, 30799).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let events = d.get("/api/v1/events?kind=drt_finished").await;
        if let Some(e) = events["events"].as_array().and_then(|a| a.first()).cloned() {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run finished\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(finished["level"], "error", "{finished:#}");
    let runs = d.get("/api/v1/drt/runs").await;
    let run = &runs["runs"][0];
    assert_eq!(run["origin"], "schedule", "{runs:#}");
    assert_eq!(run["pass"], false);
    let started = d.get("/api/v1/events?kind=drt_started").await;
    assert_eq!(started["events"].as_array().unwrap().len(), 1);
    all_running_and_none_paused(&sb);
}

/// The hard faults of issue 13 through `dbfleet drt run` with the daemon: every fault is
/// healed (a delayed replica undelayed, a broken one repaired, a stalled stream's chain gone,
/// killed members started again) and the report judges the new expectations. Whether they
/// pass depends on the daemon's failover (issue 13); `scripts/bench-hard-faults.sh`
/// measures that. Ports 26100..26108, API 26190..26192.
#[tokio::test]
async fn hard_fault_scenarios_heal_everything_and_judge_stale_acks() {
    for (i, scenario) in [
        "kill-primary-with-delayed-replica",
        "kill-primary-with-broken-replica",
        "lose-primary-and-best-replica",
    ]
    .into_iter()
    .enumerate()
    {
        let (sb, d, tokens) = with_daemon(
            &format!("drthard{i}"),
            26100 + 3 * i as u16,
            26190 + i as u16,
            "",
            StartOpts::default(),
        )
        .await;
        let (_, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), scenario, &[]);
        let run = &v["runs"][0];
        assert!(run.is_object(), "{scenario}: no run: {v:#}\n{stderr}");
        let verdicts: Vec<String> = v["verdicts"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|vd| vd["expectation"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            verdicts
                .iter()
                .any(|e| e.contains("acknowledged by the old primary after the new one opened")),
            "{scenario}: {verdicts:?}"
        );
        // The stale client ran, on the first primary.
        assert_eq!(
            run["stale"]["pinned_writer"], 4,
            "{scenario}: {:#}",
            run["stale"]
        );
        assert!(run["stale"]["pinned_acked"].as_u64().unwrap() > 0);
        if scenario == "lose-primary-and-best-replica" {
            assert!(
                verdicts
                    .iter()
                    .any(|e| e == "the control plane hands the failover to a human"),
                "{verdicts:?}"
            );
        }
        healed(&sb, pid);
        // Replication runs everywhere it runs at all: the broken replica was repaired, the
        // delayed one undelayed.
        for m in ["m1", "m2", "m3"] {
            let o = sb.probe(m);
            if let Some(r) = o.state().and_then(|s| s.replication.as_ref()) {
                assert_eq!(r.sql_delay_s, 0, "{scenario}: {m} still delayed");
                assert_ne!(r.last_sql_errno, 1950, "{scenario}: {m} still broken");
            }
        }
        drop(d);
    }
}

/// kill-primary-via-proxy: the writers know only HAProxy's writer address, so the RTO is
/// what an application behind the proxy sees; every expectation holds (one failover, no
/// lost write) with the proxy moving to the new primary: by its route checks alone (the
/// pull), or told at once by the failover over its Runtime API (the push). Without a proxy
/// the scenario is refused with what to do. Ports 27560..27569 and 27570..27579.
#[tokio::test]
async fn kill_primary_via_proxy_measures_what_the_application_sees() {
    via_proxy("drtproxy", 27560, false).await;
}

#[tokio::test]
async fn kill_primary_via_proxy_with_the_push() {
    via_proxy("drtpush", 27570, true).await;
}

async fn via_proxy(name: &str, base: u16, push: bool) {
    let api = base + 9;
    let hap = base + 5;
    // The Runtime API's socket, relative to the daemon's config in the sandbox directory.
    let extra = if push {
        "[cluster.haproxy]\nruntime_api = \"haproxy/admin.sock\"\n"
    } else {
        ""
    };
    let (sb, d, tokens) = with_daemon(name, base, api, extra, StartOpts::default()).await;
    let dir = sb.dir_arg();

    // No proxy yet: refused, saying how to start one.
    let out = dbfleet(&[
        "drt",
        "run",
        "kill-primary-via-proxy",
        "--sandbox",
        &sb.name,
        "--dir",
        &dir,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runs no HAProxy") && stderr.contains("--haproxy"),
        "{stderr}"
    );

    // The proxy checks the daemon this test runs: the sandbox's own config names its API.
    let written = sb.open().dir().join("dbfleet.toml");
    let text = std::fs::read_to_string(&written).unwrap();
    std::fs::write(
        &written,
        text.replace("127.0.0.1:7070", &format!("127.0.0.1:{api}")),
    )
    .unwrap();
    ok(dbfleet(&[
        "sandbox",
        "up",
        "--name",
        &sb.name,
        "--base-port",
        &base.to_string(),
        "--dir",
        &dir,
        "--haproxy",
        "--haproxy-port",
        &hap.to_string(),
    ]));
    // The proxy's first checks must have found the primary before the load starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let app = sb.open().credentials().unwrap().app.credentials();
    let proxy = model::InstanceAddr::new("127.0.0.1", hap);
    loop {
        if let Ok(mut s) =
            probe::Session::connect(&proxy, &app, probe::ProbeOptions::default()).await
        {
            let ok = s
                .query_rows("read_only", "SELECT @@global.read_only AS ro")
                .await
                .is_ok_and(|rows| {
                    rows.first()
                        .and_then(|r| r.get("ro").cloned().flatten())
                        .as_deref()
                        == Some("0")
                });
            s.close().await;
            if ok {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no writable primary through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (ok_run, v, stderr, pid) = drt_run(&sb, Some((&d, &tokens)), "kill-primary-via-proxy", &[]);
    assert!(ok_run, "{v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    let run = &v["runs"][0];
    assert!(
        run["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["label"]
                .as_str()
                .is_some_and(|l| l.contains(&format!("through HAProxy at 127.0.0.1:{hap}")))),
        "{:#}",
        run["timeline"]
    );
    assert_eq!(run["figures"]["failovers"], 1);

    // With the push, the failover told HAProxy at open_writes and fence_old: the old
    // primary's server in maintenance, the new one ready. Without it, nothing was pushed.
    let events = d
        .get(&format!("/api/v1/events?cluster={}&limit=1000", sb.name))
        .await;
    let pushed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "routing_pushed" || e["kind"] == "routing_push_failed")
        .collect();
    if push {
        let steps: Vec<&str> = pushed
            .iter()
            .filter(|e| e["kind"] == "routing_pushed")
            .filter_map(|e| e["data"]["step"].as_str())
            .collect();
        assert!(
            steps.contains(&"open_writes") && steps.contains(&"fence_old"),
            "{pushed:#?}\n{}",
            d.log_text()
        );
        let sock = sb.open().dir().join("haproxy/admin.sock");
        let api =
            haproxy::RuntimeApi::new(haproxy::Socket::Unix(sock), haproxy::RuntimeApi::TIMEOUT);
        let servers = api
            .servers(&haproxy::writer_backend(&sb.name))
            .await
            .unwrap();
        let old = servers
            .iter()
            .find(|s| s.name == sb.addr("m1").to_string())
            .unwrap();
        assert!(old.in_maint(), "{servers:?}");
    } else {
        assert!(pushed.is_empty(), "{pushed:#?}");
    }
    healed(&sb, pid);
}
