//! The DRT runner: run one [`Scenario`] against a local sandbox under load, inject and heal
//! its faults on time, watch the guardrails, verify the ledger and read the control plane's
//! events, then build a [`RunResult`].
//!
//! *Invariant*: every fault injected here is held by a [`FaultSet`]; it is healed explicitly
//! when the load ends or the run aborts, and again by the set's `Drop` on any other path
//! (an early return, a panic). A process-wide signal hook ([`faults::install_signal_heal`],
//! installed by the CLI) heals on Ctrl-C and SIGTERM.

use std::time::{Duration, Instant};

use model::gtid::MariadbGtidList;
use model::{GtidState, InstanceAddr, ServerState};
use probe::{Credentials, ProbeOptions, Session};
use sandbox::Sandbox;
use tokio_util::sync::CancellationToken;

use crate::faults::{
    self, loopback_addr, DiskFault, DiskSpec, FaultHandle, FaultSet, NetworkFault, NetworkSpec,
    ProcessFault, ProcessSpec, ProxyFaults, ReplicationFault, ReplicationSpec, SlowReplica,
};
use crate::load::{self, Ledger, LoadOptions, VerifyOptions};
use crate::report::{EventKind, RunParts, RunResult, TimelineEvent};
use crate::scenario::{FaultKind as ScenarioFaultKind, Scenario, StepAction, Target};

mod guard;
mod repair;

pub use guard::mute;
pub use repair::discard_unacknowledged;

/// Where a scenario runs: a local sandbox (process faults need its processes). Its `Debug`
/// leaves the token out.
#[derive(Clone)]
pub struct RunTarget {
    /// The sandbox that holds the cluster.
    pub sandbox: Sandbox,
    /// The cluster's members; the load's candidates and the servers verified.
    pub members: Vec<InstanceAddr>,
    /// An account that reads `read_only`, creates the ledger table and reads it back.
    pub admin: Credentials,
    /// The application account the writers use.
    pub app: Credentials,
    /// The daemon's API base URL, to read its events for detection and failover times;
    /// `None`: client-side figures only.
    pub api: Option<String>,
    /// The group id the control plane runs under, for
    /// `partition_control_plane_from_primary`.
    pub control_plane_gid: Option<u32>,
    /// An API token, for faults that ask the control plane to act (`switchover`). Never
    /// logged or reported.
    pub token: Option<String>,
}

impl std::fmt::Debug for RunTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTarget")
            .field("sandbox", &self.sandbox.manifest().name)
            .field("members", &self.members)
            .field("admin", &self.admin)
            .field("app", &self.app)
            .field("api", &self.api)
            .field("control_plane_gid", &self.control_plane_gid)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a run could not be done (a run that ran but failed its expectations is a
/// [`RunResult`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The target lacks something the scenario needs.
    #[error("{0}")]
    Target(String),
    /// No writable primary to prepare the ledger on.
    #[error("no writable primary among {0}")]
    NoPrimary(String),
    /// Preparing the ledger table failed.
    #[error("prepare the ledger: {0}")]
    Prepare(#[from] crate::DrtError),
}

/// Probe timeouts for the runner's own looks at the servers.
const LOOK: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_millis(400),
    query_timeout: Duration::from_millis(800),
};
/// How long to wait after the load for exactly one writable primary.
const WRITER_WAIT: Duration = Duration::from_secs(20);
/// How long replicas get to catch up before verification.
const CATCH_UP: Duration = Duration::from_secs(8);

/// What one probe of a member found: its state when reachable.
#[derive(Clone, Debug)]
pub struct Look {
    /// The member.
    pub addr: InstanceAddr,
    /// Its state, `None` when unreachable.
    pub state: Option<ServerState>,
    /// Its IO thread runs but was killed and is on its way out
    /// ([`probe::Session::io_thread_killed`]): it acknowledges nothing more. Read only when
    /// the IO thread runs.
    pub io_killed: bool,
    /// When the full read failed or hung on a member that accepted the connection: its
    /// write gate (`read_only` and semi-sync), read alone on a connection of its own
    /// ([`probe::Session::write_gate`]). A frozen disk can hang the full read of a server
    /// that still takes writes; the guard must still judge it.
    pub gate: Option<probe::parse::WriteGate>,
}

impl Look {
    /// Reachable and `read_only=OFF`, by the full read or else by the write gate.
    pub fn writable(&self) -> bool {
        match (&self.state, &self.gate) {
            (Some(s), _) => !s.read_only,
            (None, Some(g)) => !g.read_only,
            (None, None) => false,
        }
    }

    /// Its semi-sync state, by the full read or else by the write gate.
    pub fn semi_sync(&self) -> Option<&model::SemiSyncState> {
        match (&self.state, &self.gate) {
            (Some(s), _) => Some(&s.semi_sync),
            (None, Some(g)) => Some(&g.semi_sync),
            (None, None) => None,
        }
    }
}

/// Probe every member at once. A look that a slow member held up (a frozen one waits out
/// the connect timeout) reads the members that answered again at its end, so that what it
/// says of them is as recent as the look: the guard judges a writable member by what the
/// others did at the previous look, and a read taken a second before that look ended
/// would hide a change (a replica detached from the old primary meanwhile).
pub async fn look_all(members: &[InstanceAddr], admin: &Credentials) -> Vec<Look> {
    look_all_since(members, admin).await.1
}

/// [`look_all`], and when the reads it kept of the members that answered started (epoch
/// ms).
pub async fn look_all_since(members: &[InstanceAddr], admin: &Credentials) -> (u64, Vec<Look>) {
    let mut since = crate::faults::now_ms();
    let started = std::time::Instant::now();
    let mut looks = read_all(members, admin).await;
    if started.elapsed() > STALE_READ {
        since = crate::faults::now_ms();
        let answered: Vec<InstanceAddr> = looks
            .iter()
            .filter(|l| l.state.is_some())
            .map(|l| l.addr.clone())
            .collect();
        // A member that does not answer the second read counts as not read: what the
        // look says of each member is from after `since`.
        for fresh in read_all(&answered, admin).await {
            if let Some(l) = looks.iter_mut().find(|l| l.addr == fresh.addr) {
                *l = fresh;
            }
        }
    }
    (since, looks)
}

/// A member's full read slower than this gets its write gate read beside it.
const GATE_AFTER: Duration = Duration::from_millis(150);

/// `addr`'s write gate, on a connection of its own; `None` when it cannot be read.
async fn read_gate(addr: &InstanceAddr, admin: &Credentials) -> Option<probe::parse::WriteGate> {
    let mut s = probe::Session::connect(addr, admin, LOOK).await.ok()?;
    let gate = s.write_gate().await.ok();
    s.close().await;
    gate
}

/// A look longer than this reads again the members that answered.
const STALE_READ: Duration = Duration::from_millis(150);

/// Read `members` at once, in their order.
async fn read_all(members: &[InstanceAddr], admin: &Credentials) -> Vec<Look> {
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in members.iter().enumerate() {
        let a = a.clone();
        let c = admin.clone();
        set.spawn(async move {
            let Ok(mut s) = probe::Session::connect(&a, &c, LOOK).await else {
                return (i, None, None, false, a);
            };
            let (state, gate) = {
                let full = s.observe();
                tokio::pin!(full);
                tokio::select! {
                    st = &mut full => (st.ok(), None),
                    () = tokio::time::sleep(GATE_AFTER) => {
                        // The full read is slow: read the write gate beside it.
                        let (st, gate) = tokio::join!(full, read_gate(&a, &c));
                        let st = st.ok();
                        let gate = if st.is_none() { gate } else { None };
                        (st, gate)
                    }
                }
            };
            let running = state
                .as_ref()
                .and_then(|st| st.replication.as_ref())
                .is_some_and(|r| r.io_thread != model::IoThreadState::No);
            let killed = running && s.io_thread_killed().await.unwrap_or(false);
            s.close().await;
            (i, state, gate, killed, a)
        });
    }
    let mut looks: Vec<(usize, Look)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((i, state, gate, io_killed, addr)) = r {
            looks.push((
                i,
                Look {
                    addr,
                    state,
                    io_killed,
                    gate,
                },
            ));
        }
    }
    looks.sort_by_key(|(i, _)| *i);
    looks.into_iter().map(|(_, l)| l).collect()
}

/// The writable members now.
pub async fn writable(members: &[InstanceAddr], admin: &Credentials) -> Vec<InstanceAddr> {
    look_all(members, admin)
        .await
        .into_iter()
        .filter(Look::writable)
        .map(|l| l.addr)
        .collect()
}

/// Wait up to `within` until exactly one member is writable; return it.
pub async fn wait_one_writable(
    members: &[InstanceAddr],
    admin: &Credentials,
    within: Duration,
) -> Result<InstanceAddr, Vec<InstanceAddr>> {
    let deadline = Instant::now() + within;
    loop {
        let w = writable(members, admin).await;
        if w.len() == 1 {
            return Ok(w[0].clone());
        }
        if Instant::now() >= deadline {
            return Err(w);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn join(addrs: &[InstanceAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse a scenario this runner cannot run, before anything starts.
pub fn check_supported(scenario: &Scenario, target: &RunTarget) -> Result<(), RunError> {
    for f in &scenario.faults {
        match f.kind {
            ScenarioFaultKind::KillPrimary
            | ScenarioFaultKind::PausePrimary
            | ScenarioFaultKind::PartitionPrimary
            | ScenarioFaultKind::KillReplica
            | ScenarioFaultKind::StopReplicaSqlThread
            | ScenarioFaultKind::SlowReplica { .. }
            | ScenarioFaultKind::ErrantWriteOnReplica
            | ScenarioFaultKind::DelayReplica { .. }
            | ScenarioFaultKind::BreakReplicaSql
            | ScenarioFaultKind::StallReplicaStream => {}
            ScenarioFaultKind::StallDisk | ScenarioFaultKind::FillDisk => {
                sandbox::loopfs::available().map_err(|e| {
                    RunError::Target(format!(
                        "{} freezes or fills a loop filesystem, which this machine cannot                          make: {e}",
                        f.kind.name()
                    ))
                })?;
            }
            ScenarioFaultKind::Switchover => {
                if target.api.is_none() || target.token.is_none() {
                    return Err(RunError::Target(
                        "a switchover is asked of the control plane: it needs --api and \
                         --token-file"
                            .into(),
                    ));
                }
            }
            ScenarioFaultKind::PartitionControlPlaneFromPrimary => {
                if target.control_plane_gid.is_none() {
                    return Err(RunError::Target(
                        "partition_control_plane_from_primary needs the control plane's group \
                         id (--control-plane-gid): the daemon must run under a group of its own"
                            .into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A sandbox member's name from its address or name.
fn member_name(sb: &Sandbox, who: &str) -> Option<String> {
    sb.manifest()
        .members
        .iter()
        .find(|m| m.name == who || m.addr().to_string() == who)
        .map(|m| m.name.clone())
}

/// The server a fault acts on now, resolved by probing.
async fn resolve(target: &Target, t: &RunTarget) -> Result<(String, InstanceAddr), String> {
    let looks = look_all(&t.members, &t.admin).await;
    let addr = match target {
        Target::Primary => looks
            .iter()
            .find(|l| l.writable())
            .map(|l| l.addr.clone())
            .ok_or_else(|| "no writable primary to target".to_string())?,
        // A replica that replicates (both threads running) first, e.g. not an old primary
        // still rejoining; else any reachable replica.
        Target::Replica => {
            let replica = |l: &&Look, healthy: bool| {
                l.state.as_ref().is_some_and(|s| {
                    s.read_only
                        && s.replication
                            .as_ref()
                            .is_some_and(|r| !healthy || r.is_healthy())
                })
            };
            looks
                .iter()
                .find(|l| replica(l, true))
                .or_else(|| looks.iter().find(|l| replica(l, false)))
                .map(|l| l.addr.clone())
                .ok_or_else(|| "no reachable replica to target".to_string())?
        }
        Target::BestReplica => looks
            .iter()
            .filter_map(|l| {
                let s = l.state.as_ref()?;
                (s.read_only && s.replication.is_some()).then(|| (received_score(s), &l.addr))
            })
            // The highest score; the first member of equals.
            .fold(
                None,
                |best: Option<(u64, &InstanceAddr)>, (score, a)| match best {
                    Some((b, _)) if b >= score => best,
                    _ => Some((score, a)),
                },
            )
            .map(|(_, a)| a.clone())
            .ok_or_else(|| "no reachable replica to target".to_string())?,
        Target::Member(m) => {
            let name = member_name(&t.sandbox, m)
                .ok_or_else(|| format!("{m} is not a member of the sandbox"))?;
            t.sandbox.member(&name).map_err(|e| e.to_string())?.addr()
        }
    };
    let name = member_name(&t.sandbox, &addr.to_string())
        .ok_or_else(|| format!("{addr} is not a member of the sandbox"))?;
    Ok((name, addr))
}

/// How far a replica got: per domain, the higher of its received (`Gtid_IO_Pos`) and
/// applied (`gtid_current_pos`) sequence numbers, summed over domains. Enough to tell which
/// of a cluster's replicas received the most from one source.
fn received_score(s: &ServerState) -> u64 {
    let mut best: std::collections::BTreeMap<u32, u64> = Default::default();
    let received: Option<MariadbGtidList> = s
        .replication
        .as_ref()
        .and_then(|r| r.received_gtid.parse().ok());
    let current = match &s.gtid {
        GtidState::Mariadb { current_pos, .. } => Some(current_pos.clone()),
        GtidState::Mysql { .. } => None,
    };
    for list in received.iter().chain(current.iter()) {
        for g in list.iter() {
            let e = best.entry(g.domain).or_default();
            *e = (*e).max(g.seq);
        }
    }
    best.values().sum()
}

/// What injecting a fault left behind.
enum Injected {
    /// A fault that holds until healed, in the run's [`FaultSet`].
    Held(FaultHandle, String),
    /// An action that heals nothing (a switchover), running on its own task; it reports
    /// how it ended when it does.
    Done(String, tokio::task::JoinHandle<(u64, String)>),
}

/// Inject one fault into `set`.
async fn inject(
    kind: &ScenarioFaultKind,
    target: &Target,
    t: &RunTarget,
    cluster: &str,
    set: &mut FaultSet,
) -> Result<Injected, String> {
    let (member, addr) = resolve(target, t).await?;
    let label = format!("{} {member} ({addr})", kind.name());
    let sb = t.sandbox.clone();
    let process = |spec: ProcessSpec| {
        let sb = sb.clone();
        let member = member.clone();
        async move {
            tokio::task::spawn_blocking(move || ProcessFault::inject(&sb, &member, spec))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    };
    let network = |spec: NetworkSpec| async move {
        tokio::task::spawn_blocking(move || NetworkFault::inject(spec))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    };
    let handle = match kind {
        ScenarioFaultKind::KillPrimary => set.push(
            process(ProcessSpec::Kill {
                restart_on_heal: true,
            })
            .await?,
        ),
        ScenarioFaultKind::KillReplica => set.push(process(ProcessSpec::KillReplica).await?),
        ScenarioFaultKind::PausePrimary => set.push(process(ProcessSpec::Pause).await?),
        ScenarioFaultKind::PartitionPrimary => {
            let a = loopback_addr(&addr).map_err(|e| e.to_string())?;
            set.push(network(NetworkSpec::Partition { addr: a }).await?)
        }
        ScenarioFaultKind::PartitionControlPlaneFromPrimary => {
            let gid = t
                .control_plane_gid
                .ok_or("partition_control_plane_from_primary needs control_plane_gid")?;
            let a = loopback_addr(&addr).map_err(|e| e.to_string())?;
            set.push(network(NetworkSpec::CutFrom { addr: a, gid }).await?)
        }
        ScenarioFaultKind::StopReplicaSqlThread => set.push(
            ReplicationFault::inject(&sb, &member, ReplicationSpec::StopSqlThread)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ScenarioFaultKind::ErrantWriteOnReplica => set.push(
            ReplicationFault::inject(&sb, &member, ReplicationSpec::ErrantWrite)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ScenarioFaultKind::DelayReplica { delay } => set.push(
            ReplicationFault::inject(&sb, &member, ReplicationSpec::Delay(*delay))
                .await
                .map_err(|e| e.to_string())?,
        ),
        ScenarioFaultKind::BreakReplicaSql => set.push(
            ReplicationFault::inject(&sb, &member, ReplicationSpec::BreakSql)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ScenarioFaultKind::StallReplicaStream => set.push(
            faults::stall_replication_stream(&sb, &member)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ScenarioFaultKind::StallDisk | ScenarioFaultKind::FillDisk => {
            let spec = if *kind == ScenarioFaultKind::StallDisk {
                DiskSpec::Stall
            } else {
                DiskSpec::Fill
            };
            let sb = sb.clone();
            let member = member.clone();
            set.push(
                tokio::task::spawn_blocking(move || {
                    let fs = faults::member_loopfs(&sb, &member)?;
                    DiskFault::inject(std::sync::Arc::new(fs), spec)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
            )
        }
        ScenarioFaultKind::SlowReplica { latency, jitter } => {
            // `latency` is added to the round trip: half each way.
            let faults = ProxyFaults {
                to_target: *latency / 2,
                to_client: *latency - *latency / 2,
                jitter: *jitter,
                drop_probability: 0.0,
            };
            set.push(
                SlowReplica::inject(&sb, &member, faults)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        ScenarioFaultKind::Switchover => {
            let api = t
                .api
                .clone()
                .ok_or("a switchover needs the control plane's API")?;
            let token = t.token.clone().ok_or("a switchover needs an API token")?;
            let cluster = cluster.to_string();
            let to = addr.to_string();
            let task = tokio::spawn(async move {
                let r = switchover(&api, &token, &cluster, &to).await;
                let text = match r {
                    Ok(state) => format!("switchover to {to} ended: {state}"),
                    Err(e) => format!("switchover to {to} failed: {e}"),
                };
                (faults::now_ms(), text)
            });
            return Ok(Injected::Done(label, task));
        }
    };
    Ok(Injected::Held(handle, label))
}

/// Before the load: every member a disk fault targets now must have its datadir on a loop
/// filesystem. A sandbox made with `--loop-datadirs` has them all. Without a control plane
/// watching, a member that has none is moved onto a new one (stopped while its data moves,
/// then started again, as [`sandbox::loopfs::LoopFs::mount_member`] does) and kept there;
/// with one, moving the primary would look like its death, so the run is refused instead.
async fn prepare_disks(scenario: &Scenario, t: &RunTarget) -> Result<(), RunError> {
    for f in scenario.faults.iter().filter(|f| f.kind.on_disk()) {
        let (member, _) = resolve(&f.target, t).await.map_err(RunError::Target)?;
        let found = sandbox::loopfs::LoopFs::find(&t.sandbox, &member)
            .map_err(|e| RunError::Target(format!("{member}: {e}")))?;
        if found.is_some() {
            continue;
        }
        if t.api.is_some() {
            return Err(RunError::Target(format!(
                "{}: {member}'s datadir is not on a loop filesystem, and moving it would stop                  a member the control plane watches: make the sandbox with `dbfleet sandbox up                  --loop-datadirs`",
                f.kind.name()
            )));
        }
        tracing::info!(%member, "moving the datadir onto a loop filesystem");
        sandbox::loopfs::LoopFs::mount_member(&t.sandbox, &member, sandbox::loopfs::DEFAULT_SIZE)
            .await
            .map_err(|e| {
                RunError::Target(format!("{member}: datadir onto a loop filesystem: {e}"))
            })?
            .keep();
    }
    Ok(())
}

/// Ask the control plane for a switchover to `to` and wait for it; the operation's final
/// state, or why it was refused.
async fn switchover(api: &str, token: &str, cluster: &str, to: &str) -> Result<String, String> {
    let client = api::Client::new(api, Some(token.to_string())).map_err(|e| e.to_string())?;
    match client.switchover(cluster, Some(to)).await {
        Ok(r) => Ok(r.value["state"].as_str().unwrap_or("unknown").to_string()),
        Err(e @ (api::ClientError::Status { .. } | api::ClientError::ErrantGtids { .. })) => {
            Err(format!("{}: {e}", e.status().unwrap_or_default()))
        }
        Err(e) => Err(format!("POST switchover: {e}")),
    }
}

/// Run `scenario` once against `target`. Every fault is healed before this returns.
pub async fn run_once(
    scenario: &Scenario,
    target: &RunTarget,
    cancel: CancellationToken,
) -> Result<RunResult, RunError> {
    check_supported(scenario, target)?;
    let run_started = Instant::now();
    let deadline = run_started + scenario.max_duration;

    prepare_disks(scenario, target).await?;
    // The ledger table, on the writable primary now.
    let primary = writable(&target.members, &target.admin)
        .await
        .into_iter()
        .next()
        .ok_or_else(|| RunError::NoPrimary(join(&target.members)))?;
    let mut opts = LoadOptions::new(target.members.clone(), target.app.clone());
    scenario.load.apply_to(&mut opts);
    // Through the proxy, the writers know one address: HAProxy's writer frontend.
    let via_note = match scenario.load.via {
        crate::scenario::LoadVia::Direct => None,
        crate::scenario::LoadVia::Haproxy => {
            let dir = target.sandbox.dir();
            let proxy = sandbox::haproxy::writer_addr(dir)
                .filter(|_| sandbox::haproxy::running_pid(dir).is_some())
                .ok_or_else(|| {
                    RunError::Target(format!(
                        "load.via = \"haproxy\", but the sandbox {} runs no HAProxy: start \
                         it with `dbfleet sandbox up --name {} --haproxy`",
                        target.sandbox.manifest().name,
                        target.sandbox.manifest().name
                    ))
                })?;
            opts.candidates = vec![proxy.clone()];
            opts.via_proxy = true;
            Some(format!("the writers write through HAProxy at {proxy}"))
        }
    };
    if scenario.load.stale_client {
        // The stale client stays on the primary the load starts on.
        opts.pinned = Some(primary.clone());
    }
    load::prepare(&target.admin, &primary, &opts.table).await?;

    let cluster = scenario
        .cluster
        .clone()
        .unwrap_or_else(|| target.sandbox.manifest().name.clone());

    // Events at epoch ms, converted once the ledger's start is known.
    let mut notes: Vec<(u64, EventKind, String, Option<usize>)> = Vec::new();
    if let Some(n) = via_note {
        notes.push((faults::now_ms(), EventKind::Note, n, None));
    }
    let mut set = FaultSet::new();
    let mut injected: Vec<(usize, FaultHandle, String)> = Vec::new();
    let mut actions: Vec<(usize, tokio::task::JoinHandle<(u64, String)>)> = Vec::new();

    // The guardrails, checked while the load runs: two writable primaries, acknowledged
    // writes missing beyond the allowance, no writable primary for longer than the max RTO.
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
    opts.ack_feed = Some(ack_tx);
    let guard_stop = CancellationToken::new();
    let split_brain = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mute = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut guard_task = tokio::spawn(guard::watch(
        guard::Guardrails {
            members: target.members.clone(),
            admin: target.admin.clone(),
            table: opts.table.quoted(),
            lost_allowed: scenario.expect.lost_writes_allowed,
            max_rto: scenario.expect.max_rto,
            split_brain_aborts: !scenario.load.stale_client,
            split_brain: split_brain.clone(),
            mute: mute.clone(),
        },
        ack_rx,
        guard_stop.clone(),
    ));
    let mut guard_done = false;

    let load_cancel = CancellationToken::new();
    let load_started = Instant::now();
    let mut load_task = tokio::spawn(load::run(opts, load_cancel.clone()));
    let plan = scenario.plan();
    let mut next = 0usize;
    let mut aborted: Option<String> = None;
    let mut ledger: Option<Ledger> = None;

    loop {
        let step_at = plan.get(next).map(|s| load_started + s.at);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                aborted = Some("aborted by the operator".into());
                break;
            }
            r = &mut guard_task, if !guard_done => {
                guard_done = true;
                if let Ok(Some(reason)) = r {
                    aborted = Some(format!("guardrail: {reason}"));
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                aborted = Some(format!(
                    "guardrail: max duration {} passed",
                    humantime::format_duration(scenario.max_duration)
                ));
                break;
            }
            r = &mut load_task => {
                ledger = r.ok();
                break;
            }
            _ = async {
                match step_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                let step = plan[next];
                next += 1;
                let f = &scenario.faults[step.fault];
                match step.action {
                    StepAction::Inject => {
                        match inject(&f.kind, &f.target, target, &cluster, &mut set).await {
                            Ok(Injected::Held(h, label)) => {
                                tracing::info!(fault = %label, "fault injected");
                                injected.push((step.fault, h, label));
                            }
                            Ok(Injected::Done(label, task)) => {
                                tracing::info!(fault = %label, "action started");
                                notes.push((faults::now_ms(), EventKind::FaultInjected, label,
                                    Some(step.fault)));
                                actions.push((step.fault, task));
                            }
                            Err(e) => {
                                aborted = Some(format!("inject {}: {e}", f.kind.name()));
                                break;
                            }
                        }
                    }
                    StepAction::Heal => {
                        for (i, h, label) in &injected {
                            if *i == step.fault {
                                if let Err(e) = h.heal().await {
                                    notes.push((faults::now_ms(), EventKind::Note,
                                        format!("heal {label} failed: {e}"), Some(*i)));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    guard_stop.cancel();
    if !guard_done {
        let _ = guard_task.await;
    }
    if let Some(reason) = &aborted {
        tracing::warn!(%reason, "run aborted; healing every fault");
        notes.push((faults::now_ms(), EventKind::Aborted, reason.clone(), None));
    }
    load_cancel.cancel();
    // Heal first: an abort heals at once, before the load's last writes are collected.
    if let Err(e) = set.heal_all().await {
        notes.push((
            faults::now_ms(),
            EventKind::Note,
            format!("heal failed: {e}"),
            None,
        ));
    }
    let ledger = match ledger {
        Some(l) => l,
        None => load_task
            .await
            .map_err(|e| RunError::Target(format!("the load task failed: {e}")))?,
    };
    for (i, task) in actions {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_secs(1)), task).await {
            Ok(Ok((at, text))) => notes.push((at, EventKind::Note, text, Some(i))),
            Ok(Err(e)) => notes.push((
                faults::now_ms(),
                EventKind::Note,
                format!("the action's task failed: {e}"),
                Some(i),
            )),
            Err(_) => notes.push((
                faults::now_ms(),
                EventKind::Note,
                "the action had not ended when the run did".into(),
                Some(i),
            )),
        }
    }
    for (i, h, label) in &injected {
        let ev = h.event();
        notes.push((
            ev.injected_ms,
            EventKind::FaultInjected,
            label.clone(),
            Some(*i),
        ));
        if let Some(at) = ev.healed_ms {
            let mut text = format!("healed {label}");
            if let Some(n) = ev.note {
                text.push_str(&format!(": {n}"));
            }
            notes.push((at, EventKind::FaultHealed, text, Some(*i)));
        }
    }

    // Verification: one writer, replicas caught up (bounded), every acknowledged id there.
    let left = deadline.saturating_duration_since(Instant::now());
    let last_acked = ledger
        .acked
        .iter()
        .max_by_key(|a| a.at_ms)
        .map(|a| a.server.clone());
    let writer = match wait_one_writable(&target.members, &target.admin, WRITER_WAIT.min(left))
        .await
    {
        Ok(w) => Ok(w),
        Err(w) if !w.is_empty() => {
            let pick = last_acked
                .filter(|a| w.contains(a))
                .unwrap_or_else(|| w[0].clone());
            notes.push((
                faults::now_ms(),
                EventKind::Note,
                format!("{} writable after the run; verifying on {pick}", join(&w)),
                None,
            ));
            Ok(pick)
        }
        Err(_) => {
            // No writable primary (e.g. a second failover was blocked on purpose): judge
            // the writes on the reachable member that acknowledged the last one, else on
            // any reachable member. Reading needs no write access.
            let reachable: Vec<InstanceAddr> = look_all(&target.members, &target.admin)
                .await
                .into_iter()
                .filter(|l| l.state.is_some())
                .map(|l| l.addr)
                .collect();
            let pick = last_acked
                .filter(|a| reachable.contains(a))
                .or_else(|| reachable.first().cloned());
            match pick {
                Some(p) => {
                    notes.push((
                        faults::now_ms(),
                        EventKind::Note,
                        format!("no writable primary after the run; verifying on {p} (read-only)"),
                        None,
                    ));
                    Ok(p)
                }
                None => Err("no member reachable after the run".to_string()),
            }
        }
    };
    let verification = match &writer {
        Ok(w) => {
            let others: Vec<InstanceAddr> =
                target.members.iter().filter(|a| *a != w).cloned().collect();
            catch_up(w, &others, &target.admin, CATCH_UP.min(left)).await;
            load::verify(
                &ledger,
                w,
                &others,
                &target.admin,
                &VerifyOptions::default(),
            )
            .await
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.clone()),
    };
    let ended_ms = faults::now_ms();
    if let Ok(v) = &verification {
        for c in v.per_instance.iter() {
            if let Some(first) = &c.retried {
                let outcome = if c.reachable { "read" } else { "failed again" };
                notes.push((
                    ended_ms,
                    EventKind::Note,
                    format!(
                        "verification of {} retried ({outcome}) after: {first}",
                        c.addr
                    ),
                    None,
                ));
            }
        }
    }

    if let Some(api) = &target.api {
        match control_plane_events(
            api,
            target.token.as_deref(),
            ledger.started_ms.saturating_sub(1000),
            ended_ms,
            detected_problems(scenario),
        )
        .await
        {
            Ok(evs) => notes.extend(evs.into_iter().map(|(at, k, l)| (at, k, l, None))),
            Err(e) => notes.push((
                ended_ms,
                EventKind::Note,
                format!("control plane events not read: {e}"),
                None,
            )),
        }
    }

    let events = notes
        .into_iter()
        .map(|(at, kind, label, fault)| {
            let ev = TimelineEvent::from_epoch(ledger.started_ms, at, kind, label);
            match fault {
                Some(i) => ev.for_fault(i),
                None => ev,
            }
        })
        .collect();
    let guard_split_brain = faults::lock(&split_brain).clone();
    let guard_mute = faults::lock(&mute).clone();
    Ok(RunResult::build(RunParts {
        scenario,
        cluster,
        ledger: &ledger,
        verification: verification.as_ref().map_err(|e| e.clone()),
        events,
        ended_ms,
        aborted,
        guard_split_brain,
        guard_mute,
    }))
}

/// Wait (bounded) until each reachable other server applied the writer's GTID position.
pub(crate) async fn catch_up(
    writer: &InstanceAddr,
    others: &[InstanceAddr],
    admin: &Credentials,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let pos = async {
        let mut s = Session::connect(writer, admin, LOOK).await.ok()?;
        let rows = s
            .query_rows("gtid position", "SELECT @@gtid_binlog_pos AS p")
            .await
            .ok();
        s.close().await;
        rows?.first()?.get("p").cloned().flatten()
    }
    .await;
    let Some(pos) = pos else { return };
    for o in others {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Ok(mut s) = Session::connect(o, admin, LOOK).await {
            let _ = s.wait_for_gtid(&pos, left).await;
            s.close().await;
        }
    }
}

/// The control plane's events between `from_ms` and `to_ms` as timeline events (epoch ms).
async fn control_plane_events(
    api: &str,
    token: Option<&str>,
    from_ms: u64,
    to_ms: u64,
    detected: &[&str],
) -> Result<Vec<(u64, EventKind, String)>, String> {
    let client = api::Client::new(api, token.map(str::to_string)).map_err(|e| e.to_string())?;
    let filter = api::EventFilter {
        cluster: None,
        limit: Some(500),
    };
    let reply = client
        .events(&filter)
        .await
        .map_err(|e| format!("GET events: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("GET events: {e}"))?;
    Ok(map_events_detecting(&body, from_ms, to_ms, detected))
}

/// The problems whose opening is a detection in every scenario.
pub const DETECTED: &[&str] = &["DeadPrimary", "PrimaryWritesStalled", "PrimaryDiskFull"];

/// The problems whose opening is a detection in a scenario with a disk fault on the primary:
/// a stalled or full primary (or one that died), or its disk running low.
pub const DETECTED_PRIMARY_DISK: &[&str] = &[
    "DeadPrimary",
    "PrimaryWritesStalled",
    "PrimaryDiskFull",
    "DiskSpaceLow",
];

/// The problems whose opening is a detection in a scenario whose disk faults hit replicas
/// only: the replica named. A primary named stalled there is no detection of the fault (it
/// is a false alarm, shown as a note).
pub const DETECTED_REPLICA_DISK: &[&str] = &["ReplicaWritesStalled", "DiskSpaceLow"];

/// The disk problems: the opening of one that is not a detection is still shown, as a note.
const DISK_PROBLEMS: &[&str] = &[
    "PrimaryWritesStalled",
    "PrimaryDiskFull",
    "ReplicaWritesStalled",
    "DiskSpaceLow",
];

/// The problem kinds that count as the control plane's detection in `scenario`: only the
/// replica's problems when its disk faults hit replicas only (so that a still replica in
/// another scenario, e.g. a delayed one, or a primary wrongly named stalled, is no
/// detection).
pub fn detected_problems(scenario: &Scenario) -> &'static [&'static str] {
    let disk: Vec<_> = scenario
        .faults
        .iter()
        .filter(|f| f.kind.on_disk())
        .collect();
    if disk.is_empty() {
        DETECTED
    } else if disk.iter().any(|f| f.on_primary()) {
        DETECTED_PRIMARY_DISK
    } else {
        DETECTED_REPLICA_DISK
    }
}

/// Map the daemon's event list (`{"events": [...]}`) to timeline events inside the window,
/// with [`DETECTED`] as the detections.
pub fn map_events(
    body: &serde_json::Value,
    from_ms: u64,
    to_ms: u64,
) -> Vec<(u64, EventKind, String)> {
    map_events_detecting(body, from_ms, to_ms, DETECTED)
}

/// [`map_events`], with the opening of any problem of `detected` as a detection.
pub fn map_events_detecting(
    body: &serde_json::Value,
    from_ms: u64,
    to_ms: u64,
    detected: &[&str],
) -> Vec<(u64, EventKind, String)> {
    let mut out = Vec::new();
    let Some(events) = body["events"].as_array() else {
        return out;
    };
    for e in events {
        let Some(at) = e["at_ms"].as_u64() else {
            continue;
        };
        if at < from_ms || at > to_ms {
            continue;
        }
        let data = &e["data"];
        let instance = e["instance"].as_str().unwrap_or("?");
        let op = data["operation_id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| data["operation_id"].to_string());
        match e["kind"].as_str().unwrap_or("") {
            "problem_opened" => {
                // The problem's kind; an event without one is searched as text.
                let kind = match data["problem"]["kind"].as_str() {
                    Some(k) => detected.iter().copied().find(|d| *d == k),
                    None => {
                        let text = data.to_string();
                        detected.iter().copied().find(|d| text.contains(d))
                    }
                };
                if let Some(kind) = kind {
                    out.push((at, EventKind::Detected, format!("{kind} on {instance}")));
                } else if let Some(k) = data["problem"]["kind"]
                    .as_str()
                    .filter(|k| DISK_PROBLEMS.contains(k))
                {
                    out.push((at, EventKind::Note, format!("{k} opened on {instance}")));
                }
            }
            "operation_started" => {
                let kind = data["kind"].as_str().unwrap_or("?");
                if kind == "failover" {
                    out.push((
                        at,
                        EventKind::FailoverStarted,
                        format!("failover {op} started"),
                    ));
                } else {
                    out.push((at, EventKind::Note, format!("{kind} {op} started")));
                }
            }
            "operation_step" => match data["step"].as_str().unwrap_or("") {
                "promote" => {
                    out.push((at, EventKind::Promoted, format!("operation {op}: promoted")))
                }
                "repoint" => out.push((
                    at,
                    EventKind::Repointed,
                    format!("operation {op}: replicas repointed"),
                )),
                "open_writes" => out.push((
                    at,
                    EventKind::Writable,
                    format!("operation {op}: writes open"),
                )),
                _ => {}
            },
            "operation_finished" => {
                let kind = data["kind"].as_str().unwrap_or("?");
                let state = data["state"].as_str().unwrap_or("?");
                let msg = e["message"].as_str().unwrap_or("");
                if kind == "failover" && state == "needs_human" {
                    out.push((
                        at,
                        EventKind::NeedsHuman,
                        format!("failover {op} needs a human: {msg}"),
                    ));
                } else if kind == "failover" && state == "failed" {
                    out.push((
                        at,
                        EventKind::FailoverFailed,
                        format!("failover {op} failed: {msg}"),
                    ));
                } else {
                    out.push((
                        at,
                        EventKind::Note,
                        format!("{kind} {op} finished: {state}"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}
