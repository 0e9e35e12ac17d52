//! `dbfleet bench api-reads`: many concurrent readers of the daemon's API. A real
//! `dbfleet serve` (this binary, in a child process) runs on a SQLite store seeded with
//! events; its clusters' instances are loopback ports nothing listens on, so no MariaDB is
//! needed. Clients hammer `GET /api/v1/clusters`, then `GET /api/v1/events?limit=N`; the
//! bench reports latency p50/p99/max per route and the daemon's RSS and threads (idle, peak
//! while loaded, after).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use store::{EventLevel, NewEvent, SqliteStore, Store};

/// What to run.
#[derive(Clone, Debug)]
pub struct ApiReadsBench {
    /// Concurrent clients (one HTTP connection each).
    pub clients: usize,
    /// Requests of `GET /api/v1/clusters`, over all clients.
    pub cluster_requests: usize,
    /// Requests of `GET /api/v1/events?limit=…`, over all clients.
    pub event_requests: usize,
    /// The `limit` of the events requests.
    pub event_limit: usize,
    /// Events seeded in the store before the daemon starts.
    pub events: usize,
    /// Clusters in the config (3 unreachable instances each).
    pub clusters: usize,
    /// The daemon's API port; instances use the ports above it.
    pub port: u16,
}

/// The figures of one route.
#[derive(Clone, Debug, Serialize)]
pub struct RouteFigures {
    /// The path requested.
    pub path: String,
    /// Requests answered 200.
    pub ok: usize,
    /// Requests that failed or answered another status.
    pub errors: usize,
    /// Bytes of one answer (the last).
    pub answer_bytes: usize,
    /// Requests per second over the phase.
    pub per_second: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The slowest, ms.
    pub max_ms: f64,
    /// p50 and p99 without each client's first request (which also connects, while the
    /// other clients are being built on the same cores), ms.
    pub warm_p50_ms: f64,
    /// See `warm_p50_ms`.
    pub warm_p99_ms: f64,
    /// CPU seconds (user and system) the daemon used during the phase.
    pub daemon_cpu_s: f64,
    /// CPU seconds the bench itself (its clients) used during the phase, on the same
    /// machine: when the two together are the machine's cores times the phase's length,
    /// the machine is saturated and the client's share is the daemon's loss.
    pub bench_cpu_s: f64,
    /// The phase's length, s.
    pub elapsed_s: f64,
    /// The daemon's RSS before the phase, MiB.
    pub rss_before_mib: f64,
    /// The daemon's highest RSS during the phase, MiB.
    pub rss_peak_mib: f64,
    /// The daemon's RSS 2 s after the phase, MiB.
    pub rss_after_mib: f64,
    /// The daemon's most threads during the phase.
    pub threads_peak: u64,
}

/// The bench's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ApiReadsFigures {
    /// Concurrent clients.
    pub clients: usize,
    /// Events in the store.
    pub events: usize,
    /// The daemon's RSS once up and idle, MiB.
    pub rss_idle_mib: f64,
    /// The daemon's threads once up and idle.
    pub threads_idle: u64,
    /// Per route, in the order run.
    pub routes: Vec<RouteFigures>,
}

/// Run the bench in a temporary directory, removed afterwards.
pub async fn run(b: ApiReadsBench) -> anyhow::Result<ApiReadsFigures> {
    if b.clients == 0 || b.clients > 10_000 || b.clusters == 0 || b.clusters > 100 {
        bail!("--clients must be 1 to 10000 and --clusters 1 to 100");
    }
    let root = super::temp_root();
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let result = run_in(&b, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run_in(b: &ApiReadsBench, root: &Path) -> anyhow::Result<ApiReadsFigures> {
    let data = root.join("data");
    seed(&data, b.events).await?;
    let config = write_config(root, &data, b)?;
    let log = root.join("serve.log");
    let mut daemon = Daemon::start(&config, &log)?;
    let base = format!("http://127.0.0.1:{}", b.port);
    let result = async {
        wait_up(&base, &mut daemon).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = daemon.pid;
        let (rss_idle_mib, threads_idle) = (rss_mib(pid), threads(pid));
        let mut routes = Vec::new();
        for (path, n) in [
            ("/api/v1/clusters".to_string(), b.cluster_requests),
            (
                format!("/api/v1/events?limit={}", b.event_limit),
                b.event_requests,
            ),
        ] {
            routes.push(phase(&base, &path, b.clients, n, pid).await?);
        }
        Ok(ApiReadsFigures {
            clients: b.clients,
            events: b.events,
            rss_idle_mib,
            threads_idle,
            routes,
        })
    }
    .await;
    daemon.stop();
    result.map_err(|e: anyhow::Error| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = text
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        e.context(format!("the daemon's log ends:\n{tail}"))
    })
}

/// A store with `events` events of about 200 bytes of message and data each.
async fn seed(data: &Path, events: usize) -> anyhow::Result<()> {
    let s = SqliteStore::open(data).context("open the bench store")?;
    for i in 0..events {
        s.append_event(&NewEvent {
            at_ms: 1_700_000_000_000 + i as u64,
            cluster: Some(format!("bench{}", i % 3)),
            instance: Some(format!("127.0.0.1:{}", 40000 + i % 9).parse()?),
            kind: "operator_note".into(),
            level: EventLevel::Info,
            message: format!("bench event {i}: the replica's IO thread reconnected to its source"),
            data: serde_json::json!({ "seq": i, "by": "bench", "note": "x".repeat(64) }),
        })
        .await?;
    }
    s.flush().await?;
    Ok(())
}

const PASSWORD_ENV: &str = "DBFLEET_BENCH_API_READS_PASSWORD";

fn write_config(root: &Path, data: &Path, b: &ApiReadsBench) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "[store]\ndata_dir = {data:?}\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [credentials.admin]\nuser = \"bench\"\npassword_env = \"{PASSWORD_ENV}\"\n",
        data = data.display().to_string(),
        port = b.port
    );
    for c in 0..b.clusters {
        text.push_str(&format!(
            "\n[[cluster]]\nname = \"bench{c}\"\ncredentials = \"admin\"\n"
        ));
        for i in 0..3 {
            let port = b.port as usize + 1 + c * 3 + i;
            text.push_str(&format!(
                "[[cluster.instance]]\naddr = \"127.0.0.1:{port}\"\n"
            ));
        }
    }
    let path = root.join("dbfleet.toml");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// `dbfleet serve` in a child process, stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Daemon {
    child: std::process::Child,
    pid: u32,
}

impl Daemon {
    pub(crate) fn start(config: &Path, log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the dbfleet binary")?;
        let out = std::fs::File::create(log)?;
        let child = std::process::Command::new(exe)
            .args(["serve", "--config"])
            .arg(config)
            .env(PASSWORD_ENV, "unused")
            .env("DBFLEET_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start dbfleet serve")?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    pub(crate) fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) async fn wait_up(base: &str, daemon: &mut Daemon) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!("dbfleet serve exited at start-up ({status})");
        }
        if Instant::now() > deadline {
            bail!("dbfleet serve did not answer /healthz within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` requests of `path` by `clients` concurrent clients, with the daemon's RSS and
/// threads sampled every 20 ms.
async fn phase(
    base: &str,
    path: &str,
    clients: usize,
    n: usize,
    pid: u32,
) -> anyhow::Result<RouteFigures> {
    let rss_before_mib = rss_mib(pid);
    let (daemon_cpu0, bench_cpu0) = (cpu_s(&pid.to_string()), cpu_s("self"));
    let url = format!("{base}{path}");
    let tickets = Arc::new(AtomicUsize::new(n));
    let done = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut rss, mut thr) = (0f64, 0u64);
            loop {
                rss = rss.max(rss_mib(pid));
                thr = thr.max(threads(pid));
                tokio::select! {
                    _ = done.cancelled() => return (rss, thr),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (url, tickets) = (url.clone(), tickets.clone());
        tasks.push(tokio::spawn(async move {
            // One connection per client, as separate programs would have.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("an HTTP client");
            let (mut lat, mut errors, mut bytes) = (Vec::new(), 0usize, 0usize);
            let mut first = true;
            let mut warm = Vec::new();
            while tickets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(b) => {
                            bytes = b.len();
                            let ms = t.elapsed().as_secs_f64() * 1000.0;
                            lat.push(ms);
                            if !std::mem::take(&mut first) {
                                warm.push(ms);
                            }
                        }
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (lat, warm, errors, bytes)
        }));
    }
    let (mut lat, mut warm, mut errors, mut answer_bytes) =
        (Vec::with_capacity(n), Vec::new(), 0, 0);
    for t in tasks {
        let (l, w, e, b) = t.await.context("a client task failed")?;
        lat.extend(l);
        warm.extend(w);
        errors += e;
        answer_bytes = answer_bytes.max(b);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let daemon_cpu_s = cpu_s(&pid.to_string()) - daemon_cpu0;
    let bench_cpu_s = cpu_s("self") - bench_cpu0;
    done.cancel();
    let (rss_peak_mib, threads_peak) = sampler.await.context("the sampler failed")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lat.sort_by(f64::total_cmp);
    warm.sort_by(f64::total_cmp);
    let quantile = |lat: &[f64], q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let at = |q: f64| quantile(&lat, q);
    Ok(RouteFigures {
        path: path.to_string(),
        ok: lat.len(),
        errors,
        answer_bytes,
        per_second: lat.len() as f64 / elapsed.max(1e-9),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        warm_p50_ms: quantile(&warm, 0.5),
        warm_p99_ms: quantile(&warm, 0.99),
        daemon_cpu_s,
        bench_cpu_s,
        elapsed_s: elapsed,
        rss_before_mib,
        rss_peak_mib,
        rss_after_mib: rss_mib(pid),
        threads_peak,
    })
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user and system) of the process `/proc/{which}` names (`self` or a pid).
fn cpu_s(which: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{which}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces), from the last `)`:
    // utime and stime are the 14th and 15th fields of the line, in clock ticks.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // In USER_HZ ticks, 100 a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:").map_or(0.0, |kb| kb as f64 / 1024.0)
}

fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads:").unwrap_or(0)
}
