//! Cluster-health analysis: from one cluster's spec and the latest observation of each of its
//! instances, name the primary and the [`Problem`]s. Pure: no IO, no clock.
//!
//! # Finding the primary
//!
//! Every reachable instance with a replication source is followed up its chain of sources
//! (source addresses are matched against observation addresses exactly) to a *root*:
//!
//! - a reachable instance with no source, or
//! - an instance the chain cannot be followed past: one whose observation is `Unreachable`,
//!   or one that is not observed at all (known only from a replica's `source` field), or
//! - nothing, when the chain loops (circular / co-primary replication is not supported: a
//!   cycle has no root).
//!
//! A reachable instance with no source and no replicas is *isolated*. The candidates for
//! primary are the reachable roots that have replicas and the isolated writable instances
//! ([`find_primary`]):
//!
//! - exactly one reachable candidate that has replicas: it is the primary, even when other
//!   chains end at unreachable instances (those are taken for intermediates we cannot see
//!   into, or for an old primary that replicas left behind by a failover still point at);
//! - exactly one isolated writable candidate and no unreachable root: it is the primary (a
//!   primary whose replicas are all unreachable);
//! - no reachable candidate and exactly one unreachable root: that root is the primary
//!   ([`PrimaryGuess::Unreachable`]);
//! - no candidate at all, no unreachable root and exactly one isolated read-only instance:
//!   it is the (read-only) primary;
//! - otherwise two or more candidates make the guess [`PrimaryGuess::Ambiguous`] and none
//!   makes it [`PrimaryGuess::None`]. An isolated writable instance beside another root
//!   counts as a candidate: it may be an old primary that came back.
//!
//! # Rules
//!
//! Each problem's evidence names the instance and the fact, e.g.
//! `io_thread=Connecting sql_thread=Yes last_io_errno=2003 "Can't connect..."`,
//! `unreachable: refused: connection refused`, `read_only=ON`,
//! `seconds_behind_source=42 > max_lag=10s`.
//!
//! - `DeadPrimary` (Critical): the primary's probe failed (any failure kind), and every
//!   reachable direct replica that can witness has lost it (IO thread `Connecting` or `No`).
//!   A replica whose IO thread was stopped cleanly (`No` with `last_io_errno=0`, i.e.
//!   `STOP SLAVE`) did not lose the primary, it stopped listening: it is no witness.
//!   A replica whose IO thread still says `Yes` has lost it too when its received stream
//!   ([`crate::StreamProgress`]: heartbeats, `Gtid_IO_Pos`, `Read_Master_Log_Pos`) has not
//!   moved for at least the spec's `stall_confirm` plus one heartbeat period: a source
//!   sends at least a heartbeat every period, so the primary stopped sending for at least
//!   `stall_confirm` (frozen, or its packets dropped). The IO thread would say so only
//!   after `slave_net_timeout`. Unknown stall (no heartbeat counter, no history, heartbeats
//!   off) never counts.
//! - `UnreachablePrimary` (Error): the primary is unreachable but a direct replica still has
//!   `io_thread=Yes` from it; or no replica could confirm the loss (every direct replica
//!   was stopped by hand); or the primary was never probed (known only from its replicas'
//!   `source`), since `DeadPrimary` needs a failed probe.
//! - `NoPrimary` (Critical): instances were observed but no primary can be named: every
//!   observation is unreachable (the cluster is blind: evidence per instance), or no root
//!   exists (cycles, several isolated read-only instances), or the guess is ambiguous
//!   without two writable roots (e.g. a dead primary with replicas beside an isolated
//!   writable instance). No observation at all gives no problem: there is nothing to judge.
//! - `MultiplePrimaries` (Critical): two or more reachable, writable instances without a
//!   replication source. Evidence lists each.
//! - `PrimaryReadOnly` (Error): the reachable primary has `read_only=ON`.
//! - `WritableReplica` (Error): a reachable instance with a source and `read_only=OFF`.
//! - `ReplicaNotReplicating` (Error): a reachable replica whose SQL thread is stopped or
//!   whose IO thread is not `Yes`, reported for every replica, inside the primary's tree or
//!   not.
//! - `ReplicaLagging` (Warning): both threads run and `seconds_behind_source > max_lag`. A
//!   configured `MASTER_DELAY` is not subtracted (the evidence shows it): a delayed replica
//!   lags by design, and the spec's `max_lag` must allow for it if that is wanted.
//! - `ErrantGtid` (Error): only with a reachable primary, for every reachable member of its
//!   tree (direct or chained), by [`errant_transactions`]. MariaDB: the
//!   [`errant_gtids`] of the binlog states, minus every entry under the primary's own
//!   server_id (observations are taken at slightly different moments, so a replica may have
//!   applied a newer primary transaction than the primary's observation shows, even the
//!   first one a newly promoted primary wrote; and failover compares with the dead
//!   primary's *last* observation). MySQL:
//!   `gtid_executed` of the replica minus that of the primary; the same timing race exists
//!   and MySQL observations carry no `server_uuid`, so for a *direct* replica the
//!   transactions it received from the primary (`Retrieved_Gtid_Set`) are also subtracted:
//!   the primary had them. A chained replica may still show a primary transaction newer
//!   than the primary's observation; the next round clears it.
//! - `ReplicaMissing` (Warning): fewer reachable members of the primary's tree (direct or
//!   chained) with both threads running than `expected_replicas`. Evidence: the count, then
//!   every instance that is not such a member and why.
//! - `SemiSyncDegraded` (Error): the spec wants semi-sync and the reachable primary has it
//!   disabled, inactive (fell back to async), or has no acking client.
//! - `SemiSyncCanFallBack` (Error): the spec wants semi-sync, the reachable primary has it
//!   enabled, and it would fall back to async and acknowledge alone: its
//!   `rpl_semi_sync_master_timeout` is below seven days ([`crate::SEMI_SYNC_NEVER_FALLS_BACK_MS`]),
//!   or `rpl_semi_sync_master_wait_no_slave=OFF`. Lossless semi-sync needs both fixed.
//! - `LockedSemiSyncPrimary` (Critical): the spec wants semi-sync, and the reachable primary
//!   has sessions waiting for an ack (`Rpl_semi_sync_master_wait_sessions` > 0) while no
//!   semi-sync replica is connected (`Rpl_semi_sync_master_clients` = 0, MariaDB needs one
//!   ack): those commits wait until a replica acks. The summary names the remedies.
//! - `PrimaryWritesStalled` (Critical): the primary answers reads, but dbfleet's heartbeat
//!   write on it ([`crate::WriteProbe`], run apart from the read probe under its own
//!   deadline) is past its deadline or its last attempt timed out or failed. Evidence: the
//!   write's history, then each direct replica's threads, heartbeat row age and stream (an
//!   IO thread still connected and receiving heartbeats while nothing new arrives is the
//!   corroboration). A primary whose read probe timed out *on an open connection* (not a
//!   connect that timed out) while a direct replica still receives from it is judged the
//!   same way, instead of `UnreachablePrimary`: reachable and stalled. Not named while the
//!   primary has commits waiting for semi-sync acks (`Rpl_semi_sync_master_wait_sessions`
//!   > 0): those wait on the replicas, not on the primary's disk.
//! - `PrimaryDiskFull` (Critical), instead of `PrimaryWritesStalled`: the failing write
//!   said ENOSPC (error 28) or disk full (1021), or the datadir's filesystem has less than
//!   [`crate::DISK_FULL_BYTES`] available (MariaDB waits for space rather than failing).
//! - `DiskSpaceLow` (Warning, Error below the lower threshold): a reachable instance whose
//!   datadir filesystem has less available than the spec's `storage` shares; not beside a
//!   `PrimaryDiskFull` of the same instance.
//! - `ReplicaWritesStalled` (Error): a reachable replica of a reachable source whose IO
//!   thread says `Yes` but whose stream has not moved for `stall_confirm` plus a heartbeat
//!   period (its relay log writes hang), or whose SQL thread runs but whose
//!   `gtid_slave_pos` has not moved for `storage.apply_stall` while it received more; and,
//!   instead of `UnreachableReplica`, a non-primary instance whose probe timed out on a
//!   connection the server accepted (a frozen datadir blocks `SHOW SLAVE STATUS` behind the
//!   IO thread's relay-log write) while a reachable primary is named.
//! - `UnknownInstance` (Warning): a reachable member of the primary's tree not in the spec.
//! - `UnreachableReplica` (Warning): an unreachable instance other than the primary.
//! - `UnreachableSeed` is the daemon's, never produced here.
//!
//! # Suppressions (no cascades)
//!
//! - The primary never gets `UnreachableReplica`; neither do primary candidates of an
//!   ambiguous guess, nor any instance when no primary can be named (any of them may be the
//!   primary: they are in `NoPrimary`'s evidence instead).
//! - A direct replica of an unreachable primary is not `ReplicaNotReplicating` for its IO
//!   thread (that is the `DeadPrimary` / `UnreachablePrimary` story); a stopped SQL thread
//!   is still reported.
//! - `DeadPrimary` suppresses `ReplicaMissing`: it says the same thing.
//! - Primary-relative rules (`PrimaryReadOnly`, `SemiSyncDegraded`, `ErrantGtid`,
//!   `ReplicaMissing`, `UnknownInstance`) run only when a primary is named; those needing
//!   its state run only when it is reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::addr::InstanceAddr;
use crate::gtid::{errant_gtids, ErrantGtid, ErrantReason, MysqlGtidSet};
use crate::observation::{
    DiskSpace, GtidState, IoThreadState, Observation, ProbeFailure, ReplicationStatus,
    SemiSyncState, ServerState, WriteProbe, SEMI_SYNC_LOSSLESS_TIMEOUT_MS,
    SEMI_SYNC_NEVER_FALLS_BACK_MS,
};
use crate::problem::{Evidence, Problem, ProblemKind, Severity};
use crate::spec::ClusterSpec;

/// What analysis reads: one cluster's spec and the latest observation of each of its
/// instances, configured and discovered. When an address is observed more than once, the
/// observation with the latest `at_unix_ms` is used (the later one in the slice on a tie).
#[derive(Clone, Copy, Debug)]
pub struct ClusterView<'a> {
    /// The desired state.
    pub spec: &'a ClusterSpec,
    /// The latest observation per instance.
    pub observations: &'a [Observation],
}

/// What analysis found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// The primary, when one can be named, reachable or not.
    pub primary: Option<InstanceAddr>,
    /// The problems, sorted by severity (most urgent first), then kind, then instance.
    pub problems: Vec<Problem>,
}

/// Who the primary is, as far as the observations tell (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "guess", content = "addr", rename_all = "snake_case")]
pub enum PrimaryGuess {
    /// A reachable instance with no replication source.
    Reachable(InstanceAddr),
    /// An instance known only as the source at the top of reachable replicas' chains: its
    /// probe failed, or it was not probed.
    Unreachable(InstanceAddr),
    /// No primary can be named.
    None,
    /// Several candidates, sorted.
    Ambiguous(Vec<InstanceAddr>),
}

impl PrimaryGuess {
    /// The primary's address, when exactly one is named.
    pub fn addr(&self) -> Option<&InstanceAddr> {
        match self {
            Self::Reachable(a) | Self::Unreachable(a) => Some(a),
            Self::None | Self::Ambiguous(_) => None,
        }
    }
}

/// Transactions a replica has that its primary lacks, per flavor (see
/// [`errant_transactions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Errant {
    /// MariaDB binlog-state entries.
    Mariadb(Vec<ErrantGtid>),
    /// A MySQL GTID set.
    Mysql(MysqlGtidSet),
}

impl Errant {
    /// Whether there is no errant transaction.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Mariadb(v) => v.is_empty(),
            Self::Mysql(s) => s.is_empty(),
        }
    }
}

impl fmt::Display for Errant {
    /// MariaDB: `0-3-7 (primary has no 0-3-*), 0-2-9 (primary at 0-2-5)`; MySQL: the set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mysql(set) => set.fmt(f),
            Self::Mariadb(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}-{}-{}", e.domain, e.server_id, e.replica_seq)?;
                    match (e.reason, e.primary_seq) {
                        (ErrantReason::AheadOfPrimary, Some(seq)) => {
                            write!(f, " (primary at {}-{}-{seq})", e.domain, e.server_id)?
                        }
                        _ => write!(f, " (primary has no {}-{}-*)", e.domain, e.server_id)?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The severity of each problem kind. `UnreachableSeed`, produced by the daemon, is a
/// warning.
pub fn severity(kind: ProblemKind) -> Severity {
    use ProblemKind::*;
    match kind {
        DeadPrimary
        | NoPrimary
        | MultiplePrimaries
        | LockedSemiSyncPrimary
        | PrimaryWritesStalled
        | PrimaryDiskFull => Severity::Critical,
        UnreachablePrimary
        | PrimaryReadOnly
        | WritableReplica
        | ReplicaNotReplicating
        | ErrantGtid
        | SemiSyncDegraded
        | SemiSyncCanFallBack
        | ReplicaWritesStalled => Severity::Error,
        // `DiskSpaceLow` is raised to an error below the lower threshold.
        ReplicaLagging | ReplicaMissing | UnknownInstance | UnreachableReplica
        | UnreachableSeed | DiskSpaceLow => Severity::Warning,
    }
}

/// Names the primary from observations alone (see the module docs for the rules).
pub fn find_primary(observations: &[Observation]) -> PrimaryGuess {
    Topology::new(observations).guess()
}

/// The reachable instances replicating directly from `source`, sorted by address.
pub fn direct_replicas<'o>(
    observations: &'o [Observation],
    source: &InstanceAddr,
) -> Vec<&'o Observation> {
    Topology::new(observations)
        .direct(source)
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// The reachable instances whose chain of sources ends at `root`, directly or through
/// intermediates, sorted by address. Chains through an unreachable intermediate end at that
/// intermediate, not at `root`.
pub fn replication_tree<'o>(
    observations: &'o [Observation],
    root: &InstanceAddr,
) -> Vec<&'o Observation> {
    Topology::new(observations).tree(root)
}

/// The errant transactions of `replica` against `primary` (see the module docs for the
/// timing allowances). `None` when either is unreachable, their GTID flavors differ, or a
/// MySQL side runs without GTIDs; `Some` of an empty [`Errant`] when there is none.
pub fn errant_transactions(replica: &Observation, primary: &Observation) -> Option<Errant> {
    let (r, p) = (replica.state()?, primary.state()?);
    match (&r.gtid, &p.gtid) {
        (
            GtidState::Mariadb {
                binlog_state: mine, ..
            },
            GtidState::Mariadb {
                binlog_state: theirs,
                ..
            },
        ) => Some(Errant::Mariadb(
            // An entry under the primary's own server_id came from the primary, whatever
            // its observation shows: it may be newer than that observation (ahead), or the
            // first the primary wrote since it was observed (unknown), e.g. a primary
            // promoted a moment ago whose last observation predates its first write.
            errant_gtids(mine, theirs)
                .into_iter()
                .filter(|e| e.server_id != p.server_id)
                .collect(),
        )),
        (
            GtidState::Mysql {
                enabled: true,
                executed: mine,
                ..
            },
            GtidState::Mysql {
                enabled: true,
                executed: theirs,
                ..
            },
        ) => {
            let mut errant = mine.subtract(theirs);
            let direct = r
                .replication
                .as_ref()
                .filter(|rs| rs.source == primary.addr);
            if let Some(received) = direct.and_then(|rs| rs.received_gtid.parse().ok()) {
                errant = errant.subtract(&received);
            }
            Some(Errant::Mysql(errant))
        }
        _ => None,
    }
}

/// Analyzes one cluster: names the primary and lists the problems (see the module docs).
pub fn analyze(view: &ClusterView) -> Analysis {
    let topo = Topology::new(view.observations);
    if topo.by_addr.is_empty() {
        return Analysis::default();
    }
    let mut a = Analyzer {
        spec: view.spec,
        topo: &topo,
        problems: Vec::new(),
    };
    let guess = topo.guess();
    let primary = guess.addr();
    let mut primary_dead = false;
    match &guess {
        PrimaryGuess::Reachable(p) => a.reachable_primary(p),
        PrimaryGuess::Unreachable(p) => primary_dead = a.unreachable_primary(p),
        PrimaryGuess::None => a.no_primary(),
        PrimaryGuess::Ambiguous(candidates) => a.ambiguous(candidates),
    }
    let primary_unreachable = matches!(guess, PrimaryGuess::Unreachable(_));
    for (obs, state) in topo.reachable() {
        if let Some(repl) = &state.replication {
            let io_excused = primary_unreachable && Some(&repl.source) == primary;
            a.replica_checks(obs, state, repl, io_excused);
        }
    }
    a.unreachable_replicas(&guess);
    if let Some(p) = primary {
        a.tree_checks(p, primary_dead);
    }
    a.replica_stalls(primary);
    a.disk_space();
    let mut problems = a.problems;
    problems.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then(x.kind.cmp(&y.kind))
            .then_with(|| x.instance.cmp(&y.instance))
    });
    Analysis {
        primary: primary.cloned(),
        problems,
    }
}

/// Where a replica's chain of sources ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root<'o> {
    /// A reachable instance with no source.
    Reachable(&'o InstanceAddr),
    /// An unreachable or unobserved instance: the chain cannot be followed past it.
    Unseen(&'o InstanceAddr),
    /// The chain loops.
    Cycle,
}

impl<'o> Root<'o> {
    fn addr(self) -> Option<&'o InstanceAddr> {
        match self {
            Self::Reachable(a) | Self::Unseen(a) => Some(a),
            Self::Cycle => None,
        }
    }
}

/// The observations indexed by address, with the root of every reachable replica.
struct Topology<'o> {
    by_addr: BTreeMap<&'o InstanceAddr, &'o Observation>,
    roots: BTreeMap<&'o InstanceAddr, Root<'o>>,
}

impl<'o> Topology<'o> {
    fn new(observations: &'o [Observation]) -> Self {
        let mut by_addr: BTreeMap<&InstanceAddr, &Observation> = BTreeMap::new();
        for obs in observations {
            match by_addr.get(&obs.addr) {
                Some(prev) if prev.at_unix_ms > obs.at_unix_ms => {}
                _ => {
                    by_addr.insert(&obs.addr, obs);
                }
            }
        }
        let mut topo = Self {
            by_addr,
            roots: BTreeMap::new(),
        };
        topo.roots = topo
            .by_addr
            .values()
            .filter_map(|&o| Some((&o.addr, topo.walk(o)?)))
            .collect();
        topo
    }

    /// Follows `obs`'s sources to the root; `None` when `obs` has no source or is
    /// unreachable.
    fn walk(&self, obs: &'o Observation) -> Option<Root<'o>> {
        let mut source = &obs.state()?.replication.as_ref()?.source;
        let mut seen = vec![&obs.addr];
        loop {
            if seen.contains(&source) {
                return Some(Root::Cycle);
            }
            let Some(state) = self.state(source) else {
                return Some(Root::Unseen(source));
            };
            match &state.replication {
                None => return Some(Root::Reachable(source)),
                Some(r) => {
                    seen.push(source);
                    source = &r.source;
                }
            }
        }
    }

    fn state(&self, addr: &InstanceAddr) -> Option<&'o ServerState> {
        self.by_addr.get(addr).copied().and_then(Observation::state)
    }

    fn reachable(&self) -> impl Iterator<Item = (&'o Observation, &'o ServerState)> + '_ {
        self.by_addr.values().filter_map(|&o| Some((o, o.state()?)))
    }

    fn unreachable(&self) -> impl Iterator<Item = (&'o Observation, &'o ProbeFailure)> + '_ {
        self.by_addr
            .values()
            .filter_map(|&o| Some((o, o.failure()?)))
    }

    fn direct(&self, source: &InstanceAddr) -> Vec<(&'o Observation, &'o ReplicationStatus)> {
        self.reachable()
            .filter_map(|(o, s)| Some((o, s.replication.as_ref()?)))
            .filter(|(_, r)| &r.source == source)
            .collect()
    }

    fn tree(&self, root: &InstanceAddr) -> Vec<&'o Observation> {
        self.roots
            .iter()
            .filter(|(_, r)| r.addr() == Some(root))
            .map(|(a, _)| self.by_addr[a])
            .collect()
    }

    fn guess(&self) -> PrimaryGuess {
        let mut with_replicas = BTreeSet::new();
        let mut unseen = BTreeSet::new();
        for root in self.roots.values() {
            match *root {
                Root::Reachable(a) => with_replicas.insert(a),
                Root::Unseen(a) => unseen.insert(a),
                Root::Cycle => false,
            };
        }
        let mut isolated_writable = BTreeSet::new();
        let mut isolated_read_only = Vec::new();
        for (o, s) in self.reachable() {
            if s.replication.is_none() && !with_replicas.contains(&o.addr) {
                if s.read_only {
                    isolated_read_only.push(&o.addr);
                } else {
                    isolated_writable.insert(&o.addr);
                }
            }
        }
        let reachable: BTreeSet<_> = with_replicas.union(&isolated_writable).copied().collect();
        let all = || {
            reachable
                .union(&unseen)
                .map(|&a| a.clone())
                .collect::<Vec<_>>()
        };
        match (reachable.len(), unseen.len()) {
            (1, _) if with_replicas.len() == 1 => {
                PrimaryGuess::Reachable(with_replicas.first().copied().cloned().unwrap())
            }
            (1, 0) => PrimaryGuess::Reachable(all().remove(0)),
            (0, 1) => PrimaryGuess::Unreachable(all().remove(0)),
            (0, 0) if isolated_read_only.len() == 1 => {
                PrimaryGuess::Reachable(isolated_read_only[0].clone())
            }
            (0, 0) => PrimaryGuess::None,
            _ => PrimaryGuess::Ambiguous(all()),
        }
    }
}

/// Collects problems.
struct Analyzer<'a, 'o> {
    spec: &'a ClusterSpec,
    topo: &'a Topology<'o>,
    problems: Vec<Problem>,
}

impl Analyzer<'_, '_> {
    fn push(
        &mut self,
        kind: ProblemKind,
        instance: Option<&InstanceAddr>,
        summary: String,
        evidence: Vec<Evidence>,
    ) {
        self.problems.push(Problem {
            kind,
            cluster: self.spec.name.clone(),
            instance: instance.cloned(),
            severity: severity(kind),
            summary,
            evidence,
        });
    }

    fn reachable_primary(&mut self, p: &InstanceAddr) {
        let Some(state) = self.topo.state(p) else {
            return;
        };
        self.write_stall(p, Some(state));
        if state.read_only {
            self.push(
                ProblemKind::PrimaryReadOnly,
                Some(p),
                format!("primary {p} is read-only"),
                vec![Evidence::new(p, "read_only=ON")],
            );
        }
        let ss = &state.semi_sync;
        if self.spec.semi_sync && ss.source_enabled {
            self.semi_sync_lossless(p, ss);
        }
        if self.spec.semi_sync {
            let mut facts = Vec::new();
            if !ss.source_enabled {
                facts.push("semi_sync source_enabled=OFF".to_string());
            }
            if !ss.source_active {
                facts.push("semi_sync source_active=OFF".to_string());
            }
            if ss.source_clients == 0 {
                facts.push("semi_sync source_clients=0".to_string());
            }
            if !facts.is_empty() {
                self.push(
                    ProblemKind::SemiSyncDegraded,
                    Some(p),
                    format!("semi-sync is wanted but degraded on primary {p}"),
                    facts.into_iter().map(|f| Evidence::new(p, f)).collect(),
                );
            }
        }
    }

    /// `SemiSyncCanFallBack` and `LockedSemiSyncPrimary` of a reachable primary with
    /// semi-sync enabled.
    fn semi_sync_lossless(&mut self, p: &InstanceAddr, ss: &SemiSyncState) {
        if ss.can_fall_back() {
            let mut evidence = Vec::new();
            if let Some(t) = ss
                .source_timeout_ms
                .filter(|&t| t < SEMI_SYNC_NEVER_FALLS_BACK_MS)
            {
                evidence.push(Evidence::new(
                    p,
                    format!(
                        "rpl_semi_sync_master_timeout={t}: a commit with no ack for {} is committed alone",
                        human_ms(t)
                    ),
                ));
            }
            if ss.source_wait_no_replica == Some(false) {
                evidence.push(Evidence::new(
                    p,
                    "rpl_semi_sync_master_wait_no_slave=OFF: with no semi-sync replica connected, commits do not wait",
                ));
            }
            self.push(
                ProblemKind::SemiSyncCanFallBack,
                Some(p),
                format!(
                    "primary {p} can fall back to async and acknowledge writes no replica has: \
                     SET GLOBAL rpl_semi_sync_master_timeout={SEMI_SYNC_LOSSLESS_TIMEOUT_MS}, \
                     rpl_semi_sync_master_wait_no_slave=ON (and in its config file)"
                ),
                evidence,
            );
        }
        if ss.source_active && ss.source_wait_sessions > 0 && ss.source_clients == 0 {
            self.push(
                ProblemKind::LockedSemiSyncPrimary,
                Some(p),
                format!(
                    "primary {p} has {} commit(s) waiting for a semi-sync ack no replica can send: \
                     bring back a replica with rpl_semi_sync_slave_enabled=ON (START SLAVE), or, \
                     accepting writes with no second copy, SET GLOBAL rpl_semi_sync_master_enabled=OFF",
                    ss.source_wait_sessions
                ),
                vec![Evidence::new(
                    p,
                    format!(
                        "Rpl_semi_sync_master_wait_sessions={} Rpl_semi_sync_master_clients=0 \
                         Rpl_semi_sync_master_status=ON",
                        ss.source_wait_sessions
                    ),
                )],
            );
        }
    }

    /// Judges an unreachable primary; returns whether it is dead.
    fn unreachable_primary(&mut self, p: &InstanceAddr) -> bool {
        let failure = self.topo.by_addr.get(p).and_then(|o| o.failure());
        let mut evidence = vec![Evidence::new(
            p,
            match failure {
                Some(f) => unreachable_fact(f),
                None => "not probed: known only as its replicas' source".to_string(),
            },
        )];
        let (mut receiving, mut lost, mut idle, mut silent) = (0, 0, 0, 0);
        for (o, r) in self.topo.direct(p) {
            let fact = threads_fact(r);
            let fact = match r.io_thread {
                IoThreadState::Yes => match stalled_fact(o, r, self.spec.stall_confirm) {
                    Ok(stall) => {
                        lost += 1;
                        silent += 1;
                        format!("{fact} but {stall}")
                    }
                    Err(moving) => {
                        receiving += 1;
                        format!("{fact}: still receives from {p}{moving}")
                    }
                },
                IoThreadState::No if r.last_io_errno == 0 => {
                    idle += 1;
                    format!("{fact}: IO thread stopped by hand, cannot confirm")
                }
                _ => {
                    lost += 1;
                    fact
                }
            };
            evidence.push(Evidence::new(&o.addr, fact));
        }
        let dead = failure.is_some() && receiving == 0 && lost > 0;
        let (kind, summary) = if dead {
            (
                ProblemKind::DeadPrimary,
                if silent > 0 {
                    format!("primary {p} is dead: unreachable, and all {lost} replica(s) that could tell lost it ({silent} by a silent stream)")
                } else {
                    format!("primary {p} is dead: unreachable, and all {lost} replica(s) that could tell lost it")
                },
            )
        } else if failure.is_none() {
            (
                ProblemKind::UnreachablePrimary,
                format!("primary {p} was not probed; its replicas name it as their source"),
            )
        } else if receiving > 0 && query_timed_out(failure) && self.write_stall(p, None) {
            // It accepts connections and its replicas still receive from it, but neither a
            // read nor dbfleet's write completes: reachable and stalled, named above.
            return false;
        } else if receiving > 0 {
            (
                ProblemKind::UnreachablePrimary,
                format!(
                    "primary {p} is unreachable, but {receiving} replica(s) still receive from it"
                ),
            )
        } else {
            evidence.push(Evidence::new(
                p,
                format!("no replica could confirm: {idle} direct replica(s) had their IO thread stopped by hand"),
            ));
            (
                ProblemKind::UnreachablePrimary,
                format!("primary {p} is unreachable and no replica could confirm it is dead"),
            )
        };
        self.push(kind, Some(p), summary, evidence);
        dead
    }

    /// `PrimaryDiskFull` or `PrimaryWritesStalled` of the primary `p`, whose reads answer
    /// (`state`) or time out on an open connection (`None`); returns whether one was named.
    fn write_stall(&mut self, p: &InstanceAddr, state: Option<&ServerState>) -> bool {
        let Some(obs) = self.topo.by_addr.get(p) else {
            return false;
        };
        let Some(w) = obs.write.as_ref() else {
            return false;
        };
        let Some(stalled) = w.stalled_ms() else {
            return false;
        };
        let disk = state.and_then(|s| s.disk.as_ref());
        let full = w.disk_full_error() || disk.is_some_and(DiskSpace::is_full);
        if let Some(st) = state {
            // Commits that wait for semi-sync acks are the replicas' story
            // (`LockedSemiSyncPrimary`, `ReplicaWritesStalled`), not a stall of the primary.
            if st.semi_sync.source_wait_sessions > 0 && !full {
                return false;
            }
        }
        let mut evidence = vec![Evidence::new(p, write_fact(w))];
        if let Some(d) = disk {
            evidence.push(Evidence::new(p, disk_fact(d)));
        }
        if let Some(f) = obs.failure() {
            evidence.push(Evidence::new(
                p,
                format!("read probe timed out on an open connection: {}", f.message),
            ));
        }
        for (o, r) in self.topo.direct(p) {
            let mut fact = threads_fact(r);
            if let Some(hb) = o
                .state()
                .and_then(|s| s.metrics.as_ref())
                .and_then(|m| m.heartbeat)
            {
                let age_ms = hb.read_at_us.saturating_sub(hb.ts_us) / 1000;
                let _ = write!(fact, ", dbfleet heartbeat row {} old", human_ms(age_ms));
            }
            match (r.io_thread, r.stream.stalled_ms) {
                (IoThreadState::Yes, Some(ms)) if ms > 0 => {
                    let _ = write!(fact, ", stream unchanged for {}", human_ms(ms));
                }
                (IoThreadState::Yes, _) => fact.push_str(", still connected and receiving"),
                _ => {}
            }
            evidence.push(Evidence::new(&o.addr, fact));
        }
        let (kind, summary) = if full {
            let place = disk
                .map(|d| format!(" ({} on {}, {})", d.datadir, d.path, d.disk))
                .unwrap_or_default();
            (
                ProblemKind::PrimaryDiskFull,
                format!(
                    "primary {p} cannot write: its disk is full{place}; writes have not completed for {}. \
                     Free space on it or grow it; dbfleet fails over only to a replica whose own disk can take writes",
                    human_ms(stalled)
                ),
            )
        } else {
            (
                ProblemKind::PrimaryWritesStalled,
                format!(
                    "primary {p} answers reads but its writes have not completed for {}: a frozen \
                     or failing disk, or a global read lock (FLUSH TABLES WITH READ LOCK); see \
                     on_write_stall for what dbfleet does",
                    human_ms(stalled)
                ),
            )
        };
        self.push(kind, Some(p), summary, evidence);
        true
    }

    /// `ReplicaWritesStalled`: every reachable replica of a reachable source whose IO thread
    /// says `Yes` but whose stream has not moved for `stall_confirm` plus a heartbeat
    /// period, or whose applier has not moved for `storage.apply_stall` while it received
    /// more than it applied.
    fn replica_stalls(&mut self, primary: Option<&InstanceAddr>) {
        let confirm = self.spec.stall_confirm.as_millis() as u64;
        let apply_stall = self.spec.storage.apply_stall.as_millis() as u64;
        let mut found = Vec::new();
        for (o, st) in self.topo.reachable() {
            let Some(r) = st.replication.as_ref() else {
                continue;
            };
            // The source must answer: a silent stream from a source that does not is the
            // source's death (`DeadPrimary`), not the replica's stall.
            let source_ok = self
                .topo
                .by_addr
                .get(&r.source)
                .is_some_and(|s| s.state().is_some());
            let mut facts = Vec::new();
            let period = r.stream.heartbeat_period_ms.filter(|&p| p > 0);
            if let (true, IoThreadState::Yes, Some(stalled), Some(period)) = (
                source_ok && confirm > 0,
                r.io_thread,
                r.stream.stalled_ms,
                period,
            ) {
                if stalled >= confirm + period {
                    facts.push(format!(
                        "io_thread=Yes but nothing received for {} while its source {} answers \
                         (heartbeat period {}): its relay log writes do not complete",
                        human_ms(stalled),
                        r.source,
                        human_ms(period)
                    ));
                }
            }
            if let (true, Some(ms)) = (r.sql_running && apply_stall > 0, r.stream.apply_stalled_ms)
            {
                if ms >= apply_stall {
                    let applied = match &st.gtid {
                        GtidState::Mariadb { slave_pos, .. } => slave_pos.to_string(),
                        GtidState::Mysql { executed, .. } => executed.to_string(),
                    };
                    facts.push(format!(
                        "sql_thread=Yes but gtid_slave_pos {applied} has not moved for {} while \
                         it received up to {}",
                        human_ms(ms),
                        r.received_gtid
                    ));
                }
            }
            if facts.is_empty() {
                continue;
            }
            let full = st.disk.as_ref().is_some_and(DiskSpace::is_full);
            let mut evidence: Vec<Evidence> = facts
                .into_iter()
                .map(|f| Evidence::new(&o.addr, f))
                .collect();
            if let Some(d) = &st.disk {
                evidence.push(Evidence::new(&o.addr, disk_fact(d)));
            }
            let why = if full {
                "its disk is full"
            } else {
                "its disk may be stalled or full"
            };
            let primary_note = if primary == Some(&o.addr) {
                ""
            } else {
                "; failover never promotes it while this lasts"
            };
            found.push((
                o.addr.clone(),
                format!(
                    "replica {} of {} does not keep up: {why}{primary_note}",
                    o.addr, r.source
                ),
                evidence,
            ));
        }
        for (addr, summary, evidence) in found {
            self.push(
                ProblemKind::ReplicaWritesStalled,
                Some(&addr),
                summary,
                evidence,
            );
        }
    }

    /// `DiskSpaceLow` on every reachable instance whose datadir filesystem has less free
    /// space than the spec's shares (an error below the lower one), unless a problem
    /// already names its full disk.
    fn disk_space(&mut self) {
        let warn = self.spec.storage.disk_free_warning_permille;
        let error = self.spec.storage.disk_free_error_permille;
        let mut found = Vec::new();
        for (o, st) in self.topo.reachable() {
            let Some(d) = &st.disk else { continue };
            let Some(ratio) = d.free_ratio() else {
                continue;
            };
            let permille = ratio * 1000.0;
            let (severity, limit) = if permille < error as f64 {
                (Severity::Error, error)
            } else if permille < warn as f64 {
                (Severity::Warning, warn)
            } else {
                continue;
            };
            let named = self.problems.iter().any(|p| {
                p.kind == ProblemKind::PrimaryDiskFull && p.instance.as_ref() == Some(&o.addr)
            });
            if named {
                continue;
            }
            found.push((o.addr.clone(), severity, limit, d.clone()));
        }
        for (addr, severity, limit, d) in found {
            self.push(
                ProblemKind::DiskSpaceLow,
                Some(&addr),
                format!(
                    "{addr} has {} free on {} ({}), under {:.1} %: free space or grow it before writes stop",
                    human_bytes(d.available_bytes),
                    d.path,
                    d.disk,
                    limit as f64 / 10.0
                ),
                vec![Evidence::new(&addr, disk_fact(&d))],
            );
            if let Some(p) = self.problems.last_mut() {
                p.severity = severity;
            }
        }
    }

    fn no_primary(&mut self) {
        let blind = self.topo.reachable().next().is_none();
        let evidence = self
            .topo
            .by_addr
            .values()
            .map(|o| Evidence::new(&o.addr, describe(o)))
            .collect();
        let summary = if blind {
            "no instance could be reached: the cluster is blind".to_string()
        } else {
            "no primary can be named: no instance is the root of the replication".to_string()
        };
        self.push(ProblemKind::NoPrimary, None, summary, evidence);
    }

    fn ambiguous(&mut self, candidates: &[InstanceAddr]) {
        let writable: Vec<&InstanceAddr> = candidates
            .iter()
            .filter(|c| {
                self.topo
                    .state(c)
                    .is_some_and(|s| s.replication.is_none() && !s.read_only)
            })
            .collect();
        if writable.len() >= 2 {
            let evidence = writable
                .iter()
                .map(|c| Evidence::new(c, self.candidate_fact(c)))
                .collect();
            let names = join(writable.iter().copied());
            self.push(
                ProblemKind::MultiplePrimaries,
                None,
                format!(
                    "{} writable instances replicate from no one: {names}",
                    writable.len()
                ),
                evidence,
            );
        } else {
            let evidence = candidates
                .iter()
                .map(|c| Evidence::new(c, self.candidate_fact(c)))
                .collect();
            self.push(
                ProblemKind::NoPrimary,
                None,
                format!("no primary can be named among {}", join(candidates.iter())),
                evidence,
            );
        }
    }

    /// A primary candidate's role, for evidence.
    fn candidate_fact(&self, c: &InstanceAddr) -> String {
        let replicas = self.topo.tree(c);
        let replicas = if replicas.is_empty() {
            "no replicas".to_string()
        } else {
            format!("replicas: {}", join(replicas.iter().map(|o| &o.addr)))
        };
        match self.topo.by_addr.get(c) {
            Some(o) => format!("{}; {replicas}", describe(o)),
            None => format!("not observed; {replicas}"),
        }
    }

    fn replica_checks(
        &mut self,
        obs: &Observation,
        state: &ServerState,
        repl: &ReplicationStatus,
        io_excused: bool,
    ) {
        let addr = &obs.addr;
        if !state.read_only {
            self.push(
                ProblemKind::WritableReplica,
                Some(addr),
                format!("replica {addr} of {} is writable", repl.source),
                vec![Evidence::new(
                    addr,
                    format!("read_only=OFF source={}", repl.source),
                )],
            );
        }
        let io_down = repl.io_thread != IoThreadState::Yes && !io_excused;
        if !repl.sql_running || io_down {
            let what = match (io_down, repl.sql_running) {
                (true, false) => format!("IO thread is {} and SQL thread stopped", repl.io_thread),
                (true, true) => format!("IO thread is {}", repl.io_thread),
                _ => "SQL thread is stopped".to_string(),
            };
            self.push(
                ProblemKind::ReplicaNotReplicating,
                Some(addr),
                format!("replica {addr} of {}: {what}", repl.source),
                vec![Evidence::new(
                    addr,
                    format!("source={} {}", repl.source, threads_fact(repl)),
                )],
            );
        }
        let max_lag = self.spec.max_lag;
        if let Some(lag) = repl.seconds_behind_source.filter(|_| repl.is_healthy()) {
            if Duration::from_secs(lag) > max_lag {
                let mut fact = format!("seconds_behind_source={lag} > max_lag={max_lag:?}");
                if repl.sql_delay_s > 0 {
                    let _ = write!(fact, " (sql_delay={}s)", repl.sql_delay_s);
                }
                self.push(
                    ProblemKind::ReplicaLagging,
                    Some(addr),
                    format!("replica {addr} is {lag}s behind {}", repl.source),
                    vec![Evidence::new(addr, fact)],
                );
            }
        }
    }

    fn unreachable_replicas(&mut self, guess: &PrimaryGuess) {
        let excused: Vec<&InstanceAddr> = match guess {
            PrimaryGuess::None => return,
            PrimaryGuess::Reachable(p) | PrimaryGuess::Unreachable(p) => vec![p],
            PrimaryGuess::Ambiguous(c) => c.iter().collect(),
        };
        let down: Vec<_> = self
            .topo
            .unreachable()
            .filter(|(o, _)| !excused.contains(&&o.addr))
            .collect();
        for (o, f) in down {
            let replica_of_live = self
                .topo
                .by_addr
                .values()
                .any(|p| p.state().is_some_and(|s| s.replication.is_none()))
                && guess.addr().is_some_and(|p| p != &o.addr);
            if replica_of_live && query_timed_out(Some(f)) {
                // Measured with its datadir frozen (fsfreeze): a replica's IO thread blocks
                // writing its relay log while holding what `SHOW SLAVE STATUS` and its
                // status counters need, so the probe hangs on a connection the server
                // accepted.
                self.push(
                    ProblemKind::ReplicaWritesStalled,
                    Some(&o.addr),
                    format!(
                        "replica {} accepts connections but its probe does not complete: its IO \
                         thread may be blocked writing its relay log (a frozen or full disk); \
                         failover never promotes it while this lasts",
                        o.addr
                    ),
                    vec![Evidence::new(
                        &o.addr,
                        format!("read probe timed out on an open connection: {}", f.message),
                    )],
                );
                continue;
            }
            self.push(
                ProblemKind::UnreachableReplica,
                Some(&o.addr),
                format!("instance {} is unreachable", o.addr),
                vec![Evidence::new(&o.addr, unreachable_fact(f))],
            );
        }
    }

    fn tree_checks(&mut self, p: &InstanceAddr, primary_dead: bool) {
        let tree = self.topo.tree(p);
        for o in &tree {
            if self.spec.instance(&o.addr).is_none() {
                let source = o.state().and_then(|s| s.replication.as_ref());
                let source = source.map(|r| r.source.to_string()).unwrap_or_default();
                self.push(
                    ProblemKind::UnknownInstance,
                    Some(&o.addr),
                    format!(
                        "{} replicates from primary {p} but is not in the spec",
                        o.addr
                    ),
                    vec![Evidence::new(
                        &o.addr,
                        format!("source={source} (primary {p}); not in the cluster spec"),
                    )],
                );
            }
        }
        if let Some(&primary) = self.topo.by_addr.get(p).filter(|o| o.state().is_some()) {
            for o in &tree {
                let Some(errant) = errant_transactions(o, primary).filter(|e| !e.is_empty()) else {
                    continue;
                };
                let primary_fact = match primary.state().map(|s| &s.gtid) {
                    Some(GtidState::Mariadb { binlog_state, .. }) => {
                        format!("gtid_binlog_state={binlog_state}")
                    }
                    Some(GtidState::Mysql { executed, .. }) => format!("gtid_executed={executed}"),
                    None => String::new(),
                };
                self.push(
                    ProblemKind::ErrantGtid,
                    Some(&o.addr),
                    format!("{} has transactions primary {p} never had", o.addr),
                    vec![
                        Evidence::new(&o.addr, format!("errant_gtids={errant}")),
                        Evidence::new(p, primary_fact),
                    ],
                );
            }
        }
        if !primary_dead {
            self.replica_missing(p, &tree);
        }
    }

    fn replica_missing(&mut self, p: &InstanceAddr, tree: &[&Observation]) {
        let is_replicating = |o: &Observation| {
            o.state()
                .and_then(|s| s.replication.as_ref())
                .is_some_and(ReplicationStatus::is_healthy)
        };
        let replicating = tree.iter().filter(|o| is_replicating(o)).count();
        let expected = self.spec.expected_replicas;
        if replicating >= expected {
            return;
        }
        let mut evidence = vec![Evidence::new(
            p,
            format!("{replicating} replicating replica(s) < expected_replicas={expected}"),
        )];
        for o in self.topo.by_addr.values() {
            let in_tree = tree.iter().any(|t| t.addr == o.addr);
            if &o.addr == p || (in_tree && is_replicating(o)) {
                continue;
            }
            let fact = match o.state() {
                Some(s) if s.replication.is_some() && !in_tree => {
                    format!("outside the primary's tree: {}", describe(o))
                }
                _ => describe(o),
            };
            evidence.push(Evidence::new(&o.addr, fact));
        }
        for i in &self.spec.instances {
            if &i.addr != p && !self.topo.by_addr.contains_key(&i.addr) {
                evidence.push(Evidence::new(&i.addr, "not observed"));
            }
        }
        self.push(
            ProblemKind::ReplicaMissing,
            None,
            format!("primary {p} has {replicating} replicating replica(s), expected {expected}"),
            evidence,
        );
    }
}

/// Whether a direct replica whose IO thread says `Yes` has nonetheless lost its source:
/// its stream has been silent for at least `stall_confirm` plus one heartbeat period (see
/// the module docs). `Ok` with the evidence, e.g. `nothing received for 2.4 s (heartbeats
/// 812 unchanged, Gtid_IO_Pos 0-1-5531 unchanged, ...)`; `Err` with a note on what is known
/// of the stream for the "still receives" evidence (may be empty).
fn stalled_fact(
    o: &Observation,
    r: &ReplicationStatus,
    stall_confirm: Duration,
) -> Result<String, String> {
    let s = &r.stream;
    let (Some(stalled), Some(period)) = (s.stalled_ms, s.heartbeat_period_ms.filter(|&p| p > 0))
    else {
        return Err(String::new());
    };
    let confirm = stall_confirm.as_millis() as u64;
    if confirm == 0 || stalled < confirm + period {
        return Err(if stalled >= period {
            format!(
                " (nothing received for {}, heartbeat period {})",
                human_ms(stalled),
                human_ms(period)
            )
        } else {
            String::new()
        });
    }
    let mut fact =
        format!(
        "nothing received for {} (stall_confirm {} + heartbeat period {}; heartbeats {} unchanged",
        human_ms(stalled),
        human_ms(confirm),
        human_ms(period),
        s.received_heartbeats.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
    );
    if !r.received_gtid.is_empty() {
        let _ = write!(fact, ", Gtid_IO_Pos {} unchanged", r.received_gtid);
    }
    if let Some(pos) = s.read_source_log_pos {
        let _ = write!(
            fact,
            ", Read_Master_Log_Pos {}:{pos} unchanged",
            s.source_log_file
        );
    }
    if let Some(hb) = o
        .state()
        .and_then(|st| st.metrics.as_ref())
        .and_then(|m| m.heartbeat)
    {
        let age_ms = hb.read_at_us.saturating_sub(hb.ts_us) / 1000;
        let _ = write!(fact, ", dbfleet heartbeat row {} old", human_ms(age_ms));
    }
    fact.push(')');
    Ok(fact)
}

/// Whether a probe failure is a query that timed out on a connection the server accepted
/// (not a connect that timed out: a frozen process or a cut link).
fn query_timed_out(failure: Option<&ProbeFailure>) -> bool {
    failure.is_some_and(|f| {
        f.kind == crate::observation::ProbeFailureKind::Timeout
            && ["observe", "replica status", "select version"]
                .iter()
                .any(|q| f.message.starts_with(q))
    })
}

/// `heartbeat write pending for 1.2 s (deadline 500 ms), last completed 2.1 s ago, 2
/// attempt(s) failed, last: timed out`.
fn write_fact(w: &WriteProbe) -> String {
    let mut s = match w.pending_ms {
        Some(p) => format!(
            "heartbeat write pending for {} (deadline {})",
            human_ms(p),
            human_ms(w.deadline_ms)
        ),
        None => format!("heartbeat write deadline {}", human_ms(w.deadline_ms)),
    };
    match w.since_ok_ms {
        Some(ms) => {
            let _ = write!(s, ", last completed {} ago", human_ms(ms));
        }
        None => s.push_str(", none completed"),
    }
    if w.failures > 0 {
        let _ = write!(s, ", {} attempt(s) failed", w.failures);
    }
    if let Some(e) = &w.last_error {
        match e.code {
            Some(code) => {
                let _ = write!(s, ", last: error {code} {:?}", e.message);
            }
            None if e.timed_out => s.push_str(", last: timed out"),
            None => {
                let _ = write!(s, ", last: {:?}", e.message);
            }
        }
    }
    if w.hung > 0 {
        let _ = write!(
            s,
            ", {} abandoned write(s) still hung on the server",
            w.hung
        );
    }
    s
}

/// `datadir /d/data/ on /d (/dev/loop3): 1.2 MiB of 300.0 MiB available (0.4 %)`.
fn disk_fact(d: &DiskSpace) -> String {
    format!(
        "datadir {} on {} ({}): {} of {} available ({:.1} %)",
        d.datadir,
        d.path,
        d.disk,
        human_bytes(d.available_bytes),
        human_bytes(d.total_bytes),
        d.free_ratio().unwrap_or(0.0) * 100.0
    )
}

/// `512 B`, `3.4 KiB`, `1.2 MiB`, `7.0 GiB`, `2.5 TiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `2.4 s`, `350 ms`, `5.0 s`; a year or more as `1 y+`.
fn human_ms(ms: u64) -> String {
    if ms >= SEMI_SYNC_NEVER_FALLS_BACK_MS {
        "1 y+".to_string()
    } else if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `unreachable: refused: connection refused`.
fn unreachable_fact(f: &ProbeFailure) -> String {
    format!("unreachable: {}: {}", f.kind, f.message)
}

/// `io_thread=Connecting sql_thread=Yes last_io_errno=2003 "Can't connect..."`.
fn threads_fact(r: &ReplicationStatus) -> String {
    let mut s = format!(
        "io_thread={} sql_thread={}",
        r.io_thread,
        if r.sql_running { "Yes" } else { "No" }
    );
    for (name, errno, text) in [
        ("last_io_errno", r.last_io_errno, &r.last_io_error),
        ("last_sql_errno", r.last_sql_errno, &r.last_sql_error),
    ] {
        if errno != 0 || !text.is_empty() {
            let _ = write!(s, " {name}={errno}");
            if !text.is_empty() {
                let _ = write!(s, " {text:?}");
            }
        }
    }
    s
}

/// One instance's replication role, for evidence.
fn describe(o: &Observation) -> String {
    match (o.failure(), o.state()) {
        (Some(f), _) => unreachable_fact(f),
        (None, Some(s)) => match &s.replication {
            None => format!(
                "no replication source, read_only={}",
                if s.read_only { "ON" } else { "OFF" }
            ),
            Some(r) => format!("source={} {}", r.source, threads_fact(r)),
        },
        (None, None) => String::new(),
    }
}

/// `a:1, b:2`.
fn join<'x>(addrs: impl Iterator<Item = &'x InstanceAddr>) -> String {
    addrs
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
