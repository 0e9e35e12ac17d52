//! `dbfleet bench …`: benchmarks that print figures. Speed claims in docs/BENCHMARKS.md
//! come from here, never from timed assertions in tests.

use std::time::{Duration, Instant};

use clap::Subcommand;
use sandbox::{Sandbox, UpOptions};
use serde::Serialize;

use crate::{bench_monitor, print_json, CliError};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Measure the real watch loop against a simulated fleet of N MariaDB servers (the `sim`
    /// crate, in a child process): probes per second against N / interval, the control
    /// plane's CPU and RSS, probe latency p50/p99, and intervals a healthy server went
    /// unprobed. Optionally compare the CPU per probed instance with mysqld_exporter.
    Monitor {
        /// Simulated servers (rounded up to whole clusters).
        #[arg(long, default_value_t = 1000)]
        instances: usize,
        /// Replicas per cluster, beside the primary.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// The probe interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// How long to measure, after a warm-up of three intervals (at least 3s).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The share of servers that hang (accept, then never answer), 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        hang_fraction: f64,
        /// How many probes may run at once (the daemon's `probe.concurrency`).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// The first simulated server's address, in 127.0.0.0/8.
        #[arg(long, default_value = "127.1.0.1")]
        first_ip: std::net::Ipv4Addr,
        /// The port every simulated server listens on.
        #[arg(long, default_value_t = 3306)]
        port: u16,
        /// Also start K real sandbox MariaDB servers and one mysqld_exporter each (Debian
        /// `prometheus-mysqld-exporter`), and compare CPU per probed instance.
        #[arg(long, default_value_t = 0)]
        compare_exporter: usize,
        /// The first sandbox server's port for --compare-exporter; exporters listen 200 above.
        #[arg(long, default_value_t = 23436)]
        exporter_base_port: u16,
        /// Run without heartbeats: no heartbeat row written on the primaries, none read in
        /// the probes (the daemon's `[monitor] heartbeat = false`). By default the bench
        /// runs them, as the daemon does.
        #[arg(long)]
        no_heartbeat: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a simulated fleet and take fault requests on stdin (for `bench monitor`).
    #[command(hide = true)]
    SimServe {
        #[arg(long)]
        clusters: usize,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        #[arg(long, default_value = "127.1.0.1")]
        first_ip: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 3306)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Time `sandbox up` (make, start, replicate) and `sandbox down` of a fresh sandbox.
    Sandbox {
        /// How many up/down cycles to time.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Number of replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// The primary's port.
        #[arg(long, default_value_t = 23406)]
        base_port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time dead-primary detection: start a 3-member sandbox and the real watch loop, SIGKILL
    /// the primary, and measure kill → `DeadPrimary` opened in the store. Restarts the primary
    /// between runs. With `--fault freeze`, SIGSTOP it instead, on replicas with MariaDB's
    /// default `slave_net_timeout` of 60 s (their IO threads say `Yes` all along, so only
    /// their silent streams confirm), and SIGCONT it between runs.
    Detection {
        /// How many kills (or freezes) to time.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// `kill` (SIGKILL) or `freeze` (SIGSTOP).
        #[arg(long, value_enum, default_value_t = DetectionFault::Kill)]
        fault: DetectionFault,
        /// The probe interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// The primary's port.
        #[arg(long, default_value_t = 23416)]
        base_port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time automatic failover end to end: a 3-member semi-sync sandbox, the real watch loop
    /// and engine, a write load with an acknowledged-write ledger; SIGKILL the primary, wait
    /// for the new one, count lost writes, rejoin the old primary, repeat. Then time planned
    /// switchovers under the same load.
    Failover {
        /// What happens to the primary: `kill` (SIGKILL), `pause` (SIGSTOP until the
        /// failover finished, then SIGCONT, as a frozen VM comes back) or `blackhole` (its
        /// traffic dropped by iptables until the failover finished; needs root).
        #[arg(long, value_enum, default_value = "kill")]
        fault: crate::bench_failover::Fault,
        /// How many kills to time.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// How many switchovers to time after the kills.
        #[arg(long, default_value_t = 5)]
        switchovers: usize,
        /// The probe interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// The primary's port.
        #[arg(long, default_value_t = 23426)]
        base_port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `bench detection` does to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionFault {
    /// SIGKILL: the kernel closes every socket at once.
    Kill,
    /// SIGSTOP with `slave_net_timeout=60`: nothing closes, the primary goes silent.
    Freeze,
}

#[derive(Serialize)]
struct DetectionFigures {
    fault: DetectionFault,
    runs: usize,
    interval_ms: u64,
    detection_ms: Vec<u64>,
    p50_ms: u64,
    max_ms: u64,
}

#[derive(Serialize)]
struct Figures {
    runs: usize,
    members: usize,
    up_p50_s: f64,
    up_max_s: f64,
    down_p50_s: f64,
    down_max_s: f64,
}

fn check_runs(runs: usize) -> Result<(), CliError> {
    if runs == 0 || runs > 100 {
        return Err(CliError::usage(anyhow::anyhow!("--runs must be 1 to 100")));
    }
    Ok(())
}

fn p50_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
    let max = v.last().copied().unwrap_or_default();
    (p50.as_secs_f64(), max.as_secs_f64())
}

/// Run a benchmark.
pub async fn run(cmd: BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Monitor {
            instances,
            replicas,
            interval,
            duration,
            hang_fraction,
            concurrency,
            first_ip,
            port,
            compare_exporter,
            exporter_base_port,
            no_heartbeat,
            json,
        } => {
            if instances == 0 || !(0.0..=1.0).contains(&hang_fraction) || concurrency == 0 {
                return Err(CliError::usage(anyhow::anyhow!(
                    "--instances and --concurrency must be positive, --hang-fraction 0 to 1"
                )));
            }
            if compare_exporter == 1 || compare_exporter > 20 {
                return Err(CliError::usage(anyhow::anyhow!(
                    "--compare-exporter must be 0 or 2 to 20 (a primary and its replicas)"
                )));
            }
            let f = bench_monitor::run(bench_monitor::MonitorBench {
                instances,
                replicas,
                interval,
                duration,
                hang_fraction,
                concurrency,
                first_ip,
                port,
                compare_exporter,
                exporter_base_port,
                heartbeat: !no_heartbeat,
                json,
            })
            .await?;
            if json {
                print_json(&f)?;
            } else {
                bench_monitor::print(&f);
            }
            Ok(())
        }
        BenchCommand::SimServe {
            clusters,
            replicas,
            first_ip,
            port,
            seed,
        } => {
            bench_monitor::sim_serve(sim::FleetOptions {
                clusters,
                replicas,
                first_ip,
                port,
                semi_sync: false,
                seed,
            })
            .await
        }
        BenchCommand::Failover {
            fault,
            runs,
            switchovers,
            interval,
            base_port,
            json,
        } => {
            check_runs(runs)?;
            if switchovers > 100 {
                return Err(CliError::usage(anyhow::anyhow!(
                    "--switchovers must be 0 to 100"
                )));
            }
            let root = std::env::temp_dir().join(format!("dbfleet-bench-{}", std::process::id()));
            let result = crate::bench_failover::run(
                &root,
                fault,
                runs,
                switchovers,
                interval,
                base_port,
                json,
            )
            .await;
            let _ = Sandbox::down(&root, "benchfo");
            let _ = std::fs::remove_dir_all(&root);
            let f = result?;
            if json {
                print_json(&f)?;
            } else {
                println!(
                    "failover under semi-sync write load, probe interval {}ms, {} runs of fault {:?}:\n  \
                     fault -> detection       p50 {} ms  max {} ms\n  \
                     fault -> writable primary p50 {} ms  max {} ms\n  \
                     decision -> writable     p50 {} ms  max {} ms\n  \
                     client outage            p50 {} ms  max {} ms\n\
                     switchover, {} runs: write block p50 {} ms  max {} ms\n\
                     acknowledged writes: {} total, {} lost\n\
                     rejoins refused for an unacknowledged write: {}",
                    f.interval_ms,
                    f.failovers.len(),
                    f.fault,
                    f.detection_p50_ms,
                    f.detection_max_ms,
                    f.writable_p50_ms,
                    f.writable_max_ms,
                    f.decision_to_writable_p50_ms,
                    f.decision_to_writable_max_ms,
                    f.client_outage_p50_ms,
                    f.client_outage_max_ms,
                    f.switchovers.len(),
                    f.write_block_p50_ms,
                    f.write_block_max_ms,
                    f.acked_total,
                    f.lost_total,
                    f.errant_rejoins
                );
            }
            if f.lost_total > 0 {
                return Err(
                    anyhow::anyhow!("{} acknowledged writes were lost", f.lost_total).into(),
                );
            }
            Ok(())
        }
        BenchCommand::Detection {
            runs,
            fault,
            interval,
            base_port,
            json,
        } => {
            check_runs(runs)?;
            let root = std::env::temp_dir().join(format!("dbfleet-bench-{}", std::process::id()));
            let result = detection(&root, runs, fault, interval, base_port, json).await;
            let _ = Sandbox::down(&root, "benchdet");
            let _ = std::fs::remove_dir_all(&root);
            let times = result?;
            let mut sorted = times.clone();
            sorted.sort();
            let f = DetectionFigures {
                fault,
                runs,
                interval_ms: interval.as_millis() as u64,
                p50_ms: sorted[sorted.len() / 2],
                max_ms: *sorted.last().unwrap_or(&0),
                detection_ms: times,
            };
            if json {
                print_json(&f)?;
            } else {
                println!(
                    "dead-primary detection, probe interval {}ms, {} {}: p50 {}ms max {}ms (each: {:?})",
                    f.interval_ms,
                    f.runs,
                    match fault {
                        DetectionFault::Kill => "kills",
                        DetectionFault::Freeze => "freezes (slave_net_timeout=60)",
                    },
                    f.p50_ms,
                    f.max_ms,
                    f.detection_ms
                );
            }
            Ok(())
        }
        BenchCommand::Sandbox {
            runs,
            replicas,
            base_port,
            json,
        } => {
            check_runs(runs)?;
            let root = std::env::temp_dir().join(format!("dbfleet-bench-{}", std::process::id()));
            let (mut ups, mut downs) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let name = format!("bench{i}");
                let opts = UpOptions {
                    name: name.clone(),
                    replicas,
                    semi_sync: false,
                    base_port,
                    root: root.clone(),
                    tuning: Default::default(),
                };
                let t = Instant::now();
                let result = Sandbox::up(&opts).await;
                ups.push(t.elapsed());
                let t = Instant::now();
                Sandbox::down(&root, &name)?;
                downs.push(t.elapsed());
                result?;
                if !json {
                    eprintln!(
                        "run {}/{runs}: up {:.2}s down {:.2}s",
                        i + 1,
                        ups[i].as_secs_f64(),
                        downs[i].as_secs_f64()
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&root);
            let (up_p50_s, up_max_s) = p50_max(ups);
            let (down_p50_s, down_max_s) = p50_max(downs);
            let f = Figures {
                runs,
                members: replicas + 1,
                up_p50_s,
                up_max_s,
                down_p50_s,
                down_max_s,
            };
            if json {
                print_json(&f)?;
            } else {
                println!(
                    "sandbox of {} members, {} runs: up p50 {:.2}s max {:.2}s; down p50 {:.2}s max {:.2}s",
                    f.members, f.runs, f.up_p50_s, f.up_max_s, f.down_p50_s, f.down_max_s
                );
            }
            Ok(())
        }
    }
}

/// Kill (or freeze) the primary `runs` times under the real watch loop; return fault →
/// DeadPrimary in ms.
async fn detection(
    root: &std::path::Path,
    runs: usize,
    fault: DetectionFault,
    interval: Duration,
    base_port: u16,
    json: bool,
) -> Result<Vec<u64>, CliError> {
    use std::sync::Arc;

    use model::ProblemKind;
    use store::Store;

    let name = "benchdet";
    let (sb, _) = Sandbox::up(&UpOptions {
        name: name.into(),
        replicas: 2,
        semi_sync: false,
        base_port,
        root: root.to_path_buf(),
        tuning: sandbox::Tuning {
            slave_net_timeout_s: match fault {
                DetectionFault::Kill => sandbox::Tuning::default().slave_net_timeout_s,
                DetectionFault::Freeze => 60,
            },
            ..Default::default()
        },
    })
    .await?;
    let creds = sb.credentials()?.admin.credentials();
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(&sb.dir().join("daemon"))?);
    let spec = sb.cluster_spec();
    let stats = Arc::new(monitor::Stats::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let watch = tokio::spawn(monitor::run(
        monitor::WatchOptions {
            interval,
            discovery_interval: Duration::from_secs(10),
            probe: probe::ProbeOptions {
                connect_timeout: Duration::from_millis(500),
                query_timeout: Duration::from_millis(500),
            },
            concurrency: 64,
            fast_path: monitor::FastPathOptions::default(),
            persist_every: monitor::watch::PERSIST_EVERY,
        },
        vec![monitor::ClusterWatch::new(spec, creds)],
        store.clone(),
        stats,
        None,
        cancel.clone(),
    ));
    let primary = sb.initial_primary().name.clone();
    let healthy = |store: Arc<dyn Store>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open = store.open_problems(Some(name)).await?;
            let seen = store.last_observations(Some(name)).await?;
            if open.is_empty() && seen.len() == 3 {
                return Ok::<(), CliError>(());
            }
            if Instant::now() > deadline {
                return Err(anyhow::anyhow!("cluster not healthy after 60s: {open:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut times = Vec::new();
    let outcome: Result<(), CliError> = async {
        for i in 0..runs {
            healthy(store.clone()).await?;
            let killed_ms = monitor::now_ms();
            // SIGCONT when dropped, on every path.
            let frozen = match fault {
                DetectionFault::Kill => {
                    sb.kill(&primary)?;
                    None
                }
                DetectionFault::Freeze => Some(
                    sandbox::testing::Frozen::try_freeze(&sb, &primary)
                        .map_err(|e| anyhow::anyhow!(e))?,
                ),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            let detected_ms = loop {
                let open = store.open_problems(Some(name)).await?;
                if let Some(p) = open
                    .iter()
                    .find(|p| p.problem.kind == ProblemKind::DeadPrimary)
                {
                    break p.first_seen_ms;
                }
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!("no DeadPrimary 60s after the kill").into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let took = detected_ms.saturating_sub(killed_ms);
            if !json {
                eprintln!("run {}/{runs}: {fault:?} -> DeadPrimary {took}ms", i + 1);
            }
            times.push(took);
            match frozen {
                Some(f) => f.thaw(),
                None => {
                    sb.start(&primary).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    cancel.cancel();
    let _ = watch.await;
    outcome?;
    Ok(times)
}
