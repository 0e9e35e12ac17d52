//! `dbfleet serve`'s metrics against a real sandbox: `GET /metrics` passes `promtool check
//! metrics` (Debian `prometheus`, installed by scripts/install-deps.sh; the test fails when
//! it is missing), carries labelled per-instance series and the daemon's health, and
//! `GET /api/v1/instances/{addr}/metrics` serves the history with heartbeat lag, with clear
//! 4xx answers on bad input.
//!
//! The sandbox uses ports 30010–30012 and the API 30020.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{test_config, Daemon};
use common::{assert_promtool_clean, TestSandbox};
use serde_json::Value;

async fn get_text(d: &Daemon, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", d.api))
        .timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_history_is_served() {
    let sb = TestSandbox::up("metrics", 30010, &[]);
    let cfg = test_config(&sb, 30020, |t| t);
    let d = Daemon::start(&cfg, 30020).await;
    let (m1, m2) = (sb.addr("m1"), sb.addr("m2"));

    // Wait for a replica's history to show heartbeat lag and a query rate.
    let path = format!("/api/v1/instances/{m2}/metrics?since=5m");
    let deadline = Instant::now() + Duration::from_secs(30);
    let history: Value = loop {
        let v = d.get(&path).await;
        let ready = v["points"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["lag_source"] == "heartbeat" && p["queries_per_second"].is_number())
        });
        if ready {
            break v;
        }
        assert!(Instant::now() < deadline, "no heartbeat in history: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(history["instance"], m2.to_string());
    assert_eq!(history["role"], "replica");
    assert_eq!(
        history["capacity"],
        3600 * 1000 / common::daemon::INTERVAL_MS
    );
    let points = history["points"].as_array().unwrap();
    let last = points.last().unwrap();
    assert_eq!(last["up"], true);
    assert_eq!(last["replication_io_running"], true);
    assert_eq!(last["replication_sql_running"], true);
    assert!(last["lag_seconds"].as_f64().unwrap() < 60.0, "{last}");
    let ats: Vec<u64> = points
        .iter()
        .map(|p| p["at_ms"].as_u64().unwrap())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] < w[1]), "oldest first: {ats:?}");
    // `since` as epoch ms: only the points at or after it.
    let cut = ats[ats.len() / 2];
    let later = d
        .get(&format!("/api/v1/instances/{m2}/metrics?since={cut}"))
        .await;
    let later_points = later["points"].as_array().unwrap();
    assert!(later_points
        .iter()
        .all(|p| p["at_ms"].as_u64().unwrap() >= cut));
    assert!(!later_points.is_empty());

    // Bad input is a clear 4xx.
    for (bad, status, needle) in [
        (
            format!("/api/v1/instances/{m2}/metrics?since=yesterday"),
            400,
            "since",
        ),
        (
            format!("/api/v1/instances/{m2}/metrics?until=5m"),
            400,
            "until",
        ),
        (
            "/api/v1/instances/not-an-addr/metrics".to_string(),
            400,
            "addr",
        ),
        (
            "/api/v1/instances/127.0.0.1:1/metrics".to_string(),
            404,
            "no instance",
        ),
    ] {
        let (code, ct, body) = get_text(&d, &bad, None).await;
        assert_eq!(code, status, "{bad}: {body}");
        assert_eq!(ct, "application/json", "{bad}");
        assert!(body.contains(needle), "{bad}: {body}");
    }

    // The exposition, in the classic text format, passes promtool.
    let (code, ct, text) = get_text(&d, "/metrics", None).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert_promtool_clean(&text);
    for want in [
        format!("dbfleet_mysql_up{{cluster=\"metrics\",instance=\"{m1}\",role=\"primary\"}} 1"),
        format!("dbfleet_mysql_up{{cluster=\"metrics\",instance=\"{m2}\",role=\"replica\"}} 1"),
        format!("dbfleet_mysql_heartbeat_lag_seconds{{cluster=\"metrics\",instance=\"{m2}\""),
        "# TYPE dbfleet_mysql_queries_total counter".to_string(),
        "# TYPE dbfleet_probe_duration_seconds histogram".to_string(),
        "dbfleet_probe_errors_total ".to_string(),
        "dbfleet_missed_intervals_total{loop=\"probe\"}".to_string(),
        "dbfleet_instances_watched 3".to_string(),
        "dbfleet_heartbeat_writes_total ".to_string(),
    ] {
        assert!(text.contains(&want), "{want} missing from:\n{text}");
    }

    // Prometheus asks for OpenMetrics and gets it.
    let (code, ct, om) = get_text(
        &d,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE dbfleet_mysql_queries counter"));
}
