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
use drt::report::Report;
use drt::runner::{look_all, run_once, wait_one_writable, RunTarget};
use drt::scenario::{builtins, Overrides, Scenario};
use sandbox::Sandbox;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

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
                    println!("{:w$}  {}", s.name, s.description);
                }
                Ok(())
            }
        }
        DrtCommand::Run(a) => run_scenario(*a).await,
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
                ..Default::default()
            })
        })
        .map_err(CliError::usage)?;
    let root = a.dir.clone().unwrap_or_else(sandbox::default_root);
    let sb = Sandbox::open(&root, &a.sandbox).map_err(CliError::usage)?;
    let creds = sb.credentials()?;
    let target = RunTarget {
        members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
        admin: creds.admin.credentials(),
        app: creds.app.credentials(),
        api: a.api.clone(),
        control_plane_gid: a.control_plane_gid,
        sandbox: sb.clone(),
    };
    drt::runner::check_supported(&scenario, &target).map_err(CliError::usage)?;
    drt::faults::install_signal_heal().map_err(|e| anyhow::anyhow!("{e}"))?;
    let cluster = scenario
        .cluster
        .clone()
        .unwrap_or_else(|| sb.manifest().name.clone());
    let token = match &a.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", p.display()))?
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("")
                .to_string(),
        ),
        None => None,
    };

    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    for i in 0..a.repeat {
        if i > 0 {
            restore(&sb, &target, a.api.as_deref(), &cluster, token.as_deref()).await?;
        }
        let r = run_once(&scenario, &target, cancel.clone())
            .await
            .map_err(|e| anyhow::anyhow!("run {} of {}: {e}", i + 1, scenario.name))?;
        runs.push(r);
    }
    // Leave the cluster as whole as we can: every member running again.
    if let Err(e) = start_stopped(&sb).await {
        eprintln!("warning: {e:#}");
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
    if a.json {
        print_json(&report)?;
    } else {
        print!("{}", report.text());
        println!("report: {}", dir.join("report.html").display());
    }
    if report.pass {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}: at least one expectation failed", scenario.name).into())
    }
}

/// Start every member whose process is not running.
async fn start_stopped(sb: &Sandbox) -> anyhow::Result<()> {
    for m in sb.status() {
        if !m.running {
            sb.start(&m.name)
                .await
                .map_err(|e| anyhow::anyhow!("start {}: {e}", m.name))?;
        }
    }
    Ok(())
}

/// Between repeats: members running, a fenced old primary rejoined (with a token), exactly
/// one writable primary, every replica replicating.
async fn restore(
    sb: &Sandbox,
    target: &RunTarget,
    api: Option<&str>,
    cluster: &str,
    token: Option<&str>,
) -> Result<(), CliError> {
    start_stopped(sb).await?;
    wait_one_writable(&target.members, &target.admin, Duration::from_secs(60))
        .await
        .map_err(|w| {
            anyhow::anyhow!(
                "between runs: expected one writable primary, found {}",
                w.len()
            )
        })?;
    if let (Some(api), Some(token)) = (api, token) {
        // A reachable read-only member without replication is a fenced old primary.
        for l in look_all(&target.members, &target.admin).await {
            let fenced = l
                .state
                .as_ref()
                .is_some_and(|s| s.read_only && s.replication.is_none());
            if fenced {
                let url = format!(
                    "{}/api/v1/clusters/{cluster}/rejoin",
                    api.trim_end_matches('/')
                );
                let r = reqwest::Client::new()
                    .post(&url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "instance": l.addr.to_string() }))
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                if let Err(e) = r {
                    eprintln!("warning: rejoin {} failed: {e}", l.addr);
                }
            }
        }
    }
    // Give the replicas a moment to settle so the next run starts from a healthy cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
