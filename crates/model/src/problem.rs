//! `Problem`: a named, evidenced fault of one cluster, the output of analysis.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::InstanceAddr;

/// One problem found in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The cluster.
    pub cluster: String,
    /// The instance the problem is about, when it is about one.
    pub instance: Option<InstanceAddr>,
    /// How urgent it is.
    pub severity: Severity,
    /// One line for humans.
    pub summary: String,
    /// The facts that led to it, each from one instance's observation.
    pub evidence: Vec<Evidence>,
}

impl Problem {
    /// The problem's identity: a problem with the same key seen in the next round is the
    /// same problem, still open.
    pub fn key(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}/{}", self.kind, i),
            None => self.kind.to_string(),
        }
    }
}

/// One fact behind a problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The instance whose observation showed it.
    pub instance: InstanceAddr,
    /// What was seen, e.g. `io_thread=Connecting last_io_errno=2003`.
    pub fact: String,
}

impl Evidence {
    /// Evidence from an instance.
    pub fn new(instance: &InstanceAddr, fact: impl Into<String>) -> Self {
        Self {
            instance: instance.clone(),
            fact: fact.into(),
        }
    }
}

/// How urgent a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look in working hours.
    Warning,
    /// Needs action soon; automation may handle it.
    Error,
    /// Page-worthy: a human must act now if automation cannot.
    Critical,
}

/// The named problems. The names are stable: they appear in the API, events and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProblemKind {
    /// The primary is unreachable and every reachable replica has lost it.
    DeadPrimary,
    /// The control plane cannot reach the primary, but a replica still replicates from it.
    UnreachablePrimary,
    /// No instance acts as primary.
    NoPrimary,
    /// More than one writable instance replicates from no one.
    MultiplePrimaries,
    /// The primary is read-only.
    PrimaryReadOnly,
    /// A replica is writable.
    WritableReplica,
    /// A replica's IO or SQL thread is not running.
    ReplicaNotReplicating,
    /// A replica is further behind than the spec allows.
    ReplicaLagging,
    /// A replica holds transactions its primary never had.
    ErrantGtid,
    /// The primary has fewer replicas than the spec asks for.
    ReplicaMissing,
    /// Semi-sync should be on but is off, fell back to async, or has no acking replica.
    SemiSyncDegraded,
    /// Semi-sync is wanted, but the primary would fall back to async and acknowledge
    /// commits alone: its timeout is finite, or it does not wait when no replica acks.
    SemiSyncCanFallBack,
    /// The primary's commits wait for a semi-sync ack that no replica can send: writes
    /// hang until a semi-sync replica comes back or a human relaxes semi-sync.
    LockedSemiSyncPrimary,
    /// An instance replicates from the primary but is not in the config.
    UnknownInstance,
    /// A replica (or any non-primary instance) cannot be reached.
    UnreachableReplica,
    /// A configured seed could not be reached, so its cluster may be incomplete.
    UnreachableSeed,
    /// The primary answers reads, but dbfleet's heartbeat write times out or fails: its
    /// writes do not complete (a frozen disk, a global read lock).
    PrimaryWritesStalled,
    /// The primary's writes fail or hang because its disk is full (error 28 or 1021, or
    /// no space left on its datadir's filesystem).
    PrimaryDiskFull,
    /// An instance's datadir filesystem has less free space than configured.
    DiskSpaceLow,
    /// A replica's IO thread says `Yes` but receives nothing while its source is up, or its
    /// applier has not moved while it received more: its own disk is stalled or full.
    ReplicaWritesStalled,
}

impl ProblemKind {
    /// Every kind, in a stable order.
    pub const ALL: [ProblemKind; 20] = [
        Self::DeadPrimary,
        Self::UnreachablePrimary,
        Self::NoPrimary,
        Self::MultiplePrimaries,
        Self::PrimaryReadOnly,
        Self::WritableReplica,
        Self::ReplicaNotReplicating,
        Self::ReplicaLagging,
        Self::ErrantGtid,
        Self::ReplicaMissing,
        Self::SemiSyncDegraded,
        Self::SemiSyncCanFallBack,
        Self::LockedSemiSyncPrimary,
        Self::UnknownInstance,
        Self::UnreachableReplica,
        Self::UnreachableSeed,
        Self::PrimaryWritesStalled,
        Self::PrimaryDiskFull,
        Self::DiskSpaceLow,
        Self::ReplicaWritesStalled,
    ];
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
