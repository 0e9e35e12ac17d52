//! Alerting through the real daemon: a stopped SQL thread fires an alert that reaches a
//! webhook receiver the test runs, and resolves when the thread starts again, counted at
//! `/metrics`; a downtime set with the CLI silences the page; a failed scheduled DRT pages
//! and a later pass resolves it; `config validate` names a bad alert field. Sandboxes use
//! ports 30100..30130 and 29100..29102, APIs and receivers 30150..30170 and 29110..29111.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use common::daemon::{test_config, Daemon};
use common::{assert_promtool_clean, dbfleet, ok, TestSandbox};
use serde_json::Value;

const TOKEN: &str = "alert-test-token-0123456789";

/// A webhook receiver on loopback that keeps every body it gets.
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    cancel: tokio_util::sync::CancellationToken,
}

impl Receiver {
    async fn start(port: u16) -> Self {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State(got): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                        got.lock().unwrap().push(v);
                        "ok"
                    },
                ),
            )
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let cancel = tokio_util::sync::CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await
                .unwrap();
        });
        Self { got, cancel }
    }

    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until a body with `status` for `key` arrives.
    async fn wait(&self, key: &str, status: &str, within: Duration, d: &Daemon) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self
                .bodies()
                .into_iter()
                .find(|v| v["key"] == key && v["status"] == status)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {status} notification for {key}; got {:#?}\nalerts: {:#}\n{}",
                self.bodies(),
                d.get("/api/v1/alerts").await,
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A sandbox, a tokens file, and a daemon config with `[alert]` rules on a stopped SQL
/// thread and heartbeat lag, and a webhook to `hook_port`.
fn setup(name: &str, base: u16, api: u16, hook_port: u16) -> (TestSandbox, PathBuf, String) {
    let sb = TestSandbox::up(name, base, &[]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let tokens_text = tokens.display().to_string();
    let t2 = tokens_text.clone();
    let cfg = test_config(&sb, api, move |t| {
        let t = t.replace(
            &format!("listen = \"127.0.0.1:{api}\""),
            &format!("listen = \"127.0.0.1:{api}\"\ntokens_file = {t2:?}"),
        );
        format!(
            r#"{t}
[alert]

[[alert.rule]]
name = "replication_sql_stopped"
metric = "replication_sql_running"
op = "=="
threshold = 0.0
for = "1s"
severity = "error"

[[alert.rule]]
name = "heartbeat_lag_high"
metric = "heartbeat_lag_seconds"
op = ">"
threshold = 2.0
rising = true
for = "1s"
severity = "error"

[[alert.notifier]]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
retry = {{ max_attempts = 5, initial_backoff = "100ms", max_backoff = "1s", max_total = "10s" }}
"#
        )
    });
    (sb, cfg, tokens_text)
}

async fn exec(sb: &TestSandbox, member: &str, sql: &str) {
    let mut s = sb.session(member).await;
    s.exec("test statement", sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    s.close().await;
}

fn cli(d: &Daemon, args: &[&str], token_file: &str) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--api", d.api.as_str(), "--token-file", token_file]);
    dbfleet(&all)
}

/// `GET /metrics` as text (the Prometheus text format 0.0.4).
async fn metrics_text(d: &Daemon) -> String {
    let resp = reqwest::get(format!("{}/metrics", d.api))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("body")
}

/// The value of the sample named exactly `series` (name and labels) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Wait until `/metrics` counts as `sent` by the notifier `webhook` every body `hook` got
/// (a delivery is counted once the receiver has answered), and return the exposition.
async fn wait_sent(d: &Daemon, hook: &Receiver, within: Duration) -> String {
    let series = "dbfleet_notifications_total{notifier=\"webhook\",outcome=\"sent\"}";
    let deadline = Instant::now() + within;
    loop {
        let text = metrics_text(d).await;
        let got = hook.bodies().len();
        if got > 0 && sample(&text, series) == Some(got as f64) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} is not {got}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events of `kind` about `key`.
async fn events(d: &Daemon, kind: &str, key: &str) -> Vec<Value> {
    let v = d.get("/api/v1/events?limit=1000").await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && e["data"]["key"] == key)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_stopped_sql_thread_pages_the_webhook_and_resolves() {
    let hook = Receiver::start(30151).await;
    let (sb, cfg, _tokens) = setup("alerts-fire", 30100, 30150, 30151);
    let d = Daemon::start(&cfg, 30150).await;
    let m2 = sb.addr("m2").to_string();
    let sql_key = format!("replication_sql_stopped/{}/{m2}", sb.name);
    let lag_key = format!("heartbeat_lag_high/{}/{m2}", sb.name);

    // The heartbeat row has reached m2 (the daemon creates it on the primary at start).
    sb.wait_heartbeat_row(&["m2"], Duration::from_secs(30))
        .await;

    exec(&sb, "m2", "STOP SLAVE SQL_THREAD").await;
    let fired = hook
        .wait(&sql_key, "firing", Duration::from_secs(30), &d)
        .await;
    assert_eq!(fired["rule"], "replication_sql_stopped");
    assert_eq!(fired["severity"], "error");
    assert_eq!(fired["instance"], m2.as_str());
    assert_eq!(fired["cluster"], sb.name.as_str());
    let a = d.wait_firing(&sql_key, Duration::from_secs(5)).await;
    assert_eq!(a["silenced"], false, "{a}");
    // The heartbeat lag keeps growing while the SQL thread is stopped.
    hook.wait(&lag_key, "firing", Duration::from_secs(30), &d)
        .await;

    exec(&sb, "m2", "START SLAVE SQL_THREAD").await;
    let resolved = hook
        .wait(&sql_key, "resolved", Duration::from_secs(30), &d)
        .await;
    assert!(resolved["resolved_at"].is_string(), "{resolved}");
    hook.wait(&lag_key, "resolved", Duration::from_secs(30), &d)
        .await;

    // Both transitions are in the event log, fired at the rule's severity.
    let fired_ev = events(&d, "alert_fired", &sql_key).await;
    assert_eq!(fired_ev.len(), 1, "{fired_ev:#?}");
    assert_eq!(fired_ev[0]["level"], "error");
    assert_eq!(fired_ev[0]["data"]["silenced"], false);
    assert_eq!(events(&d, "alert_resolved", &sql_key).await.len(), 1);
    // Paged once each: no repeats while it fired.
    let n = hook
        .bodies()
        .iter()
        .filter(|v| v["key"] == sql_key.as_str())
        .count();
    assert_eq!(n, 2, "{:#?}", hook.bodies());

    // Every body the receiver got is counted as sent at /metrics, none failed or dropped,
    // and the exposition still passes promtool.
    let text = wait_sent(&d, &hook, Duration::from_secs(5)).await;
    for outcome in ["failed", "dropped"] {
        let series =
            format!("dbfleet_notifications_total{{notifier=\"webhook\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
    }
    assert!(
        text.contains("# TYPE dbfleet_notifications_total counter\n"),
        "{text}"
    );
    assert_promtool_clean(&text);
}

#[tokio::test]
async fn a_downtime_set_with_the_cli_silences_the_page() {
    let hook = Receiver::start(30161).await;
    let (sb, cfg, tokens) = setup("alerts-dt", 30120, 30160, 30161);
    let d = Daemon::start(&cfg, 30160).await;
    let m3 = sb.addr("m3").to_string();
    let key = format!("replication_sql_stopped/{}/{m3}", sb.name);

    // Bad requests are refused with the field named.
    let bad = cli(
        &d,
        &["downtime", "nosuch:1", "--for", "2h", "--reason", "x"],
        &tokens,
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("target"),
        "{bad:?}"
    );
    let bad = cli(
        &d,
        &["downtime", &m3, "--for", "soon", "--reason", "x"],
        &tokens,
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("for:"),
        "{bad:?}"
    );
    let (status, _) = d
        .post(
            "/api/v1/downtimes",
            "wrong-token",
            serde_json::json!({"target": m3, "for": "2h", "reason": "x", "who": "t"}),
        )
        .await;
    assert_eq!(status, 403);

    let out = ok(cli(
        &d,
        &[
            "downtime",
            &m3,
            "--for",
            "2h",
            "--reason",
            "replica rebuild",
            "--who",
            "alice",
            "--json",
        ],
        &tokens,
    ));
    let dt: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dt["target_kind"], "instance");
    assert_eq!(dt["target"], m3.as_str());
    let list = ok(cli(&d, &["downtimes"], &tokens));
    assert!(
        list.contains("replica rebuild") && list.contains("alice"),
        "{list}"
    );

    exec(&sb, "m3", "STOP SLAVE SQL_THREAD").await;
    let a = d.wait_firing(&key, Duration::from_secs(30)).await;
    assert_eq!(a["silenced"], true, "{a}");
    assert_eq!(a["downtime_id"], dt["id"], "{a}");
    assert!(a["paged_ms"].is_null(), "{a}");
    let text = ok(cli(&d, &["alerts"], &tokens));
    assert!(
        text.contains("replication_sql_stopped") && text.contains("yes"),
        "{text}"
    );
    let fired = events(&d, "alert_fired", &key).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["data"]["silenced"], true);

    // A page that is not silenced would have been sent by now: the heartbeat alert on the
    // same instance is silenced too, so the receiver has nothing about m3.
    exec(&sb, "m3", "START SLAVE SQL_THREAD").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&d, "alert_resolved", &key).await.len() != 1 {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let about_m3: Vec<Value> = hook
        .bodies()
        .into_iter()
        .filter(|v| v["instance"] == m3.as_str())
        .collect();
    assert!(about_m3.is_empty(), "{about_m3:#?}");

    // The downtime survives a restart, and can be removed through the CLI.
    drop(d);
    let d = Daemon::start(&cfg, 30160).await;
    let listed = d.get("/api/v1/downtimes").await;
    assert_eq!(listed["downtimes"][0]["id"], dt["id"], "{listed}");
    let id = dt["id"].to_string();
    ok(cli(&d, &["downtime-remove", &id], &tokens));
    let listed = d.get("/api/v1/downtimes").await;
    assert!(
        listed["downtimes"].as_array().unwrap().is_empty(),
        "{listed}"
    );
}

/// Write a game-day scenario that stops a replica's SQL thread briefly and expects
/// `failover` (`"must"` fails on purpose: nothing fails over), atomically, as the daemon
/// reads the file afresh at each run.
fn write_scenario(path: &std::path::Path, failover: &str) {
    let text = format!(
        r#"name = "game-day"
description = "stop a replica's SQL thread; failover = {failover}"
[load]
writers = 2
rate_per_s = 100
duration = "2s"
[[fault]]
kind = "stop_replica_sql_thread"
target = "replica"
at = "500ms"
heal_after = "500ms"
[expect]
failover = "{failover}"
lost_writes_allowed = 0
"#
    );
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The first webhook body of rule `drt_failed` with `status`.
async fn wait_drt_page(hook: &Receiver, status: &str, within: Duration, d: &Daemon) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = hook
            .bodies()
            .into_iter()
            .find(|v| v["rule"] == "drt_failed" && v["status"] == status)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} drt_failed notification; got {:#?}\nruns: {:#}\n{}",
            hook.bodies(),
            d.get("/api/v1/drt/runs").await,
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scheduled DRT that fails pages `drt_failed/CLUSTER/SCENARIO`; once the scenario passes
/// (the test rewrites its file after the failure), a later run resolves that page: an
/// `alert_resolved` event and a `resolved` notification.
#[tokio::test]
async fn a_failed_scheduled_drt_pages_and_a_later_pass_resolves_it() {
    let hook = Receiver::start(29111).await;
    let sb = TestSandbox::up("alerts-drt", 29100, &["--semi-sync"]);
    let scenario = sb.root().join("game-day.toml");
    write_scenario(&scenario, "must");
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let tokens_text = tokens.display().to_string();
    let (name, dir) = (sb.name.clone(), sb.dir_arg());
    let scenario_text = scenario.display().to_string();
    let key = format!("drt_failed/{}/{scenario_text}", sb.name);
    let cfg = test_config(&sb, 29110, move |t| {
        let t = t.replace(
            "listen = \"127.0.0.1:29110\"",
            &format!("listen = \"127.0.0.1:29110\"\ntokens_file = {tokens_text:?}"),
        );
        format!(
            r#"{t}
[[drt.schedule]]
scenario = {scenario_text:?}
cluster = "{name}"
every = "5s"
first_after = "1s"
sandbox = "{name}"
sandbox_dir = {dir:?}

[alert]

[[alert.notifier]]
kind = "webhook"
url = "http://127.0.0.1:29111/hook"
retry = {{ max_attempts = 5, initial_backoff = "100ms", max_backoff = "1s", max_total = "10s" }}
"#
        )
    });
    let d = Daemon::start(&cfg, 29110).await;

    let fired = wait_drt_page(&hook, "firing", Duration::from_secs(90), &d).await;
    assert_eq!(fired["key"], key.as_str(), "{fired}");
    assert_eq!(fired["severity"], "error");
    assert!(
        fired["summary"].as_str().unwrap().contains("FAILED"),
        "{fired}"
    );
    // It is listed with the open alerts, as rule alerts are.
    let listed = d.wait_firing(&key, Duration::from_secs(10)).await;
    assert_eq!(listed["severity"], "error", "{listed}");
    // The next runs pass.
    write_scenario(&scenario, "must_not");

    let resolved = wait_drt_page(&hook, "resolved", Duration::from_secs(90), &d).await;
    assert_eq!(resolved["key"], key.as_str(), "{resolved}");
    assert!(resolved["resolved_at"].is_string(), "{resolved}");
    let ev = events(&d, "alert_resolved", &key).await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let message = ev[0]["message"].as_str().unwrap();
    assert!(message.contains("passed"), "{message}");
    assert!(!events(&d, "alert_fired", &key).await.is_empty());
    let open = d.get("/api/v1/alerts").await;
    assert!(
        !open["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == key.as_str()),
        "resolved, so no longer listed: {open:#}"
    );
    let runs = d.get("/api/v1/drt/runs").await;
    let passes: Vec<bool> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pass"].as_bool().unwrap())
        .collect();
    assert!(
        passes.contains(&true) && passes.contains(&false),
        "{runs:#}"
    );
    // Both the page and its resolve were delivered and counted.
    wait_sent(&d, &hook, Duration::from_secs(5)).await;
}

#[test]
fn config_validate_names_a_bad_alert_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbfleet.toml");
    std::fs::write(
        &path,
        r#"
[store]
data_dir = "data"

[[alert.rule]]
name = "lag"
metric = "heartbeat_lag_seconds"
op = ">"
for = "10s"

[[alert.notifier]]
kind = "webhook"
url = "ftp://relay.internal/hook"
"#,
    )
    .unwrap();
    let out = dbfleet(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alert.rule[0].threshold"), "{err}");
    assert!(err.contains("alert.notifier[0].url"), "{err}");

    // A PagerDuty key file that cannot be read is named too.
    std::fs::write(
        &path,
        r#"
[store]
data_dir = "data"

[[alert.notifier]]
kind = "pagerduty"
url = "http://127.0.0.1:30199/v2/enqueue"
routing_key_file = "missing.key"
"#,
    )
    .unwrap();
    let out = dbfleet(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alert.notifier[0].routing_key_file") && err.contains("missing.key"),
        "{err}"
    );
}
