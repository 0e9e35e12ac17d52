//! Routing clients to the primary through a real daemon over a real sandbox: the route
//! checks HAProxy calls (`/api/v1/route/…`), and a real `haproxy` started on loopback in
//! front of the set. Sandboxes, APIs and proxies use ports 29200..29299.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{test_config, Daemon};
use common::{dbfleet, ok, TestSandbox};
use model::InstanceAddr;
use probe::{ProbeOptions, Session};

/// A real `haproxy` in the foreground (`-db`), started by the test and killed by PID on
/// drop.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    fn start(cfg: &Path) -> Self {
        let log = cfg.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(haproxy_bin())
            .args(["-db", "-f"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start haproxy");
        Self { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_bin() -> PathBuf {
    sandbox::locate_in_path("haproxy").expect("haproxy is installed (scripts/install-deps.sh)")
}

/// `haproxy -c -f cfg` passes.
fn assert_haproxy_accepts(cfg: &Path) {
    let out = Command::new(haproxy_bin())
        .args(["-c", "-f"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c refused {}:\n{}{}",
        cfg.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sandbox's application account: DML and DDL on the `app` schema only, no `SUPER`
/// or `READ_ONLY ADMIN`, so `read_only` refuses its writes as an application's (the admin
/// account would write through it).
fn app(sb: &TestSandbox) -> probe::Credentials {
    sb.open().credentials().unwrap().app.credentials()
}

/// What a client with `app`'s account connected through `port` finds: the server's port,
/// and whether a write there succeeded.
async fn through(app: &probe::Credentials, port: u16, write: bool) -> Result<(u16, bool), String> {
    let addr = InstanceAddr::new("127.0.0.1", port);
    let opts = ProbeOptions {
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(5),
    };
    let mut s = Session::connect(&addr, app, opts)
        .await
        .map_err(|e| e.to_string())?;
    let rows = s
        .query_rows("port", "SELECT @@port AS port")
        .await
        .map_err(|e| e.to_string())?;
    let server_port: u16 = rows[0]["port"].as_deref().unwrap_or("0").parse().unwrap();
    let wrote = if write {
        let mut ok = true;
        for sql in [
            "CREATE DATABASE IF NOT EXISTS app",
            "CREATE TABLE IF NOT EXISTS app.writes (id INT PRIMARY KEY AUTO_INCREMENT, at BIGINT)",
            "INSERT INTO app.writes (at) VALUES (UNIX_TIMESTAMP())",
        ] {
            if let Err(e) = s.exec("write", sql).await {
                eprintln!("through port {port} to {server_port}: {e}");
                ok = false;
                break;
            }
        }
        ok
    } else {
        false
    };
    s.close().await;
    Ok((server_port, wrote))
}

/// Poll until a client through `port` lands on a member `ok` accepts (and, with `write`,
/// its write succeeds there); returns that member's port. A write that succeeds on a
/// member `ok` refuses fails the test.
async fn wait_through(
    app: &probe::Credentials,
    port: u16,
    write: bool,
    ok: impl Fn(u16) -> bool,
    within: Duration,
    why: impl Fn() -> String,
) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let got = through(app, port, write).await;
        if let Ok((p, wrote)) = &got {
            if ok(*p) && (!write || *wrote) {
                return *p;
            }
            // A write must never succeed anywhere else: `read_only` refuses the
            // application's account on every member but the writer.
            assert!(
                !(write && *wrote),
                "a write through port {port} succeeded on {p}, not where it should\n{}",
                why()
            );
        }
        assert!(
            Instant::now() < deadline,
            "through port {port}: last {got:?}\n{}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HAProxy's view of `server` in `backend` (`UP`, `DOWN`, `UP 1/2`, …), from `show stat`
/// on its Runtime API socket; `no socket yet` before HAProxy listens there.
fn haproxy_status(sock: &Path, backend: &str, server: &str) -> String {
    use std::io::{Read, Write};
    // Not listening yet: HAProxy is starting.
    let Ok(mut c) = std::os::unix::net::UnixStream::connect(sock) else {
        return "no socket yet".into();
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"show stat\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (px, sv, st) = (col("pxname"), col("svname"), col("status"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > st && f[px] == backend && f[sv] == server)
        .map(|f| f[st].to_string())
        .unwrap_or_else(|| panic!("no {backend}/{server} in\n{text}"))
}

/// Wait until HAProxy has checked every member in `backend` and found `up` the ones in
/// `up` and down the others. HAProxy counts a server up until its first check, so a test
/// that writes before then may reach any member (docs/ROUTING.md, caveats).
async fn wait_checked(sock: &Path, sb: &TestSandbox, backend: &str, up: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let states: Vec<(String, String)> = ["m1", "m2", "m3"]
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    haproxy_status(sock, backend, &sb.addr(m).to_string()),
                )
            })
            .collect();
        if states.iter().all(|(m, st)| {
            if up.contains(&m.as_str()) {
                st == "UP"
            } else {
                st.starts_with("DOWN")
            }
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{backend} did not settle: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dbfleet haproxy config` for `sb` with the checks on `api`, written beside the sandbox.
fn write_haproxy_config(sb: &TestSandbox, cfg: &Path, writer: u16, reader: u16) -> PathBuf {
    let dir = sb.root().to_path_buf();
    let sock = dir.join("haproxy.sock").display().to_string();
    let text = ok(dbfleet(&[
        "haproxy",
        "config",
        &sb.name,
        "--config",
        &cfg.display().to_string(),
        "--writer-bind",
        &format!("127.0.0.1:{writer}"),
        "--reader-bind",
        &format!("127.0.0.1:{reader}"),
        "--stats-socket",
        &sock,
    ]));
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    path
}

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

#[tokio::test]
async fn haproxy_with_the_printed_config_routes_writes_to_the_primary() {
    let sb = TestSandbox::up("route-hap", 29220, &[]);
    let cfg = test_config(&sb, 29223, |t| t);
    let d = Daemon::start(&cfg, 29223).await;
    let app = app(&sb);
    let hcfg = write_haproxy_config(&sb, &cfg, 29224, 29225);
    let text = std::fs::read_to_string(&hcfg).unwrap();
    assert!(text.contains("on-marked-down shutdown-sessions"), "{text}");
    assert_haproxy_accepts(&hcfg);
    // A cluster the config does not name is bad input.
    let out = dbfleet(&[
        "haproxy",
        "config",
        "nosuch",
        "--config",
        &cfg.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cluster named \"nosuch\""), "{err}");
    let h = Haproxy::start(&hcfg);
    let sock = sb.root().join("haproxy.sock");
    wait_checked(&sock, &sb, &format!("{}_writer", sb.name), &["m1"]).await;
    let primary = sb.addr("m1").port;
    let landed = wait_through(
        &app,
        29224,
        true,
        |p| p == primary,
        Duration::from_secs(15),
        || format!("{}\n{}", h.log_text(), d.log_text()),
    )
    .await;
    assert_eq!(landed, primary);
    // The write is on the primary itself.
    let mut m1 = sb.session("m1").await;
    let rows = m1
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.writes")
        .await
        .unwrap();
    assert!(
        rows[0]["n"]
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    m1.close().await;
    // Reads land on a replica.
    let replicas = [sb.addr("m2").port, sb.addr("m3").port];
    wait_through(
        &app,
        29225,
        false,
        |p| replicas.contains(&p),
        Duration::from_secs(15),
        || h.log_text(),
    )
    .await;
}

#[tokio::test]
async fn sandbox_up_haproxy_starts_a_proxy_that_down_stops() {
    let sb = TestSandbox::up("route-sbhap", 29230, &[]);
    // The proxy's checks go to the API the sandbox's dbfleet.toml names: point it at the
    // test's port, then add the proxy to the running sandbox.
    let written = sb.open().dir().join("dbfleet.toml");
    let text = std::fs::read_to_string(&written).unwrap();
    std::fs::write(&written, text.replace("127.0.0.1:7070", "127.0.0.1:29233")).unwrap();
    let dir = sb.dir_arg();
    let out = ok(dbfleet(&[
        "sandbox",
        "up",
        "--name",
        &sb.name,
        "--base-port",
        "29230",
        "--dir",
        &dir,
        "--haproxy",
        "--haproxy-port",
        "29235",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pid = report["haproxy"]["pid"].as_i64().expect("a haproxy pid") as i32;
    assert_eq!(report["haproxy"]["writer"], "127.0.0.1:29235", "{report:#}");
    assert_eq!(report["haproxy"]["reader"], "127.0.0.1:29236", "{report:#}");
    let sock = PathBuf::from(report["haproxy"]["stats_socket"].as_str().unwrap());
    assert!(sock.starts_with(sb.open().dir()), "{}", sock.display());
    assert!(sock.exists(), "the stats socket {}", sock.display());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("haproxy"));
    // Up again: the proxy that runs is kept.
    let again = ok(dbfleet(&[
        "sandbox",
        "up",
        "--name",
        &sb.name,
        "--base-port",
        "29230",
        "--dir",
        &dir,
        "--haproxy",
        "--haproxy-port",
        "29235",
        "--json",
    ]));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["haproxy"]["pid"].as_i64(), Some(pid as i64));

    let cfg = test_config(&sb, 29233, |t| t);
    let d = Daemon::start(&cfg, 29233).await;
    let app = app(&sb);
    let primary = sb.addr("m1").port;
    wait_checked(&sock, &sb, &format!("{}_writer", sb.name), &["m1"]).await;
    let cfg_file = PathBuf::from(report["haproxy"]["config_file"].as_str().unwrap());
    wait_through(
        &app,
        29235,
        true,
        |p| p == primary,
        Duration::from_secs(15),
        || {
            format!(
                "{}\n{}",
                std::fs::read_to_string(cfg_file.with_file_name("haproxy.log")).unwrap_or_default(),
                d.log_text()
            )
        },
    )
    .await;

    ok(dbfleet(&[
        "sandbox", "down", "--name", &sb.name, "--dir", &dir,
    ]));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "haproxy {pid} still runs after down"
    );
    assert!(
        std::net::TcpStream::connect("127.0.0.1:29235").is_err(),
        "the writer port still answers"
    );
}

#[tokio::test]
async fn the_haproxy_backends_follow_lag_and_a_failover() {
    let sb = TestSandbox::up("route-fo", 29240, &["--semi-sync"]);
    let cfg = test_config(&sb, 29243, |t| t);
    let d = Daemon::start(&cfg, 29243).await;
    let app = app(&sb);
    let hcfg = write_haproxy_config(&sb, &cfg, 29244, 29245);
    let sock = sb.root().join("haproxy.sock");
    let h = Haproxy::start(&hcfg);
    let why = || format!("{}\n{}", h.log_text(), d.log_text());
    let port = |m: &str| sb.addr(m).port;
    let reader_backend = format!("{}_reader", sb.name);
    let writer_backend = format!("{}_writer", sb.name);
    let status = |backend: &str, m: &str| haproxy_status(&sock, backend, &sb.addr(m).to_string());
    wait_checked(&sock, &sb, &writer_backend, &["m1"]).await;
    wait_through(
        &app,
        29244,
        true,
        |p| p == port("m1"),
        Duration::from_secs(15),
        why,
    )
    .await;

    // Both replicas take reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&reader_backend, "m2") != "UP" || status(&reader_backend, "m3") != "UP" {
        assert!(
            Instant::now() < deadline,
            "replicas not up for reads:\n{}",
            why()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // m2 applies 6 s behind (max_lag is 2 s): under writes, its lag passes max_lag and the
    // reader backend drops it; m3 stays.
    let mut m2 = sb.session("m2").await;
    for sql in [
        "STOP SLAVE",
        "CHANGE MASTER TO MASTER_DELAY = 6",
        "START SLAVE",
    ] {
        m2.exec("delay", sql).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status(&reader_backend, "m2").starts_with("DOWN") {
        assert!(
            Instant::now() < deadline,
            "the lagging replica stays in the reader backend: {}\n{}",
            status(&reader_backend, "m2"),
            why()
        );
        let _ = through(&app, 29244, true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if status(&reader_backend, "m3") != "UP" {
        let (st, body) = route(&d, &check_path(&sb, "m3", "reader")).await;
        let inst = d.get(&format!("/api/v1/instances/{}", sb.addr("m3"))).await;
        panic!(
            "m3 left the reader backend too: {} (check: {st} {body})\n{inst:#}\n{}",
            status(&reader_backend, "m3"),
            why()
        );
    }
    // Reads now land on m3 only.
    for _ in 0..4 {
        let (p, _) = through(&app, 29245, false).await.unwrap();
        assert_eq!(p, port("m3"));
    }
    // Caught up again, it is taken back.
    for sql in [
        "STOP SLAVE",
        "CHANGE MASTER TO MASTER_DELAY = 0",
        "START SLAVE",
    ] {
        m2.exec("undelay", sql).await.unwrap();
    }
    m2.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&reader_backend, "m2") != "UP" {
        assert!(
            Instant::now() < deadline,
            "the caught-up replica is not taken back: {}\n{}",
            status(&reader_backend, "m2"),
            why()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGKILL the primary: the daemon fails over, and a client through the writer port
    // lands on the new primary, where its write succeeds.
    sb.wait_heartbeat_row(&["m2", "m3"], Duration::from_secs(10))
        .await;
    sb.open().kill("m1").unwrap();
    let killed = Instant::now();
    let landed = wait_through(
        &app,
        29244,
        true,
        |p| p == port("m2") || p == port("m3"),
        Duration::from_secs(30),
        why,
    )
    .await;
    eprintln!(
        "kill -> a write through haproxy succeeded on {landed}: {:?}",
        killed.elapsed()
    );
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(20))
        .await;
    let op = &ops[0];
    assert_eq!(op["state"], "succeeded", "{op:#}");
    assert_eq!(
        op["data"]["candidate"].as_str(),
        Some(InstanceAddr::new("127.0.0.1", landed).to_string().as_str()),
        "writes land on the promoted replica"
    );
    let new = if landed == port("m2") { "m2" } else { "m3" };
    let other = if new == "m2" { "m3" } else { "m2" };
    // The other replica follows the new primary, and no write reached it on the way.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = sb.probe(other);
        let rep = o.state().and_then(|s| s.replication.clone());
        if rep
            .as_ref()
            .is_some_and(|r| r.source == sb.addr(new) && r.is_healthy())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{other} does not follow {new}: {rep:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status(&writer_backend, "m1").starts_with("DOWN"),
        "{}",
        why()
    );
    assert_eq!(status(&writer_backend, new), "UP");
    // Every later client lands there too.
    for _ in 0..4 {
        let (p, wrote) = through(&app, 29244, true).await.unwrap();
        assert_eq!((p, wrote), (landed, true));
    }
}

/// `dbfleet bench route-checks` runs end to end and counts right: every check answered,
/// half of them 200 (the writer's and the two replicas' reader checks). Figures are
/// printed, not asserted.
#[test]
fn the_route_checks_benchmark_runs() {
    let out = ok(dbfleet(&[
        "bench",
        "route-checks",
        "--rate",
        "60",
        "--seconds",
        "1",
        "--base-port",
        "29250",
        "--api-port",
        "29258",
        "--json",
    ]));
    let f: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["sent"], 60, "{f:#}");
    assert_eq!(f["errors"], 0, "{f:#}");
    assert_eq!(f["ok_200"], 30, "{f:#}");
    assert_eq!(f["ok_503"], 30, "{f:#}");
    assert!(f["build"] == "debug" || f["build"] == "release", "{f:#}");
}

#[tokio::test]
async fn the_haproxy_writer_backend_follows_a_switchover() {
    let sb = TestSandbox::up("route-sw", 29280, &["--semi-sync"]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, "route-switchover-token-0123456789\n").unwrap();
    let tokens_q = format!("{:?}", tokens.display().to_string());
    let cfg = test_config(&sb, 29283, move |t| {
        t.replace(
            "listen = \"127.0.0.1:29283\"",
            &format!("listen = \"127.0.0.1:29283\"\ntokens_file = {tokens_q}"),
        )
    });
    let d = Daemon::start(&cfg, 29283).await;
    let app = app(&sb);
    let hcfg = write_haproxy_config(&sb, &cfg, 29284, 29285);
    let sock = sb.root().join("haproxy.sock");
    let h = Haproxy::start(&hcfg);
    let why = || format!("{}\n{}", h.log_text(), d.log_text());
    let writer_backend = format!("{}_writer", sb.name);
    wait_checked(&sock, &sb, &writer_backend, &["m1"]).await;
    let m1 = sb.addr("m1").port;
    let m2 = sb.addr("m2").port;
    wait_through(&app, 29284, true, |p| p == m1, Duration::from_secs(15), why).await;

    let out = ok(dbfleet(&[
        "switchover",
        &sb.name,
        "--to",
        &sb.addr("m2").to_string(),
        "--api",
        &d.api,
        "--token-file",
        &tokens.display().to_string(),
    ]));
    assert!(out.contains("succeeded"), "{out}");
    // Writes through the proxy land on the new primary; none succeeds anywhere else on the
    // way (the old primary is alive and read-only).
    wait_through(&app, 29284, true, |p| p == m2, Duration::from_secs(15), why).await;
    wait_checked(&sock, &sb, &writer_backend, &["m2"]).await;
    // The old primary, now a replica of m2, takes reads once caught up.
    let deadline = Instant::now() + Duration::from_secs(15);
    while haproxy_status(
        &sock,
        &format!("{}_reader", sb.name),
        &sb.addr("m1").to_string(),
    ) != "UP"
    {
        assert!(Instant::now() < deadline, "m1 is no reader:\n{}", why());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
