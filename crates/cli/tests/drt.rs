//! `dbfleet drt`: the built-in list, and real runs against sandboxes: kill-primary with the
//! daemon failing over, stop-replica-sql with client-side figures only. Every fault must be
//! healed afterwards. Sandboxes use ports 32600..32620, the API 32630.

mod common;

use std::process::Command;

use common::daemon::{test_config, Daemon};
use common::{dbfleet, TestSandbox};
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

#[tokio::test]
async fn kill_primary_fails_over_with_no_lost_write() {
    let sb = TestSandbox::up("drtkill", 32600, &["--semi-sync"]);
    let cfg = test_config(&sb, 32630, |t| t);
    let d = Daemon::start(&cfg, 32630).await;
    let reports = sb.root().join("reports-kill");
    let dir = sb.dir_arg();
    let (ok, v, stderr, pid) = run_json(&[
        "drt",
        "run",
        "kill-primary",
        "--sandbox",
        &sb.name,
        "--dir",
        &dir,
        "--api",
        &d.api,
        "--duration",
        "5s",
        "--json",
        "--report-dir",
        reports.to_str().unwrap(),
    ]);
    eprintln!("{stderr}");
    let run = &v["runs"][0];
    eprintln!(
        "kill-primary: rto {} ms, detection {} ms, failover {} ms, acked {}, lost {}",
        run["figures"]["rto_ms"],
        run["figures"]["detection_ms"],
        run["figures"]["failover_ms"],
        run["load"]["acked"],
        run["lost"].as_array().map(|l| l.len()).unwrap_or(99)
    );
    for e in run["timeline"].as_array().unwrap() {
        eprintln!(
            "  {:>6} ms  {:<16} {}",
            e["at_ms"],
            e["kind"].as_str().unwrap_or(""),
            e["label"]
        );
    }
    assert!(ok, "exit status not 0: {v:#}\n{stderr}\n{}", d.log_text());
    assert_all_pass(&v, &stderr);
    assert_eq!(run["lost"].as_array().unwrap().len(), 0);
    assert_eq!(v["aggregate"]["lost_total"], 0);
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    assert!(reports.join("report.json").exists());
    no_drt_chain(pid);
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
