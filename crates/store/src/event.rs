//! The append-only event (audit) log's types: new events, stored events, queries and levels.

use std::fmt;

use crate::record::ProblemRecord;
use model::{InstanceAddr, Severity};
use serde::{Deserialize, Serialize};

/// The most records one read returns ([`crate::Store::events`], problem history,
/// operations); a larger `limit` is capped to it. Page past it (`EventQuery::after_id`).
///
/// It bounds the memory of one answer: every caller holds its whole answer until it is
/// sent, and 200 concurrent readers of 10,000 events each (3 MB of JSON apiece) took a
/// daemon to 1.8 GB (docs/BENCHMARKS.md, "API reads"). 1,000 events are about 300 KB.
pub const MAX_EVENT_LIMIT: usize = 1_000;

/// The stable snake_case names of event kinds the control plane writes. They appear in the
/// API, in alerts and in queries by kind, so they never change once released.
pub mod kinds {
    /// A problem opened: analysis reported a key that was not open.
    pub const PROBLEM_OPENED: &str = "problem_opened";
    /// A problem cleared: an open key was absent from a round of analysis.
    pub const PROBLEM_CLEARED: &str = "problem_cleared";
    /// Discovery found an instance that the store did not know.
    pub const INSTANCE_DISCOVERED: &str = "instance_discovered";
    /// The daemon started.
    pub const DAEMON_STARTED: &str = "daemon_started";
    /// The daemon stopped cleanly (`data.reload` is true when it stopped to start again
    /// with a changed config, on SIGHUP).
    pub const DAEMON_STOPPED: &str = "daemon_stopped";
    /// SIGHUP came but the config file is not valid, or an operation did not end in time:
    /// the daemon goes on with the config it runs (level `error`).
    pub const CONFIG_RELOAD_REFUSED: &str = "config_reload_refused";
    /// A note an operator added through the API.
    pub const OPERATOR_NOTE: &str = "operator_note";
    /// An operation started (failover, switchover, rejoin).
    pub const OPERATION_STARTED: &str = "operation_started";
    /// One step of an operation finished, with GTID positions before and after.
    pub const OPERATION_STEP: &str = "operation_step";
    /// An operation reached a final state.
    pub const OPERATION_FINISHED: &str = "operation_finished";
    /// Policy `approve` proposed a failover; a human must run it.
    pub const FAILOVER_PROPOSED: &str = "failover_proposed";
    /// An automatic failover was due but anti-flapping or the global switch held it back.
    pub const FAILOVER_BLOCKED: &str = "failover_blocked";
    /// An automatic failover was due but was refused before an operation started, or its
    /// operation failed before promotion; it is retried with backoff while the primary
    /// stays dead (level `critical` for the first attempt, `warning` for retries).
    pub const FAILOVER_REFUSED: &str = "failover_refused";
    /// A fenced instance answered again and was kept out (set read-only).
    pub const FENCED_INSTANCE_RETURNED: &str = "fenced_instance_returned";
    /// A replaced primary that could not be fenced at failover answered again and was
    /// fenced at once by its guard; `data.answered_to_fenced_ms` says how fast.
    pub const FENCED_ON_RETURN: &str = "fenced_on_return";
    /// Policy `rejoin = "auto"` tried to rejoin a fenced instance the allowed number of
    /// times and failed each time; a human must act (level `critical`).
    pub const AUTO_REJOIN_FAILED: &str = "auto_rejoin_failed";
    /// A failover left its new primary fewer semi-sync replicas than
    /// `min_semi_sync_replicas` (level `critical`): `data.policy` `page` (writes wait for an
    /// ack while there is none) or `relax` (`data.relaxed`: semi-sync switched off, the
    /// cluster runs without a second copy).
    pub const SEMI_SYNC_SHORTFALL: &str = "semi_sync_shortfall";
    /// A failover promoted although transactions only an unusable replica holds may be lost
    /// (policy `on_possible_loss = "promote"`, level `critical`); `data.possible_loss` names
    /// them.
    pub const FAILOVER_POSSIBLE_LOSS: &str = "failover_possible_loss";
    /// A failover's `fence_command` (STONITH) failed (level `critical`): the old primary
    /// may come back writable.
    pub const FENCE_FAILED: &str = "fence_failed";
    /// A failover or switchover told the cluster's HAProxy about the new primary over its
    /// Runtime API (level `info`).
    pub const ROUTING_PUSHED: &str = "routing_pushed";
    /// That push failed (level `critical`): HAProxy moves only when its health checks do.
    pub const ROUTING_PUSH_FAILED: &str = "routing_push_failed";
    /// A human acknowledged a cluster's recoveries, lifting its block window.
    pub const RECOVERIES_ACKNOWLEDGED: &str = "recoveries_acknowledged";
    /// Automatic recoveries were switched off or on fleet-wide.
    pub const RECOVERIES_SWITCHED: &str = "recoveries_switched";
    /// This node became, or stopped being, the leader.
    pub const LEADERSHIP_CHANGED: &str = "leadership_changed";
    /// A disaster-recovery test started (a scheduled one, by the daemon).
    pub const DRT_STARTED: &str = "drt_started";
    /// A disaster-recovery test's report was stored: level `info` when every expectation
    /// held, `error` when one failed.
    pub const DRT_FINISHED: &str = "drt_finished";
    /// An alert started firing, level from its severity. `data.silenced` is true when a
    /// downtime covered it and it was not paged; `data.transition = "downtime_ended"` when
    /// its downtime ended while it still fires, and it is paged now.
    pub const ALERT_FIRED: &str = "alert_fired";
    /// An alert stopped firing (level `info`); `data.paged` says whether a resolve was sent.
    pub const ALERT_RESOLVED: &str = "alert_resolved";
    /// A downtime (maintenance window) was added; `data` holds it.
    pub const DOWNTIME_ADDED: &str = "downtime_added";
    /// A downtime was ended early; `data` holds it.
    pub const DOWNTIME_REMOVED: &str = "downtime_removed";
}

/// How much an event matters. A problem's [`Severity`] maps onto the same-named level; `Info`
/// is for events that need no attention (a daemon start, a problem cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    /// For the record only.
    Info,
    /// Worth a look in working hours.
    Warning,
    /// Needs action soon.
    Error,
    /// Page-worthy.
    Critical,
}

impl EventLevel {
    /// The stable text stored and shown for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }

    /// The level a stored text names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "error" => Some(Self::Error),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

impl From<Severity> for EventLevel {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Warning => Self::Warning,
            Severity::Error => Self::Error,
            Severity::Critical => Self::Critical,
        }
    }
}

impl fmt::Display for EventLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append to the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The cluster it is about, if any.
    pub cluster: Option<String>,
    /// The instance it is about, if any.
    pub instance: Option<InstanceAddr>,
    /// Its kind: a stable snake_case name, see [`kinds`].
    pub kind: String,
    /// How much it matters.
    pub level: EventLevel,
    /// One line for humans. Never holds credentials.
    pub message: String,
    /// Structured details; `null` when there are none. Never holds credentials.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event with no cluster, no instance and no data.
    pub fn new(
        at_ms: u64,
        kind: impl Into<String>,
        level: EventLevel,
        message: impl Into<String>,
    ) -> Self {
        Self {
            at_ms,
            cluster: None,
            instance: None,
            kind: kind.into(),
            level,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// The same event, about a cluster.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// The same event, about an instance.
    pub fn with_instance(mut self, instance: InstanceAddr) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The same event, with structured details.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// An event as stored: the appended [`NewEvent`] plus its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Its id: unique, and growing in the order events were appended, so a reader pages
    /// through the log with [`EventQuery::after_id`].
    pub id: i64,
    /// When it happened, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The cluster it is about, if any.
    pub cluster: Option<String>,
    /// The instance it is about, if any.
    pub instance: Option<InstanceAddr>,
    /// Its kind.
    pub kind: String,
    /// How much it matters.
    pub level: EventLevel,
    /// One line for humans.
    pub message: String,
    /// Structured details.
    pub data: serde_json::Value,
}

/// Which events [`crate::Store::events`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only events about this cluster, when set.
    pub cluster: Option<String>,
    /// When set, the oldest `limit` events with an id above it (paging forward); when not,
    /// the newest `limit` events. Either way the result is in ascending id order.
    pub after_id: Option<i64>,
    /// The most events to return, capped at [`MAX_EVENT_LIMIT`]; 0 returns none.
    pub limit: usize,
    /// Only events of these kinds, when not empty.
    pub kinds: Vec<String>,
}

impl Default for EventQuery {
    /// The newest 100 events of every cluster and kind.
    fn default() -> Self {
        Self {
            cluster: None,
            after_id: None,
            limit: 100,
            kinds: Vec::new(),
        }
    }
}

/// The `problem_opened` event of a problem opening; every backend writes this one.
pub(crate) fn problem_opened_event(rec: &ProblemRecord) -> NewEvent {
    let mut ev = NewEvent::new(
        rec.first_seen_ms,
        kinds::PROBLEM_OPENED,
        rec.problem.severity.into(),
        format!("problem {} opened: {}", rec.key, rec.problem.summary),
    )
    .with_cluster(rec.cluster.clone())
    .with_data(serde_json::json!({
        "problem_id": rec.id,
        "key": rec.key,
        "problem": rec.problem,
    }));
    ev.instance = rec.problem.instance.clone();
    ev
}

/// The `problem_cleared` event of a problem cleared at `now_ms`; every backend writes this one.
pub(crate) fn problem_cleared_event(rec: &ProblemRecord, now_ms: u64) -> NewEvent {
    let mut ev = NewEvent::new(
        now_ms,
        kinds::PROBLEM_CLEARED,
        EventLevel::Info,
        format!(
            "problem {} cleared after {} s",
            rec.key,
            now_ms.saturating_sub(rec.first_seen_ms) / 1000
        ),
    )
    .with_cluster(rec.cluster.clone())
    .with_data(serde_json::json!({
        "problem_id": rec.id,
        "key": rec.key,
        "first_seen_ms": rec.first_seen_ms,
        "last_seen_ms": rec.last_seen_ms,
        "problem": rec.problem,
    }));
    ev.instance = rec.problem.instance.clone();
    ev
}
