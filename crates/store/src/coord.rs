//! Records for coordination and operations: persisted operations, cluster locks, the leader
//! lease, and small key/value settings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an operation stands.
///
/// `Running` is the only state an operation can be resumed from. The three end states
/// (`Succeeded`, `Failed`, `RolledBack`) are final; `NeedsHuman` is final for the engine: a
/// person must look, and the cluster's next automatic recovery waits for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Proposed by policy `approve`: not started; a human runs or dismisses it.
    Proposed,
    /// Started and not finished: a crash leaves it here, and the next start judges it.
    Running,
    /// Finished as intended.
    Succeeded,
    /// Stopped before changing anything that needs undoing, or after undoing it.
    RolledBack,
    /// Stopped on an error; what it changed is in its steps and events.
    Failed,
    /// Stopped because going on could be unsafe; a human must decide.
    NeedsHuman,
}

impl OperationState {
    /// The stable text stored and shown for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::NeedsHuman => "needs_human",
        }
    }

    /// The state a stored text names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "proposed" => Self::Proposed,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "rolled_back" => Self::RolledBack,
            "failed" => Self::Failed,
            "needs_human" => Self::NeedsHuman,
            _ => return None,
        })
    }

    /// Whether the operation is over (nothing will run it again by itself).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Proposed | Self::Running)
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation to record, before its first step runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOperation {
    /// The cluster it acts on.
    pub cluster: String,
    /// What it does: `failover`, `switchover`, `rejoin`, ...
    pub kind: String,
    /// Why it started: `auto` (policy), `manual` (a person through the CLI or API).
    pub trigger: String,
    /// Its first state: `Running`, or `Proposed` for policy `approve`.
    pub state: OperationState,
    /// The first step's name.
    pub step: String,
    /// The operation's context (old primary, candidate, positions): kind-specific JSON that
    /// a resumed operation reads back.
    pub data: serde_json::Value,
    /// The control-plane node that runs it.
    pub owner: String,
    /// When it was recorded, in ms since the Unix epoch.
    pub created_ms: u64,
}

/// One operation as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Unique in the store, growing.
    pub id: i64,
    /// The cluster it acts on.
    pub cluster: String,
    /// What it does.
    pub kind: String,
    /// Why it started.
    pub trigger: String,
    /// Where it stands.
    pub state: OperationState,
    /// The step it is at (or ended at).
    pub step: String,
    /// Its context, as last written.
    pub data: serde_json::Value,
    /// Why it failed or stopped, when it did.
    pub error: Option<String>,
    /// The control-plane node that runs (or last ran) it.
    pub owner: String,
    /// When it was recorded.
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// When it reached a final state.
    pub finished_ms: Option<u64>,
}

/// A change to a stored operation: its state, step, context and error, all at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationUpdate {
    /// The new state. Moving out of a final state is refused.
    pub state: OperationState,
    /// The step it is at now.
    pub step: String,
    /// The new context; `None` keeps the stored one.
    pub data: Option<serde_json::Value>,
    /// Why it failed or stopped; `None` keeps the stored one.
    pub error: Option<String>,
    /// The node that runs it now; `None` keeps the stored one.
    pub owner: Option<String>,
    /// When, in ms since the Unix epoch.
    pub now_ms: u64,
}

/// Which operations to list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationQuery {
    /// Only this cluster's.
    pub cluster: Option<String>,
    /// Only these states; empty means every state.
    pub states: Vec<OperationState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At most this many, newest first (capped at [`crate::MAX_EVENT_LIMIT`]); 0 means the cap.
    pub limit: usize,
    /// Only operations with an id below this one: the last id of the page before, to page
    /// back through the history (keyset paging).
    pub before_id: Option<i64>,
}

/// Who holds a cluster's lock, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLock {
    /// The cluster.
    pub cluster: String,
    /// The holder's name (node and operation).
    pub holder: String,
    /// When the lock lapses unless renewed, in ms since the Unix epoch (SQLite); for etcd,
    /// the lease's expiry as this node last knew it.
    pub expires_ms: u64,
}

/// The control plane's leader, as one [`crate::Store::campaign`] call found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The node that leads now, if any.
    pub leader: Option<String>,
    /// Grows by one each time leadership changes hands: a fencing token.
    pub term: u64,
    /// Whether the calling node is the leader.
    pub is_leader: bool,
}
