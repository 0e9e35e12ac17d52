//! `dbfleet drt …`: disaster-recovery tests: list the built-in scenarios, run one against a
//! local sandbox under load and write its report.
//!
//! Between repeats (`--repeat N`) the runner starts every stopped member again and waits
//! for exactly one writable primary. When the daemon fenced an old primary (it comes back
//! read-only, replicating from nothing) and `--api` and `--token-file` are given, it asks the
//! daemon to rejoin it (`POST /api/v1/clusters/{cluster}/rejoin`); without a token, run
//! `dbfleet rejoin` yourself between runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use drt::between::{restore, start_stopped};
use drt::report::Report;
use drt::runner::{run_once, RunTarget};
use drt::scenario::{builtins, Overrides, Scenario};
use sandbox::Sandbox;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::client_cmd::{api_error, client, ApiArgs};
use crate::term::{errln, out, outln};
use crate::{print_json, CliError};

/// DRT subcommands.
#[derive(Subcommand, Debug)]
pub enum DrtCommand {
    /// List the built-in scenarios.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a scenario (a built-in's name or a TOML file) against a local sandbox.
    Run(Box<RunArgs>),
    /// Stop a running DRT: its faults are healed at once and its report records the abort.
    /// With --sandbox, the `dbfleet drt run` on that sandbox; without, the daemon's
    /// scheduled DRT (through --api).
    Abort {
        /// The sandbox a `dbfleet drt run` is running on.
        #[arg(long)]
        sandbox: Option<String>,
        /// The directory that holds sandboxes.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the DRT runs stored in the daemon, newest first.
    Runs {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a past run: a stored run's id (from the daemon), or a report directory or
    /// report.json written by `dbfleet drt run`.
    Report {
        /// The run's id, or a report directory or file.
        id: String,
        /// Also write the HTML report (with its timeline chart) to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `dbfleet drt run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A built-in scenario's name, or a scenario file.
    scenario: String,
    /// The sandbox that holds the cluster.
    #[arg(long)]
    sandbox: String,
    /// The directory that holds sandboxes. Default: $DBFLEET_SANDBOX_DIR, else
    /// ~/.local/share/dbfleet/sandboxes.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The cluster's name in the daemon (default: the scenario's, else the sandbox's name).
    #[arg(long)]
    cluster: Option<String>,
    /// The config that declares the cluster; it must allow DRTs (`drt_allowed = true` in
    /// its `[[cluster]]`). Default: the sandbox's own dbfleet.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's API base URL, for detection and failover times from its events.
    /// Without it the report has client-side figures only.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// A file with an API token, to rejoin a fenced old primary between repeats.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The group id the control plane runs under (for partition_control_plane_from_primary).
    #[arg(long, value_name = "GID")]
    control_plane_gid: Option<u32>,
    /// How many runs.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The load's duration (overrides the scenario's), e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Guardrail: the longest one run may take (overrides the scenario's).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,
    /// Stale-client mode: one more writer stays on the first primary's address and keeps
    /// writing there; the report counts what that address acknowledges after the new
    /// primary opened (it must be 0).
    #[arg(long)]
    stale_client: bool,
    /// Write through the sandbox's HAProxy (`sandbox up --haproxy`) instead of to the
    /// members: the RTO measured is what an application behind the proxy sees (the
    /// scenario's `load.via = "haproxy"`).
    #[arg(long)]
    via_haproxy: bool,
    /// Where to write report.json and report.html. Default ./drt-reports/SCENARIO-TIME/.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    description: &'a str,
}

/// Run a DRT subcommand.
pub async fn run(cmd: DrtCommand) -> Result<(), CliError> {
    match cmd {
        DrtCommand::List { json } => {
            let all = builtins();
            if json {
                let v: Vec<Listed> = all
                    .iter()
                    .map(|s| Listed {
                        name: &s.name,
                        description: &s.description,
                    })
                    .collect();
                print_json(&v)
            } else {
                let w = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for s in &all {
                    outln!("{:w$}  {}", s.name, s.description);
                }
                Ok(())
            }
        }
        DrtCommand::Run(a) => run_scenario(*a).await,
        DrtCommand::Abort { sandbox, dir, api } => abort(sandbox, dir, &api).await,
        DrtCommand::Runs { limit, json, api } => list_runs(&api, limit, json).await,
        DrtCommand::Report {
            id,
            html,
            json,
            api,
        } => show_report(&api, &id, html, json).await,
    }
}

async fn run_scenario(a: RunArgs) -> Result<(), CliError> {
    if a.repeat == 0 {
        return Err(CliError::usage(anyhow::anyhow!(
            "--repeat must be at least 1"
        )));
    }
    let scenario = Scenario::resolve(&a.scenario)
        .and_then(|s| {
            s.with_overrides(&Overrides {
                cluster: a.cluster.clone(),
                duration: a.duration,
                max_duration: a.max_duration,
                stale_client: a.stale_client.then_some(true),
                via: a.via_haproxy.then_some(drt::scenario::LoadVia::Haproxy),
                ..Default::default()
            })
        })
        .map_err(CliError::usage)?;
    let root = a.dir.clone().unwrap_or_else(sandbox::default_root);
    let sb = Sandbox::open(&root, &a.sandbox).map_err(CliError::usage)?;
    let cluster_name = scenario
        .cluster
        .clone()
        .unwrap_or_else(|| sb.manifest().name.clone());
    let config_path = a
        .config
        .clone()
        .unwrap_or_else(|| sb.dir().join("dbfleet.toml"));
    check_allowed(&config_path, &cluster_name)?;
    let creds = sb.credentials()?;
    let token = a
        .token_file
        .as_deref()
        .map(api::read_token)
        .transpose()
        .map_err(CliError::usage)?;
    // The daemon's client, when it can act (an API and a token).
    let daemon = match (&a.api, &token) {
        (Some(api), Some(token)) => {
            Some(api::Client::new(api, Some(token.clone())).map_err(api_error)?)
        }
        _ => None,
    };

    let target = RunTarget {
        members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
        admin: creds.admin.credentials(),
        app: creds.app.credentials(),
        api: a.api.clone(),
        control_plane_gid: a.control_plane_gid,
        token: token.clone(),
        sandbox: sb.clone(),
    };
    drt::runner::check_supported(&scenario, &target).map_err(CliError::usage)?;
    let cluster = cluster_name;
    let cancel = CancellationToken::new();
    abort_on_signals(cancel.clone())?;
    let _active = ActiveRun::write(&sb, &scenario.name)?;
    sweep_stale_partitions(&scenario);
    recover_stale_disks(&sb);
    let mut runs = Vec::new();
    // A repeat that cannot go on (the cluster could not be put back together, a run could
    // not start) ends the repeats; the runs done so far are still reported.
    let mut stopped: Option<anyhow::Error> = None;
    for i in 0..a.repeat {
        if cancel.is_cancelled() {
            break;
        }
        if i > 0 {
            if let Err(e) = restore(&sb, &target, daemon.as_ref(), &cluster).await {
                stopped = Some(anyhow::Error::from(e).context(format!("before run {}", i + 1)));
                break;
            }
        }
        match run_once(&scenario, &target, cancel.clone()).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                stopped = Some(anyhow::anyhow!("run {} of {}: {e}", i + 1, scenario.name));
                break;
            }
        }
    }
    if let Some(e) = &stopped {
        if runs.is_empty() {
            return Err(stopped.unwrap_or_else(|| anyhow::anyhow!("no run")).into());
        }
        errln!(
            "warning: {e:#}; stopping after {} of {} runs",
            runs.len(),
            a.repeat
        );
    }
    // Leave the cluster as whole as we can: every member running again.
    if let Err(e) = start_stopped(&sb).await {
        errln!("warning: {e:#}");
    }

    let report = Report::new(scenario.clone(), runs);
    let dir = a.report_dir.clone().unwrap_or_else(|| {
        let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        PathBuf::from("drt-reports").join(format!("{}-{t}", scenario.name))
    });
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("report.html"), report.html())?;
    // Stored with the daemon's events when it is given, with a token.
    let stored = match &daemon {
        Some(client) => match client.post_drt_run(&report).await {
            Ok(answer) => answer.value["id"].as_str().map(str::to_string),
            Err(e) => {
                errln!(
                    "warning: the report was not stored in the daemon: {:#}",
                    api_error(e).error
                );
                None
            }
        },
        None => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["id"] = serde_json::json!(stored);
        print_json(&v)?;
    } else {
        out!("{}", report.text());
        outln!("report: {}", dir.join("report.html").display());
        if let Some(id) = &stored {
            outln!("stored as {id}: dbfleet drt report {id}");
        }
    }
    if let Some(e) = stopped {
        Err(anyhow::anyhow!(
            "{}: only {} of {} runs could be done: {e:#}",
            scenario.name,
            report.runs.len(),
            a.repeat
        )
        .into())
    } else if report.pass {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}: at least one expectation failed", scenario.name).into())
    }
}

/// A run killed with SIGKILL cannot thaw or free the disks it stalled or filled either: a
/// frozen datadir would hang this run's first write. Thaw and free whatever is under the
/// sandbox before the run, and say so.
fn recover_stale_disks(sb: &sandbox::Sandbox) {
    for what in sandbox::loopfs::recover_under(sb.dir()) {
        errln!("left by an earlier run that did not finish: {what}");
    }
}

/// A run killed with SIGKILL (or a crashed host process) cannot heal its partitions, and
/// its iptables chains would cut the cluster off for good. Before a scenario that
/// partitions, remove the chains of runs whose process is gone; a failure to sweep is a
/// warning, since the run's own faults are still healed by it.
fn sweep_stale_partitions(scenario: &Scenario) {
    use drt::scenario::FaultKind;
    let partitions = scenario.faults.iter().any(|f| {
        matches!(
            f.kind,
            FaultKind::PartitionPrimary | FaultKind::PartitionControlPlaneFromPrimary
        )
    });
    if !partitions {
        return;
    }
    match drt::faults::sweep() {
        Ok(r) if !r.removed.is_empty() => errln!(
            "removed {} iptables chain(s) left by earlier runs that did not finish: {}",
            r.removed.len(),
            r.removed.join(", ")
        ),
        Ok(_) => {}
        Err(e) => errln!("warning: sweeping chains of earlier runs: {e}"),
    }
}

/// Ctrl-C, SIGTERM (`dbfleet drt abort`) or SIGHUP aborts the run: the runner heals every
/// fault at once and the report records the abort. A second signal heals what is still
/// registered and exits at once.
fn abort_on_signals(cancel: CancellationToken) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let mut term = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut hup = signal(SignalKind::hangup()).map_err(anyhow::Error::from)?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            seen += 1;
            if seen == 1 {
                errln!("{name}: aborting the DRT; healing every fault (again to exit at once)");
                cancel.cancel();
            } else {
                let n = drt::faults::registered_count();
                errln!("{name}: healing {n} fault(s) and exiting");
                for f in drt::faults::heal_registered() {
                    errln!("NOT HEALED: {}: {}", f.description, f.error);
                }
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// The file that marks a `dbfleet drt run` in progress on a sandbox, for `drt abort`.
const ACTIVE_FILE: &str = "drt-run.json";

/// A running DRT's marker file, removed when the run ends.
struct ActiveRun {
    path: PathBuf,
}

impl ActiveRun {
    fn write(sb: &Sandbox, scenario: &str) -> Result<Self, CliError> {
        let path = sb.dir().join(ACTIVE_FILE);
        if let Some(pid) = active_pid(&path) {
            return Err(CliError::usage(anyhow::anyhow!(
                "a DRT is already running on this sandbox (pid {pid}); stop it with `dbfleet \
                 drt abort --sandbox {}`",
                sb.manifest().name
            )));
        }
        let v = serde_json::json!({
            "pid": std::process::id(),
            "scenario": scenario,
            "started_ms": drt::faults::now_ms(),
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&v)?)
            .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid in a marker file, when that process is alive and is a `dbfleet drt run`.
fn active_pid(path: &std::path::Path) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let pid = i32::try_from(v["pid"].as_u64()?).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_run = args.iter().any(|a| *a == b"drt") && args.iter().any(|a| *a == b"run");
    is_run.then_some(pid)
}

/// `dbfleet drt abort`.
async fn abort(
    sandbox: Option<String>,
    dir: Option<PathBuf>,
    api: &ApiArgs,
) -> Result<(), CliError> {
    let Some(name) = sandbox else {
        let answer = client(api)?.drt_abort().await.map_err(api_error)?;
        let r = &answer.value["aborted"];
        outln!(
            "aborted the daemon's DRT {} on {}",
            r["scenario"].as_str().unwrap_or("?"),
            r["cluster"].as_str().unwrap_or("?")
        );
        return Ok(());
    };
    let root = dir.unwrap_or_else(sandbox::default_root);
    let sb = Sandbox::open(&root, &name).map_err(CliError::usage)?;
    let path = sb.dir().join(ACTIVE_FILE);
    let Some(pid) = active_pid(&path) else {
        return Err(CliError::usage(anyhow::anyhow!(
            "no DRT is running on the sandbox {name}"
        )));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| anyhow::anyhow!("signal the DRT run (pid {pid}): {e}"))?;
    errln!("asked the DRT run (pid {pid}) to abort; waiting for it to heal its faults");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while active_pid(&path).is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if active_pid(&path).is_some() {
        return Err(anyhow::anyhow!("the DRT run (pid {pid}) is still running after 120 s").into());
    }
    outln!("aborted: the run healed its faults and wrote its report");
    Ok(())
}

/// `dbfleet drt runs`.
async fn list_runs(api: &ApiArgs, limit: usize, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.drt_runs(limit).await.map_err(api_error)?;
    if json {
        return print_json(&answer.value["runs"]);
    }
    let runs = answer.value["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        outln!("no DRT runs stored");
        return Ok(());
    }
    outln!(
        "{:<44} {:<10} {:<6} {:>4} {:>10} {:>10} {:>5}",
        "ID",
        "CLUSTER",
        "RESULT",
        "RUNS",
        "RTO P50",
        "RTO MAX",
        "LOST"
    );
    let ms = |v: &serde_json::Value| {
        v.as_u64()
            .map(|m| format!("{m}ms"))
            .unwrap_or_else(|| "-".into())
    };
    for r in runs {
        outln!(
            "{:<44} {:<10} {:<6} {:>4} {:>10} {:>10} {:>5}",
            r["id"].as_str().unwrap_or("?"),
            r["cluster"].as_str().unwrap_or("?"),
            if r["pass"] == true { "PASS" } else { "FAIL" },
            r["runs"],
            ms(&r["rto_p50_ms"]),
            ms(&r["rto_max_ms"]),
            r["lost_total"]
        );
    }
    Ok(())
}

/// `dbfleet drt report ID`.
async fn show_report(
    api: &ApiArgs,
    id: &str,
    html: Option<PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let local = std::path::Path::new(id);
    let (label, report): (String, Report) = if local.exists() {
        let file = if local.is_dir() {
            local.join("report.json")
        } else {
            local.to_path_buf()
        };
        let bytes = std::fs::read(&file)
            .map_err(|e| CliError::usage(anyhow::anyhow!("read {}: {e}", file.display())))?;
        let report = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::usage(anyhow::anyhow!(
                "{} is not a DRT report: {e}",
                file.display()
            ))
        })?;
        (file.display().to_string(), report)
    } else {
        let answer = client(api)?.drt_run(id).await.map_err(api_error)?;
        let report = serde_json::from_value(answer.value["report"].clone())
            .map_err(|e| anyhow::anyhow!("the daemon's run {id} is not a DRT report: {e}"))?;
        (id.to_string(), report)
    };
    if let Some(path) = &html {
        std::fs::write(path, report.html())
            .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    }
    if json {
        print_json(&report)?;
    } else {
        outln!("run {label}");
        out!("{}", report.text());
        if let Some(path) = &html {
            outln!("report: {}", path.display());
        }
    }
    Ok(())
}

/// Guardrail: refuse unless `config` declares `cluster` with `drt_allowed = true`.
pub fn check_allowed(config: &std::path::Path, cluster: &str) -> Result<(), CliError> {
    let cfg = config::Config::load(config).map_err(|e| {
        CliError::usage(anyhow::anyhow!(
            "DRTs run only on clusters whose config allows them, and the config could not \
             be read: {e}"
        ))
    })?;
    match cfg.clusters.iter().find(|c| c.name == cluster) {
        Some(c) if c.drt_allowed => Ok(()),
        Some(_) => Err(CliError::usage(anyhow::anyhow!(
            "cluster {cluster:?} does not allow DRTs: set `drt_allowed = true` in its \
             [[cluster]] section of {}",
            config.display()
        ))),
        None => Err(CliError::usage(anyhow::anyhow!(
            "cluster {cluster:?} is not declared in {}: DRTs run only on declared clusters \
             that set `drt_allowed = true` (pass --config or --cluster)",
            config.display()
        ))),
    }
}
