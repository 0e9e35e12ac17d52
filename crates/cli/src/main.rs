//! The `dbfleet` command: parses arguments and dispatches to the crates that do the work.

mod alert_cmd;
mod bench_cmd;
mod client_cmd;
mod creds;
mod docs_cmd;
mod doctor_cmd;
mod drt_cmd;
mod haproxy_cmd;
mod probe_cmd;
mod sandbox_cmd;
mod serve_cmd;
mod store_cmd;
mod term;

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the watch loop allocates per probe (MySQL packets, rows,
/// observations), and glibc's malloc/free were 30 % of its CPU at 5,000 servers; mimalloc cut
/// the CPU per probe by about a third (docs/BENCHMARKS.md, "Monitoring at scale").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// dbfleet runs fleets of MySQL/MariaDB replication clusters: discovery, health, failover,
/// disaster-recovery tests, monitoring, backups.
#[derive(Parser, Debug)]
#[command(
    name = "dbfleet",
    version,
    about = "dbfleet runs fleets of MySQL/MariaDB replication clusters: discovery, health, failover, DR tests, monitoring"
)]
struct Cli {
    /// Log filter for stderr, as RUST_LOG takes it (e.g. `info`, `dbfleet=debug`).
    #[arg(long, global = true, env = "DBFLEET_LOG", default_value = "warn")]
    log: String,
    /// Log lines as text, or as JSON: one object per line, each field (cluster, instance,
    /// operation id) a key of its own, for a log pipeline.
    #[arg(long, global = true, env = "DBFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Local MariaDB replication sets on loopback, for the demo, tests and DR tests.
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCommand),
    /// Observe one server once and print what it reports.
    Probe(probe_cmd::ProbeArgs),
    /// Check that the programs a running dbfleet needs are installed (MariaDB's for the
    /// sandbox, iptables for DRT network faults, the backup tools), naming the Debian package
    /// for each one missing. Exit code 1 when any is missing. The list is scripts/deps.list,
    /// the one scripts/install-deps.sh installs and checks.
    Doctor(doctor_cmd::DoctorArgs),
    /// Run the control-plane daemon: discover and probe every server, name problems, serve
    /// the HTTP API. Stops cleanly on SIGTERM or SIGINT; SIGHUP reloads the config (an invalid
    /// file is refused and the daemon goes on as it was).
    Serve(serve_cmd::ServeArgs),
    /// List the clusters the daemon watches: primary, instances, open problems.
    Clusters {
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a cluster as a tree: role, address, lag, GTID position, thread states.
    Topology {
        /// The cluster.
        cluster: String,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show open problems, with their evidence, of one cluster or all.
    Problems {
        /// Only this cluster.
        cluster: Option<String>,
        /// Problems open and cleared, newest opening first, a page at a time.
        #[arg(long)]
        history: bool,
        /// With --history: how many (at most 1000).
        #[arg(long, default_value_t = 50, requires = "history")]
        limit: usize,
        /// With --history: only openings older than this id (the next page: the id the
        /// page before ends with).
        #[arg(long, requires = "history")]
        before: Option<i64>,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the event and audit log, oldest first.
    Events {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// How many of the newest events to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fail over a cluster whose primary is dead (the replicas must confirm it): promote the
    /// safest, most advanced replica, repoint the others, fence the old primary. Runs
    /// whatever the cluster's policy and block window say: a human decided.
    Failover {
        /// The cluster.
        cluster: String,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move the primary role to a healthy replica (planned maintenance): writes are blocked
    /// only while the target catches up and is promoted. Rolls back if anything fails
    /// before promotion.
    Switchover {
        /// The cluster.
        cluster: String,
        /// The replica to promote (host:port); default the best by promotion rules, site
        /// and lag.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-attach a fenced old primary (or any stray instance) as a replica of the cluster's
    /// writer, after an errant-GTID check; refuses, listing them, when it has errant GTIDs.
    Rejoin {
        /// The cluster.
        cluster: String,
        /// The instance (host:port).
        instance: String,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a discovered instance (one not declared in the config): the daemon stops
    /// probing it, removes it from its store and logs an `instance_forgotten` event.
    /// Discovery finds it again if it still replicates from a member. A declared instance
    /// is refused: remove it from the config and reload instead. Needs an API token.
    Forget {
        /// The cluster.
        cluster: String,
        /// The instance (host:port).
        instance: String,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Automatic recoveries: status, acknowledge a cluster's block window, switch them off or
    /// on fleet-wide.
    Recoveries {
        #[command(subcommand)]
        action: client_cmd::RecoveriesAction,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// List operations (failovers, switchovers, rejoins), newest first.
    Operations {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only this state: proposed, running, succeeded, rolled_back, failed, needs_human.
        #[arg(long)]
        state: Option<String>,
        /// How many to show (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only operations older than this id (the next page: the id the page before ends
        /// with).
        #[arg(long)]
        before: Option<i64>,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one operation: state, step, candidate, warnings, error.
    Operation {
        /// The operation's id.
        id: String,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the open alerts (pending and firing), with whether a downtime silences them.
    Alerts {
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a downtime (maintenance window): alerts of TARGET still open and are recorded,
    /// but are not paged until it ends. Needs an API token.
    Downtime {
        /// A cluster's name, or an instance as host:port.
        target: String,
        /// How long, e.g. `2h`, `30m`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why, e.g. "kernel upgrade".
        #[arg(long)]
        reason: String,
        /// Who asks; default $USER.
        #[arg(long)]
        who: Option<String>,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the downtimes in force.
    Downtimes {
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a downtime now; alerts it silenced that still fire are paged. Needs an API token.
    DowntimeRemove {
        /// The downtime's id (see `dbfleet downtimes`).
        id: u64,
        #[command(flatten)]
        api: client_cmd::ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check config files.
    #[command(subcommand)]
    Config(serve_cmd::ConfigCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Disaster-recovery tests: fault scenarios under load, with a report.
    #[command(subcommand)]
    Drt(drt_cmd::DrtCommand),
    /// HAProxy in front of a cluster, routed by dbfleet's route checks (docs/ROUTING.md).
    #[command(subcommand)]
    Haproxy(haproxy_cmd::HaproxyCommand),
    /// The SQLite metadata store: check it (`PRAGMA quick_check`) or back it up, also while
    /// the daemon runs. Exit code 3 when it is damaged or unexpectedly empty.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Print a shell completion script: `dbfleet completions bash >
    /// /etc/bash_completion.d/dbfleet` (the package installs them).
    Completions(docs_cmd::CompletionsArgs),
    /// Write the man pages, one per command (`dbfleet.1`, `dbfleet-serve.1`, …), into a
    /// directory, or print dbfleet(1) (the package installs them).
    Man(docs_cmd::ManArgs),
}

/// An error with the exit code it maps to: 2 for bad input, 3 for a refused metadata store
/// (`store_cmd::EXIT_STORE_REFUSED`), 1 for everything else.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    pub(crate) error: anyhow::Error,
}

impl CliError {
    /// Bad input from the user: exit code 2.
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: e.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        Self {
            code: 1,
            error: e.into(),
        }
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`dbfleet events | head`), as Unix tools do, instead of
    // panicking in println!.
    // SAFETY: set before any thread starts; SIG_DFL installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // The event's fields at the top level, beside `timestamp`, `level`, `target` and
        // `message`; the span's fields (an operation's id) under `span`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sandbox(cmd) => sandbox_cmd::run(cmd).await,
            Command::Probe(args) => probe_cmd::run(args).await,
            Command::Doctor(args) => doctor_cmd::run(args).await,
            Command::Bench(cmd) => bench_cmd::run(cmd).await,
            Command::Drt(cmd) => drt_cmd::run(cmd).await,
            Command::Haproxy(cmd) => haproxy_cmd::run(cmd).await,
            Command::Store(cmd) => store_cmd::run(cmd).await,
            Command::Serve(args) => serve_cmd::serve(args).await,
            Command::Clusters { api, json } => client_cmd::clusters(&api, json).await,
            Command::Topology { cluster, api, json } => {
                client_cmd::topology(&api, &cluster, json).await
            }
            Command::Problems {
                cluster,
                history,
                limit,
                before,
                api,
                json,
            } => {
                let page = history.then_some(client_cmd::HistoryPage { limit, before });
                client_cmd::problems(&api, cluster.as_deref(), page, json).await
            }
            Command::Events {
                cluster,
                limit,
                api,
                json,
            } => client_cmd::events(&api, cluster.as_deref(), limit, json).await,
            Command::Config(cmd) => serve_cmd::config(cmd).await,
            Command::Completions(args) => docs_cmd::completions::<Cli>(args),
            Command::Man(args) => docs_cmd::man::<Cli>(args),
            Command::Failover { cluster, api, json } => {
                client_cmd::failover(&api, &cluster, json).await
            }
            Command::Switchover {
                cluster,
                to,
                api,
                json,
            } => client_cmd::switchover(&api, &cluster, to.as_deref(), json).await,
            Command::Rejoin {
                cluster,
                instance,
                api,
                json,
            } => client_cmd::rejoin(&api, &cluster, &instance, json).await,
            Command::Forget {
                cluster,
                instance,
                api,
                json,
            } => client_cmd::forget(&api, &cluster, &instance, json).await,
            Command::Recoveries { action, api, json } => {
                client_cmd::recoveries(&api, action, json).await
            }
            Command::Operations {
                cluster,
                state,
                limit,
                before,
                api,
                json,
            } => {
                let page = client_cmd::HistoryPage { limit, before };
                client_cmd::operations(&api, cluster.as_deref(), state.as_deref(), page, json).await
            }
            Command::Operation { id, api, json } => client_cmd::operation(&api, &id, json).await,
            Command::Alerts { api, json } => alert_cmd::alerts(&api, json).await,
            Command::Downtime {
                target,
                duration,
                reason,
                who,
                api,
                json,
            } => {
                alert_cmd::add_downtime(&api, &target, &duration, &reason, who.as_deref(), json)
                    .await
            }
            Command::Downtimes { api, json } => alert_cmd::downtimes(&api, json).await,
            Command::DowntimeRemove { id, api, json } => {
                alert_cmd::remove_downtime(&api, id, json).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            term::errln!("error: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}

/// Print a value as pretty JSON on stdout, every character a terminal acts on escaped.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    println!("{}", term::to_json_pretty(value)?);
    Ok(())
}
