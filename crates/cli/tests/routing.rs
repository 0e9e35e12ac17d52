//! Routing clients to the primary through a real daemon over a real sandbox: the route
//! checks HAProxy calls (`/api/v1/route/…`), and a real `haproxy` started on loopback in
//! front of the set. Sandboxes, APIs and proxies use ports 29200..29299.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{test_config, Daemon};
use common::TestSandbox;

/// GET `path` on the daemon with no token: the status and the body.
async fn route(d: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", d.api))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or_default();
    (status, body)
}

/// Poll until every check of `want` (path, status) answers as wanted at once.
async fn wait_routes(d: &Daemon, want: &[(String, u16)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut wrong = Vec::new();
        for (path, status) in want {
            let (got, body) = route(d, path).await;
            if got != *status {
                wrong.push(format!("{path}: {got} {body}, want {status}"));
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route checks did not settle:\n{}\n{}",
            wrong.join("\n"),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check_path(sb: &TestSandbox, member: &str, role: &str) -> String {
    format!("/api/v1/route/{}/{}/{role}", sb.name, sb.addr(member))
}

#[tokio::test]
async fn the_route_checks_name_the_writer_and_the_healthy_replicas() {
    let sb = TestSandbox::up("route-pull", 29200, &[]);
    let cfg = test_config(&sb, 29210, |t| t);
    let d = Daemon::start(&cfg, 29210).await;
    let want = vec![
        (check_path(&sb, "m1", "writer"), 200),
        (check_path(&sb, "m2", "writer"), 503),
        (check_path(&sb, "m3", "writer"), 503),
        (check_path(&sb, "m1", "reader"), 503),
        (check_path(&sb, "m2", "reader"), 200),
        (check_path(&sb, "m3", "reader"), 200),
    ];
    wait_routes(&d, &want, Duration::from_secs(10)).await;
    let (status, body) = route(&d, &check_path(&sb, "m1", "writer")).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"role": "writer", "ok": true}));

    // A replica whose SQL thread stops is no reader; started again, it is.
    let mut s = sb.session("m2").await;
    s.exec("stop sql thread", "STOP SLAVE SQL_THREAD")
        .await
        .unwrap();
    wait_routes(
        &d,
        &[(check_path(&sb, "m2", "reader"), 503)],
        Duration::from_secs(10),
    )
    .await;
    s.exec("start sql thread", "START SLAVE SQL_THREAD")
        .await
        .unwrap();
    wait_routes(
        &d,
        &[(check_path(&sb, "m2", "reader"), 200)],
        Duration::from_secs(10),
    )
    .await;
    s.close().await;

    // Unknown names and junk: 404, never a 5xx.
    for path in [
        format!("/api/v1/route/nosuch/{}/writer", sb.addr("m1")),
        format!("/api/v1/route/{}/127.0.0.1:29299/writer", sb.name),
        format!("/api/v1/route/{}/{}/leader", sb.name, sb.addr("m1")),
        format!("/api/v1/route/{}/junk/reader", sb.name),
    ] {
        let (status, body) = route(&d, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
}
