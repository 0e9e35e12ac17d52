//! Network faults: iptables rules on loopback, each fault in a chain of its own that OUTPUT
//! jumps to, and [`sweep`], the janitor for chains that crashed runs left behind.
//!
//! A fault's chain is `DBFLEET-DRT-<pid>-<n>`. The jump from OUTPUT matches only `-o lo -d
//! 127.0.0.0/8`, and every rule in the chain names the interface and the address again, so
//! a rule can never touch traffic that leaves the machine. Healing deletes the jump, then
//! flushes and deletes the chain.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use model::InstanceAddr;

use super::{guard_methods, lock, FaultError, FaultHandle, FaultKind};

/// Every chain this module makes starts with this.
pub const CHAIN_PREFIX: &str = "DBFLEET-DRT-";

/// How long an iptables command waits for the xtables lock (iptables-legacy), seconds.
const LOCK_WAIT_S: &str = "5";

/// Chains of this process whose fault is not healed yet; [`sweep`] leaves them alone.
static LIVE_CHAINS: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

/// Which traffic a [`NetworkFault`] drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkSpec {
    /// Every TCP packet to the address's port and from it, whoever sends it: the server is
    /// cut from every client, and replies on connections already open are dropped too. A
    /// server's own outgoing connections (a replica's IO thread to its source) are not cut:
    /// partition the source's port for that.
    Partition {
        /// The server's loopback address.
        addr: SocketAddr,
    },
    /// Only the TCP packets that processes running with group id `gid` send to the
    /// address's port, e.g. a control plane started under `setpriv --regid=GID`.
    CutFrom {
        /// The server's loopback address.
        addr: SocketAddr,
        /// The group id whose traffic is dropped.
        gid: u32,
    },
    /// Every TCP packet of one connection, both ways, e.g. a replica's replication stream
    /// from its source. Other connections between the same servers go on; a new connection
    /// (a replica that reconnects after `slave_net_timeout`) is not cut.
    Connection {
        /// The connecting side's address (its ephemeral port).
        client: SocketAddr,
        /// The listening side's address.
        server: SocketAddr,
    },
}

impl NetworkSpec {
    /// The addresses the rules name, each checked to be loopback.
    fn addrs(&self) -> Vec<SocketAddr> {
        match *self {
            Self::Partition { addr } | Self::CutFrom { addr, .. } => vec![addr],
            Self::Connection { client, server } => vec![client, server],
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Partition { addr } => format!("partition {addr}"),
            Self::CutFrom { addr, gid } => format!("cut gid {gid} from {addr}"),
            Self::Connection { client, server } => {
                format!("drop the connection {client} ↔ {server}")
            }
        }
    }

    /// The rules of the chain, without `-A CHAIN`.
    fn rules(&self) -> Vec<Vec<String>> {
        let rule = |ip: &IpAddr, ports: &[(&str, u16)], gid: Option<u32>| -> Vec<String> {
            let mut r: Vec<String> = ["-o", "lo", "-p", "tcp", "-d"].map(String::from).to_vec();
            r.push(ip.to_string());
            for (flag, port) in ports {
                r.push(flag.to_string());
                r.push(port.to_string());
            }
            if let Some(gid) = gid {
                r.extend(["-m", "owner", "--gid-owner"].map(String::from));
                r.push(gid.to_string());
            }
            r.extend(["-j", "DROP"].map(String::from));
            r
        };
        match *self {
            Self::Partition { addr } => vec![
                rule(&addr.ip(), &[("--dport", addr.port())], None),
                rule(&addr.ip(), &[("--sport", addr.port())], None),
            ],
            Self::CutFrom { addr, gid } => {
                vec![rule(&addr.ip(), &[("--dport", addr.port())], Some(gid))]
            }
            // One rule per direction: to the server from the client's port, and back.
            Self::Connection { client, server } => vec![
                rule(
                    &server.ip(),
                    &[("--sport", client.port()), ("--dport", server.port())],
                    None,
                ),
                rule(
                    &client.ip(),
                    &[("--sport", server.port()), ("--dport", client.port())],
                    None,
                ),
            ],
        }
    }
}

/// The socket address of a loopback instance, or [`FaultError::NotLoopback`].
pub fn loopback_addr(addr: &InstanceAddr) -> Result<SocketAddr, FaultError> {
    let ip: IpAddr = addr.host.parse().map_err(|_| FaultError::NotLoopback {
        addr: addr.to_string(),
    })?;
    let sa = SocketAddr::new(ip, addr.port);
    check_loopback(sa)?;
    Ok(sa)
}

/// Refuse any address outside 127.0.0.0/8.
pub(crate) fn check_loopback(addr: SocketAddr) -> Result<(), FaultError> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ok(()),
        _ => Err(FaultError::NotLoopback {
            addr: addr.to_string(),
        }),
    }
}

/// A network fault: a firewall chain that drops the traffic its [`NetworkSpec`] names.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct NetworkFault {
    handle: FaultHandle,
    chain: String,
    spec: NetworkSpec,
}

impl NetworkFault {
    /// Add the rules. Needs root and the `iptables` program. The address must be in
    /// 127.0.0.0/8. On failure nothing is left behind.
    pub fn inject(spec: NetworkSpec) -> Result<Self, FaultError> {
        for a in spec.addrs() {
            check_loopback(a)?;
        }
        if !may_change_firewall() {
            return Err(FaultError::NeedsNetAdmin {
                uid: nix::unistd::geteuid().as_raw(),
            });
        }
        let chain = format!(
            "{CHAIN_PREFIX}{}-{}",
            std::process::id(),
            NEXT_CHAIN.fetch_add(1, Ordering::Relaxed)
        );
        let kind = match spec {
            NetworkSpec::Partition { .. } => FaultKind::Partition,
            NetworkSpec::CutFrom { .. } => FaultKind::CutFrom,
            NetworkSpec::Connection { .. } => FaultKind::Stall,
        };
        lock(&LIVE_CHAINS)
            .get_or_insert_with(HashSet::new)
            .insert(chain.clone());
        // Registered first: an interruption while the rules go in still removes them.
        let heal_chain = chain.clone();
        let handle = FaultHandle::register(
            kind,
            format!("{} (chain {chain})", spec.describe()),
            Box::new(move || {
                remove_chain(&heal_chain)?;
                if let Some(live) = lock(&LIVE_CHAINS).as_mut() {
                    live.remove(&heal_chain);
                }
                Ok(None)
            }),
        );
        let fault = Self {
            handle,
            chain: chain.clone(),
            spec,
        };
        // On an error, dropping `fault` removes whatever was added.
        iptables(&["-N", &chain])?;
        for rule in spec.rules() {
            let mut args = vec!["-A".to_string(), chain.clone()];
            args.extend(rule);
            iptables(&args)?;
        }
        iptables(&jump_rule("-I", &chain))?;
        fault.handle.mark_injected();
        Ok(fault)
    }

    /// The chain that holds the rules.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// What the fault drops.
    pub fn spec(&self) -> NetworkSpec {
        self.spec
    }
}

guard_methods!(NetworkFault);

/// Whether this process may change iptables rules: root, or `CAP_NET_ADMIN` in its
/// effective set (`CapEff` in /proc/self/status, bit 12).
pub fn may_change_firewall() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The rule in OUTPUT that sends loopback traffic to `chain`.
fn jump_rule(op: &str, chain: &str) -> Vec<String> {
    let mut r = vec![op.to_string(), "OUTPUT".into()];
    if op == "-I" {
        r.push("1".into());
    }
    r.extend(["-o", "lo", "-d", "127.0.0.0/8", "-j", chain].map(String::from));
    r
}

/// What [`sweep`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Chains removed: their process is gone, or it is this process and no fault holds them.
    pub removed: Vec<String>,
    /// Chains kept: another live process owns them, or a fault of this process holds them.
    pub kept: Vec<String>,
}

/// Remove every `DBFLEET-DRT-*` chain (and the jumps to it) whose process no longer runs,
/// and every chain of this process that no unhealed fault holds. Chains of other live
/// processes, e.g. tests running in parallel, are left alone. Needs root.
pub fn sweep() -> Result<SweepReport, FaultError> {
    let me = std::process::id();
    let live: HashSet<String> = lock(&LIVE_CHAINS).clone().unwrap_or_default();
    let mut report = SweepReport::default();
    for chain in our_chains()? {
        let owner = chain
            .strip_prefix(CHAIN_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let orphan = match owner {
            Some(pid) if pid == me => !live.contains(&chain),
            Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            // Not a name this module makes: leave it to a human.
            None => false,
        };
        if orphan {
            remove_chain(&chain)?;
            report.removed.push(chain);
        } else {
            report.kept.push(chain);
        }
    }
    Ok(report)
}

/// The names of the `DBFLEET-DRT-*` chains in the filter table.
fn our_chains() -> Result<Vec<String>, FaultError> {
    Ok(iptables(&["-S"])?
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| c.starts_with(CHAIN_PREFIX))
        .map(str::to_string)
        .collect())
}

/// Delete every jump to `chain` from OUTPUT, then flush and delete it. Idempotent: a chain
/// that does not exist is healed already.
fn remove_chain(chain: &str) -> Result<(), FaultError> {
    for line in iptables(&["-S", "OUTPUT"])?.lines() {
        let mut args: Vec<&str> = line.split_whitespace().collect();
        let jumps =
            args.first() == Some(&"-A") && args.windows(2).any(|w| w[0] == "-j" && w[1] == chain);
        if jumps {
            args[0] = "-D";
            iptables(&args)?;
        }
    }
    if !our_chains()?.iter().any(|c| c == chain) {
        return Ok(());
    }
    let flushed = iptables(&["-F", chain]).and_then(|_| iptables(&["-X", chain]));
    match flushed {
        // Another sweeper (a second run, a test in parallel) removed it first: done.
        Err(_) if !our_chains()?.iter().any(|c| c == chain) => Ok(()),
        other => other.map(drop),
    }
}

/// Run `iptables -w 5 ARGS` and return its standard output. A command that lost a race
/// with another process changing the rules at the same moment is tried again.
fn iptables<S: AsRef<str>>(args: &[S]) -> Result<String, FaultError> {
    let mut attempt = 1;
    loop {
        match iptables_once(args) {
            Err(FaultError::Iptables { detail, .. })
                if attempt < 3
                    && (detail.contains("temporarily unavailable")
                        || detail.contains("xtables lock")) =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

fn iptables_once<S: AsRef<str>>(args: &[S]) -> Result<String, FaultError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let shown = args.join(" ");
    let out = Command::new("iptables")
        .args(["-w", LOCK_WAIT_S])
        .args(&args)
        .output()
        .map_err(|e| FaultError::Iptables {
            args: shown.clone(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                "iptables is not installed: apt-get install -y iptables".into()
            } else {
                format!("cannot run iptables: {e}")
            },
        })?;
    if !out.status.success() {
        return Err(FaultError::Iptables {
            args: shown,
            detail: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
