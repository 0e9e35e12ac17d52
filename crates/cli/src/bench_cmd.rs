//! `dbfleet bench …`: the arguments of the benchmarks (crate `bench`) and how their figures
//! print. Speed claims in docs/BENCHMARKS.md come from here, never from timed assertions in
//! tests.

use std::time::Duration;

use bench::{api_reads, detection, failover, monitor, route_checks, sandbox_cycle};
use clap::Subcommand;

use crate::term::outln;
use crate::{print_json, CliError};

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
    /// Many concurrent readers of the API: a real `dbfleet serve` (a child process) on a
    /// store seeded with events, its instances on loopback ports nothing listens on (no
    /// MariaDB needed); CLIENTS clients send GET /api/v1/clusters, then GET
    /// /api/v1/events?limit=N. Prints latency p50/p99/max per route and the daemon's RSS and
    /// threads (idle, peak under load, after).
    ApiReads {
        /// Concurrent clients, one connection each.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Requests of GET /api/v1/clusters, over all clients.
        #[arg(long, default_value_t = 2000)]
        cluster_requests: usize,
        /// Requests of GET /api/v1/events, over all clients.
        #[arg(long, default_value_t = 400)]
        event_requests: usize,
        /// The `limit` of the events requests (the API takes at most 1000).
        #[arg(long, default_value_t = 1000)]
        event_limit: usize,
        /// Events seeded in the store.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Clusters in the config, three unreachable instances each.
        #[arg(long, default_value_t = 3)]
        clusters: usize,
        /// The daemon's API port; the instances use the ports just above it.
        #[arg(long, default_value_t = 23450)]
        port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The route checks HAProxy calls (GET /api/v1/route/CLUSTER/ADDR/writer|reader) at a
    /// fixed rate: a real `dbfleet serve` (a child process) watches a fresh sandbox (1
    /// primary, 2 replicas, removed after); after a one-second warm-up, checks of every
    /// member and both roles go out open-loop, each on a new connection as HAProxy's do.
    /// Prints latency p50/p99/max counted from when each check was due, and the answers.
    RouteChecks {
        /// Checks a second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to send them, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The sandbox primary's port; the replicas take the next two.
        #[arg(long, default_value_t = 23560)]
        base_port: u16,
        /// The daemon's API port.
        #[arg(long, default_value_t = 23570)]
        api_port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
        fault: FailoverFault,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectionFault {
    /// SIGKILL: the kernel closes every socket at once.
    Kill,
    /// SIGSTOP with `slave_net_timeout=60`: nothing closes, the primary goes silent.
    Freeze,
}

impl From<DetectionFault> for detection::DetectionFault {
    fn from(f: DetectionFault) -> Self {
        match f {
            DetectionFault::Kill => Self::Kill,
            DetectionFault::Freeze => Self::Freeze,
        }
    }
}

/// What happens to the primary in a `bench failover` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailoverFault {
    /// SIGKILL: the kernel closes its sockets at once.
    Kill,
    /// SIGSTOP until the failover finished, then SIGCONT: a frozen VM or process.
    Pause,
    /// Every packet to and from its port dropped (iptables) until the failover finished:
    /// a host gone silent, no RST.
    Blackhole,
}

impl From<FailoverFault> for failover::Fault {
    fn from(f: FailoverFault) -> Self {
        match f {
            FailoverFault::Kill => Self::Kill,
            FailoverFault::Pause => Self::Pause,
            FailoverFault::Blackhole => Self::Blackhole,
        }
    }
}

fn check_runs(runs: usize) -> Result<(), CliError> {
    if runs == 0 || runs > 100 {
        return Err(CliError::usage(anyhow::anyhow!("--runs must be 1 to 100")));
    }
    Ok(())
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
            let f = monitor::run(monitor::MonitorBench {
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
                print_monitor(&f);
            }
            Ok(())
        }
        BenchCommand::ApiReads {
            clients,
            cluster_requests,
            event_requests,
            event_limit,
            events,
            clusters,
            port,
            json,
        } => {
            let f = api_reads::run(api_reads::ApiReadsBench {
                clients,
                cluster_requests,
                event_requests,
                event_limit,
                events,
                clusters,
                port,
            })
            .await
            .map_err(CliError::usage)?;
            if json {
                print_json(&f)?;
            } else {
                print_api_reads(&f);
            }
            Ok(())
        }
        BenchCommand::RouteChecks {
            rate,
            seconds,
            base_port,
            api_port,
            json,
        } => {
            let f = route_checks::run(route_checks::RouteChecksBench {
                rate,
                seconds,
                base_port,
                api_port,
            })
            .await
            .map_err(CliError::usage)?;
            if json {
                print_json(&f)?;
            } else {
                println!(
                    "route checks, {} build: {} sent at {}/s asked ({:.0}/s achieved): {} answered 200, {} 503, {} errors\n  \
                     latency from due p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; service time p99 {:.2} ms",
                    f.build,
                    f.sent,
                    f.rate,
                    f.per_second,
                    f.ok_200,
                    f.ok_503,
                    f.errors,
                    f.p50_ms,
                    f.p99_ms,
                    f.max_ms,
                    f.service_p99_ms
                );
            }
            Ok(())
        }
        BenchCommand::SimServe {
            clusters,
            replicas,
            first_ip,
            port,
            seed,
        } => monitor::sim_serve(sim::FleetOptions {
            clusters,
            replicas,
            first_ip,
            port,
            semi_sync: false,
            seed,
        })
        .await
        .map_err(CliError::from),
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
            let f =
                failover::run_in_temp(fault.into(), runs, switchovers, interval, base_port, json)
                    .await?;
            if json {
                print_json(&f)?;
            } else {
                outln!(
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
            let f = detection::run(runs, fault.into(), interval, base_port, json).await?;
            if json {
                print_json(&f)?;
            } else {
                outln!(
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
            let f = sandbox_cycle::run(runs, replicas, base_port, json).await?;
            if json {
                print_json(&f)?;
            } else {
                outln!(
                    "sandbox of {} members, {} runs: up p50 {:.2}s max {:.2}s; down p50 {:.2}s max {:.2}s",
                    f.members, f.runs, f.up_p50_s, f.up_max_s, f.down_p50_s, f.down_max_s
                );
            }
            Ok(())
        }
    }
}

/// `bench monitor`'s figures as text.
fn print_monitor(f: &monitor::MonitorFigures) {
    outln!(
        "monitor, {} simulated servers ({} clusters of {}), interval {} ms, {:.0}s window, {} hung:\n  \
         probes/s          {:.0} of a target {:.0} (healthy servers answered {:.0}/s)\n  \
         missed intervals  {} ({} servers; longest gap {} ms)\n  \
         probe latency     p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms\n  \
         control plane     {:.3} cores ({:.1} us/probe), RSS peak {:.0} MiB, end {:.0} MiB\n  \
         history           {:.0} MiB now, {:.0} MiB once full: RSS then about {:.0} MiB\n  \
         simulated fleet   {:.3} cores ({} processes, not counted above; {} failed accepts)\n  \
         rounds            {} of {} expected; probe errors {}; unknown sim statements {}\n  \
         heartbeats        {}",
        f.instances,
        f.clusters,
        f.replicas_per_cluster + 1,
        f.interval_ms,
        f.window_s,
        f.hung,
        f.probes_per_s,
        f.target_probes_per_s,
        f.healthy_observes_per_s,
        f.missed_intervals,
        f.servers_with_misses,
        f.max_gap_ms,
        f.probe_latency_p50_ms,
        f.probe_latency_p99_ms,
        f.probe_latency_max_ms,
        f.control_plane_cpu_cores,
        f.control_plane_cpu_us_per_probe,
        f.control_plane_rss_peak_mib,
        f.control_plane_rss_end_mib,
        f.history_mib,
        f.history_full_mib,
        f.control_plane_rss_projected_mib,
        f.sim_cpu_cores,
        f.sim_processes,
        f.sim_accept_errors,
        f.rounds,
        f.rounds_expected,
        f.probe_errors,
        f.sim_unknown_statements,
        if f.heartbeat {
            format!("{:.0} rows written/s, read in every probe", f.heartbeat_writes_per_s)
        } else {
            "off (--no-heartbeat)".to_string()
        },
    );
    if let Some(e) = &f.exporter {
        outln!(
            "against {} on {} real MariaDB servers:\n  \
             dbfleet           {:.0} us CPU per probe ({} probes)\n  \
             mysqld_exporter   {:.0} us CPU per scrape ({} scrapes, {} bytes each, {:.0} MiB RSS in all)\n  \
             ratio             {:.1}x",
            e.exporter_version,
            e.servers,
            e.dbfleet_cpu_us_per_probe,
            e.dbfleet_probes,
            e.exporter_cpu_us_per_scrape,
            e.exporter_scrapes,
            e.exporter_scrape_bytes,
            e.exporter_rss_mib,
            e.ratio
        );
    }
}

fn print_api_reads(f: &api_reads::ApiReadsFigures) {
    println!(
        "API reads, {} concurrent clients, {} events in the store; daemon idle: RSS {:.1} MiB, {} threads",
        f.clients, f.events, f.rss_idle_mib, f.threads_idle
    );
    for r in &f.routes {
        println!(
            "  GET {}: {} ok, {} errors, {} bytes each, {:.0}/s\n    \
             latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms\n    \
             without each client's first request (its connect): p50 {:.1} ms  p99 {:.1} ms\n    \
             CPU over {:.2} s: daemon {:.2} s, bench clients {:.2} s\n    \
             daemon RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB 2 s after; {} threads at most",
            r.path,
            r.ok,
            r.errors,
            r.answer_bytes,
            r.per_second,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.warm_p50_ms,
            r.warm_p99_ms,
            r.elapsed_s,
            r.daemon_cpu_s,
            r.bench_cpu_s,
            r.rss_before_mib,
            r.rss_peak_mib,
            r.rss_after_mib,
            r.threads_peak
        );
    }
}
