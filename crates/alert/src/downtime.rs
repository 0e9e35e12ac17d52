//! Maintenance windows (downtimes): planned work on a cluster or an instance, during which its
//! alerts still open and are recorded but are marked silenced and not paged.

use serde::{Deserialize, Serialize};

use crate::UnixMs;

/// What a downtime covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowntimeTarget {
    /// Every alert of the cluster, its cluster-wide alerts included.
    Cluster(String),
    /// Every alert of one instance (`host:port`), whatever its cluster.
    Instance(String),
}

/// A downtime in force until `ends_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    /// Its id, unique within one evaluator's state.
    pub id: u64,
    /// What it covers.
    pub target: DowntimeTarget,
    /// When it was added (unix ms).
    pub created_at: UnixMs,
    /// When it ends (unix ms, exclusive).
    pub ends_at: UnixMs,
    /// Why, e.g. "kernel upgrade".
    pub reason: String,
    /// Who asked for it.
    pub who: String,
}

impl Downtime {
    /// Whether, at `now`, it covers an alert of `cluster` on `instance` (`None` for a
    /// cluster-wide alert).
    pub fn covers(&self, now: UnixMs, cluster: &str, instance: Option<&str>) -> bool {
        now < self.ends_at
            && match &self.target {
                DowntimeTarget::Cluster(c) => c == cluster,
                DowntimeTarget::Instance(i) => instance == Some(i.as_str()),
            }
    }

    /// Whether it is still in force at `now`.
    pub fn is_active(&self, now: UnixMs) -> bool {
        now < self.ends_at
    }
}

/// A request for a downtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDowntime {
    /// What it covers.
    pub target: DowntimeTarget,
    /// When it ends (unix ms); must be after now.
    pub ends_at: UnixMs,
    /// Why; must not be blank.
    pub reason: String,
    /// Who; must not be blank.
    pub who: String,
}

/// Why a downtime was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DowntimeError {
    /// The end is not after now.
    #[error("ends_at: the downtime must end after now")]
    EndsInPast,
    /// The cluster or instance name is blank.
    #[error("target: the cluster or instance name must not be blank")]
    BlankTarget,
    /// No reason was given.
    #[error("reason: must not be blank")]
    BlankReason,
    /// No author was given.
    #[error("who: must not be blank")]
    BlankWho,
}

impl NewDowntime {
    pub(crate) fn check(&self, now: UnixMs) -> Result<(), DowntimeError> {
        let target = match &self.target {
            DowntimeTarget::Cluster(s) | DowntimeTarget::Instance(s) => s,
        };
        if target.trim().is_empty() {
            return Err(DowntimeError::BlankTarget);
        }
        if self.reason.trim().is_empty() {
            return Err(DowntimeError::BlankReason);
        }
        if self.who.trim().is_empty() {
            return Err(DowntimeError::BlankWho);
        }
        if self.ends_at <= now {
            return Err(DowntimeError::EndsInPast);
        }
        Ok(())
    }
}
