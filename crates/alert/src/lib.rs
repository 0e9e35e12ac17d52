//! Alerting: rules over per-instance metrics and analysis problems, a pure evaluator that
//! opens, deduplicates and resolves alerts (with downtimes that silence pages), and notifiers
//! (a JSON webhook and PagerDuty Events API v2) fed by a non-blocking dispatcher.
//!
//! Data flows one way: `Observed` (what the monitor saw) and the time go into
//! [`Evaluator::evaluate`], which returns [`Transition`]s; the caller records them and hands
//! them to [`Dispatcher::submit`], whose workers deliver them.
//!
//! *Invariant*: the evaluator is pure and deterministic (no clock, no IO); no routing key or
//! header value appears in `Debug`, logs or errors.
//! *Boundary*: knows nothing of the monitor, the store or the HTTP API; its only IO is the
//! notifiers' outgoing HTTP.

pub mod config;
pub mod defaults;
pub mod dispatch;
pub mod downtime;
pub mod eval;
pub mod notify;
pub mod rule;
mod template;

use std::fmt;

pub use config::{AlertConfig, NotifierSpec, PagerDutySpec, WebhookSpec};
pub use defaults::{default_rule_specs, default_rules};
pub use dispatch::{DispatchOptions, DispatchStats, Dispatcher, NotifierStats};
pub use downtime::{Downtime, DowntimeError, DowntimeTarget, NewDowntime};
pub use eval::{
    alert_key, Alert, AlertState, ClusterSnapshot, Evaluator, EvaluatorState, InstanceSnapshot,
    Observed, ProblemSnapshot, ResolveReason, Transition, TransitionKind,
};
pub use notify::{Notification, Notifier, NotifyError, RetryPolicy, Status};
pub use rule::{validate_rules, Condition, Op, ProblemMatch, Rule, RuleSpec, Severity};

/// Milliseconds since the Unix epoch: the evaluator's only notion of time.
pub type UnixMs = u64;

/// A field that does not validate: `field` is its path (`threshold`, or
/// `alert.rule[2].threshold` from the section-level checks).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field's path.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error under a parent path: `threshold` under `alert.rule[2]` is
    /// `alert.rule[2].threshold`.
    pub fn under(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionKind::Fired => "fired",
            TransitionKind::FiredSilenced => "fired_silenced",
            TransitionKind::DowntimeEnded => "downtime_ended",
            TransitionKind::Resolved => "resolved",
        })
    }
}
