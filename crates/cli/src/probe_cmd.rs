//! `dbfleet probe HOST:PORT`: one observation of one server.

use std::time::Duration;

use model::{GtidState, InstanceAddr, Observation, Reachability, ServerState};
use probe::ProbeOptions;

use crate::creds::CredentialArgs;
use crate::term::{escape, out};
use crate::{print_json, CliError};

/// Arguments of `dbfleet probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The server, as HOST:PORT.
    pub addr: String,
    #[command(flatten)]
    pub creds: CredentialArgs,
    /// Connect timeout (humantime: `500ms`, `2s`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Query timeout.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the observation as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `dbfleet probe`. Exit code 1 when the server could not be observed.
pub async fn run(args: ProbeArgs) -> Result<(), CliError> {
    let addr: InstanceAddr = args.addr.parse().map_err(CliError::usage)?;
    let creds = args.creds.load().map_err(CliError::usage)?;
    let opts = ProbeOptions {
        connect_timeout: args.connect_timeout,
        query_timeout: args.timeout,
    };
    let obs = probe::observe(&addr, &creds, opts).await;
    if args.json {
        print_json(&obs)?;
    } else {
        out!("{}", render(&obs));
    }
    match obs.failure() {
        None => Ok(()),
        Some(f) => {
            Err(anyhow::anyhow!("{addr}: probe failed ({}): {}", f.kind, escape(&f.message)).into())
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "OFF"
    }
}

fn or_empty(s: String) -> String {
    if s.is_empty() {
        "(empty)".into()
    } else {
        s
    }
}

/// The human rendering of one observation.
pub fn render(obs: &Observation) -> String {
    let took = format!("{:.1} ms", obs.duration_us as f64 / 1000.0);
    match &obs.reachability {
        Reachability::Unreachable(f) => {
            format!(
                "{}  UNREACHABLE ({}): {}  [probe {took}]\n",
                obs.addr,
                f.kind,
                escape(&f.message)
            )
        }
        Reachability::Reachable(s) => render_state(obs, s, &took),
    }
}

fn render_state(obs: &Observation, s: &ServerState, took: &str) -> String {
    let mut out = format!(
        "{}  {} {}  server_id={}  read_only={}  [probe {took}]\n",
        obs.addr,
        s.flavor,
        escape(&s.version),
        s.server_id,
        on_off(s.read_only)
    );
    out += &format!(
        "  uptime {}s  threads connected={} running={}  log_bin={} log_slave_updates={}\n",
        s.uptime_s,
        s.threads_connected,
        s.threads_running,
        on_off(s.log_bin),
        on_off(s.log_replica_updates)
    );
    match &s.gtid {
        GtidState::Mariadb {
            current_pos,
            binlog_pos,
            slave_pos,
            binlog_state,
            strict_mode,
        } => {
            out += &format!(
                "  gtid  current_pos={}  binlog_pos={}  slave_pos={}  strict_mode={}\n",
                or_empty(current_pos.to_string()),
                or_empty(binlog_pos.to_string()),
                or_empty(slave_pos.to_string()),
                on_off(*strict_mode)
            );
            out += &format!(
                "        binlog_state={}\n",
                or_empty(binlog_state.to_string())
            );
        }
        GtidState::Mysql {
            enabled,
            executed,
            purged,
        } => {
            out += &format!(
                "  gtid  mode={}  executed={}  purged={}\n",
                on_off(*enabled),
                or_empty(executed.to_string()),
                or_empty(purged.to_string())
            );
        }
    }
    let ss = &s.semi_sync;
    out += &format!(
        "  semi-sync  source enabled={} active={} clients={} timeout={}  replica enabled={} active={}\n",
        on_off(ss.source_enabled),
        on_off(ss.source_active),
        ss.source_clients,
        ss.source_timeout_ms.map(|t| format!("{t}ms")).unwrap_or_else(|| "?".into()),
        on_off(ss.replica_enabled),
        on_off(ss.replica_active)
    );
    match &s.replication {
        None => out += "  replication  none (replicates from no one)\n",
        Some(r) => {
            out += &format!(
                "  replication  from {}  io={} sql={}  lag={}  delay={}s  gtid={}  received={}\n",
                r.source,
                r.io_thread,
                if r.sql_running { "Yes" } else { "No" },
                r.seconds_behind_source
                    .map(|l| format!("{l}s"))
                    .unwrap_or_else(|| "NULL".into()),
                r.sql_delay_s,
                if r.using_gtid { "yes" } else { "no" },
                or_empty(r.received_gtid.clone())
            );
            if r.last_io_errno != 0 {
                out += &format!(
                    "    last IO error {}: {}\n",
                    r.last_io_errno,
                    escape(&r.last_io_error)
                );
            }
            if r.last_sql_errno != 0 {
                out += &format!(
                    "    last SQL error {}: {}\n",
                    r.last_sql_errno,
                    escape(&r.last_sql_error)
                );
            }
        }
    }
    out
}
