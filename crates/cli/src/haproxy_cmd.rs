//! `dbfleet haproxy …`: HAProxy in front of a cluster, routed by dbfleet's route checks
//! (`docs/ROUTING.md`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::term::out;
use crate::CliError;

/// HAProxy subcommands.
#[derive(Subcommand, Debug)]
pub enum HaproxyCommand {
    /// Print a ready haproxy.cfg for CLUSTER: a writer frontend and backend (the primary
    /// only) and a reader frontend and backend (the replicas within max_lag), every server
    /// health-checked against dbfleet's route checks (/api/v1/route/…, every 500ms, down
    /// after 2 failures, up after 1 success, sessions cut when a server goes down), and the
    /// Runtime API's stats socket. The servers are the cluster's declared instances; the
    /// checks go to the config's [api] listen address. Check it with `haproxy -c -f FILE`.
    Config(ConfigArgs),
}

/// Arguments of `dbfleet haproxy config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The cluster: a `[[cluster]] name` of the config file.
    pub cluster: String,
    /// The dbfleet config file: the cluster's instances and the API's address.
    #[arg(long, short, env = "DBFLEET_CONFIG")]
    pub config: PathBuf,
    /// Where clients connect to write.
    #[arg(long, default_value = "127.0.0.1:6446")]
    pub writer_bind: SocketAddr,
    /// Where clients connect to read.
    #[arg(long, default_value = "127.0.0.1:6447")]
    pub reader_bind: SocketAddr,
    /// The Runtime API's unix socket (`stats socket`).
    #[arg(long, default_value = "/run/haproxy/dbfleet.sock")]
    pub stats_socket: PathBuf,
    /// Where HAProxy reaches dbfleet's API for the checks (IP:PORT). Default: the config's
    /// `[api] listen`, on loopback when it listens on every address (0.0.0.0 or ::).
    #[arg(long, value_name = "IP:PORT")]
    pub check_api: Option<SocketAddr>,
}

/// Where the checks go for an API listening on `listen`: the same address, or loopback for
/// an unspecified one.
pub fn check_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The generator's options for `cluster` of `cfg`.
pub fn options(
    cfg: &config::Config,
    cluster: &str,
    writer_bind: SocketAddr,
    reader_bind: SocketAddr,
    stats_socket: PathBuf,
    check_api: Option<SocketAddr>,
) -> Result<config::HaproxyOptions, CliError> {
    let c = cfg
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
            CliError::usage(anyhow::anyhow!(
                "no cluster named {cluster:?} in the config (it has: {})",
                names.join(", ")
            ))
        })?;
    if writer_bind == reader_bind {
        return Err(CliError::usage(anyhow::anyhow!(
            "--writer-bind and --reader-bind are both {writer_bind}: give each its own"
        )));
    }
    Ok(config::HaproxyOptions {
        cluster: c.name.clone(),
        members: c.instances.iter().map(|i| i.addr.clone()).collect(),
        api: check_api.unwrap_or_else(|| check_target(cfg.api.listen)),
        writer_bind,
        reader_bind,
        stats_socket,
    })
}

/// Run a haproxy subcommand.
pub async fn run(cmd: HaproxyCommand) -> Result<(), CliError> {
    match cmd {
        HaproxyCommand::Config(a) => {
            let cfg = crate::serve_cmd::load(&a.config)?;
            let opts = options(
                &cfg,
                &a.cluster,
                a.writer_bind,
                a.reader_bind,
                a.stats_socket,
                a.check_api,
            )?;
            let text = config::haproxy_config(&opts).map_err(CliError::usage)?;
            out!("{text}");
            Ok(())
        }
    }
}
