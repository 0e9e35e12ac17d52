//! The record structs the store reads and writes for clusters, instances and problems.

use std::fmt;

use model::{ClusterSpec, InstanceAddr, Problem};
use serde::{Deserialize, Serialize};

/// One managed cluster: its declared spec and its writer endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's name; the same as `spec.name`.
    pub name: String,
    /// The desired state the operator declared.
    pub spec: ClusterSpec,
    /// Where the cluster's writes go now, when known. Failover and switchover move it with
    /// [`crate::Store::set_writer`]; [`crate::Store::upsert_cluster`] never changes it.
    pub writer: Option<InstanceAddr>,
    /// When the spec or the writer last changed, in ms since the Unix epoch.
    pub updated_ms: u64,
}

/// Where the store learnt of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Declared in the cluster's config.
    Config,
    /// Found by discovery (it replicates from a known instance) but not declared.
    Discovered,
}

impl Origin {
    /// The stable text stored and shown for this origin.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Discovered => "discovered",
        }
    }

    /// The origin a stored text names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Self::Config),
            "discovered" => Some(Self::Discovered),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its address.
    pub addr: InstanceAddr,
    /// Whether it was declared or discovered.
    pub origin: Origin,
    /// When the store first recorded it, in ms since the Unix epoch.
    pub first_seen_ms: u64,
    /// When it was last upserted (seen by config load or discovery), in ms since the Unix
    /// epoch.
    pub last_seen_ms: u64,
}

/// Which instances [`crate::Store::instance_page`] returns: by cluster, then address as
/// text (`host:port` as [`InstanceAddr`] displays it, compared byte-wise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    /// Only this cluster's instances, when set.
    pub cluster: Option<String>,
    /// Only the instances after this one (cluster, then address), when set: the last of
    /// the page before. It need not exist any more.
    pub after: Option<(String, InstanceAddr)>,
    /// The most instances to return, capped at [`crate::MAX_EVENT_LIMIT`]; 0 returns none.
    pub limit: usize,
}

impl InstanceQuery {
    /// Whether `record` sorts after the cursor: the order of [`crate::Store::instance_page`].
    pub fn is_after_cursor(&self, record: &InstanceRecord) -> bool {
        match &self.after {
            None => true,
            Some((cluster, addr)) => {
                (record.cluster.as_str(), record.addr.to_string().as_str())
                    > (cluster.as_str(), addr.to_string().as_str())
            }
        }
    }
}

/// One problem as the store tracks it: one row per opening, from first seen until cleared.
///
/// A problem that clears and later comes back is a new record with a new `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemRecord {
    /// The record's id, unique in the store, growing with each new opening.
    pub id: i64,
    /// The cluster.
    pub cluster: String,
    /// The problem's identity, [`Problem::key`]: the same key in the next round is the same
    /// open problem.
    pub key: String,
    /// The problem as last seen: its latest severity, summary and evidence.
    pub problem: Problem,
    /// When analysis first reported it, in ms since the Unix epoch.
    pub first_seen_ms: u64,
    /// When analysis last reported it, in ms since the Unix epoch.
    pub last_seen_ms: u64,
    /// When a round of analysis first no longer reported it; `None` while it is open.
    pub cleared_ms: Option<u64>,
}

impl ProblemRecord {
    /// Whether the problem is still open.
    pub fn is_open(&self) -> bool {
        self.cleared_ms.is_none()
    }
}

/// What one [`crate::Store::sync_problems`] call changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemChanges {
    /// Problems that were not open before this round, as inserted.
    pub opened: Vec<ProblemRecord>,
    /// Problems that were open and are absent from this round, as cleared.
    pub cleared: Vec<ProblemRecord>,
}

impl ProblemChanges {
    /// Whether nothing opened or cleared.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.cleared.is_empty()
    }
}
