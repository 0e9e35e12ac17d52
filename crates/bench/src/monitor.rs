//! The monitor at scale (`dbfleet bench monitor`): the real watch loop against a simulated fleet of N servers, and
//! what it costs: probes per second against the target, the control plane's CPU and RSS,
//! probe latency, and missed intervals; optionally, the CPU cost per probed instance against
//! Prometheus `mysqld_exporter` on real sandbox servers.
//!
//! # How it measures
//!
//! - The simulated fleet runs in child processes (`dbfleet bench sim-serve`, hidden; at most
//!   4,000 servers each, so that each stays within an open-file limit of 20,000 with a
//!   listener, a probe connection and the primaries' liveness connections), so this
//!   process is the control plane alone: the watch loop, the SQLite store (in a temporary
//!   directory, as the daemon keeps it), and the bench's own bookkeeping (a consumer of the
//!   published rounds that keeps probe latencies, as the engine would consume them). Its CPU
//!   time comes from `getrusage(RUSAGE_SELF)` over the measured window (after a warm-up), its
//!   peak RSS from `VmHWM` in `/proc/self/status` (the whole run, start-up included). The
//!   child's CPU comes from `/proc/<pid>/stat` and is reported apart.
//! - Probes per second: the watch loop's own probe counter over the window.
//! - Probe latency: `duration_us` of every new observation in the published rounds (so a
//!   probe that completed twice between two rounds is counted once).
//! - Missed intervals are counted by the servers: each simulated server notes when it
//!   answers an observe batch, and a gap over 1.5 intervals counts `round(gap / interval) - 1`
//!   missed intervals (see `sim::ProbeReport`). Hung servers are left out: `--hang-fraction`
//!   is there to show that the healthy ones are still probed every interval.
//! - `--compare-exporter K`: after the simulated run, K real MariaDB sandbox servers, one
//!   window where only dbfleet's watch loop probes them (CPU of this process per probe), then
//!   one window where only the K `mysqld_exporter`s are scraped, once per interval each (their
//!   CPU from `/proc/<pid>/stat` per scrape). The windows are apart so neither side's CPU
//!   includes the other's; the scraper's own CPU is counted for neither.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use model::{ClusterSpec, InstanceAddr, InstanceSpec, Observation, PromotionRule};
use serde::Serialize;
use store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// What `bench monitor` runs.
#[derive(Clone, Debug)]
pub struct MonitorBench {
    /// Simulated servers; rounded up to whole clusters.
    pub instances: usize,
    /// Replicas per cluster.
    pub replicas: usize,
    /// The probe interval.
    pub interval: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// The share of servers that hang.
    pub hang_fraction: f64,
    /// The watch loop's probe concurrency.
    pub concurrency: usize,
    /// The first simulated server's address.
    pub first_ip: Ipv4Addr,
    /// The port every simulated server listens on.
    pub port: u16,
    /// Real sandbox servers to compare with mysqld_exporter (0: no comparison).
    pub compare_exporter: usize,
    /// The first sandbox server's port for the comparison.
    pub exporter_base_port: u16,
    /// Write and read heartbeats, as the daemon does by default.
    pub heartbeat: bool,
    /// Print nothing but the JSON at the end.
    pub json: bool,
}

/// What `bench monitor` prints.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorFigures {
    pub instances: usize,
    pub clusters: usize,
    pub replicas_per_cluster: usize,
    pub interval_ms: u64,
    pub warmup_s: f64,
    pub window_s: f64,
    pub concurrency: usize,
    /// Whether heartbeats were written and read.
    pub heartbeat: bool,
    /// Heartbeat rows written on the primaries per second.
    pub heartbeat_writes_per_s: f64,
    /// Servers hung on purpose.
    pub hung: usize,
    /// N / interval.
    pub target_probes_per_s: f64,
    /// The watch loop's probes (all servers, hung ones' timeouts included) per second.
    pub probes_per_s: f64,
    /// Observe batches the healthy servers answered per second.
    pub healthy_observes_per_s: f64,
    /// Intervals a healthy server went without an observe, summed over the window.
    pub missed_intervals: u64,
    /// Healthy servers with at least one missed interval.
    pub servers_with_misses: u64,
    /// The longest gap between two observes of a healthy server.
    pub max_gap_ms: u64,
    pub probe_latency_p50_ms: f64,
    pub probe_latency_p99_ms: f64,
    pub probe_latency_max_ms: f64,
    /// CPU cores this process (the control plane) used over the window.
    pub control_plane_cpu_cores: f64,
    /// Its CPU time per probe, µs.
    pub control_plane_cpu_us_per_probe: f64,
    /// Peak RSS of this process, MiB (`VmHWM`: the whole run).
    pub control_plane_rss_peak_mib: f64,
    /// RSS of this process at the end of the window, MiB.
    pub control_plane_rss_end_mib: f64,
    /// The metrics history held at the end of the window, MiB (rings grow as samples
    /// arrive: a 30 s window holds 30 samples an instance).
    pub history_mib: f64,
    /// The history once every ring is full (`[monitor] history` / interval samples an
    /// instance), MiB.
    pub history_full_mib: f64,
    /// `control_plane_rss_end_mib` plus what the rings still have to grow: the RSS to expect
    /// after an hour (the default history), MiB.
    pub control_plane_rss_projected_mib: f64,
    /// CPU cores the simulated fleet (the child process) used over the window.
    pub sim_cpu_cores: f64,
    /// Analysis rounds completed over the window, and how many one per interval would be.
    pub rounds: u64,
    pub rounds_expected: u64,
    /// Probe failures over the window (hung servers' timeouts are expected).
    pub probe_errors: u64,
    /// Statements the simulation did not know; anything but 0 means the probe sent
    /// something new that `sim` must learn.
    pub sim_unknown_statements: u64,
    /// Child processes the simulated fleet ran in (at most 4,000 servers each).
    pub sim_processes: usize,
    /// Connections the simulated servers failed to accept (out of file descriptors); anything
    /// but 0 means the harness, not the watch loop, limited the run.
    pub sim_accept_errors: u64,
    /// The watch loop's own counters at the end.
    pub monitor_stats: serde_json::Value,
    /// The comparison with mysqld_exporter, when asked.
    pub exporter: Option<ExporterFigures>,
    /// How each figure is measured.
    pub method: &'static str,
}

/// dbfleet against mysqld_exporter on the same real servers.
#[derive(Clone, Debug, Serialize)]
pub struct ExporterFigures {
    pub servers: usize,
    pub exporter_version: String,
    pub window_s: f64,
    /// dbfleet: probes in its window, and this process's CPU per probe, µs.
    pub dbfleet_probes: u64,
    pub dbfleet_cpu_us_per_probe: f64,
    /// mysqld_exporter: successful scrapes in its window, and the exporters' CPU per scrape.
    pub exporter_scrapes: u64,
    pub exporter_cpu_us_per_scrape: f64,
    /// Mean size of one scrape's body, bytes.
    pub exporter_scrape_bytes: u64,
    /// Sum of the exporters' RSS at the end, MiB.
    pub exporter_rss_mib: f64,
    /// exporter µs per scrape / dbfleet µs per probe.
    pub ratio: f64,
}

const METHOD: &str = "control plane = this process (watch loop, SQLite store, round consumer); \
    CPU by getrusage(RUSAGE_SELF) over the window; RSS peak = VmHWM; the simulated fleet runs \
    in a child process, its CPU from /proc/<pid>/stat; missed intervals counted by the \
    simulated servers (gap > 1.5 intervals between observes); exporter comparison in \
    separate windows, exporters' CPU from /proc/<pid>/stat";

/// Raise the open-file limit (soft and hard; root may raise the hard one) to at least
/// `want`, within the kernel's `nr_open`.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("read RLIMIT_NOFILE")?;
    if soft >= want {
        return Ok(soft);
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let new_hard = hard.max(want.min(nr_open));
    let new_soft = want.min(new_hard);
    if setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard).is_err() {
        // Not root: as far as the hard limit goes.
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raise RLIMIT_NOFILE")?;
        return Ok(hard);
    }
    Ok(new_soft)
}

/// This process's CPU time (user + system).
fn self_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Another process's CPU time (user + system) from `/proc/<pid>/stat`, in USER_HZ (100/s)
/// ticks.
fn pid_cpu(pid: u32) -> Duration {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which may hold spaces, in parentheses.
    let rest = text.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A `Vm*` line of `/proc/<pid>/status`, in MiB.
fn vm_mib(pid: &str, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The simulated fleet in its child process, driven over its stdin/stdout.
struct SimChild {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl SimChild {
    async fn start(opts: &sim::FleetOptions) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the dbfleet binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args([
                "bench",
                "sim-serve",
                "--clusters",
                &opts.clusters.to_string(),
                "--replicas",
                &opts.replicas.to_string(),
                "--first-ip",
                &opts.first_ip.to_string(),
                "--port",
                &opts.port.to_string(),
                "--seed",
                &opts.seed.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start the simulated fleet")?;
        let stdin = child.stdin.take().context("sim stdin")?;
        let stdout = child.stdout.take().context("sim stdout")?;
        let mut sim = Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        let first = tokio::time::timeout(Duration::from_secs(120), sim.lines.next_line())
            .await
            .context("the simulated fleet did not start within 120s")??
            .context("the simulated fleet exited before it was ready")?;
        anyhow::ensure!(
            first.starts_with("ready"),
            "the simulated fleet said {first:?}"
        );
        Ok(sim)
    }

    async fn request(&mut self, line: &str) -> anyhow::Result<String> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        let reply = self
            .lines
            .next_line()
            .await?
            .context("the simulated fleet exited")?;
        if let Some(e) = reply.strip_prefix("error: ") {
            anyhow::bail!("sim: {line}: {e}");
        }
        Ok(reply)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.request("quit").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Servers per simulated-fleet process: each holds a listener and at least one connection
/// per server (two for primaries, with the liveness connection) within its open-file limit,
/// which a container may cap (20,000 on the benchmark VM, where 10,000 servers in one
/// process could not accept the liveness connections).
const SERVERS_PER_SIM: usize = 4_000;

/// The simulated fleet, split over child processes by whole clusters.
struct SimFleet {
    children: Vec<SimChild>,
    /// Clusters per child (the last may have fewer).
    clusters_per: usize,
}

impl SimFleet {
    async fn start(opts: &sim::FleetOptions, layout: &[sim::SimCluster]) -> anyhow::Result<Self> {
        let per = opts.replicas + 1;
        let servers = opts.clusters * per;
        let k = servers.div_ceil(SERVERS_PER_SIM).max(1);
        let clusters_per = opts.clusters.div_ceil(k);
        let mut children = Vec::new();
        for (i, chunk) in layout.chunks(clusters_per).enumerate() {
            let first_ip = chunk[0]
                .primary
                .host
                .parse()
                .context("a simulated server's address")?;
            children.push(
                SimChild::start(&sim::FleetOptions {
                    clusters: chunk.len(),
                    first_ip,
                    seed: opts.seed + i as u64,
                    ..opts.clone()
                })
                .await?,
            );
        }
        Ok(Self {
            children,
            clusters_per,
        })
    }

    /// Hang the server at `index` in the layout's order.
    async fn hang(&mut self, index: usize, per: usize, addr: &InstanceAddr) -> anyhow::Result<()> {
        let child = (index / per) / self.clusters_per;
        self.children[child]
            .request(&format!("hang {addr}"))
            .await
            .map(drop)
    }

    async fn track(&mut self, interval: Duration) -> anyhow::Result<()> {
        for c in &mut self.children {
            c.request(&format!("track {}", interval.as_millis()))
                .await?;
        }
        Ok(())
    }

    fn cpu(&self) -> Duration {
        self.children.iter().map(|c| pid_cpu(c.pid())).sum()
    }

    async fn report(&mut self) -> anyhow::Result<sim::ProbeReport> {
        let mut all: Option<sim::ProbeReport> = None;
        for c in &mut self.children {
            let r: sim::ProbeReport = serde_json::from_str(&c.request("report").await?)?;
            all = Some(match all {
                None => r,
                Some(a) => sim::ProbeReport {
                    interval_ms: a.interval_ms,
                    healthy: a.healthy + r.healthy,
                    observes: a.observes + r.observes,
                    missed_intervals: a.missed_intervals + r.missed_intervals,
                    servers_with_misses: a.servers_with_misses + r.servers_with_misses,
                    max_gap_ms: a.max_gap_ms.max(r.max_gap_ms),
                    faulty: a.faulty + r.faulty,
                },
            });
        }
        all.context("no simulated fleet")
    }

    async fn stats(&mut self) -> anyhow::Result<sim::SimStats> {
        let mut all = sim::SimStats::default();
        for c in &mut self.children {
            let s: sim::SimStats = serde_json::from_str(&c.request("stats").await?)?;
            all.servers += s.servers;
            all.connections += s.connections;
            all.accept_errors += s.accept_errors;
            all.queries += s.queries;
            all.heartbeats += s.heartbeats;
            all.unknown_statements += s.unknown_statements;
            all.unknown_recent.extend(s.unknown_recent);
        }
        Ok(all)
    }

    async fn stop(self) {
        for c in self.children {
            c.stop().await;
        }
    }
}

/// Collects what the published rounds say about probes: latency of every new observation.
#[derive(Default)]
struct Latencies {
    last: std::collections::HashMap<InstanceAddr, u64>,
    us: Vec<u32>,
    recording: bool,
}

impl Latencies {
    fn add(&mut self, o: &Observation) {
        let prev = self.last.insert(o.addr.clone(), o.at_unix_ms);
        if prev == Some(o.at_unix_ms) || !self.recording || o.state().is_none() {
            return;
        }
        self.us.push(o.duration_us.min(u64::from(u32::MAX)) as u32);
    }

    fn percentiles(&mut self) -> (f64, f64, f64) {
        self.us.sort_unstable();
        let at = |q: f64| {
            self.us
                .get(((self.us.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |&v| v as f64 / 1000.0)
        };
        (at(0.5), at(0.99), at(1.0))
    }
}

fn specs(clusters: &[sim::SimCluster], replicas: usize) -> Vec<monitor::ClusterWatch> {
    clusters
        .iter()
        .map(|c| {
            let spec = ClusterSpec {
                name: c.name.clone(),
                instances: c
                    .members()
                    .map(|a| InstanceSpec {
                        addr: a.clone(),
                        promotion: PromotionRule::Neutral,
                        site: None,
                    })
                    .collect(),
                expected_replicas: replicas,
                semi_sync: false,
                max_lag: Duration::from_secs(10),
                stall_confirm: model::DEFAULT_STALL_CONFIRM,
                storage: Default::default(),
            };
            monitor::ClusterWatch::new(spec, probe::Credentials::new("dbfleet", "sim"))
        })
        .collect()
}

fn watch_options(b: &MonitorBench) -> monitor::WatchOptions {
    monitor::WatchOptions {
        interval: b.interval,
        discovery_interval: Duration::from_secs(10).max(b.interval),
        probe: probe::ProbeOptions {
            connect_timeout: Duration::from_millis(500),
            query_timeout: Duration::from_millis(500),
        },
        concurrency: b.concurrency,
        fast_path: monitor::FastPathOptions::default(),
        persist_every: monitor::watch::PERSIST_EVERY,
    }
}

/// The servers to hang: an even spread of `fraction` of them.
fn hang_set(all: &[InstanceAddr], fraction: f64) -> Vec<InstanceAddr> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| ((*i + 1) as f64 * fraction).floor() > (*i as f64 * fraction).floor())
        .map(|(_, a)| a.clone())
        .collect()
}

/// Run the benchmark.
pub async fn run(b: MonitorBench) -> Result<MonitorFigures, anyhow::Error> {
    let per = b.replicas + 1;
    let clusters_n = b.instances.div_ceil(per).max(1);
    let instances = clusters_n * per;
    // Per server: its probe connection (two descriptors when both ends are in one process:
    // here one), the sentinel per cluster, the store, slack.
    raise_nofile((instances as u64) * 3 + 4096)?;
    let opts = sim::FleetOptions {
        clusters: clusters_n,
        replicas: b.replicas,
        first_ip: b.first_ip,
        port: b.port,
        semi_sync: false,
        seed: 1,
    };
    let layout = sim::layout(&opts)?;
    let all: Vec<InstanceAddr> = layout.iter().flat_map(|c| c.members().cloned()).collect();
    let say = |s: String| {
        if !b.json {
            eprintln!("{s}");
        }
    };
    say(format!(
        "bench monitor: starting {instances} simulated servers ({clusters_n} clusters of {per})"
    ));
    let mut sim = SimFleet::start(&opts, &layout).await?;
    let hung = hang_set(&all, b.hang_fraction.clamp(0.0, 1.0));
    for (i, a) in all.iter().enumerate() {
        if hung.contains(a) {
            sim.hang(i, per, a).await?;
        }
    }

    let dir = std::env::temp_dir().join(format!("dbfleet-benchmon-store-{}", std::process::id()));
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(&dir)?);
    let stats = Arc::new(monitor::Stats::default());
    stats.started_ms.store(monitor::now_ms(), Ordering::Relaxed);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<monitor::ClusterRound>(clusters_n * 4 + 1024);
    let lat = Arc::new(std::sync::Mutex::new(Latencies::default()));
    let consumer = {
        let lat = lat.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                let mut l = lat
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for o in &r.observations {
                    l.add(o);
                }
            }
        })
    };
    let started = Instant::now();
    let watch = tokio::spawn(monitor::run_with(
        watch_options(&b),
        monitor::HeartbeatOptions {
            enabled: b.heartbeat,
            ..Default::default()
        },
        specs(&layout, b.replicas),
        store.clone(),
        stats.clone(),
        Some(tx),
        cancel.clone(),
    ));

    let warmup = (b.interval * 3).max(Duration::from_secs(3));
    say(format!(
        "bench monitor: warming up {:.0}s, then measuring {:.0}s at {} ms",
        warmup.as_secs_f64(),
        b.duration.as_secs_f64(),
        b.interval.as_millis()
    ));
    tokio::time::sleep(warmup.saturating_sub(started.elapsed())).await;
    sim.track(b.interval).await?;
    lat.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .recording = true;
    let s0 = stats.snapshot();
    let (cpu0, sim_cpu0, t0) = (self_cpu(), sim.cpu(), Instant::now());
    tokio::time::sleep(b.duration).await;
    let window = t0.elapsed();
    let (cpu1, sim_cpu1) = (self_cpu(), sim.cpu());
    let s1 = stats.snapshot();
    let report = sim.report().await?;
    let rss_end = vm_mib("self", "VmRSS:");
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let history_mib = mib(stats.fleet.history_bytes());
    let history_full_mib = mib(stats.fleet.history_samples()
        * metrics::HISTORY_SAMPLE_BYTES
        * stats.fleet.instance_count());
    let sim_stats = sim.stats().await?;

    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(30), watch).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.context("the watch loop failed")),
        Ok(Err(e)) => return Err(anyhow::anyhow!("the watch loop panicked: {e}")),
        Err(_) => return Err(anyhow::anyhow!("the watch loop did not stop within 30s")),
    }
    let _ = consumer.await;
    let sim_processes = sim.children.len();
    sim.stop().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let probes = s1.probes - s0.probes;
    let secs = window.as_secs_f64();
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let (p50, p99, max) = lat
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .percentiles();
    let exporter = if b.compare_exporter > 0 {
        say(format!(
            "bench monitor: comparing with mysqld_exporter on {} sandbox servers",
            b.compare_exporter
        ));
        let root = std::env::temp_dir().join(format!("dbfleet-benchmon-{}", std::process::id()));
        let r = compare_exporter(&root, &b).await;
        let _ = sandbox::Sandbox::down(&root, EXP_SANDBOX);
        let _ = std::fs::remove_dir_all(&root);
        Some(r?)
    } else {
        None
    };
    Ok(MonitorFigures {
        instances,
        clusters: clusters_n,
        replicas_per_cluster: b.replicas,
        interval_ms: b.interval.as_millis() as u64,
        warmup_s: warmup.as_secs_f64(),
        window_s: secs,
        concurrency: b.concurrency,
        heartbeat: b.heartbeat,
        heartbeat_writes_per_s: (s1.heartbeat_writes - s0.heartbeat_writes) as f64 / secs,
        hung: hung.len(),
        target_probes_per_s: instances as f64 / b.interval.as_secs_f64(),
        probes_per_s: probes as f64 / secs,
        healthy_observes_per_s: report.observes as f64 / secs,
        missed_intervals: report.missed_intervals,
        servers_with_misses: report.servers_with_misses,
        max_gap_ms: report.max_gap_ms,
        probe_latency_p50_ms: p50,
        probe_latency_p99_ms: p99,
        probe_latency_max_ms: max,
        control_plane_cpu_cores: cpu / secs,
        control_plane_cpu_us_per_probe: if probes > 0 {
            cpu * 1e6 / probes as f64
        } else {
            0.0
        },
        control_plane_rss_peak_mib: vm_mib("self", "VmHWM:"),
        control_plane_rss_end_mib: rss_end,
        history_mib,
        history_full_mib,
        control_plane_rss_projected_mib: rss_end + (history_full_mib - history_mib).max(0.0),
        sim_cpu_cores: (sim_cpu1.saturating_sub(sim_cpu0)).as_secs_f64() / secs,
        rounds: s1.rounds - s0.rounds,
        rounds_expected: (secs / b.interval.as_secs_f64()).floor() as u64,
        probe_errors: s1.probe_errors - s0.probe_errors,
        sim_unknown_statements: sim_stats.unknown_statements,
        sim_processes,
        sim_accept_errors: sim_stats.accept_errors,
        monitor_stats: serde_json::to_value(&s1)?,
        exporter,
        method: METHOD,
    })
}

const EXP_SANDBOX: &str = "benchexp";

/// Stops the exporters however the comparison ends.
struct Exporters(Vec<std::process::Child>);

impl Drop for Exporters {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn compare_exporter(root: &Path, b: &MonitorBench) -> Result<ExporterFigures, anyhow::Error> {
    let k = b.compare_exporter;
    let version = std::process::Command::new("prometheus-mysqld-exporter")
        .arg("--version")
        .output()
        .context("run prometheus-mysqld-exporter (Debian package prometheus-mysqld-exporter; scripts/install-deps.sh installs it)")?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&version.stderr).lines())
        .next()
        .unwrap_or("")
        .to_string();
    let (sb, _) = sandbox::Sandbox::up(&sandbox::UpOptions {
        name: EXP_SANDBOX.into(),
        replicas: k - 1,
        semi_sync: false,
        base_port: b.exporter_base_port,
        root: root.to_path_buf(),
        tuning: Default::default(),
    })
    .await?;
    let admin = sb.credentials()?.admin.credentials();
    let members: Vec<InstanceAddr> = sb.manifest().members.iter().map(|m| m.addr()).collect();

    // Window A: dbfleet's watch loop alone on the K servers.
    let dir = root.join("store");
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(&dir)?);
    let stats = Arc::new(monitor::Stats::default());
    let cancel = CancellationToken::new();
    let spec = ClusterSpec {
        name: EXP_SANDBOX.into(),
        instances: members
            .iter()
            .map(|a| InstanceSpec {
                addr: a.clone(),
                promotion: PromotionRule::Neutral,
                site: None,
            })
            .collect(),
        expected_replicas: k - 1,
        semi_sync: false,
        max_lag: Duration::from_secs(10),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    };
    let watch = tokio::spawn(monitor::run_with(
        watch_options(b),
        monitor::HeartbeatOptions {
            enabled: b.heartbeat,
            ..Default::default()
        },
        vec![monitor::ClusterWatch::new(spec, admin.clone())],
        store,
        stats.clone(),
        None,
        cancel.clone(),
    ));
    tokio::time::sleep((b.interval * 3).max(Duration::from_secs(3))).await;
    let (p0, c0, t0) = (stats.snapshot().probes, self_cpu(), Instant::now());
    tokio::time::sleep(b.duration).await;
    let (p1, c1, window) = (stats.snapshot().probes, self_cpu(), t0.elapsed());
    cancel.cancel();
    let _ = watch.await;
    let dbfleet_probes = p1 - p0;
    let dbfleet_cpu_us = (c1 - c0).as_secs_f64() * 1e6;

    // Window B: the exporters alone, each scraped once per interval.
    let mut exporters = Exporters(Vec::new());
    let mut urls = Vec::new();
    for (i, a) in members.iter().enumerate() {
        let cnf: PathBuf = root.join(format!("exporter-{i}.cnf"));
        std::fs::write(
            &cnf,
            format!(
                "[client]\nuser={}\npassword={}\nhost={}\nport={}\n",
                admin.user,
                admin.password(),
                a.host,
                a.port
            ),
        )?;
        let listen = format!("127.0.0.1:{}", b.exporter_base_port + 200 + i as u16);
        let child = std::process::Command::new("prometheus-mysqld-exporter")
            .arg(format!("--config.my-cnf={}", cnf.display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start prometheus-mysqld-exporter")?;
        exporters.0.push(child);
        urls.push(format!("http://{listen}/metrics"));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let scrape_all = |http: reqwest::Client, urls: Vec<String>| async move {
        let mut ok = 0u64;
        let mut bytes = 0u64;
        let mut set = tokio::task::JoinSet::new();
        for u in urls {
            let http = http.clone();
            set.spawn(async move {
                match http.get(&u).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok().map(|b| b.len()),
                    _ => None,
                }
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(n)) = r {
                ok += 1;
                bytes += n as u64;
            }
        }
        (ok, bytes)
    };
    // Wait until every exporter answers, then one warm-up scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape_all(http.clone(), urls.clone()).await.0 < k as u64 {
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!("the exporters did not answer within 30s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids: Vec<u32> = exporters.0.iter().map(|c| c.id()).collect();
    let cpu = || pids.iter().map(|p| pid_cpu(*p)).sum::<Duration>();
    let (e0, t0) = (cpu(), Instant::now());
    let mut tick = tokio::time::interval(b.interval);
    let (mut scrapes, mut bytes) = (0u64, 0u64);
    while t0.elapsed() < b.duration {
        tick.tick().await;
        let (ok, n) = scrape_all(http.clone(), urls.clone()).await;
        scrapes += ok;
        bytes += n;
    }
    let exporter_cpu_us = (cpu() - e0).as_secs_f64() * 1e6;
    let rss: f64 = pids.iter().map(|p| vm_mib(&p.to_string(), "VmRSS:")).sum();
    drop(exporters);

    let dbfleet_per = dbfleet_cpu_us / dbfleet_probes.max(1) as f64;
    let exporter_per = exporter_cpu_us / scrapes.max(1) as f64;
    Ok(ExporterFigures {
        servers: k,
        exporter_version: version,
        window_s: window.as_secs_f64(),
        dbfleet_probes,
        dbfleet_cpu_us_per_probe: dbfleet_per,
        exporter_scrapes: scrapes,
        exporter_cpu_us_per_scrape: exporter_per,
        exporter_scrape_bytes: bytes / scrapes.max(1),
        exporter_rss_mib: rss,
        ratio: if dbfleet_per > 0.0 {
            exporter_per / dbfleet_per
        } else {
            0.0
        },
    })
}

/// `dbfleet bench sim-serve`: run a simulated fleet until stdin closes (see
/// `sim::serve_control`). Prints `ready N` once every server listens.
pub async fn sim_serve(opts: sim::FleetOptions) -> Result<(), anyhow::Error> {
    let servers = opts.clusters * (opts.replicas + 1);
    raise_nofile(servers as u64 * 3 + 4096)?;
    let fleet = sim::Fleet::start(opts).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {servers}\n").as_bytes())
        .await?;
    out.flush().await?;
    let input = BufReader::new(tokio::io::stdin());
    let result = sim::serve_control(&fleet, input, out).await;
    fleet.shutdown().await;
    result
}
