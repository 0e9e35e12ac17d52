//! `dbfleet bench route-checks`: the route checks HAProxy calls (`GET
//! /api/v1/route/{cluster}/{addr}/{writer|reader}`) at a fixed rate. A real `dbfleet serve`
//! (this binary, in a child process) watches a fresh sandbox (1 primary, 2 replicas) in a
//! temporary directory; once the writer's check answers 200, checks of every member and
//! both roles go out open-loop at RATE a second for SECONDS, each on a new connection as
//! HAProxy's are. Latency is counted from when a check was due, so a client that falls
//! behind does not hide the wait (no coordinated omission); the service time (from connect)
//! is given beside it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sandbox::{Sandbox, UpOptions};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_reads::{wait_up, Daemon};

/// What to run.
#[derive(Clone, Debug)]
pub struct RouteChecksBench {
    /// Checks a second.
    pub rate: u32,
    /// How long to send them, after a one-second warm-up at the same rate.
    pub seconds: u64,
    /// The sandbox primary's port; the replicas take the next two.
    pub base_port: u16,
    /// The daemon's API port.
    pub api_port: u16,
}

/// The bench's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RouteChecksFigures {
    /// `debug` or `release`: the build of this binary (and so of the daemon it ran).
    pub build: &'static str,
    /// Checks a second asked for.
    pub rate: u32,
    /// Checks sent in the measured phase.
    pub sent: usize,
    /// Checks a second achieved over the phase.
    pub per_second: f64,
    /// Answers 200.
    pub ok_200: usize,
    /// Answers 503.
    pub ok_503: usize,
    /// Answers of another status (429 past the rate limit), or failed connections.
    pub errors: usize,
    /// Latency from when the check was due to its whole answer, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The slowest, ms.
    pub max_ms: f64,
    /// Service time (connect to whole answer) p99, ms.
    pub service_p99_ms: f64,
}

/// Run the bench in a temporary directory, removed afterwards.
pub async fn run(b: RouteChecksBench) -> anyhow::Result<RouteChecksFigures> {
    if !(1..=20_000).contains(&b.rate) || !(1..=600).contains(&b.seconds) {
        bail!("--rate must be 1 to 20000 and --seconds 1 to 600");
    }
    if b.base_port.checked_add(2).is_none() || (b.base_port..=b.base_port + 2).contains(&b.api_port)
    {
        bail!("--base-port needs the two ports above it free, and --api-port apart from them");
    }
    let root = crate::temp_root().join("route-checks");
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let result = run_in(&b, &root).await;
    let _ = Sandbox::down(&root, NAME);
    let _ = std::fs::remove_dir_all(&root);
    result
}

const NAME: &str = "benchroute";

async fn run_in(b: &RouteChecksBench, root: &Path) -> anyhow::Result<RouteChecksFigures> {
    let (sb, _) = Sandbox::up(&UpOptions {
        name: NAME.into(),
        replicas: 2,
        semi_sync: false,
        base_port: b.base_port,
        root: root.to_path_buf(),
        tuning: Default::default(),
    })
    .await
    .context("start the sandbox")?;
    let config = write_config(&sb, b.api_port)?;
    let log = root.join("serve.log");
    let mut daemon = Daemon::start(&config, &log)?;
    let base = format!("http://127.0.0.1:{}", b.api_port);
    let members: Vec<String> = sb
        .manifest()
        .members
        .iter()
        .map(|m| m.addr().to_string())
        .collect();
    let paths: Vec<String> = members
        .iter()
        .flat_map(|a| ["writer", "reader"].map(|role| format!("/api/v1/route/{NAME}/{a}/{role}")))
        .collect();
    let api: std::net::SocketAddr = ([127, 0, 0, 1], b.api_port).into();
    let result = async {
        wait_up(&base, &mut daemon).await?;
        wait_writer(api, &paths[0]).await?;
        // Warm-up, then the measured phase.
        let _ = phase(api, &paths, b.rate, 1).await;
        let (answers, elapsed) = phase(api, &paths, b.rate, b.seconds).await;
        Ok(figures(b.rate, answers, elapsed))
    }
    .await;
    daemon.stop();
    result.map_err(|e: anyhow::Error| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!("the daemon's log ends:\n{}", tail.join("\n")))
    })
}

/// The sandbox's own `dbfleet.toml`, with the API on `api_port`.
fn write_config(sb: &Sandbox, api_port: u16) -> anyhow::Result<PathBuf> {
    let instances: Vec<_> = sb
        .manifest()
        .members
        .iter()
        .map(|m| (m.addr(), m.role == sandbox::Role::Primary))
        .collect();
    let text = config::sandbox_config(
        NAME,
        &sb.dir().join("daemon"),
        &sb.admin_credentials_file(),
        &sb.repl_credentials_file(),
        &instances,
        false,
        None,
    )
    .replace("127.0.0.1:7070", &format!("127.0.0.1:{api_port}"));
    let path = sb.dir().join("dbfleet.toml");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// One check's outcome.
struct Answer {
    status: Option<u16>,
    /// From when it was due, ms.
    latency_ms: f64,
    /// From connect, ms.
    service_ms: f64,
}

/// One check on a new connection, as HAProxy sends it.
async fn check(api: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut c = tokio::net::TcpStream::connect(api).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: dbfleet\r\nConnection: close\r\n\r\n");
    c.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::with_capacity(256);
    c.read_to_end(&mut reply).await.ok()?;
    let head = std::str::from_utf8(reply.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// Wait up to 60 s for the writer's check to answer 200.
async fn wait_writer(api: std::net::SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while check(api, path).await != Some(200) {
        if Instant::now() > deadline {
            bail!("{path} did not answer 200 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `rate` checks a second for `seconds`, open-loop, cycling through `paths`.
async fn phase(
    api: std::net::SocketAddr,
    paths: &[String],
    rate: u32,
    seconds: u64,
) -> (Vec<Answer>, Duration) {
    let n = rate as usize * seconds as usize;
    let every = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + every.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let path = paths[i % paths.len()].clone();
        tasks.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let status = tokio::time::timeout(Duration::from_secs(10), check(api, &path))
                .await
                .ok()
                .flatten();
            let done = tokio::time::Instant::now();
            Answer {
                status,
                latency_ms: (done - due).as_secs_f64() * 1000.0,
                service_ms: (done - sent).as_secs_f64() * 1000.0,
            }
        }));
    }
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(a) = t.await {
            answers.push(a);
        }
    }
    let elapsed = start.elapsed();
    (answers, elapsed)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn figures(rate: u32, answers: Vec<Answer>, elapsed: Duration) -> RouteChecksFigures {
    let count = |s: u16| answers.iter().filter(|a| a.status == Some(s)).count();
    let (ok_200, ok_503) = (count(200), count(503));
    let mut lat: Vec<f64> = answers.iter().map(|a| a.latency_ms).collect();
    let mut svc: Vec<f64> = answers.iter().map(|a| a.service_ms).collect();
    lat.sort_by(f64::total_cmp);
    svc.sort_by(f64::total_cmp);
    RouteChecksFigures {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        rate,
        sent: answers.len(),
        per_second: answers.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        ok_200,
        ok_503,
        errors: answers.len() - ok_200 - ok_503,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        max_ms: percentile(&lat, 1.0),
        service_p99_ms: percentile(&svc, 0.99),
    }
}
