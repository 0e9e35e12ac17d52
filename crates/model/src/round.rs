//! `ClusterRound`: what one analysis of one cluster found. The monitor publishes one after
//! every round (tick or fast path); the engine and the daemon's alerting consume them.

use crate::addr::InstanceAddr;
use crate::observation::Observation;
use crate::problem::{Problem, ProblemKind};

/// Why a cluster was analysed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RoundTrigger {
    /// The periodic round, every probe interval.
    #[default]
    Tick,
    /// The suspect fast path: `instance`, the cluster's primary as the previous round named
    /// it, showed a first sign of death, and every member was probed again at once.
    Suspect {
        /// The instance that looked dead.
        instance: InstanceAddr,
        /// The sign, for humans: `probe failed: …` or `liveness connection lost: …`.
        reason: String,
    },
    /// Asked for: every member was probed again at once, e.g. after an operation on the
    /// cluster finished (the monitor's `ClusterWatch::refresh`).
    Refresh,
}

impl RoundTrigger {
    /// Whether this round came from the fast path.
    pub fn is_suspect(&self) -> bool {
        matches!(self, Self::Suspect { .. })
    }
}

/// One analysis of one cluster, as recorded in the store: the observations it read, the
/// primary it named and every problem it synced (those of `model::analysis::analyze` plus
/// the monitor's own `UnreachableSeed`).
///
/// Every round states the whole truth at its moment; a consumer that misses one loses
/// nothing the next one does not say again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterRound {
    /// The cluster's name.
    pub cluster: String,
    /// When the analysis ran, ms since the Unix epoch.
    pub at_ms: u64,
    /// Why it ran.
    pub trigger: RoundTrigger,
    /// The observation of each member that was analysed (stale ones turned into timeouts),
    /// by address.
    pub observations: Vec<Observation>,
    /// The primary the analysis named, reachable or not; `None` when none or several.
    pub primary: Option<InstanceAddr>,
    /// Every problem of the cluster, as synced to the store.
    pub problems: Vec<Problem>,
}

impl ClusterRound {
    /// The instance of the `DeadPrimary` problem, when the round has one.
    pub fn dead_primary(&self) -> Option<&InstanceAddr> {
        self.problems
            .iter()
            .find(|p| p.kind == ProblemKind::DeadPrimary)
            .and_then(|p| p.instance.as_ref())
    }

    /// Whether the round has a problem of `kind`.
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.kind == kind)
    }

    /// The observation of `addr` this round read.
    pub fn observation(&self, addr: &InstanceAddr) -> Option<&Observation> {
        self.observations.iter().find(|o| &o.addr == addr)
    }
}
