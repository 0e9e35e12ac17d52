//! `dbfleet sandbox …`: local MariaDB replication sets on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use sandbox::{MemberStatus, Sandbox, SandboxError, Started, UpOptions};
use serde::Serialize;

use crate::term::outln;
use crate::{print_json, CliError};

/// Where sandboxes live.
#[derive(Args, Debug, Clone)]
pub struct RootArg {
    /// The directory that holds sandboxes (one folder per sandbox). Default:
    /// $DBFLEET_SANDBOX_DIR, else ~/.local/share/dbfleet/sandboxes.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl RootArg {
    fn root(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(sandbox::default_root)
    }
}

/// Sandbox subcommands.
#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Make and start a sandbox: 1 primary and N replicas with GTID replication. Running it
    /// again on an existing sandbox starts the members that are down.
    Up {
        /// Sandbox name.
        #[arg(long)]
        name: String,
        /// Number of replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Switch on semi-synchronous replication (AFTER_SYNC, 5 s timeout).
        #[arg(long)]
        semi_sync: bool,
        /// The primary's port; member i listens on base-port + i.
        #[arg(long, default_value_t = 23306)]
        base_port: u16,
        /// Put each member's datadir on a loop-mounted ext4 filesystem of its own, of MIB
        /// MiB (default 256), for the disk-fault DR tests (`stall-primary-disk`,
        /// `fill-primary-disk`, `stall-replica-disk`). Needs root and a free loop device
        /// per member; `down` unmounts them.
        #[arg(long, value_name = "MIB", num_args = 0..=1, default_missing_value = "256")]
        loop_datadirs: Option<u32>,
        /// TLS everywhere: the sandbox makes a CA and a server certificate (in DIR/tls),
        /// its members take no plain TCP connection (`require_secure_transport=ON`),
        /// replication included, and the config it writes sets the cluster's
        /// `tls = "verify_identity"` with that CA.
        #[arg(long)]
        tls: bool,
        /// Also start Debian's haproxy on loopback in front of the set: writes on
        /// --haproxy-port, reads on the port after it, each server checked against the route
        /// checks of the daemon the sandbox's dbfleet.toml names (`[api] listen`; edit it
        /// before, and run `up --haproxy` again on a running sandbox to add the proxy). The
        /// config and the Runtime API's socket are in DIR/NAME/haproxy/; `down` stops it.
        #[arg(long)]
        haproxy: bool,
        /// The writer port of --haproxy; reads are on the next port. Default: base-port + 100.
        #[arg(long, value_name = "PORT", requires = "haproxy")]
        haproxy_port: Option<u16>,
        #[command(flatten)]
        root: RootArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show each member: address, role, process.
    Status {
        /// Sandbox name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        root: RootArg,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a member cleanly (SIGTERM).
    Stop(MemberArgs),
    /// Start a stopped member; a replica resumes replication.
    ///
    /// Replicas come up read-only. The first primary comes up writable only when every
    /// other running member is read-only: after a failover it comes back read-only, for
    /// `dbfleet rejoin` to make it a replica, and never as a second writable primary. While
    /// another member is writable, a member boots as a replica (`--init-rpl-role=SLAVE`),
    /// so crash recovery drops a write it never acknowledged.
    Start(MemberArgs),
    /// Kill a member with SIGKILL, as a crash would.
    Kill(MemberArgs),
    /// Stop every member and remove the sandbox directory.
    Down {
        /// Sandbox name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        root: RootArg,
    },
}

/// A sandbox and one of its members.
#[derive(Args, Debug)]
pub struct MemberArgs {
    /// Sandbox name.
    pub name: String,
    /// Member name (m1, m2, …).
    pub member: String,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Serialize)]
struct UpReport<'a> {
    name: &'a str,
    outcome: sandbox::UpOutcome,
    dir: PathBuf,
    credentials_file: PathBuf,
    config_file: PathBuf,
    seconds: f64,
    members: Vec<MemberStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    haproxy: Option<HaproxyReport>,
}

/// The HAProxy `up --haproxy` runs in front of the sandbox.
#[derive(Serialize)]
struct HaproxyReport {
    pid: i32,
    writer: SocketAddr,
    reader: SocketAddr,
    stats_socket: PathBuf,
    config_file: PathBuf,
}

fn usage_or_runtime(e: SandboxError) -> CliError {
    match e {
        SandboxError::Invalid(_) | SandboxError::NoSuchMember { .. } => CliError::usage(e),
        other => other.into(),
    }
}

/// Run a sandbox subcommand.
pub async fn run(cmd: SandboxCommand) -> Result<(), CliError> {
    match cmd {
        SandboxCommand::Up {
            name,
            replicas,
            semi_sync,
            base_port,
            loop_datadirs,
            tls,
            haproxy,
            haproxy_port,
            root,
            json,
        } => {
            let started = Instant::now();
            let haproxy_ports = if haproxy {
                let writer = match haproxy_port {
                    Some(p) => Some(p),
                    None => base_port.checked_add(100),
                };
                match writer.and_then(|w| w.checked_add(1).map(|r| (w, r))) {
                    Some((w, r)) if w > 0 => Some((w, r)),
                    _ => {
                        return Err(CliError::usage(SandboxError::Invalid(
                            "--haproxy needs two ports: pass a --haproxy-port below 65535".into(),
                        )))
                    }
                }
            } else {
                None
            };
            if loop_datadirs.is_some_and(|mb| !(32..=65536).contains(&mb)) {
                return Err(CliError::usage(SandboxError::Invalid(
                    "--loop-datadirs takes a size in MiB from 32 to 65536".into(),
                )));
            }
            let opts = UpOptions {
                name: name.clone(),
                replicas,
                semi_sync,
                base_port,
                root: root.root(),
                tuning: sandbox::Tuning {
                    loop_datadir_mb: loop_datadirs.unwrap_or(0),
                    tls,
                    ..Default::default()
                },
            };
            let (sb, outcome) = Sandbox::up(&opts).await.map_err(usage_or_runtime)?;
            let config_file = write_config(&sb)?;
            let haproxy = match haproxy_ports {
                Some((w, r)) => Some(start_haproxy(&sb, &config_file, w, r)?),
                None => None,
            };
            let report = UpReport {
                name: &name,
                outcome,
                dir: sb.dir().to_path_buf(),
                credentials_file: sb.admin_credentials_file(),
                config_file,
                seconds: started.elapsed().as_secs_f64(),
                members: sb.status(),
                haproxy,
            };
            if json {
                print_json(&report)?;
            } else {
                let verb = match outcome {
                    sandbox::UpOutcome::Created => "created",
                    sandbox::UpOutcome::Started => "started",
                    sandbox::UpOutcome::AlreadyRunning => "already running",
                };
                outln!(
                    "sandbox {name} {verb} in {:.2}s ({}, semi-sync {})",
                    report.seconds,
                    sb.dir().display(),
                    if sb.manifest().semi_sync { "on" } else { "off" }
                );
                print_members(&report.members);
                if let Some(h) = &report.haproxy {
                    outln!(
                        "haproxy: writes on {}, reads on {} (pid {}, stats socket {})",
                        h.writer,
                        h.reader,
                        h.pid,
                        h.stats_socket.display()
                    );
                }
                outln!("credentials: {}", report.credentials_file.display());
                outln!(
                    "config: {}  (run: dbfleet serve --config {})",
                    report.config_file.display(),
                    report.config_file.display()
                );
            }
            Ok(())
        }
        SandboxCommand::Status { name, root, json } => {
            let sb = Sandbox::open(&root.root(), &name).map_err(usage_or_runtime)?;
            let members = sb.status();
            if json {
                print_json(&members)?;
            } else {
                outln!("sandbox {name} ({})", sb.dir().display());
                print_members(&members);
                if let Some(pid) = sandbox::haproxy::running_pid(sb.dir()) {
                    outln!(
                        "haproxy: pid {pid}, config {}",
                        sandbox::haproxy::config_path(sb.dir()).display()
                    );
                }
            }
            Ok(())
        }
        SandboxCommand::Stop(a) => {
            let sb = Sandbox::open(&a.root.root(), &a.name).map_err(usage_or_runtime)?;
            let was = sb.stop(&a.member).map_err(usage_or_runtime)?;
            outln!(
                "{} {}",
                a.member,
                if was { "stopped" } else { "was not running" }
            );
            Ok(())
        }
        SandboxCommand::Kill(a) => {
            let sb = Sandbox::open(&a.root.root(), &a.name).map_err(usage_or_runtime)?;
            let was = sb.kill(&a.member).map_err(usage_or_runtime)?;
            outln!(
                "{} {}",
                a.member,
                if was { "killed" } else { "was not running" }
            );
            Ok(())
        }
        SandboxCommand::Start(a) => {
            let sb = Sandbox::open(&a.root.root(), &a.name).map_err(usage_or_runtime)?;
            let started = sb.start(&a.member).await.map_err(usage_or_runtime)?;
            match started {
                Started::AlreadyRunning => outln!("{} already running", a.member),
                Started::Writable => outln!("{} started writable", a.member),
                Started::ReadOnly { why } if why.is_empty() => {
                    outln!("{} started read-only", a.member)
                }
                Started::ReadOnly { why } => outln!(
                    "{} started read-only, not as the primary it was: {}",
                    a.member,
                    why.join("; ")
                ),
            }
            Ok(())
        }
        SandboxCommand::Down { name, root } => {
            let existed = Sandbox::down(&root.root(), &name).map_err(usage_or_runtime)?;
            if existed {
                outln!("sandbox {name} removed");
            } else {
                outln!("no sandbox named {name}: nothing to do");
            }
            Ok(())
        }
    }
}

/// Start HAProxy in front of `sb` with the config `dbfleet haproxy config` would print for
/// it, its checks going to the API `config_file` names.
fn start_haproxy(
    sb: &Sandbox,
    config_file: &std::path::Path,
    writer: u16,
    reader: u16,
) -> Result<HaproxyReport, CliError> {
    let cfg = crate::serve_cmd::load(config_file)?;
    let writer = SocketAddr::from(([127, 0, 0, 1], writer));
    let reader = SocketAddr::from(([127, 0, 0, 1], reader));
    let stats_socket = sandbox::haproxy::socket_path(sb.dir());
    let opts = crate::haproxy_cmd::options(
        &cfg,
        &sb.manifest().name,
        writer,
        reader,
        stats_socket.clone(),
        None,
    )?;
    let text = config::haproxy_config(&opts).map_err(CliError::usage)?;
    let pid = sandbox::haproxy::start(sb.dir(), &text).map_err(usage_or_runtime)?;
    Ok(HaproxyReport {
        pid,
        writer,
        reader,
        stats_socket,
        config_file: sandbox::haproxy::config_path(sb.dir()),
    })
}

/// Write a ready-to-use `dbfleet.toml` for the sandbox, unless one is there already (an
/// operator may have edited it).
fn write_config(sb: &Sandbox) -> Result<PathBuf, CliError> {
    let path = sb.dir().join("dbfleet.toml");
    if !path.exists() {
        let instances: Vec<_> = sb
            .manifest()
            .members
            .iter()
            .map(|m| (m.addr(), m.role == sandbox::Role::Primary))
            .collect();
        let text = config::sandbox_config(
            &sb.manifest().name,
            &sb.dir().join("daemon"),
            &sb.admin_credentials_file(),
            &sb.repl_credentials_file(),
            &instances,
            sb.manifest().semi_sync,
            sb.manifest()
                .tuning
                .tls
                .then(|| sandbox::tls::ca_file(sb.dir()))
                .as_deref(),
        );
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    }
    Ok(path)
}

fn print_members(members: &[MemberStatus]) {
    outln!(
        "  {:<4} {:<8} {:<17} {:<9} {:>8}",
        "NAME",
        "ROLE",
        "ADDRESS",
        "SERVER_ID",
        "PID"
    );
    for m in members {
        outln!(
            "  {:<4} {:<8} {:<17} {:<9} {:>8}",
            m.name,
            m.initial_role.to_string(),
            m.addr.to_string(),
            m.server_id,
            m.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "stopped".into())
        );
    }
}
