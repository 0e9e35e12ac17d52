//! A simulated MariaDB fleet for scale benchmarks: N fake servers, laid out as clusters of a
//! primary and replicas on distinct loopback addresses, that answer exactly what dbfleet's
//! probe, liveness connection and heartbeat send, with realistic values that change over
//! time. Faults on demand: hang, refuse, heal, stop replication. See `docs/SIM.md`.
//!
//! *Invariant*: listens on loopback only, and is never a stand-in for a real server in a
//! behaviour test: it knows no SQL beyond the statements listed in `docs/SIM.md`.
//! *Boundary*: no dependency on the probe or the monitor; the tests use the real probe.
//!
//! Every server of a fleet runs on the caller's tokio runtime: one listener task per server
//! and one task per connection, and values are computed when asked, so an idle server costs
//! a listening socket and a few hundred bytes.

mod control;
mod server;
mod sql;
mod values;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use model::InstanceAddr;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use control::serve_control;
pub use server::Fault;
pub use values::VERSION;

use server::{ClusterState, Instance, Role};

/// How a fleet is laid out.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// How many clusters.
    pub clusters: usize,
    /// Replicas per cluster, beside the primary.
    pub replicas: usize,
    /// The first server's address; the others follow it, skipping `.0` and `.255`. Must be
    /// in 127.0.0.0/8; tests use 127.1.0.0/16.
    pub first_ip: Ipv4Addr,
    /// The port every server listens on.
    pub port: u16,
    /// Primaries report semi-sync on, with every running replica as a client.
    pub semi_sync: bool,
    /// Makes every value of the fleet; the same seed gives the same fleet.
    pub seed: u64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            clusters: 1,
            replicas: 2,
            first_ip: Ipv4Addr::new(127, 1, 0, 1),
            port: 3306,
            semi_sync: false,
            seed: 1,
        }
    }
}

/// One simulated cluster's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimCluster {
    /// `sim-NNNNN`.
    pub name: String,
    /// The primary.
    pub primary: InstanceAddr,
    /// The replicas, in order.
    pub replicas: Vec<InstanceAddr>,
}

impl SimCluster {
    /// The primary then the replicas.
    pub fn members(&self) -> impl Iterator<Item = &InstanceAddr> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

/// The `i`-th address after `first`, skipping last octets 0 and 255.
fn nth_ip(first: Ipv4Addr, i: usize) -> anyhow::Result<Ipv4Addr> {
    let mut n = u32::from(first);
    let mut left = i;
    loop {
        if !matches!(n & 0xff, 0 | 255) {
            if left == 0 {
                break;
            }
            left -= 1;
        }
        n = n
            .checked_add(1)
            .context("the fleet runs past the end of the address space")?;
    }
    let ip = Ipv4Addr::from(n);
    anyhow::ensure!(
        ip.is_loopback(),
        "{ip} is not a loopback address: the fleet must fit in 127.0.0.0/8"
    );
    Ok(ip)
}

/// The clusters a fleet with these options has, without starting it: server `i` of cluster
/// `c` (0 the primary) is the `c × (replicas + 1) + i`-th address.
pub fn layout(opts: &FleetOptions) -> anyhow::Result<Vec<SimCluster>> {
    let per = opts.replicas + 1;
    let addr = |k: usize| -> anyhow::Result<InstanceAddr> {
        Ok(InstanceAddr::new(
            nth_ip(opts.first_ip, k)?.to_string(),
            opts.port,
        ))
    };
    (0..opts.clusters)
        .map(|c| {
            Ok(SimCluster {
                name: format!("sim-{c:05}"),
                primary: addr(c * per)?,
                replicas: (1..per)
                    .map(|i| addr(c * per + i))
                    .collect::<anyhow::Result<_>>()?,
            })
        })
        .collect()
}

/// What every server of a fleet counts into.
pub(crate) struct Shared {
    pub(crate) t0: Instant,
    pub(crate) tracker: TaskTracker,
    pub(crate) connections: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) queries: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    unknown_count: AtomicU64,
    unknown_recent: Mutex<VecDeque<String>>,
    /// The probe interval to hold observes against, in ms; 0 before [`Fleet::track_probes`].
    interval_ms: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64 + 1
    }

    /// Record an observe batch on `inst`: count it, and count the intervals it went without.
    pub(crate) fn observed(&self, inst: &Instance) {
        let now = self.now_ms();
        inst.observes.fetch_add(1, Ordering::Relaxed);
        let prev = inst.last_observe_ms.swap(now, Ordering::Relaxed);
        let iv = self.interval_ms.load(Ordering::Relaxed);
        if iv > 0 && prev != 0 {
            let gap = now.saturating_sub(prev);
            inst.max_gap_ms.fetch_max(gap, Ordering::Relaxed);
            inst.missed.fetch_add(missed(gap, iv), Ordering::Relaxed);
        }
    }

    /// Count a statement the simulation does not know, keeping the last few for reports.
    pub(crate) fn unknown(&self, sql: &str) {
        self.unknown_count.fetch_add(1, Ordering::Relaxed);
        let mut recent = self
            .unknown_recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= 16 {
            recent.pop_front();
        }
        recent.push_back(sql.chars().take(200).collect());
    }
}

/// Intervals missed in a gap of `gap` ms between two observes, at `interval` ms: none up to
/// 1.5 intervals, then one per interval beyond the first, rounded.
fn missed(gap: u64, interval: u64) -> u64 {
    if gap * 2 <= interval * 3 {
        0
    } else {
        ((gap + interval / 2) / interval).saturating_sub(1)
    }
}

/// How regularly the probe observed the servers that have no fault, since
/// [`Fleet::track_probes`], as the servers saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProbeReport {
    /// The interval held against, in ms.
    pub interval_ms: u64,
    /// Servers with no fault now.
    pub healthy: u64,
    /// Observe batches those servers answered.
    pub observes: u64,
    /// Intervals they went without an observe, summed (a gap over 1.5 intervals counts).
    pub missed_intervals: u64,
    /// Healthy servers with at least one missed interval.
    pub servers_with_misses: u64,
    /// The longest gap between two observes of a healthy server (or since its last one).
    pub max_gap_ms: u64,
    /// Servers with a fault now (their gaps are not counted).
    pub faulty: u64,
}

/// A fleet's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SimStats {
    /// Servers in the fleet.
    pub servers: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Accepts that failed (out of file descriptors, usually).
    pub accept_errors: u64,
    /// Queries (COM_QUERY packets, each maybe several statements) answered or begun.
    pub queries: u64,
    /// Heartbeat writes on primaries.
    pub heartbeats: u64,
    /// Statements the simulation does not know: a test should expect 0.
    pub unknown_statements: u64,
    /// The last few of them.
    pub unknown_recent: Vec<String>,
}

/// A running simulated fleet. Dropping it stops every server.
pub struct Fleet {
    shared: Arc<Shared>,
    clusters: Vec<SimCluster>,
    instances: HashMap<SocketAddr, Arc<Instance>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("clusters", &self.clusters.len())
            .field("servers", &self.instances.len())
            .finish()
    }
}

impl Fleet {
    /// Bind every server's address and start serving on the current tokio runtime. Fails
    /// when an address is taken or not loopback.
    pub async fn start(opts: FleetOptions) -> anyhow::Result<Self> {
        let clusters = layout(&opts)?;
        let shared = Arc::new(Shared {
            t0: Instant::now(),
            tracker: TaskTracker::new(),
            connections: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            unknown_count: AtomicU64::new(0),
            unknown_recent: Mutex::default(),
            interval_ms: AtomicU64::new(0),
        });
        let cancel = CancellationToken::new();
        let mut instances = HashMap::new();
        let sock = |a: &InstanceAddr| -> anyhow::Result<SocketAddr> {
            let ip: IpAddr = a.host.parse().context("parse a sim address")?;
            Ok(SocketAddr::new(ip, a.port))
        };
        let per = (opts.replicas + 1) as u32;
        let mut members = Vec::new();
        for (ci, c) in clusters.iter().enumerate() {
            let cseed = values::mix(opts.seed ^ values::mix(ci as u64));
            let sid = |i: u32| 1 + ci as u32 * per + i;
            let replicas = c
                .replicas
                .iter()
                .enumerate()
                .map(|(i, a)| Ok((sock(a)?, sid(1 + i as u32))))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let state = Arc::new(ClusterState::new(
                sock(&c.primary)?,
                sid(0),
                replicas,
                cseed,
                opts.semi_sync,
            ));
            for (i, a) in c.members().enumerate() {
                let role = if i == 0 {
                    Role::Primary
                } else {
                    Role::Replica(i - 1)
                };
                let addr = sock(a)?;
                let inst = Arc::new(Instance::new(
                    addr,
                    sid(i as u32),
                    role,
                    state.clone(),
                    values::mix(cseed ^ i as u64),
                ));
                members.push(inst.clone());
                instances.insert(addr, inst);
            }
        }
        for inst in members {
            let listener = tokio::net::TcpListener::bind(inst.addr)
                .await
                .with_context(|| format!("listen on {}", inst.addr))?;
            shared.tracker.spawn(server::listen(
                inst,
                shared.clone(),
                Some(listener),
                cancel.clone(),
            ));
        }
        Ok(Self {
            shared,
            clusters,
            instances,
            cancel,
        })
    }

    /// The fleet's clusters.
    pub fn clusters(&self) -> &[SimCluster] {
        &self.clusters
    }

    /// Every server's address, cluster by cluster, primary first.
    pub fn addrs(&self) -> Vec<InstanceAddr> {
        self.clusters
            .iter()
            .flat_map(|c| c.members().cloned())
            .collect()
    }

    fn instance(&self, addr: &InstanceAddr) -> anyhow::Result<&Arc<Instance>> {
        let ip: IpAddr = addr
            .host
            .parse()
            .with_context(|| format!("{addr} is not a sim address"))?;
        self.instances
            .get(&SocketAddr::new(ip, addr.port))
            .with_context(|| format!("{addr} is not a server of this fleet"))
    }

    fn set_fault(&self, addr: &InstanceAddr, f: Fault) -> anyhow::Result<()> {
        self.instance(addr)?.fault.send_replace(f);
        Ok(())
    }

    /// The server keeps accepting TCP connections but sends no greeting and answers no
    /// statement, in flight or new, until healed: a stopped process, a full disk.
    pub fn hang(&self, addr: &InstanceAddr) -> anyhow::Result<()> {
        self.set_fault(addr, Fault::Hang)
    }

    /// The server stops listening (connects are refused) and resets its open connections,
    /// as a killed server does.
    pub fn refuse(&self, addr: &InstanceAddr) -> anyhow::Result<()> {
        self.set_fault(addr, Fault::Refuse)
    }

    /// Undo every fault of the server: it listens and answers again (hung statements are
    /// answered now), and its replication runs again.
    pub fn heal(&self, addr: &InstanceAddr) -> anyhow::Result<()> {
        self.set_fault(addr, Fault::None)?;
        self.start_replication(addr).or_else(|_| Ok(()))
    }

    /// The server's current fault.
    pub fn fault(&self, addr: &InstanceAddr) -> anyhow::Result<Fault> {
        Ok(*self.instance(addr)?.fault.borrow())
    }

    /// Stop a replica's IO and SQL threads: its GTID position and heartbeat freeze, `SHOW
    /// SLAVE STATUS` says `No`/`No` with a NULL lag, and its primary stops listing it.
    pub fn stop_replication(&self, addr: &InstanceAddr) -> anyhow::Result<()> {
        let inst = self.instance(addr)?;
        match inst.role {
            Role::Primary => anyhow::bail!("{addr} is a primary: it does not replicate"),
            Role::Replica(i) => {
                inst.cluster
                    .stop_replication(i, self.shared.t0.elapsed().as_secs_f64());
                Ok(())
            }
        }
    }

    /// Start a replica's replication again; it catches up at once.
    pub fn start_replication(&self, addr: &InstanceAddr) -> anyhow::Result<()> {
        let inst = self.instance(addr)?;
        match inst.role {
            Role::Primary => anyhow::bail!("{addr} is a primary: it does not replicate"),
            Role::Replica(i) => {
                inst.cluster.start_replication(i);
                Ok(())
            }
        }
    }

    /// Start holding every server's observes against `interval`, from now: see
    /// [`Fleet::probe_report`].
    pub fn track_probes(&self, interval: Duration) {
        let now = self.shared.now_ms();
        self.shared
            .interval_ms
            .store(interval.as_millis().max(1) as u64, Ordering::Relaxed);
        for inst in self.instances.values() {
            inst.observes.store(0, Ordering::Relaxed);
            inst.last_observe_ms.store(now, Ordering::Relaxed);
            inst.missed.store(0, Ordering::Relaxed);
            inst.max_gap_ms.store(0, Ordering::Relaxed);
        }
    }

    /// How regularly the servers without a fault were observed since
    /// [`Fleet::track_probes`]: the gap still open at this moment counts too.
    pub fn probe_report(&self) -> ProbeReport {
        let now = self.shared.now_ms();
        let iv = self.shared.interval_ms.load(Ordering::Relaxed);
        let mut r = ProbeReport {
            interval_ms: iv,
            ..ProbeReport::default()
        };
        for inst in self.instances.values() {
            if *inst.fault.borrow() != Fault::None {
                r.faulty += 1;
                continue;
            }
            r.healthy += 1;
            r.observes += inst.observes.load(Ordering::Relaxed);
            let open = now.saturating_sub(inst.last_observe_ms.load(Ordering::Relaxed));
            let m = inst.missed.load(Ordering::Relaxed) + if iv > 0 { missed(open, iv) } else { 0 };
            r.missed_intervals += m;
            r.servers_with_misses += u64::from(m > 0);
            r.max_gap_ms = r
                .max_gap_ms
                .max(inst.max_gap_ms.load(Ordering::Relaxed))
                .max(open);
        }
        r
    }

    /// The fleet's counters.
    pub fn stats(&self) -> SimStats {
        let s = &self.shared;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            servers: self.instances.len() as u64,
            connections: r(&s.connections),
            accept_errors: r(&s.accept_errors),
            queries: r(&s.queries),
            heartbeats: r(&s.heartbeats),
            unknown_statements: r(&s.unknown_count),
            unknown_recent: s
                .unknown_recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// Stop every server and wait for their tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_intervals_from_gaps() {
        assert_eq!(missed(1000, 1000), 0);
        assert_eq!(missed(1499, 1000), 0);
        assert_eq!(missed(1600, 1000), 1);
        assert_eq!(missed(3000, 1000), 2);
    }

    #[test]
    fn layout_skips_network_and_broadcast_octets() {
        let opts = FleetOptions {
            clusters: 100,
            replicas: 2,
            first_ip: Ipv4Addr::new(127, 1, 0, 250),
            ..FleetOptions::default()
        };
        let l = layout(&opts).unwrap();
        let all: Vec<String> = l
            .iter()
            .flat_map(|c| c.members())
            .map(|a| a.host.clone())
            .collect();
        assert_eq!(all.len(), 300);
        assert_eq!(
            &all[..7],
            [
                "127.1.0.250",
                "127.1.0.251",
                "127.1.0.252",
                "127.1.0.253",
                "127.1.0.254",
                "127.1.1.1",
                "127.1.1.2"
            ]
        );
        let uniq: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(uniq.len(), 300);
    }

    #[test]
    fn layout_stays_in_loopback() {
        let opts = FleetOptions {
            clusters: 2,
            first_ip: Ipv4Addr::new(127, 255, 255, 253),
            ..FleetOptions::default()
        };
        assert!(layout(&opts).is_err());
    }
}
