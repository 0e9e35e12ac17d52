//! Cluster specs: the desired state an operator declares, beside which observations are read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::addr::InstanceAddr;

/// What a cluster should look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster's name, unique in the fleet.
    pub name: String,
    /// The instances the operator declared; discovery starts from them. An instance found by
    /// discovery but not listed here is an `UnknownInstance`.
    pub instances: Vec<InstanceSpec>,
    /// How many replicas the primary should have.
    pub expected_replicas: usize,
    /// Whether semi-sync replication should be on.
    pub semi_sync: bool,
    /// Replication lag above which a replica is `ReplicaLagging`.
    pub max_lag: Duration,
    /// How long a direct replica's received stream (events and heartbeats) must have been
    /// silent, beyond one heartbeat period, for it to count as having lost an unreachable
    /// primary while its IO thread still says `Yes` (see `analysis`): a frozen or silently
    /// cut-off primary is then confirmed dead without waiting for `slave_net_timeout`. Zero
    /// turns this off.
    #[serde(default = "default_stall_confirm")]
    pub stall_confirm: Duration,
    /// Free-space thresholds and the replica apply-stall limit (see `analysis`).
    #[serde(default)]
    pub storage: StorageSpec,
}

/// What counts as low disk space and as a stalled replica applier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageSpec {
    /// `DiskSpaceLow` (warning) when the datadir's filesystem has less than this share
    /// available, in tenths of a percent (100 = 10 %). 0 turns the warning off.
    pub disk_free_warning_permille: u32,
    /// `DiskSpaceLow` (error) below this share, in tenths of a percent (50 = 5 %).
    pub disk_free_error_permille: u32,
    /// `ReplicaWritesStalled` when a replica's applied position has not moved for this
    /// long while it has received more than it applied (its SQL thread says it runs).
    pub apply_stall: Duration,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            disk_free_warning_permille: 100,
            disk_free_error_permille: 50,
            apply_stall: Duration::from_secs(10),
        }
    }
}

/// The default [`ClusterSpec::stall_confirm`]: 1.5 s. A freeze shorter than this never
/// confirms a death.
pub const DEFAULT_STALL_CONFIRM: Duration = Duration::from_millis(1500);

fn default_stall_confirm() -> Duration {
    DEFAULT_STALL_CONFIRM
}

impl ClusterSpec {
    /// The declared spec of an instance, if it is declared.
    pub fn instance(&self, addr: &InstanceAddr) -> Option<&InstanceSpec> {
        self.instances.iter().find(|i| &i.addr == addr)
    }

    /// The promotion rule of every declared instance.
    pub fn promotion_rules(&self) -> BTreeMap<InstanceAddr, PromotionRule> {
        self.instances
            .iter()
            .map(|i| (i.addr.clone(), i.promotion))
            .collect()
    }
}

/// One declared instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Its address.
    pub addr: InstanceAddr,
    /// Whether failover may promote it.
    pub promotion: PromotionRule,
    /// The site (data centre, zone) it runs in, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// Whether an instance may be promoted to primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionRule {
    /// Promote it before neutral candidates that are as advanced.
    Prefer,
    /// No preference.
    #[default]
    Neutral,
    /// Never promote it (a delayed replica, a backup host, another site).
    MustNot,
}

impl fmt::Display for PromotionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefer => "prefer",
            Self::Neutral => "neutral",
            Self::MustNot => "must_not",
        })
    }
}
